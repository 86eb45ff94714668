"""``decide``: the next actions and memory of one rollout, walked step by step.

The flow every rollout takes, whatever moves its traffic: the first revision becomes stable at
once; a new template starts a canary that walks the steps (setWeight, pause, analysis), answers
control tokens, is promoted after the last step, or is aborted and its traffic sent back.
How a weight becomes real traffic is the strategy's (`weighted`, `ratio`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from coalmine.api.vocabulary import AnalysisVerdict, Control, Phase, Stage, StepAction
from coalmine.machine import adoption
from coalmine.machine.builder import Builder
from coalmine.machine.common import abort, deadline_passed
from coalmine.machine.ratio import ReplicaRatio
from coalmine.machine.strategy import Strategy
from coalmine.machine.types import (
    PENDING_LIMIT,
    AnalysisObserved,
    Decision,
    DeleteRevision,
    FinalizeRouting,
    Memory,
    Observed,
    Plan,
    Restart,
    RestartRevision,
    RestoreRevision,
    ScaleRevision,
    SelectRevisions,
)
from coalmine.machine.weighted import WeightedRouting

WEIGHTED: Strategy = WeightedRouting()
RATIO: Strategy = ReplicaRatio()


def decide(plan: Plan, memory: Memory, observed: Observed, now: datetime) -> Decision:
    """The next actions and memory for one rollout. Pure: same inputs, same decision."""
    b = Builder(plan, memory, observed, now)
    strategy = WEIGHTED if plan.weighted else RATIO
    adoption.remember(b)
    if plan.deleting:
        return _finalize(b, strategy)
    _restore_drift(b)
    if b.memory.stable is None:
        _first_revision(b)
    if _superseded(b):
        # The template moved on (or back) while a canary was in flight: retire it first.
        _retire(b, strategy, superseded=True)
    elif b.memory.canary is None and plan.revision != b.memory.stable:
        _start_canary(b)
    _restart_on_new_steps(b)
    # After the canary starts, so a control sent with a new template applies to it.
    _handle_controls(b, strategy)
    if b.memory.canary is None:
        _steady(b, strategy)
    elif not _superseded(b):
        _advance(b, strategy)
    adoption.track(b)
    _restart_stable(b)
    _scale_down_old(b)
    _prune(b)
    return b.decision()


def _superseded(b: Builder) -> bool:
    canary = b.memory.canary
    if canary is None or canary == b.plan.revision:
        return False
    # Once the stable Service selects the canary, finishing the promotion is the safe way
    # out, even if the template changed again: the next decision starts the newer canary.
    return b.memory.stage not in (Stage.SWITCH_STABLE, Stage.RETURN_TO_STABLE)


def _restart_on_new_steps(b: Builder) -> None:
    """Steps edited mid-canary: walk the new ones from the start (never promote early)."""
    if b.memory.steps_hash == b.plan.steps_hash:
        return
    walking = b.memory.canary is not None and b.memory.stage == Stage.STEPS
    if walking and b.memory.steps_hash and not b.memory.aborted and not b.memory.rollback:
        b.event("StepsChanged", "the steps changed during the canary: starting them over")
        b.start_step(0)
    b.memory = replace(b.memory, steps_hash=b.plan.steps_hash)


def _restore_drift(b: Builder) -> None:
    for revision, observed in sorted(b.observed.revisions.items()):
        if observed.drifted:
            b.act(RestoreRevision(revision))
            b.event(
                "DriftReverted",
                f"the template of Deployment for revision {revision} was edited; restored it "
                "(revisions are immutable: change the CanaryRollout's template instead)",
                warning=True,
            )


# --- controls ----------------------------------------------------------------------------------


def _new_tokens(b: Builder) -> dict[Control, str]:
    fresh = {}
    for control in Control:
        token = b.observed.controls.get(control)
        if token and b.memory.handled.get(control) != token:
            fresh[control] = token
    return fresh


def _handle_controls(b: Builder, strategy: Strategy) -> None:
    """Act once on each new control token; record it so a restart never acts on it again.

    Only the first new token in the Control enum's order acts (abort wins); all are recorded.
    """
    fresh = _new_tokens(b)
    if not fresh:
        return
    b.memory = replace(b.memory, handled={**b.memory.handled, **fresh})
    control = next(control for control in Control if control in fresh)
    match control:
        case Control.ABORT:
            if _walking(b):
                abort(b, "AbortedByUser", "aborted on request (coalmine.dev/abort)")
            else:
                b.event("ControlIgnored", "abort: no canary in flight to abort")
        case Control.RETRY:
            _retry(b)
        case Control.PAUSE:
            _pause_by_user(b)
        case Control.RESUME:
            _resume(b)
        case Control.PROMOTE_FULL | Control.PROMOTE:
            _promote(b, control)
        case Control.RESTART:
            _restart(b)


def _walking(b: Builder) -> bool:
    """A canary of the spec's template walking its steps: what abort and promote act on."""
    return (
        b.memory.canary is not None
        and b.memory.canary == b.plan.revision
        and not b.memory.aborted
        and b.memory.stage == Stage.STEPS
    )


def _in_flight(b: Builder) -> bool:
    """A canary walking its steps or being promoted: what the pause control holds."""
    return (
        b.memory.canary is not None
        and not b.memory.aborted
        and b.memory.stage != Stage.ABORTING
        and not _superseded(b)
    )


def _promote(b: Builder, control: Control) -> None:
    if not _walking(b):
        b.event("ControlIgnored", f"{control}: no canary walking its steps")
    elif b.memory.paused_by_user:
        b.event("ControlIgnored", f"{control}: paused by user; resume first (coalmine.dev/resume)")
    elif control == Control.PROMOTE_FULL:
        b.start_step(len(b.plan.steps))
        b.event("PromotedFull", "promote-full: skipping the remaining steps")
    else:
        _complete_step(b, "promoted on request")


def _pause_by_user(b: Builder) -> None:
    if b.memory.paused_by_user:
        b.event("ControlIgnored", "pause: the rollout is paused already")
        return
    if not _in_flight(b):
        b.event("ControlIgnored", "pause: no canary in flight to hold")
        return
    b.memory = replace(b.memory, paused_at=b.now)
    b.event(
        "PausedByUser",
        f"canary {b.memory.canary} held at {b.memory.desired_weight}%, its timers stopped, "
        "until resumed (coalmine.dev/resume)",
    )


def _resume(b: Builder) -> None:
    paused_at = b.memory.paused_at
    if paused_at is None:
        b.event("ControlIgnored", "resume: the rollout is not paused by the pause control")
        return
    held = max(0.0, (b.now - paused_at).total_seconds())
    b.memory = replace(
        b.memory,
        paused_at=None,
        held_seconds=b.memory.held_seconds + held,
    )
    b.event("Resumed", f"canary {b.memory.canary} goes on after {held:.0f} s held by the user")
    b.wait(0)


def _restart(b: Builder) -> None:
    stable = b.memory.stable
    if stable is None:
        b.event("ControlIgnored", "restart: there is no stable revision yet")
        return
    b.memory = replace(b.memory, restart=Restart(stable, b.now))
    b.event(
        "Restarting",
        f"replacing the pods of stable revision {stable} a few at a time, none taken out of "
        "service before its replacement is ready",
    )


def _restart_stable(b: Builder) -> None:
    """A restart asked of the current stable revision goes on until its template carries it."""
    restart = b.memory.restart
    if restart is None or restart.revision != b.memory.stable:
        return  # none asked, or that revision is stable no more (its pods went anyway)
    observed = b.observed.revisions.get(restart.revision)
    if observed is not None and observed.restarted != restart.stamp:
        b.act(RestartRevision(restart.revision, restart.stamp))


def _retry(b: Builder) -> None:
    canary = b.memory.canary
    if canary is None or canary != b.plan.revision or not b.memory.aborted:
        b.event("ControlIgnored", "retry: only an aborted canary can be retried")
        return
    b.fresh_canary(canary, message=f"retrying revision {canary} from the first step")
    b.event("Retried", f"retrying revision {canary} from the first step")


# --- no canary ---------------------------------------------------------------------------------


def _first_revision(b: Builder) -> None:
    """First apply: the revision becomes stable at once, routed 100%."""
    revision = b.plan.revision
    b.memory = replace(b.memory, stable=revision, promoted=b.memory.promoted | {revision})
    b.fresh_canary(None, message=f"revision {revision} is the first: it becomes stable at once")
    if revision not in b.observed.revisions:
        b.event("RevisionCreated", f"revision {revision} created as the stable revision")


def _start_canary(b: Builder) -> None:
    revision = b.plan.revision
    if revision in b.observed.revisions and revision in b.memory.promoted:
        # Fast rollback: a revision the status records as having been stable, and whose
        # Deployment is still kept, goes straight back, skipping the steps. A Deployment that
        # merely exists proves nothing (it may be a canary a crash left half-made).
        b.fresh_canary(
            revision,
            step=len(b.plan.steps),
            rollback=True,
            message=f"rolling back to kept revision {revision}, skipping the steps",
        )
        b.event("RollingBack", f"template matches kept revision {revision}: skipping the steps")
        return
    b.fresh_canary(revision, message=f"rolling out revision {revision}")
    b.event("RevisionCreated", f"revision {revision} created as the canary")


def _steady(b: Builder, strategy: Strategy) -> None:
    """No canary: keep the stable revision at full size and all traffic on it."""
    stable = b.memory.stable
    assert stable is not None
    b.scale(stable, b.plan.replicas)
    b.act(SelectRevisions(stable, None, adopted=adoption.serves_adopted(b)))
    routed = strategy.route(b, 0)
    available = b.available(stable) >= b.plan.replicas
    if routed and available:
        if b.memory.phase != Phase.HEALTHY:
            b.memory = replace(
                b.memory, phase=Phase.HEALTHY, message=f"revision {stable} is stable and available"
            )
        return
    if not available and deadline_passed(b):
        if b.memory.phase != Phase.FAILED:
            b.event(
                "ProgressDeadlineExceeded",
                f"stable revision {stable} has {b.available(stable)}/{b.plan.replicas} ready pods "
                f"after {b.plan.progress_deadline_seconds:.0f} s",
                warning=True,
            )
        b.memory = replace(
            b.memory,
            phase=Phase.FAILED,
            message=f"stable revision {stable} is not available: "
            f"{b.available(stable)}/{b.plan.replicas} pods ready",
        )
    elif b.memory.phase != Phase.FAILED:
        b.memory = replace(
            b.memory,
            phase=Phase.PROGRESSING,
            message=f"waiting for revision {stable} to be available",
        )
    b.wait()


# --- a canary ----------------------------------------------------------------------------------


def _advance(b: Builder, strategy: Strategy) -> None:
    if b.memory.stage == Stage.ABORTING or b.memory.aborted:
        _retire(b, strategy, superseded=False)
        return
    if b.memory.paused_by_user:
        _held_by_user(b, strategy)
    elif b.memory.stage not in (Stage.FULL_WEIGHT, Stage.SWITCH_STABLE, Stage.RETURN_TO_STABLE):
        if b.memory.step < len(b.plan.steps):
            _walk_step(b, strategy)
        else:
            b.memory = replace(b.memory, stage=Stage.FULL_WEIGHT)
            strategy.promote(b)
    else:
        strategy.promote(b)
    if b.memory.aborted and not b.start.aborted:
        # Aborted during this decision (deadline, analysis): traffic goes back at once.
        _retire(b, strategy, superseded=False)


def _held_by_user(b: Builder, strategy: Strategy) -> None:
    """The pause control: the canary stays at the weight asked so far, whatever the step.

    Walking its steps, it is kept at that weight and size (as a pause step would); being
    promoted, nothing moves to the next stage. Only a failed analysis still acts: it aborts,
    which sends every request back to the stable revision, the safe side an incident wants.
    """
    canary = b.memory.canary
    assert canary is not None
    held = b.memory.desired_weight
    if b.memory.stage == Stage.STEPS:
        for run, what in _runs_judging(b):
            if _aborted_on_failure(b, run, what):
                return
        strategy.keep_stable_serving(b)
        strategy.hold(b, canary, held)
    b.memory = replace(
        b.memory,
        message=f"paused by user at {held}%: held until resumed (coalmine.dev/resume)",
    )


def _runs_judging(b: Builder) -> list[tuple[AnalysisObserved, str]]:
    """The analysis verdicts that judge the canary at its current step."""
    runs = []
    step = b.plan.steps[b.memory.step] if b.memory.step < len(b.plan.steps) else None
    if step is not None and step.kind == StepAction.ANALYSIS and b.observed.step_analysis:
        runs.append((b.observed.step_analysis, "analysis"))
    background = _background_run(b)
    if background is not None:
        runs.append((background, "background analysis"))
    return runs


def _walk_step(b: Builder, strategy: Strategy) -> None:
    canary = b.memory.canary
    assert canary is not None
    step = b.plan.steps[b.memory.step]
    strategy.keep_stable_serving(b)
    if _background_holds(b, canary):
        return
    if step.kind == StepAction.SET_WEIGHT:
        b.memory = replace(b.memory, phase=Phase.PROGRESSING)
        if strategy.weight_step(b, canary, step.weight):
            _complete_step(b, f"canary weight {step.weight}% confirmed")
            _after_step(b)
        return
    # Pauses and analysis hold the canary at the weight reached so far, at the size it needs.
    held = b.memory.desired_weight
    strategy.hold(b, canary, held)
    if b.memory.aborted:
        return
    if step.kind == StepAction.PAUSE and step.pause_seconds is not None:
        left = step.pause_seconds - b.step_elapsed()
        if left <= 0:
            _complete_step(b, f"pause of {step.pause_seconds:g} s elapsed")
            _after_step(b)
            return
        started = b.memory.step_started or b.now
        until = started + timedelta(seconds=step.pause_seconds + b.memory.held_seconds)
        _pause(b, f"paused for {step.pause_seconds:g} s at {held}% (until {until:%H:%M:%S}Z)")
        b.wait(left)
    elif step.kind == StepAction.PAUSE:
        _pause(b, f"paused at {held}% until promoted (coalmine.dev/promote)")
    else:
        _analysis_step(b, canary, held)


def _judged(b: Builder, run: AnalysisObserved, what: str) -> bool:
    """Act on a final verdict that stops the canary; True when it did (abort or pause)."""
    if _aborted_on_failure(b, run, what):
        return True
    if run.verdict == AnalysisVerdict.INCONCLUSIVE:
        _pause(b, f"{what} inconclusive: {run.message} (promote to go on, abort to roll back)")
        return True
    if run.verdict == AnalysisVerdict.ERROR:
        # Errors are no evidence: never promote on them, let a person decide.
        _pause(b, f"{what} could not measure: {run.message} (promote to go on, abort)")
        return True
    return False


def _aborted_on_failure(b: Builder, run: AnalysisObserved, what: str) -> bool:
    """A failed analysis aborts, whatever else holds the canary; True when it did."""
    if run.verdict != AnalysisVerdict.FAILED:
        return False
    abort(b, "AnalysisFailed", f"{what} failed: {run.message}")
    return True


def _background_run(b: Builder) -> AnalysisObserved | None:
    """The background analysis, from the step on which it judges the canary."""
    start = b.plan.background_from_step
    if start is None or b.memory.step < start:
        return None
    return b.observed.background_analysis


def _background_holds(b: Builder, canary: str) -> bool:
    run = _background_run(b)
    return run is not None and _judged(b, run, "background analysis")


def _analysis_step(b: Builder, canary: str, held: int) -> None:
    run = b.observed.step_analysis
    if run is None or run.verdict == AnalysisVerdict.RUNNING:
        b.memory = replace(
            b.memory,
            phase=Phase.PROGRESSING,
            message=f"analysis running at {held}%" + (f": {run.message}" if run else ""),
        )
        b.wait()
        return
    if run.verdict == AnalysisVerdict.SUCCESSFUL:
        _complete_step(b, f"analysis successful: {run.message}")
        _after_step(b)
        return
    _judged(b, run, "analysis")


def _pause(b: Builder, message: str) -> None:
    # One Paused event when a pause begins, not one per look at it.
    same_pause = (
        b.start.phase == Phase.PAUSED
        and b.start.step == b.memory.step
        and b.start.canary == b.memory.canary
    )
    if not same_pause:
        b.event("Paused", message)
    b.memory = replace(b.memory, phase=Phase.PAUSED, message=message)


def _complete_step(b: Builder, why: str) -> None:
    index = b.memory.step
    b.event("StepCompleted", f"step {index + 1}/{len(b.plan.steps)} completed: {why}")
    b.start_step(index + 1, Phase.PROGRESSING)


def _after_step(b: Builder) -> None:
    # A completed step may open the next one at once (pause with zero time, promotion).
    b.wait(0)


def _retire(b: Builder, strategy: Strategy, *, superseded: bool) -> None:
    """Traffic back to stable, confirmed; only then is the canary let go."""
    canary, stable = b.memory.canary, b.memory.stable
    assert canary is not None
    assert stable is not None
    if superseded:
        # Say what happens now, from the first status of the new generation on. A hold by the
        # pause control ends: the canary it held is on its way out.
        b.memory = replace(
            b.memory,
            phase=Phase.PROGRESSING,
            message=f"retiring canary {canary}: the template changed to {b.plan.revision}",
            paused_at=None,
        )
    if not strategy.retire(b, superseded=superseded):
        return
    if superseded:
        reason = "RolledBack" if b.plan.revision == stable else "Superseded"
        b.event(reason, f"canary {canary} retired: the template changed to {b.plan.revision}")
        b.memory = replace(b.memory, desired_weight=0)
        b.fresh_canary(None, message=f"canary {canary} retired")
        b.wait(0)
    else:
        # Traffic is back on the stable revision: say why the canary is out, not how it left.
        b.memory = replace(
            b.memory,
            stage=Stage.ABORTING,
            phase=Phase.DEGRADED,
            message=f"aborted: {b.memory.abort_message}",
        )


# --- housekeeping ------------------------------------------------------------------------------


def _scale_down_old(b: Builder) -> None:
    """Revisions that are neither stable nor canary go to 0 once their delay has passed."""
    keep = {b.memory.stable, b.memory.canary}
    pending: dict[str, datetime] = {}
    canary = b.memory.canary
    draining = canary is not None and b.memory.aborted and canary in b.memory.scale_down_at
    if canary is not None and draining and (b.replicas(canary) or 0) > 0:
        pending[canary] = b.memory.scale_down_at[canary]  # an aborted canary, draining
    for revision, observed in sorted(b.observed.revisions.items()):
        if revision in keep or observed.replicas == 0:
            continue
        due = b.memory.scale_down_at.get(revision)
        if due is None:
            due = b.now + timedelta(seconds=b.plan.scale_down_delay_seconds)
        # Kept until the scale-down is observed, so a failed write is retried, not re-delayed.
        pending[revision] = due
        if due <= b.now:
            b.act(ScaleRevision(revision, 0))
        else:
            b.wait((due - b.now).total_seconds())
    # The status keeps at most PENDING_LIMIT of them: the oldest go to 0 at once to make room.
    for revision in sorted(pending, key=lambda r: pending[r])[
        : max(0, len(pending) - PENDING_LIMIT)
    ]:
        if pending[revision] > b.now:
            b.act(ScaleRevision(revision, 0))
        del pending[revision]
    if pending != dict(b.memory.scale_down_at):
        b.memory = replace(b.memory, scale_down_at=pending)


def _prune(b: Builder) -> None:
    keep = {b.memory.stable, b.memory.canary}
    old = sorted(
        (
            (observed.created, revision)
            for revision, observed in b.observed.revisions.items()
            if revision not in keep and observed.replicas == 0 and observed.ready == 0
        ),
        reverse=True,
    )
    for _, revision in old[b.plan.revision_history_limit :]:
        b.act(DeleteRevision(revision))


def _finalize(b: Builder, strategy: Strategy) -> Decision:
    """Deletion: send traffic back to stable (unless told to leave it), then let go."""
    # A routing object that is gone (say, its namespace is being deleted) holds nothing to
    # restore: waiting for it would keep the finalizer, and the namespace, forever.
    reachable = b.observed.router_error is None
    restore = b.plan.restore_stable_on_delete and strategy.restores_on_delete and reachable
    if restore and b.memory.canary is not None and not strategy.route(b, 0):
        return b.decision()
    if not adoption.let_go(b):
        return b.decision()
    b.act(FinalizeRouting(restore_stable=b.plan.restore_stable_on_delete))
    return b.decision(done_deleting=True)
