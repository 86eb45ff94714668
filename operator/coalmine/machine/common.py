"""Decisions both traffic strategies share: deadlines, waiting for pods, finishing a promotion."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from coalmine.api.vocabulary import Phase, Stage
from coalmine.machine.builder import Builder
from coalmine.machine.types import SelectRevisions


def deadline_passed(b: Builder) -> bool:
    """Whether the step has waited longer than the progress deadline; never while the pause
    control holds it (its timers stop)."""
    if b.memory.paused_by_user:
        return False
    return b.step_elapsed() > b.plan.progress_deadline_seconds


def abort(b: Builder, reason: str, message: str) -> None:
    b.memory = replace(
        b.memory,
        # An abort outranks a pause: there is nothing left to hold.
        paused_at=None,
        aborted=True,
        abort_reason=reason,
        abort_message=message,
        stage=Stage.ABORTING,
        phase=Phase.DEGRADED,
        message=f"aborted: {message}",
    )
    b.event("Aborted", f"revision {b.memory.canary}: {message}", warning=True)


def waiting_for_canary_pods(b: Builder, canary: str, need: int) -> bool:
    """Wait for ``need`` ready canary pods; abort at the progress deadline. True when aborted."""
    if deadline_passed(b):
        deadline = f"{b.plan.progress_deadline_seconds:.0f} s"
        b.event(
            "ProgressDeadlineExceeded",
            f"canary {canary} has {b.available(canary)}/{need} ready pods after {deadline}",
            warning=True,
        )
        abort(
            b,
            "ProgressDeadlineExceeded",
            f"canary {canary} did not get {need} ready pods within {deadline}",
        )
        return True
    b.memory = replace(
        b.memory,
        message=f"waiting for {need} ready canary pods of {canary} ({b.available(canary)} ready)",
    )
    b.wait()
    return False


def waiting_for_stable_pods(b: Builder, stable: str, need: int) -> bool:
    """Wait for ``need`` ready pods of the stable revision, up to the progress deadline.

    The stable revision never holds a healthy canary back for good: past the deadline (or at once
    when it has no ready pod at all, so it serves nothing anyway) this returns True and the canary
    carries on; the message and an event name the stable revision as the unhealthy one.
    """
    ready = b.available(stable)
    # A Deployment whose status is older than its spec (just scaled) reads 0 ready: unknown,
    # not none. Its endpoints say whether it still serves; only then may the canary go on.
    serving = b.observed.stable_endpoints.get(stable, 0)
    if (ready == 0 and serving == 0) or deadline_passed(b):
        b.event(
            "StableUnavailable",
            f"stable revision {stable} has {ready}/{need} ready pods: the canary goes on without "
            "waiting for it",
            warning=True,
        )
        return True
    b.memory = replace(
        b.memory,
        message=f"waiting for {need} ready pods of stable revision {stable} ({ready} ready)",
    )
    b.wait()
    return False


def waiting_for_full_size(b: Builder, canary: str) -> bool:
    """Promotion waits for the canary at full size; True when it aborted instead."""
    if b.memory.rollback:
        # A rollback target was healthy once: keep waiting rather than abort the way back.
        b.memory = replace(
            b.memory,
            message=f"rolling back: waiting for {b.plan.replicas} ready pods of {canary}",
        )
        b.wait()
        return False
    return waiting_for_canary_pods(b, canary, b.plan.replicas)


def finish_promotion(b: Builder, *, scale_old_now: bool) -> None:
    canary, old = b.memory.canary, b.memory.stable
    assert canary is not None
    assert old is not None
    reason = "RolledBack" if b.memory.rollback else "Promoted"
    what = "rolled back to" if b.memory.rollback else "promoted"
    b.event(reason, f"{what} revision {canary}; revision {old} is retired")
    due = b.now if scale_old_now else b.now + timedelta(seconds=b.plan.scale_down_delay_seconds)
    b.memory = replace(
        b.memory,
        stable=canary,
        desired_weight=0,
        confirmed_weight=0,
        scale_down_at={**b.memory.scale_down_at, old: due},
        promoted=b.memory.promoted | {canary},
    )
    b.fresh_canary(None, phase=Phase.HEALTHY, message=f"revision {canary} is stable")
    b.act(SelectRevisions(canary, None))
    b.wait(0)
