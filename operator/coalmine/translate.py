"""Translation between the CanaryRollout's status (the wire format) and the machine's memory.

The state machine works on small frozen dataclasses; the status is what users and other tools
read. This module maps one onto the other and derives the human parts of the status (conditions,
history, the ``2/5`` step display) from the machine's decisions. Pure: no I/O, time passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from coalmine import machine as m
from coalmine.analysis.spec import BackgroundAnalysis
from coalmine.api.limits import HISTORY_LIMIT
from coalmine.api.resource import CanaryRollout
from coalmine.api.status import (
    CanaryRolloutStatus,
    Controls,
    PendingScaleDown,
    RevisionRecord,
)
from coalmine.api.template import images_of
from coalmine.api.vocabulary import (
    ConditionStatus,
    ConditionType,
    Control,
    DeletionPolicy,
    Outcome,
    Phase,
    Stage,
    StepAction,
)


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
    return m.Plan(
        revision=spec.revision,
        replicas=spec.replicas,
        steps=tuple(steps),
        weighted=spec.routing.weighted,
        generation=rollout.metadata.generation or 1,
        progress_deadline_seconds=spec.progress_deadline_seconds,
        scale_down_delay_seconds=spec.scale_down_delay_seconds,
        revision_history_limit=spec.revision_history_limit,
        deleting=deleting,
        restore_stable_on_delete=spec.deletion_policy == DeletionPolicy.RESTORE_STABLE,
        steps_hash=spec.steps_hash(),
        background_from_step=(
            None
            if spec.analysis is None
            else BackgroundAnalysis.from_object(spec.analysis, path="spec.analysis").starting_step
        ),
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
    )


def controls_on(annotations: Mapping[str, str]) -> dict[Control, str]:
    """The control tokens present on the object, by control."""
    return {
        control: annotations[control.annotation]
        for control in Control
        if annotations.get(control.annotation)
    }


def _record(
    history: list[RevisionRecord], revision: str, outcome: Outcome, now: datetime, **more: object
) -> list[RevisionRecord]:
    records = [r for r in history if r.revision != revision]
    old = next((r for r in history if r.revision == revision), None)
    started = old.started_at if old is not None and outcome != Outcome.IN_PROGRESS else now
    record = RevisionRecord(
        revision=revision,
        outcome=outcome,
        images=list(more.get("images", old.images if old else [])),  # type: ignore[call-overload]
        started_at=started,
        finished_at=None if outcome == Outcome.IN_PROGRESS else now,
        message=str(more["message"]) if more.get("message") else None,
    )
    return [record, *records][:HISTORY_LIMIT]


def status_from(
    rollout: CanaryRollout,
    decision: m.Decision,
    now: datetime,
    *,
    router_error: str | None = None,
) -> CanaryRolloutStatus:
    """The new status: the machine's memory plus conditions, history and display fields."""
    old = rollout.status
    memory = decision.memory
    status = old.model_copy(deep=True)
    status.phase = memory.phase
    status.message = router_error or memory.message or None
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
    status.history = _history(rollout, decision, now)
    _conditions(status, rollout, memory, now, router_error)
    return status


def _history(rollout: CanaryRollout, decision: m.Decision, now: datetime) -> list[RevisionRecord]:
    history = list(rollout.status.history)
    before = rollout.status.canary_revision
    memory = decision.memory
    reasons = {a.reason: a for a in decision.actions if isinstance(a, m.EmitEvent)}
    images = images_of(rollout.spec.template)
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


def _conditions(
    status: CanaryRolloutStatus,
    rollout: CanaryRollout,
    memory: m.Memory,
    now: datetime,
    router_error: str | None,
) -> None:
    generation = rollout.metadata.generation
    yes, no = ConditionStatus.TRUE, ConditionStatus.FALSE

    def put(kind: ConditionType, value: ConditionStatus, reason: str, message: str) -> None:
        status.set_condition(
            kind, value, reason=reason, message=message, now=now, observed_generation=generation
        )

    put(ConditionType.INVALID_SPEC, no, "Valid", "the spec is valid")
    healthy = memory.phase in (Phase.HEALTHY, Phase.PAUSED, Phase.PROGRESSING)
    if memory.phase == Phase.FAILED:
        put(ConditionType.AVAILABLE, no, "StableUnavailable", memory.message)
    elif healthy or memory.phase == Phase.DEGRADED:
        put(ConditionType.AVAILABLE, yes, "StableServing", f"revision {memory.stable} serves")
    if router_error:
        put(ConditionType.PROGRESSING, no, "RouterError", router_error)
    elif memory.canary is not None and not memory.aborted:
        put(ConditionType.PROGRESSING, yes, "RollingOut", memory.message)
    elif memory.aborted:
        put(ConditionType.PROGRESSING, no, "Aborted", memory.message)
    else:
        put(ConditionType.PROGRESSING, no, "Complete", f"revision {memory.stable} is stable")
    if memory.phase == Phase.PAUSED:
        put(ConditionType.PAUSED, yes, "PauseStep", memory.message)
    else:
        put(ConditionType.PAUSED, no, "NotPaused", "no pause step holds the canary")
    if memory.aborted:
        put(
            ConditionType.ABORTED, yes, memory.abort_reason or "Aborted", memory.abort_message or ""
        )
    else:
        put(ConditionType.ABORTED, no, "NotAborted", "no canary is aborted")


def invalid_status(
    status: CanaryRolloutStatus, field: str, reason: str, generation: int | None, now: datetime
) -> CanaryRolloutStatus:
    """Keep the memory, say why the spec cannot be used: nothing moves while it is invalid."""
    new = status.model_copy(deep=True)
    new.phase = Phase.FAILED
    new.message = f"invalid spec: {field}: {reason}"
    new.observed_generation = generation
    new.set_condition(
        ConditionType.INVALID_SPEC,
        ConditionStatus.TRUE,
        reason="InvalidSpec",
        message=f"{field}: {reason}",
        now=now,
        observed_generation=generation,
    )
    return new
