"""No router: the weight is the canary's share of the ready pods behind the one Service.

Replica counts realise a weight (see `ratio_sizes` for the rounding): pods are grown before
others shrink, so serving capacity never drops below what a step needs, and the canary's real
share never exceeds the step's weight. Traffic leaves a canary only as its pods go away, so an
abort first brings the stable revision back to full size. The read-back is the share of ready
endpoints of the rollout's Service that belong to the canary revision.
"""

from __future__ import annotations

from dataclasses import replace

from coalmine.api.vocabulary import Phase
from coalmine.machine.builder import Builder
from coalmine.machine.common import (
    finish_promotion,
    waiting_for_canary_pods,
    waiting_for_full_size,
    waiting_for_stable_pods,
)
from coalmine.machine.types import SelectRevisions, ratio_sizes, ratio_weight


class ReplicaRatio:
    restores_on_delete = False

    def route(self, b: Builder, weight: int) -> bool:
        # Nothing to write: the pods realise the weight; the observation confirms it.
        b.memory = replace(b.memory, desired_weight=weight)
        if b.observed.weight is not None:
            b.memory = replace(b.memory, confirmed_weight=b.observed.weight)
        if b.observed.weight == weight:
            return True
        b.wait()
        return False

    def keep_stable_serving(self, b: Builder) -> None:
        stable = b.memory.stable
        assert stable is not None
        b.act(SelectRevisions(stable, b.memory.canary))

    def weight_step(self, b: Builder, canary: str, weight: int) -> bool:
        return self._converge(b, canary, weight)

    def hold(self, b: Builder, canary: str, weight: int) -> None:
        self._converge(b, canary, weight)

    def _converge(self, b: Builder, canary: str, weight: int) -> bool:
        """Move replica counts toward ``weight``; True once the endpoints show the split."""
        stable = b.memory.stable
        assert stable is not None
        canary_size, stable_size = ratio_sizes(weight, b.plan.replicas)
        b.memory = replace(b.memory, desired_weight=weight)
        if b.observed.weight is not None:
            b.memory = replace(b.memory, confirmed_weight=b.observed.weight)
        if canary_size == 0 and weight > 0:
            b.event(
                "WeightTooSmall",
                f"{weight}% of {b.plan.replicas} replicas cannot be given to the canary without "
                "exceeding it: it gets no pod at this step (use a router for small weights)",
                warning=True,
            )
        # Grow first, shrink second; and the stable grows before the canary: its pods only
        # lower the canary's share, while a canary pod ready beside a stable that has not yet
        # surged (3 replicas at 20%: 1 canary beside 3 stable, 25%) exceeds the step's weight.
        if b.available(stable) < stable_size:
            b.scale(stable, max(stable_size, b.replicas(stable) or 0))
            if not waiting_for_stable_pods(b, stable, stable_size):
                return False
        if b.available(canary) < canary_size:
            b.scale(canary, max(canary_size, b.replicas(canary) or 0))
            waiting_for_canary_pods(b, canary, canary_size)
            return False
        b.scale(canary, canary_size)
        b.scale(stable, stable_size)
        stable_ready = min(stable_size, b.available(stable))
        served = (
            b.observed.canary_endpoints.get(canary, 0) == canary_size
            and b.observed.stable_endpoints.get(stable, 0) == stable_ready
        )
        if served and b.observed.weight == ratio_weight(canary_size, stable_ready):
            return True
        b.memory = replace(
            b.memory, message=f"scaling to {canary_size} canary and {stable_size} stable pods"
        )
        b.wait()
        return False

    def promote(self, b: Builder) -> None:
        canary = b.memory.canary
        assert canary is not None
        replicas = b.plan.replicas
        # Full size first, then the old stable leaves the Service by scaling.
        b.memory = replace(b.memory, phase=Phase.PROGRESSING, desired_weight=100)
        b.scale(canary, replicas)
        if b.available(canary) < replicas:
            waiting_for_full_size(b, canary)
            return
        finish_promotion(b, scale_old_now=True)

    def retire(self, b: Builder, *, superseded: bool) -> bool:
        canary, stable = b.memory.canary, b.memory.stable
        assert canary is not None
        assert stable is not None
        b.memory = replace(b.memory, desired_weight=0)
        if b.observed.weight is not None:
            b.memory = replace(b.memory, confirmed_weight=b.observed.weight)
        # The stable must be back at full size before the canary's pods leave the Service.
        b.scale(stable, b.plan.replicas)
        if b.available(stable) < b.plan.replicas and not waiting_for_stable_pods(
            b, stable, b.plan.replicas
        ):
            return False
        b.scale(canary, 0)
        return True
