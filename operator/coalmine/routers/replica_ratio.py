"""No mesh: one Service selects every revision, and the weight is the share of ready pods.

The state machine scales the revisions to realise a weight; this router only reads back what
the Service really sends, from its EndpointSlices: the share of ready endpoints that belong to
the canary revision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coalmine.routers.base import RoutingConfig, Target, ready_revisions

if TYPE_CHECKING:
    from coalmine.kube import Kube


class ReplicaRatioRouting(RoutingConfig):
    """No router: traffic follows the ratio of canary to stable ready pods behind the Service.

    `replicaRatio: {}` is what an omitted trafficRouting means, written explicitly.
    """

    key = "replicaRatio"
    weighted = False


class ReplicaRatioRouter:
    def ensure(self, kube: Kube, target: Target) -> None:
        # The Services it needs are the ones the operator keeps for every rollout.
        return None

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        # Replica counts realise the weight; the state machine scales the revisions.
        return None

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        counts = ready_revisions(kube, target.namespace, target.root_service)
        total = sum(counts.values())
        if total == 0 or target.canary_revision is None:
            return 0
        return round(100 * counts.get(target.canary_revision, 0) / total)

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        return None
