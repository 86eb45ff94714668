"""No mesh: one Service selects every revision, and the weight is the share of ready pods.

The state machine scales the revisions to realise a weight; this router only reads back what
the Service really sends, from its EndpointSlices: the share of ready endpoints that belong to
the canary revision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coalmine import resources as r
from coalmine.routers.base import RoutingConfig, Target

if TYPE_CHECKING:
    from coalmine.kube import Kube


class ReplicaRatioRouting(RoutingConfig):
    """No router: traffic follows the ratio of canary to stable ready pods behind the Service.

    `replicaRatio: {}` is what an omitted trafficRouting means, written explicitly.
    """

    weighted = False


def ready_endpoints_by_pod_prefix(kube: Kube, namespace: str, service: str) -> list[str]:
    """Names of the pods behind ``service`` whose endpoints are ready."""
    slices = kube.list(
        r.ENDPOINT_SLICES, namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    pods: set[str] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready")
            ref = endpoint.get("targetRef") or {}
            if ready is not False and ref.get("kind") == "Pod":
                pods.add(str(ref.get("name")))
    return sorted(pods)


class ReplicaRatioRouter:
    def ensure(self, kube: Kube, target: Target) -> None:
        # The Services it needs are the ones the operator keeps for every rollout.
        return None

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        # Replica counts realise the weight; the state machine scales the revisions.
        return None

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        pods = ready_endpoints_by_pod_prefix(kube, target.namespace, target.root_service)
        if not pods:
            return 0
        if target.canary_revision is None:
            return 0
        prefix = f"{target.rollout}-{target.canary_revision}-"
        canary = sum(1 for pod in pods if pod.startswith(prefix))
        return round(100 * canary / len(pods))

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        return None
