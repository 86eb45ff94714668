"""Translation between the CanaryRollout's status (the wire format) and the machine's memory.

The state machine works on small frozen dataclasses; the status is what users and other tools
read. This module maps one onto the other and derives the human parts of the status (conditions,
history, the ``2/5`` step display) from the machine's decisions. Pure: no I/O, time passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from coalmine import machine as m
from coalmine.analysis.spec import BackgroundAnalysis
from coalmine.api.limits import HISTORY_LIMIT
from coalmine.api.resource import CanaryRollout
from coalmine.api.status import (
    AdoptionStatus,
    CanaryRolloutStatus,
    Controls,
    PendingScaleDown,
    RestartRecord,
    RevisionRecord,
)
from coalmine.api.template import images_of
from coalmine.api.vocabulary import (
    AnalysisVerdict,
    ConditionStatus,
    ConditionType,
    Control,
    DeletionPolicy,
    Outcome,
    Phase,
    Stage,
    StepAction,
)
from coalmine.labels import rollout_selector


def plan_from(rollout: CanaryRollout, *, deleting: bool = False) -> m.Plan:
    spec = rollout.spec
    steps = []
    for step in spec.steps:
        if step.action == StepAction.SET_WEIGHT:
            steps.append(m.Step(StepAction.SET_WEIGHT, weight=int(step.set_weight or 0)))
        elif step.action == StepAction.PAUSE:
            length = step.pause.length if step.pause is not None else None
            seconds = length.total_seconds() if length is not None else None
            steps.append(m.Step(StepAction.PAUSE, pause_seconds=seconds))
        else:
            steps.append(m.Step(StepAction.ANALYSIS))
    ref = spec.workload_ref
    return m.Plan(
        # An adopted Deployment's template is put in by the operator once read; a rollout
        # being deleted whose Deployment is gone has none, and needs none.
        revision=spec.revision if spec.template is not None else "",
        replicas=spec.replicas,
        steps=tuple(steps),
        weighted=spec.routing.weighted,
        generation=rollout.metadata.generation or 1,
        progress_deadline_seconds=spec.progress_deadline_seconds,
        scale_down_delay_seconds=spec.scale_down_delay_seconds,
        abort_scale_down_delay_seconds=spec.abort_scale_down_delay_seconds,
        revision_history_limit=spec.revision_history_limit,
        deleting=deleting,
        restore_stable_on_delete=spec.deletion_policy == DeletionPolicy.RESTORE_STABLE,
        steps_hash=spec.steps_hash(),
        background_from_step=(
            None
            if spec.analysis is None
            else BackgroundAnalysis.from_object(spec.analysis, path="spec.analysis").starting_step
        ),
        adoption=None if ref is None else m.Adoption(ref.name, ref.scale_down),
        deleting_since=rollout.metadata.deletion_timestamp if deleting else None,
    )


def memory_from(status: CanaryRolloutStatus) -> m.Memory:
    handled = {}
    for control in Control:
        token = getattr(status.controls, control.status_field)
        if token:
            handled[control] = token
    return m.Memory(
        stable=status.stable_revision,
        canary=status.canary_revision,
        step=status.current_step_index or 0,
        step_started=status.step_started_at,
        stage=status.stage if status.stage is not None else Stage.STEPS,
        phase=status.phase if status.phase is not None else Phase.PROGRESSING,
        aborted=status.abort_reason is not None,
        abort_reason=status.abort_reason,
        abort_message=status.abort_message,
        rollback=bool(status.rollback),
        desired_weight=status.desired_weight or 0,
        confirmed_weight=status.confirmed_weight or 0,
        message=status.message or "",
        scale_down_at={p.revision: p.scale_down_at for p in status.pending_scale_downs},
        handled=handled,
        steps_hash=status.steps_hash or "",
        paused_at=status.paused_by_user_at if status.paused_by_user else None,
        held_seconds=status.step_held_seconds or 0.0,
        restart=(
            m.Restart(status.restart.revision, status.restart.requested_at)
            if status.restart is not None
            else None
        ),
        adopted=status.adoption.deployment if status.adoption else None,
        taken_over=status.adoption.taken_over_at if status.adoption else None,
        adopted_replicas=status.adoption.replicas if status.adoption else None,
        # History keeps the last HISTORY_LIMIT revisions: an older kept revision is not known to
        # have been stable, and going back to it walks the steps (the safe side).
        promoted=frozenset(
            {r.revision for r in status.history if r.outcome == Outcome.PROMOTED}
            | ({status.stable_revision} if status.stable_revision else set())
        ),
    )


def controls_on(annotations: Mapping[str, str]) -> dict[Control, str]:
    """The control tokens present on the object, by control."""
    return {
        control: annotations[control.annotation]
        for control in Control
        if annotations.get(control.annotation)
    }


def _record(
    history: list[RevisionRecord],
    revision: str,
    outcome: Outcome,
    now: datetime,
    *,
    images: list[str] | None = None,
    message: str | None = None,
) -> list[RevisionRecord]:
    records = [r for r in history if r.revision != revision]
    old = next((r for r in history if r.revision == revision), None)
    started = old.started_at if old is not None and outcome != Outcome.IN_PROGRESS else now
    if images is None:
        images = list(old.images) if old is not None else []
    record = RevisionRecord(
        revision=revision,
        outcome=outcome,
        images=images,
        started_at=started,
        finished_at=None if outcome == Outcome.IN_PROGRESS else now,
        message=message or None,
    )
    return [record, *records][:HISTORY_LIMIT]


def status_from(
    rollout: CanaryRollout,
    decision: m.Decision,
    now: datetime,
    *,
    router_error: str | None = None,
    stable_ready: int = 0,
    replicas: int | None = None,
) -> CanaryRolloutStatus:
    """The new status: the machine's memory plus conditions, history and display fields.

    ``stable_ready`` is the number of ready endpoints of the stable Service: Available is True
    only while it is above 0. ``replicas`` is what the revisions' Deployments are sized for
    (the scale subresource's status.replicas); None keeps the last value.
    """
    old = rollout.status
    memory = decision.memory
    status = old.model_copy(deep=True)
    status.phase = memory.phase
    problem = decision.problem
    status.message = (
        router_error or (problem.message if problem else None) or memory.message or None
    )
    status.observed_generation = rollout.metadata.generation
    status.stable_revision = memory.stable
    status.canary_revision = memory.canary
    status.stage = memory.stage if memory.canary else None
    status.rollback = memory.rollback or None
    status.current_step_index = memory.step if memory.canary else None
    status.step_display = (
        f"{min(memory.step, len(rollout.spec.steps))}/{len(rollout.spec.steps)}"
        if memory.canary
        else None
    )
    status.step_started_at = memory.step_started
    status.desired_weight = memory.desired_weight
    status.confirmed_weight = memory.confirmed_weight
    status.abort_reason = memory.abort_reason
    status.abort_message = memory.abort_message
    if memory.aborted and old.aborted_at is None:
        status.aborted_at = now
    elif not memory.aborted:
        status.aborted_at = None
    if memory.phase == Phase.PAUSED:
        status.pause_started_at = old.pause_started_at or now
    else:
        status.pause_started_at = None
    status.pending_scale_downs = [
        PendingScaleDown(revision=r, scale_down_at=t)
        for r, t in sorted(memory.scale_down_at.items())
    ]
    status.controls = Controls(
        **{Control(c).status_field: token for c, token in memory.handled.items()}
    )
    status.steps_hash = memory.steps_hash or None
    status.adoption = (
        AdoptionStatus(
            deployment=memory.adopted,
            taken_over_at=memory.taken_over,
            replicas=memory.adopted_replicas,
        )
        if memory.adopted is not None
        else None
    )
    if replicas is not None:
        status.replicas = replicas
    status.selector = rollout_selector(rollout.metadata.name)
    status.paused_by_user = memory.paused_by_user or None
    status.paused_by_user_at = memory.paused_at
    status.step_held_seconds = round(memory.held_seconds, 3) or None
    status.restart = (
        RestartRecord(revision=memory.restart.revision, requested_at=memory.restart.at)
        if memory.restart is not None
        else None
    )
    status.history = _history(rollout, decision, now)
    _conditions(
        status, rollout, decision, now, router_error=router_error, stable_ready=stable_ready
    )
    return status


def _history(rollout: CanaryRollout, decision: m.Decision, now: datetime) -> list[RevisionRecord]:
    history = list(rollout.status.history)
    before = rollout.status.canary_revision
    memory = decision.memory
    reasons = {a.reason: a for a in decision.actions if isinstance(a, m.EmitEvent)}
    images = images_of(rollout.spec.template or {})
    if memory.canary is not None and memory.canary != before:
        history = _record(history, memory.canary, Outcome.IN_PROGRESS, now, images=images)
    if memory.stable is not None and not history:
        history = _record(history, memory.stable, Outcome.PROMOTED, now, images=images)
    if before is not None:
        if "Promoted" in reasons or ("RolledBack" in reasons and memory.stable == before):
            history = _record(history, before, Outcome.PROMOTED, now)
        elif "Aborted" in reasons:
            history = _record(history, before, Outcome.ABORTED, now, message=memory.abort_message)
        elif "Superseded" in reasons:
            history = _record(history, before, Outcome.SUPERSEDED, now)
        elif "RolledBack" in reasons:
            history = _record(history, before, Outcome.ROLLED_BACK, now)
    return history


Put = Callable[[ConditionType, ConditionStatus, str, str], None]


def _conditions(
    status: CanaryRolloutStatus,
    rollout: CanaryRollout,
    decision: m.Decision,
    now: datetime,
    *,
    router_error: str | None,
    stable_ready: int,
) -> None:
    memory = decision.memory
    generation = rollout.metadata.generation

    def put(kind: ConditionType, value: ConditionStatus, reason: str, message: str) -> None:
        status.set_condition(
            kind, value, reason=reason, message=message, now=now, observed_generation=generation
        )

    yes, no = ConditionStatus.TRUE, ConditionStatus.FALSE
    put(ConditionType.INVALID_SPEC, no, "Valid", "the spec is valid")
    if decision.problem is not None:
        put(ConditionType.READY, no, decision.problem.reason, decision.problem.message)
    elif router_error:
        put(ConditionType.READY, no, "RouterError", router_error)
    else:
        put(ConditionType.READY, yes, "Reconciled", "the operator acts on the spec as written")
    service = f"{rollout.spec.service.name}-stable"
    if stable_ready > 0:
        serves = f"({stable_ready} ready endpoints)"
        who = f"revision {memory.stable}"
        if memory.adopted is not None and memory.taken_over is None:
            who += f" (with Deployment {memory.adopted}'s pods, until it takes over)"
        put(
            ConditionType.AVAILABLE,
            yes,
            "StableServing",
            f"{who} serves through Service {service} {serves}",
        )
    else:
        nothing = f"revision {memory.stable} serves nothing"
        put(
            ConditionType.AVAILABLE,
            no,
            "StableUnavailable",
            f"Service {service} has no ready endpoint: {nothing}",
        )
    _canary_conditions(memory, put, router_error)
    _analysis_condition(status, memory, put)


def _canary_conditions(memory: m.Memory, put: Put, router_error: str | None) -> None:
    yes, no = ConditionStatus.TRUE, ConditionStatus.FALSE
    if router_error:
        put(ConditionType.PROGRESSING, no, "RouterError", router_error)
    elif memory.canary is not None and not memory.aborted:
        put(ConditionType.PROGRESSING, yes, "RollingOut", memory.message)
    elif memory.aborted:
        put(ConditionType.PROGRESSING, no, "Aborted", memory.message)
    else:
        put(ConditionType.PROGRESSING, no, "Complete", f"revision {memory.stable} is stable")
    if memory.paused_by_user:
        put(ConditionType.PAUSED, yes, "PausedByUser", memory.message)
    elif memory.phase == Phase.PAUSED:
        put(ConditionType.PAUSED, yes, "PauseStep", memory.message)
    else:
        put(ConditionType.PAUSED, no, "NotPaused", "no pause step holds the canary")
    if memory.aborted:
        put(
            ConditionType.ABORTED, yes, memory.abort_reason or "Aborted", memory.abort_message or ""
        )
    else:
        put(ConditionType.ABORTED, no, "NotAborted", "no canary is aborted")


_ANALYSIS_STATUS = {
    AnalysisVerdict.SUCCESSFUL: ConditionStatus.TRUE,
    AnalysisVerdict.FAILED: ConditionStatus.FALSE,
}


def _analysis_condition(status: CanaryRolloutStatus, memory: m.Memory, put: Put) -> None:
    """The latest analysis run of the current canary, when it has one.

    A new canary with no run yet has no Analysis condition: the verdict of the canary before
    it is not its own. With no canary, the last verdict stays, about the revision it judged."""
    runs = [run for run in status.analysis or [] if run.revision == memory.canary]
    if not runs:
        if memory.canary is not None:
            status.conditions = [
                c for c in status.conditions if c.type is not ConditionType.ANALYSIS
            ]
        return
    latest = max(runs, key=lambda run: run.started_at)
    verdict = AnalysisVerdict(latest.verdict)
    put(
        ConditionType.ANALYSIS,
        _ANALYSIS_STATUS.get(verdict, ConditionStatus.UNKNOWN),
        f"Analysis{verdict.value}",
        f"{latest.name}: {latest.message}",
    )


def invalid_status(
    status: CanaryRolloutStatus, field: str, reason: str, generation: int | None, now: datetime
) -> CanaryRolloutStatus:
    """Keep the memory, say why the spec cannot be used: nothing moves while it is invalid."""
    new = problem_status(status, "InvalidSpec", f"{field}: {reason}", generation, now)
    new.phase = Phase.FAILED
    new.message = f"invalid spec: {field}: {reason}"
    new.set_condition(
        ConditionType.INVALID_SPEC,
        ConditionStatus.TRUE,
        reason="InvalidSpec",
        message=f"{field}: {reason}",
        now=now,
        observed_generation=generation,
    )
    return new


def problem_status(
    status: CanaryRolloutStatus, reason: str, message: str, generation: int | None, now: datetime
) -> CanaryRolloutStatus:
    """Keep the memory, say what stops the operator (Ready=False) and where: it will retry."""
    new = status.model_copy(deep=True)
    new.message = message
    new.observed_generation = generation
    new.set_condition(
        ConditionType.READY,
        ConditionStatus.FALSE,
        reason=reason,
        message=message,
        now=now,
        observed_generation=generation,
    )
    return new
