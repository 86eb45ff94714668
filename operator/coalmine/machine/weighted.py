"""A router applies the weight (Gateway API, NGINX, Istio, SMI): traffic moves by a number.

The stable revision keeps its full size until the promotion is confirmed, so taking traffic off
a canary never waits for pods. A weight is asked only once the canary has the ready pods (and
ready endpoints) to serve it; a step counts only when the router's read-back confirms it.
Promotion goes canary at full size -> 100% -> the stable Service selects the canary -> 0%.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from coalmine.api.vocabulary import Phase, Stage
from coalmine.machine.builder import Builder
from coalmine.machine.common import (
    finish_promotion,
    waiting_for_canary_pods,
    waiting_for_full_size,
)
from coalmine.machine.types import SelectRevisions, SetWeight, canary_replicas_for


class WeightedRouting:
    restores_on_delete = True

    def route(self, b: Builder, weight: int) -> bool:
        if b.observed.weight != weight:
            b.act(SetWeight(weight))
        return b.weight_confirmed(weight)

    def keep_stable_serving(self, b: Builder) -> None:
        stable = b.memory.stable
        assert stable is not None
        b.scale(stable, b.plan.replicas)
        b.act(SelectRevisions(stable, b.memory.canary))
        if b.plan.replicas > 0 and b.available(stable) == 0:
            # Nothing waits for it (the canary's weight needs only the canary's pods), but the
            # share routed to it fails: say which revision is the unhealthy one.
            b.event(
                "StableUnavailable",
                f"stable revision {stable} has 0/{b.plan.replicas} ready pods: the canary goes "
                "on without waiting for it, and the traffic routed to the stable fails",
                warning=True,
            )

    def _canary_size(self, b: Builder, weight: int) -> int:
        """Replicas of the canary while it is asked to serve ``weight``.

        At least one warm pod, so its availability is known before it takes traffic; never fewer
        than the weight confirmed so far needs.
        """
        if b.plan.replicas <= 0:
            return 0
        confirmed = b.observed.weight or 0
        return max(1, canary_replicas_for(max(weight, confirmed), b.plan.replicas))

    def weight_step(self, b: Builder, canary: str, weight: int) -> bool:
        need = canary_replicas_for(weight, b.plan.replicas)
        b.scale(canary, self._canary_size(b, weight))
        if b.serving(canary, canary=True) < need:
            waiting_for_canary_pods(b, canary, need)
            return False
        if self.route(b, weight):
            return True
        b.memory = replace(b.memory, message=f"setting canary weight to {weight}%")
        return False

    def hold(self, b: Builder, canary: str, weight: int) -> None:
        b.scale(canary, self._canary_size(b, weight))
        # The held weight stays routed: put it back if someone (a GitOps sync) reverted it, once
        # the canary can serve it again; a lower weight meanwhile is the safe side.
        if b.observed.weight != weight and weight > 0:
            if b.serving(canary, canary=True) >= canary_replicas_for(weight, b.plan.replicas):
                self.route(b, weight)
            else:
                b.wait()

    def promote(self, b: Builder) -> None:
        canary, stable = b.memory.canary, b.memory.stable
        assert canary is not None
        assert stable is not None
        replicas = b.plan.replicas
        b.memory = replace(b.memory, phase=Phase.PROGRESSING)
        stage = b.memory.stage
        if stage == Stage.FULL_WEIGHT:
            b.act(SelectRevisions(stable, canary))
            b.scale(stable, replicas)
            b.scale(canary, replicas)
            if b.serving(canary, canary=True) < replicas:
                waiting_for_full_size(b, canary)
                return
            if not self.route(b, 100):
                b.memory = replace(b.memory, message=f"promoting {canary}: routing 100%")
                return
            b.memory = replace(b.memory, stage=Stage.SWITCH_STABLE)
            stage = Stage.SWITCH_STABLE
        if stage == Stage.SWITCH_STABLE:
            # All traffic is on the canary Service; now make the stable Service select it too.
            b.act(SelectRevisions(canary, canary))
            b.scale(canary, replicas)
            others = sum(n for r, n in b.observed.stable_endpoints.items() if r != canary)
            switched = b.observed.stable_endpoints.get(canary, 0) >= replicas and others == 0
            if b.observed.stable_service != canary or not switched:
                b.memory = replace(
                    b.memory, message=f"promoting {canary}: switching the stable Service"
                )
                b.wait()
                return
            b.memory = replace(b.memory, stage=Stage.RETURN_TO_STABLE)
            stage = Stage.RETURN_TO_STABLE
        if stage == Stage.RETURN_TO_STABLE:
            b.act(SelectRevisions(canary, canary))
            if not self.route(b, 0):
                b.memory = replace(
                    b.memory, message=f"promoting {canary}: moving traffic to the stable Service"
                )
                return
            finish_promotion(b, scale_old_now=False)

    def retire(self, b: Builder, *, superseded: bool) -> bool:
        canary, stable = b.memory.canary, b.memory.stable
        assert canary is not None
        assert stable is not None
        b.scale(stable, b.plan.replicas)
        b.act(SelectRevisions(stable, canary))
        if not self.route(b, 0):
            return False
        if not superseded:
            self._drain(b, canary)
        # A superseded canary leaves memory now; its pods drain after scaleDownDelaySeconds like
        # any revision that stopped receiving traffic.
        return True

    def _drain(self, b: Builder, canary: str) -> None:
        """An aborted canary keeps its pods abortScaleDownDelaySeconds, for in-flight requests."""
        if (b.replicas(canary) or 0) == 0:
            return
        due = b.memory.scale_down_at.get(canary)
        if due is None:
            due = b.now + timedelta(seconds=b.plan.abort_scale_down_delay_seconds)
            b.memory = replace(b.memory, scale_down_at={**b.memory.scale_down_at, canary: due})
        if due <= b.now:
            b.scale(canary, 0)
        else:
            b.wait((due - b.now).total_seconds())
