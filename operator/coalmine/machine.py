"""The rollout state machine: what to do next, decided from what is, with no I/O.

``decide(rollout, observed, now)`` takes the rollout's spec and its memory (the status), what the
operator just observed in the cluster, and the time, and returns the actions to take and the
memory to write back. It never talks to the API and never reads the clock, so every transition
can be tested exhaustively, and the operator can crash between any two actions: the next call
sees the world as it is and picks up from there.

The safety rules live here and nowhere else:

- the canary only receives a weight its ready pods can serve;
- a step counts as done only when the router's read-back confirms its weight;
- nothing is scaled down before the router confirms that traffic has left it;
- steps are walked one by one; only promote-full and a fast rollback skip them;
- an abort sends all traffic back to the stable revision before anything else happens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from coalmine.api.limits import PENDING_SCALE_DOWN_LIMIT
from coalmine.api.vocabulary import AnalysisVerdict, Control, Phase, Stage, StepAction


@dataclass(frozen=True)
class Step:
    kind: StepAction
    weight: int = 0
    pause_seconds: float | None = None  # None with PAUSE: until promoted


@dataclass(frozen=True)
class AnalysisObserved:
    verdict: AnalysisVerdict
    message: str = ""


@dataclass(frozen=True)
class Plan:
    """What the spec asks for, reduced to what the machine needs."""

    revision: str
    replicas: int
    steps: tuple[Step, ...]
    weighted: bool
    """True when a router applies weights (Gateway API, NGINX, Istio, SMI); False: replica ratio."""
    generation: int = 1
    progress_deadline_seconds: float = 600
    scale_down_delay_seconds: float = 30
    revision_history_limit: int = 3
    deleting: bool = False
    restore_stable_on_delete: bool = True
    steps_hash: str = ""
    """Changes when the steps change; a canary walking old steps starts over on the new ones."""
    background_from_step: int | None = None
    """The step index from which the background analysis judges the canary; None: none."""


@dataclass(frozen=True)
class Memory:
    """The part of the status the machine reads and writes: the operator's only memory."""

    stable: str | None = None
    canary: str | None = None
    step: int = 0
    step_started: datetime | None = None
    stage: Stage = Stage.STEPS
    phase: Phase = Phase.PROGRESSING
    aborted: bool = False
    abort_reason: str | None = None
    abort_message: str | None = None
    rollback: bool = False
    desired_weight: int = 0
    confirmed_weight: int = 0
    message: str = ""
    scale_down_at: Mapping[str, datetime] = field(default_factory=dict)
    handled: Mapping[Control, str] = field(default_factory=dict)
    """Last control token handled per control (promote, promote-full, abort, retry)."""
    steps_hash: str = ""
    """The steps_hash of the plan the current canary walks."""


@dataclass(frozen=True)
class RevisionObserved:
    """One revision's Deployment as observed."""

    replicas: int
    ready: int
    available: int
    created: datetime
    drifted: bool = False


@dataclass(frozen=True)
class Observed:
    revisions: Mapping[str, RevisionObserved]
    weight: int | None
    """The canary weight the router reads back (None: not readable yet)."""
    stable_service: str | None = None
    """Revision selected by the stable Service (None: no Service yet)."""
    canary_service: str | None = None
    stable_endpoints: Mapping[str, int] = field(default_factory=dict)
    """Ready endpoints of the stable Service, counted by the revision of their pods."""
    canary_endpoints: Mapping[str, int] = field(default_factory=dict)
    """Ready endpoints of the canary Service, counted by the revision of their pods."""
    router_error: str | None = None
    controls: Mapping[Control, str] = field(default_factory=dict)
    """Control annotation tokens present on the object, by control name."""
    step_analysis: AnalysisObserved | None = None
    """The verdict of the current analysis step's run (None: not started)."""
    background_analysis: AnalysisObserved | None = None
    """The verdict of the background analysis (None: none, or not started)."""


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRevision:
    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleRevision:
    revision: str
    replicas: int


@dataclass(frozen=True)
class RestoreRevision:
    """Put back the template of a managed Deployment someone edited."""

    revision: str


@dataclass(frozen=True)
class DeleteRevision:
    revision: str


@dataclass(frozen=True)
class SelectRevisions:
    """Point the stable and canary Services at these revisions (canary None: no pods)."""

    stable: str
    canary: str | None


@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class FinalizeRouting:
    restore_stable: bool


@dataclass(frozen=True)
class EmitEvent:
    reason: str
    message: str
    warning: bool = False


Action = (
    CreateRevision
    | ScaleRevision
    | RestoreRevision
    | DeleteRevision
    | SelectRevisions
    | SetWeight
    | FinalizeRouting
    | EmitEvent
)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    memory: Memory
    requeue_after: float | None = None
    """Seconds until the machine wants to look again even if nothing changes; None: on events."""
    done_deleting: bool = False

    @property
    def mutating(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if not isinstance(a, EmitEvent))


PENDING_LIMIT = PENDING_SCALE_DOWN_LIMIT
"""Revisions waiting out scaleDownDelaySeconds that the status can hold (the CRD's maxItems)."""
WAIT = 1.0
"""Seconds between looks while waiting for pods or the router (events usually come sooner)."""


def canary_replicas_for(weight: int, replicas: int) -> int:
    """Ready canary pods needed to serve ``weight`` percent of traffic for ``replicas`` pods."""
    if weight <= 0:
        return 0
    return max(1, math.ceil(replicas * weight / 100))


def ratio_weight(canary_ready: int, stable_ready: int) -> int:
    total = canary_ready + stable_ready
    return 0 if total == 0 else round(100 * canary_ready / total)


# --- the machine -------------------------------------------------------------------------------


class _Builder:
    """Collects actions and the new memory while one decision is made."""

    def __init__(self, plan: Plan, memory: Memory, observed: Observed, now: datetime) -> None:
        self.plan = plan
        self.memory = memory
        self.observed = observed
        self.now = now
        self.actions: list[Action] = []
        self.requeue: float | None = None

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.actions.append(EmitEvent(reason, message, warning))

    def update(self, **changes: object) -> None:
        self.memory = replace(self.memory, **changes)  # type: ignore[arg-type]

    def wait(self, seconds: float = WAIT) -> None:
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def ready(self, revision: str | None) -> int:
        if revision is None:
            return 0
        observed = self.observed.revisions.get(revision)
        return observed.ready if observed else 0

    def replicas(self, revision: str | None) -> int | None:
        if revision is None:
            return None
        observed = self.observed.revisions.get(revision)
        return observed.replicas if observed else None

    def scale(self, revision: str, replicas: int) -> None:
        if revision not in self.observed.revisions:
            self.act(CreateRevision(revision, replicas))
        elif self.observed.revisions[revision].replicas != replicas:
            self.act(ScaleRevision(revision, replicas))

    def confirmed(self, weight: int) -> bool:
        """Whether the router confirms the canary gets exactly ``weight``."""
        return self.observed.weight == weight

    def route(self, weight: int) -> bool:
        """Ask for ``weight``; True once the router confirms it."""
        if self.memory.desired_weight != weight:
            self.event("WeightChanged", f"canary weight {self.memory.desired_weight}% -> {weight}%")
            self.update(desired_weight=weight)
        if self.plan.weighted and self.observed.weight != weight:
            self.act(SetWeight(weight))
        if self.observed.weight is not None:
            self.update(confirmed_weight=self.observed.weight)
        if self.confirmed(weight):
            return True
        self.wait()
        return False

    def decision(self, done_deleting: bool = False) -> Decision:
        return Decision(tuple(self.actions), self.memory, self.requeue, done_deleting)


def decide(plan: Plan, memory: Memory, observed: Observed, now: datetime) -> Decision:
    """The next actions and memory for one rollout. Pure: same inputs, same decision."""
    b = _Builder(plan, memory, observed, now)
    if plan.deleting:
        return _finalize(b)
    _restore_drift(b)
    if b.memory.stable is None:
        _first_revision(b)
    if _superseded(b):
        # The template moved on (or back) while a canary was in flight: retire it first.
        _retire_canary(b, superseded=True)
    elif b.memory.canary is None and plan.revision != b.memory.stable:
        _start_canary(b)
    _restart_on_new_steps(b)
    # After the canary starts, so a control sent with a new template applies to it.
    _handle_controls(b)
    if b.memory.canary is None:
        _steady(b)
    elif not _superseded(b):
        _advance(b)
    _scale_down_old(b)
    _prune(b)
    return b.decision()


def _superseded(b: _Builder) -> bool:
    canary = b.memory.canary
    if canary is None or canary == b.plan.revision:
        return False
    # Once the stable Service selects the canary, finishing the promotion is the safe way
    # out, even if the template changed again: the next decision starts the newer canary.
    return b.memory.stage not in (Stage.SWITCH_STABLE, Stage.RETURN_TO_STABLE)


def _restart_on_new_steps(b: _Builder) -> None:
    """Steps edited mid-canary: walk the new ones from the start (never promote early)."""
    if b.memory.steps_hash == b.plan.steps_hash:
        return
    walking = b.memory.canary is not None and b.memory.stage == Stage.STEPS
    if walking and b.memory.steps_hash and not b.memory.aborted and not b.memory.rollback:
        b.event("StepsChanged", "the steps changed during the canary: starting them over")
        b.update(step=0, step_started=b.now)
    b.update(steps_hash=b.plan.steps_hash)


def _restore_drift(b: _Builder) -> None:
    for revision, observed in sorted(b.observed.revisions.items()):
        if observed.drifted:
            b.act(RestoreRevision(revision))
            b.event(
                "DriftReverted",
                f"the template of Deployment for revision {revision} was edited; restored it "
                "(revisions are immutable: change the CanaryRollout's template instead)",
                warning=True,
            )


def _new_tokens(b: _Builder) -> dict[Control, str]:
    fresh = {}
    for control in Control:
        token = b.observed.controls.get(control)
        if token and b.memory.handled.get(control) != token:
            fresh[control] = token
    return fresh


def _handle_controls(b: _Builder) -> None:
    """Act once on each new control token; record it so a restart never acts on it again."""
    fresh = _new_tokens(b)
    if not fresh:
        return
    b.update(handled={**b.memory.handled, **fresh})
    walking = (
        b.memory.canary is not None
        and b.memory.canary == b.plan.revision
        and not b.memory.aborted
        and b.memory.stage == Stage.STEPS
    )
    if Control.ABORT in fresh:
        # Abort wins over anything asked at the same time.
        if walking:
            _abort(b, "AbortedByUser", "aborted on request (coalmine.dev/abort)")
        else:
            b.event("ControlIgnored", "abort: no canary in flight to abort")
        return
    if Control.RETRY in fresh:
        _retry(b)
        return
    if not walking:
        for control in (Control.PROMOTE_FULL, Control.PROMOTE):
            if control in fresh:
                b.event("ControlIgnored", f"{control}: no canary walking its steps")
        return
    if Control.PROMOTE_FULL in fresh:
        b.update(step=len(b.plan.steps), step_started=b.now)
        b.event("PromotedFull", "promote-full: skipping the remaining steps")
    elif Control.PROMOTE in fresh:
        _complete_step(b, "promoted on request")


def _retry(b: _Builder) -> None:
    if b.memory.canary is None or b.memory.canary != b.plan.revision or not b.memory.aborted:
        b.event("ControlIgnored", "retry: only an aborted canary can be retried")
        return
    b.update(
        aborted=False,
        abort_reason=None,
        abort_message=None,
        step=0,
        step_started=b.now,
        stage=Stage.STEPS,
        phase=Phase.PROGRESSING,
    )
    b.event("Retried", f"retrying revision {b.memory.canary} from the first step")


def _abort(b: _Builder, reason: str, message: str) -> None:
    b.update(
        aborted=True,
        abort_reason=reason,
        abort_message=message,
        stage=Stage.ABORTING,
        phase=Phase.DEGRADED,
        message=f"aborted: {message}",
    )
    b.event("Aborted", f"revision {b.memory.canary}: {message}", warning=True)


def _first_revision(b: _Builder) -> None:
    """First apply: the revision becomes stable at once, routed 100%."""
    revision = b.plan.revision
    b.update(
        stable=revision,
        canary=None,
        step=0,
        step_started=b.now,
        stage=Stage.STEPS,
        phase=Phase.PROGRESSING,
        message=f"revision {revision} is the first: it becomes stable at once",
    )
    if revision not in b.observed.revisions:
        b.event("RevisionCreated", f"revision {revision} created as the stable revision")


def _start_canary(b: _Builder) -> None:
    revision = b.plan.revision
    kept = revision in b.observed.revisions
    if kept:
        # Fast rollback: a revision we still keep goes straight back, skipping the steps.
        b.update(
            canary=revision,
            step=len(b.plan.steps),
            step_started=b.now,
            stage=Stage.STEPS,
            rollback=True,
            aborted=False,
            abort_reason=None,
            abort_message=None,
            phase=Phase.PROGRESSING,
            message=f"rolling back to kept revision {revision}, skipping the steps",
        )
        b.event("RollingBack", f"template matches kept revision {revision}: skipping the steps")
    else:
        b.update(
            canary=revision,
            step=0,
            step_started=b.now,
            stage=Stage.STEPS,
            rollback=False,
            aborted=False,
            abort_reason=None,
            abort_message=None,
            phase=Phase.PROGRESSING,
            message=f"rolling out revision {revision}",
        )
        b.event("RevisionCreated", f"revision {revision} created as the canary")


def _steady(b: _Builder) -> None:
    """No canary: keep the stable revision at full size and all traffic on it."""
    stable = b.memory.stable
    assert stable is not None
    b.scale(stable, b.plan.replicas)
    b.act(SelectRevisions(stable, None))
    routed = b.route(0)
    available = b.ready(stable) >= b.plan.replicas
    if routed and available:
        if b.memory.phase != Phase.HEALTHY:
            b.update(phase=Phase.HEALTHY, message=f"revision {stable} is stable and available")
        return
    deadline = b.memory.step_started
    overdue = (
        deadline is not None
        and (b.now - deadline).total_seconds() > b.plan.progress_deadline_seconds
    )
    if not available and overdue:
        if b.memory.phase != Phase.FAILED:
            b.event(
                "ProgressDeadlineExceeded",
                f"stable revision {stable} has {b.ready(stable)}/{b.plan.replicas} ready pods "
                f"after {b.plan.progress_deadline_seconds:.0f} s",
                warning=True,
            )
        b.update(
            phase=Phase.FAILED,
            message=f"stable revision {stable} is not available: "
            f"{b.ready(stable)}/{b.plan.replicas} pods ready",
        )
    elif b.memory.phase != Phase.FAILED:
        b.update(phase=Phase.PROGRESSING, message=f"waiting for revision {stable} to be available")
    b.wait()


def _advance(b: _Builder) -> None:
    if b.memory.stage == Stage.ABORTING or b.memory.aborted:
        _retire_canary(b, superseded=False)
        return
    if b.memory.stage in (Stage.FULL_WEIGHT, Stage.SWITCH_STABLE, Stage.RETURN_TO_STABLE):
        _promote(b)
        return
    if b.memory.step >= len(b.plan.steps):
        b.update(stage=Stage.FULL_WEIGHT)
        _promote(b)
        return
    _walk_step(b)


def _keep_stable_serving(b: _Builder) -> None:
    stable, canary = b.memory.stable, b.memory.canary
    assert stable is not None
    if b.plan.weighted:
        # Weighted routers keep the stable at full size until the promotion is confirmed.
        b.scale(stable, b.plan.replicas)
    b.act(SelectRevisions(stable, canary))


def _deadline_passed(b: _Builder) -> bool:
    started = b.memory.step_started or b.now
    return (b.now - started).total_seconds() > b.plan.progress_deadline_seconds


def _walk_step(b: _Builder) -> None:
    canary = b.memory.canary
    assert canary is not None
    step = b.plan.steps[b.memory.step]
    _keep_stable_serving(b)
    b.update(phase=Phase.PROGRESSING)
    if _background_holds(b, canary):
        return
    if step.kind == StepAction.SET_WEIGHT:
        _weight_step(b, canary, step.weight)
        return
    # Pauses and analysis hold the canary at the weight reached so far, at the size it needs.
    held = b.memory.desired_weight
    if b.plan.weighted:
        b.scale(canary, _canary_size(b, held))
    else:
        _ratio_converge(b, canary, held)
    if step.kind == StepAction.PAUSE and step.pause_seconds is not None:
        started = b.memory.step_started or b.now
        left = step.pause_seconds - (b.now - started).total_seconds()
        if left <= 0:
            _complete_step(b, f"pause of {step.pause_seconds:g} s elapsed")
            _after_step(b)
            return
        _pause(b, f"paused for {step.pause_seconds:g} s at {held}% ({left:.0f} s left)")
        b.wait(left)
    elif step.kind == StepAction.PAUSE:
        _pause(b, f"paused at {held}% until promoted (coalmine.dev/promote)")
    else:
        _analysis_step(b, canary, held)


def _judged(b: _Builder, canary: str, run: AnalysisObserved, what: str) -> bool:
    """Act on a final verdict that stops the canary; True when it did (abort or pause)."""
    if run.verdict == AnalysisVerdict.FAILED:
        _abort(b, "AnalysisFailed", f"{what} failed: {run.message}")
        _retire_canary(b, superseded=False)
        return True
    if run.verdict == AnalysisVerdict.INCONCLUSIVE:
        _pause(b, f"{what} inconclusive: {run.message} (promote to go on, abort to roll back)")
        return True
    if run.verdict == AnalysisVerdict.ERROR:
        # Errors are no evidence: never promote on them, let a person decide.
        _pause(b, f"{what} could not measure: {run.message} (promote to go on, abort)")
        return True
    return False


def _background_holds(b: _Builder, canary: str) -> bool:
    start = b.plan.background_from_step
    run = b.observed.background_analysis
    if start is None or run is None or b.memory.step < start:
        return False
    return _judged(b, canary, run, "background analysis")


def _analysis_step(b: _Builder, canary: str, held: int) -> None:
    run = b.observed.step_analysis
    if run is None or run.verdict == AnalysisVerdict.RUNNING:
        b.update(message=f"analysis running at {held}%" + (f": {run.message}" if run else ""))
        b.wait()
        return
    if run.verdict == AnalysisVerdict.SUCCESSFUL:
        _complete_step(b, f"analysis successful: {run.message}")
        _after_step(b)
        return
    _judged(b, canary, run, "analysis")


def _pause(b: _Builder, message: str) -> None:
    if b.memory.phase != Phase.PAUSED:
        b.event("Paused", message)
    b.update(phase=Phase.PAUSED, message=message)


def _canary_size(b: _Builder, weight: int) -> int:
    """Replicas the canary Deployment should have while it is asked to serve ``weight``."""
    if not b.plan.weighted:
        return canary_replicas_for(weight, b.plan.replicas)
    # Weighted routers keep at least one warm canary pod so its availability is known before
    # it takes traffic; never fewer than the weight confirmed so far needs.
    confirmed = b.observed.weight or 0
    return max(1, canary_replicas_for(max(weight, confirmed), b.plan.replicas))


def _weight_step(b: _Builder, canary: str, weight: int) -> None:
    need = canary_replicas_for(weight, b.plan.replicas)
    if b.plan.weighted:
        b.scale(canary, _canary_size(b, weight))
        if _serving(b, canary) < need:
            _waiting_for_pods(b, canary, need)
            return
        if b.route(weight):
            _complete_step(b, f"canary weight {weight}% confirmed")
            _after_step(b)
        else:
            b.update(message=f"setting canary weight to {weight}%")
        return
    _ratio_step(b, canary, weight)


def _serving(b: _Builder, canary: str) -> int:
    """Canary pods that can take traffic: ready, and ready in the canary Service's endpoints."""
    return min(b.ready(canary), b.observed.canary_endpoints.get(canary, 0))


def _ratio_step(b: _Builder, canary: str, weight: int) -> None:
    """Replica ratio: the weight is the share of ready pods behind the one Service."""
    if _ratio_converge(b, canary, weight):
        sizes = canary_replicas_for(weight, b.plan.replicas)
        _complete_step(b, f"canary serves {sizes}/{b.plan.replicas} pods ({b.observed.weight}%)")
        _after_step(b)


def _ratio_converge(b: _Builder, canary: str, weight: int) -> bool:
    """Move replica counts toward ``weight``; True once the endpoints show the split."""
    stable = b.memory.stable
    assert stable is not None
    canary_size = canary_replicas_for(weight, b.plan.replicas)
    stable_size = b.plan.replicas - canary_size
    b.update(desired_weight=weight)
    # Grow first, shrink second: serving capacity never drops below spec.replicas.
    if b.ready(canary) < canary_size:
        b.scale(canary, max(canary_size, b.replicas(canary) or 0))
        _waiting_for_pods(b, canary, canary_size)
        return False
    if b.ready(stable) < stable_size:
        b.scale(stable, max(stable_size, b.replicas(stable) or 0))
        _waiting_for_pods(b, stable, stable_size)
        return False
    b.scale(canary, canary_size)
    b.scale(stable, stable_size)
    expected = ratio_weight(canary_size, stable_size)
    if b.observed.weight is not None:
        b.update(confirmed_weight=b.observed.weight)
    served = (
        b.observed.canary_endpoints.get(canary, 0) == canary_size
        and b.observed.stable_endpoints.get(stable, 0) == stable_size
    )
    if served and b.observed.weight == expected:
        return True
    b.update(message=f"scaling to {canary_size} canary and {stable_size} stable pods")
    b.wait()
    return False


def _waiting_for_pods(b: _Builder, canary: str, need: int) -> None:
    if _deadline_passed(b):
        b.event(
            "ProgressDeadlineExceeded",
            f"canary {canary} has {b.ready(canary)}/{need} ready pods after "
            f"{b.plan.progress_deadline_seconds:.0f} s",
            warning=True,
        )
        _abort(
            b,
            "ProgressDeadlineExceeded",
            f"canary {canary} did not get {need} ready pods within "
            f"{b.plan.progress_deadline_seconds:.0f} s",
        )
        _retire_canary(b, superseded=False)
        return
    b.update(message=f"waiting for {need} ready canary pods ({b.ready(canary)} ready)")
    b.wait()


def _complete_step(b: _Builder, why: str) -> None:
    index = b.memory.step
    b.event("StepCompleted", f"step {index + 1}/{len(b.plan.steps)} completed: {why}")
    b.update(step=index + 1, step_started=b.now)


def _after_step(b: _Builder) -> None:
    # A completed step may open the next one at once (pause with zero time, promotion).
    b.wait(0)


def _promote(b: _Builder) -> None:
    canary, stable = b.memory.canary, b.memory.stable
    assert canary is not None
    assert stable is not None
    replicas = b.plan.replicas
    b.update(phase=Phase.PROGRESSING)
    if not b.plan.weighted:
        # Replica ratio: full size first, then the old stable leaves the Service by scaling.
        b.update(desired_weight=100)
        b.scale(canary, replicas)
        if b.ready(canary) < replicas:
            _waiting_for_full_size(b, canary)
            return
        _finish_promotion(b, scale_old_now=True)
        return
    stage = b.memory.stage
    if stage == Stage.FULL_WEIGHT:
        b.act(SelectRevisions(stable, canary))
        b.scale(stable, replicas)
        b.scale(canary, replicas)
        if _serving(b, canary) < replicas:
            _waiting_for_full_size(b, canary)
            return
        if not b.route(100):
            b.update(message=f"promoting {canary}: routing 100%")
            return
        b.update(stage=Stage.SWITCH_STABLE)
        stage = Stage.SWITCH_STABLE
    if stage == Stage.SWITCH_STABLE:
        # All traffic is on the canary Service; now make the stable Service select it too.
        b.act(SelectRevisions(canary, canary))
        b.scale(canary, replicas)
        others = sum(n for r, n in b.observed.stable_endpoints.items() if r != canary)
        switched = b.observed.stable_endpoints.get(canary, 0) >= replicas and others == 0
        if b.observed.stable_service != canary or not switched:
            b.update(message=f"promoting {canary}: switching the stable Service")
            b.wait()
            return
        b.update(stage=Stage.RETURN_TO_STABLE)
        stage = Stage.RETURN_TO_STABLE
    if stage == Stage.RETURN_TO_STABLE:
        b.act(SelectRevisions(canary, canary))
        if not b.route(0):
            b.update(message=f"promoting {canary}: moving traffic to the stable Service")
            return
        _finish_promotion(b, scale_old_now=False)


def _waiting_for_full_size(b: _Builder, canary: str) -> None:
    if b.memory.rollback:
        # A rollback target was healthy once: keep waiting rather than abort the way back.
        b.update(message=f"rolling back: waiting for {b.plan.replicas} ready pods of {canary}")
        b.wait()
    else:
        _waiting_for_pods(b, canary, b.plan.replicas)


def _finish_promotion(b: _Builder, *, scale_old_now: bool) -> None:
    canary, old = b.memory.canary, b.memory.stable
    assert canary is not None
    assert old is not None
    reason = "RolledBack" if b.memory.rollback else "Promoted"
    what = "rolled back to" if b.memory.rollback else "promoted"
    b.event(reason, f"{what} revision {canary}; revision {old} is retired")
    due = b.now if scale_old_now else b.now + timedelta(seconds=b.plan.scale_down_delay_seconds)
    b.update(
        stable=canary,
        canary=None,
        step=0,
        step_started=b.now,
        stage=Stage.STEPS,
        rollback=False,
        desired_weight=0,
        confirmed_weight=0,
        phase=Phase.HEALTHY,
        scale_down_at={**b.memory.scale_down_at, old: due},
        message=f"revision {canary} is stable",
    )
    b.act(SelectRevisions(canary, None))
    b.wait(0)


def _retire_canary(b: _Builder, *, superseded: bool) -> None:
    """Traffic back to stable, confirmed; only then scale the canary down."""
    canary, stable = b.memory.canary, b.memory.stable
    assert canary is not None
    assert stable is not None
    b.scale(stable, b.plan.replicas)
    if not b.plan.weighted:
        # Replica ratio: the stable must be back at full size before the canary leaves.
        b.update(desired_weight=0)
        if b.observed.weight is not None:
            b.update(confirmed_weight=b.observed.weight)
        if b.ready(stable) < b.plan.replicas:
            b.wait()
            return
        b.scale(canary, 0)
    else:
        b.act(SelectRevisions(stable, canary))
        if not b.route(0):
            return
        b.scale(canary, 0)
    if superseded:
        reason = "RolledBack" if b.plan.revision == stable else "Superseded"
        b.event(reason, f"canary {canary} retired: the template changed to {b.plan.revision}")
        b.update(
            canary=None,
            aborted=False,
            abort_reason=None,
            abort_message=None,
            stage=Stage.STEPS,
            step=0,
            step_started=b.now,
            desired_weight=0,
            phase=Phase.PROGRESSING,
        )
        b.wait(0)
    else:
        b.update(stage=Stage.ABORTING, phase=Phase.DEGRADED)
        if b.plan.weighted:
            b.act(SelectRevisions(stable, canary))


def _scale_down_old(b: _Builder) -> None:
    """Revisions that are neither stable nor canary go to 0 once their delay has passed."""
    keep = {b.memory.stable, b.memory.canary}
    pending: dict[str, datetime] = {}
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
        b.update(scale_down_at=pending)


def _prune(b: _Builder) -> None:
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


def _finalize(b: _Builder) -> Decision:
    """Deletion: send traffic back to stable (unless told to leave it), then let go."""
    # A routing object that is gone (say, its namespace is being deleted) holds nothing to
    # restore: waiting for it would keep the finalizer, and the namespace, forever.
    reachable = b.observed.router_error is None
    restore = b.plan.restore_stable_on_delete and b.plan.weighted and reachable
    if restore and b.memory.canary is not None and not b.route(0):
        return b.decision()
    b.act(FinalizeRouting(restore_stable=b.plan.restore_stable_on_delete))
    return b.decision(done_deleting=True)
