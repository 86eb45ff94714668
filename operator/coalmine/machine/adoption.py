"""Adopting a user's Deployment (spec.workloadRef): take its traffic over, then scale it down.

The rollout's first revision is the Deployment's pod template, so it becomes stable at once,
beside the Deployment. Until it has its pods ready and the router (if any) sends everything to
the stable Service, that Service (and the one of every revision) selects the Deployment's pods
as well, by the Deployment's own selector: a route switched to the rollout's Services early
still finds ready pods. Then the Services select the stable revision alone (the take-over), and
the Deployment is scaled down as ``scaleDown`` says: never, to zero scaleDownDelaySeconds after
the take-over (onSuccess: no pod of it leaves while coalmine routes to it), or a pod less for
each ready pod of the stable revision (progressively, like a rolling update of it). It is never
deleted; deleting the rollout scales it back up, and waits for its pods, before letting go.

coalmine never fights over its replicas: it writes them only when its own decision changes,
with an annotation saying what it wrote, and a count someone else set afterwards (a GitOps sync
without ignoreDifferences) is reported once and left alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from coalmine.api.vocabulary import ScaleDown
from coalmine.machine.builder import Builder
from coalmine.machine.types import ReleaseAdopted, ScaleAdopted


def remember(b: Builder) -> None:
    """Memory about another Deployment than the one named now means nothing: start afresh."""
    adoption = b.plan.adoption
    named = adoption.deployment if adoption is not None else None
    if b.memory.adopted != named:
        b.memory = replace(b.memory, adopted=named, taken_over=None, adopted_replicas=None)


def serves_adopted(b: Builder) -> bool:
    """Whether the rollout's Services still select the adopted Deployment's pods.

    Until the take-over: no canary yet, the stable revision with all its pods ready, and the
    router reading back that the stable Service gets everything (with the replica ratio, that
    holds once the Service has endpoints).
    """
    adopted = b.observed.adopted
    stable = b.memory.stable
    if b.plan.adoption is None or adopted is None or not adopted.selectable:
        return False
    if b.memory.taken_over is not None or b.memory.canary is not None or stable is None:
        return False
    taken_over = b.available(stable) >= b.plan.replicas and b.observed.weight == 0
    return not taken_over


def track(b: Builder) -> None:
    """After the decision's own work: note the take-over, and scale the Deployment down."""
    adoption, adopted, stable = b.plan.adoption, b.observed.adopted, b.memory.stable
    if adoption is None or adopted is None or stable is None:
        return
    if b.memory.taken_over is None and b.observed.stable_service == stable:
        b.memory = replace(b.memory, taken_over=b.now)
        b.event(
            "TakenOver",
            f"revision {stable} took over from Deployment {adoption.deployment}: the rollout's "
            f"Services select the revision's pods alone",
        )
    want = _scaled_down(b)
    if want is not None:
        _set_replicas(b, want, reason=f"scaleDown: {adoption.scale_down}")


def _scaled_down(b: Builder) -> int | None:
    """What scaleDown wants of the Deployment now; None: leave it as it is."""
    adoption, adopted, stable = b.plan.adoption, b.observed.adopted, b.memory.stable
    assert adoption is not None
    assert adopted is not None
    assert stable is not None
    if adoption.scale_down == ScaleDown.PROGRESSIVELY:
        # Only ever down: a pod of it leaves for each ready pod of the stable revision.
        return min(adopted.replicas, max(0, b.plan.replicas - b.available(stable)))
    if adoption.scale_down == ScaleDown.ON_SUCCESS and b.memory.taken_over is not None:
        due = b.memory.taken_over + timedelta(seconds=b.plan.scale_down_delay_seconds)
        if due > b.now:
            b.wait((due - b.now).total_seconds())
            return None
        return 0 if b.available(stable) >= b.plan.replicas else None
    return None


def _set_replicas(b: Builder, want: int, *, reason: str) -> None:
    adoption, adopted = b.plan.adoption, b.observed.adopted
    assert adoption is not None
    assert adopted is not None
    name = adoption.deployment
    if adopted.replicas == want:
        if b.memory.adopted_replicas is not None and b.memory.adopted_replicas != want:
            b.memory = replace(b.memory, adopted_replicas=want)
        return
    if b.memory.adopted_replicas == want and adopted.marked == want:
        # coalmine set it, and someone else changed it since: never a fight over it.
        b.event(
            "AdoptedScaledElsewhere",
            f"Deployment {name} has {adopted.replicas} replicas, set after coalmine set "
            f"{want}: left as it is (a GitOps sync? ignore /spec/replicas of it: "
            "docs/argocd.md)",
            warning=True,
        )
        return
    b.memory = replace(b.memory, adopted_replicas=want)
    b.act(ScaleAdopted(want))
    b.event(
        "AdoptedScaled", f"Deployment {name} scaled from {adopted.replicas} to {want} ({reason})"
    )
    b.wait()


def let_go(b: Builder) -> bool:
    """Deletion: the Deployment back at full size and ready, then released. True once done.

    Only a Deployment coalmine scaled is scaled back (to spec.replicas, what the rollout served
    with). Waiting for its pods is bounded by the progress deadline from the deletion on.
    """
    adoption, adopted = b.plan.adoption, b.observed.adopted
    if adoption is None or adopted is None:
        return True  # none adopted, or gone: nothing to scale back or release
    if b.memory.adopted == adoption.deployment and b.memory.adopted_replicas is not None:
        want = b.plan.replicas
        _set_replicas(b, want, reason="the CanaryRollout is deleted")
        since = b.plan.deleting_since or b.now
        waited = (b.now - since).total_seconds()
        if adopted.ready < want and waited <= b.plan.progress_deadline_seconds:
            b.memory = replace(
                b.memory,
                message=f"deleting: waiting for Deployment {adoption.deployment} to have "
                f"{want} ready pods ({adopted.ready} ready) before letting go",
            )
            b.wait()
            return False
        if adopted.ready < want:
            b.event(
                "AdoptedNotAvailable",
                f"Deployment {adoption.deployment} has {adopted.ready}/{want} ready pods after "
                f"{b.plan.progress_deadline_seconds:.0f} s: letting go of it all the same",
                warning=True,
            )
    if adopted.labelled:  # released once only, whatever passes deletion takes
        b.act(ReleaseAdopted())
        b.event("Released", f"Deployment {adoption.deployment} is the user's alone again")
    return True
