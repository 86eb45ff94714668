"""The CanaryRollout's status: what the operator observed and did, its only memory."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import (
    AwareDatetime,
    Field,
    ValidationError,
    field_validator,
)

from coalmine.api.errors import SpecError, field_problem, problems_from
from coalmine.api.limits import (
    CONDITION_REASON_PATTERN,
    HISTORY_LIMIT,
    MAX_CONDITIONS,
    MAX_STEPS,
    MAX_WEIGHT,
    MEASUREMENTS_LIMIT,
    PENDING_SCALE_DOWN_LIMIT,
)
from coalmine.api.types import StatusModel, plain_json
from coalmine.api.vocabulary import ConditionStatus, ConditionType, Outcome, Phase, Stage


class Condition(StatusModel):
    """A Kubernetes-style condition (the same fields as metav1.Condition)."""

    type: ConditionType

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    """A CamelCase word for programs (AbortedByUser, ProgressDeadlineExceeded)."""

    message: str = Field(default="", max_length=32768)
    """A sentence for people."""

    last_transition_time: AwareDatetime
    """When `status` last changed (RFC 3339)."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed from."""


class RevisionRecord(StatusModel):
    """One revision in the rollout's recent history."""

    revision: str
    """The revision name (the template hash)."""

    images: list[str] = Field(default_factory=list)
    """The container images of the revision, init containers first."""

    outcome: Outcome

    started_at: AwareDatetime | None = None
    """When its canary started."""

    finished_at: AwareDatetime | None = None
    """When its canary ended; unset while InProgress."""

    message: str | None = None
    """Why it ended that way, for people (the abort reason, for example)."""


class MeasurementStatus(StatusModel):
    """One measurement of an analysis metric, as recorded in the status."""

    at: AwareDatetime
    """When it was taken."""
    outcome: str
    """Successful, Failed, Inconclusive or Error."""
    value: float | None = None
    """The canary's value; unset when there was none, or it was NaN or infinite (see message)."""
    stable_value: float | None = None
    """The stable revision's value, for baseline metrics."""
    p_value: float | None = None
    """The statistical judge's p-value, for judge metrics."""
    effect_size: float | None = None
    """The statistical judge's effect size in its measure (meanRatio, shift or cles); unset
    when the measure could not size the change (a stable mean or median of 0)."""
    shift: float | None = None
    """The judge's Hodges-Lehmann shift, canary minus stable, in the metric's unit."""
    shift_low: float | None = None
    """The lower bound of the shift's confidence interval; unset when unbounded (a judge of a
    decrease tests one side)."""
    shift_high: float | None = None
    """The upper bound of the shift's confidence interval; unset when unbounded (a judge of an
    increase)."""
    message: str = ""
    """What was measured and why it was judged so, for people."""


class MetricCounts(StatusModel):
    """How the measurements of one analysis metric came out so far, counted."""

    successful: int = 0
    """Successful measurements so far."""
    failed: int = 0
    """Failed measurements so far (more than failureLimit aborts the canary)."""
    critical_failures: int = 0
    """Failed measurements of a critical metric that abort the canary at once."""
    inconclusive: int = 0
    """Inconclusive measurements so far (more than inconclusiveLimit pauses the canary)."""
    errors: int = 0
    """Measurements that could not be taken (Prometheus unreachable, bad query, ...)."""
    consecutive_errors: int = 0
    """Errors since the last measurement that was not one."""
    longest_error_run: int = 0
    """The most errors there were in a row (consecutiveErrorLimit pauses the canary)."""


class MetricStatus(MetricCounts):
    """Where one analysis metric stands: counters for every measurement, the latest in full."""

    name: str
    """The metric's name."""
    verdict: str
    """Running, Successful, Failed, Inconclusive or Error."""
    measurements: list[MeasurementStatus] = Field(
        default_factory=list, max_length=MEASUREMENTS_LIMIT
    )
    """The latest measurements, oldest first (at most 10)."""


class AnalysisRunStatus(StatusModel):
    """One analysis run of the current canary: an analysis step, or the background analysis."""

    name: str
    """`step-<n>` (the step's 1-based number) or `background`."""
    revision: str
    """The canary revision it judges."""
    started_at: AwareDatetime
    """When the run started (its first measurement comes initialDelay later)."""
    verdict: str
    """Running, Successful, Failed, Inconclusive or Error: the worst of its metrics."""
    message: str = ""
    """The verdict explained: for a failure, the metric, its value and the condition."""
    metrics: list[MetricStatus] = Field(default_factory=list, max_length=32)
    """Every metric of the run."""


class PendingScaleDown(StatusModel):
    """A revision that no longer receives traffic but keeps its pods for a while."""

    revision: str
    """The revision name."""

    scale_down_at: AwareDatetime
    """When its Deployment is scaled to zero: when it stopped receiving traffic plus
    scaleDownDelaySeconds."""


class Controls(StatusModel):
    """The last token handled for each control annotation.

    A control acts when its annotation holds a token different from the one recorded here; the
    operator records it in the same status update that applies the effect, so each token acts
    exactly once, across restarts, without anyone editing the spec.
    """

    abort: str | None = None
    """Last coalmine.dev/abort token handled."""

    retry: str | None = None
    """Last coalmine.dev/retry token handled."""

    promote: str | None = None
    """Last coalmine.dev/promote token handled."""

    promote_full: str | None = None
    """Last coalmine.dev/promote-full token handled."""

    pause: str | None = None
    """Last coalmine.dev/pause token handled."""

    resume: str | None = None
    """Last coalmine.dev/resume token handled."""

    restart: str | None = None
    """Last coalmine.dev/restart token handled."""


class RestartRecord(StatusModel):
    """The last restart asked for with a coalmine.dev/restart token."""

    revision: str
    """The stable revision whose pods are replaced."""

    requested_at: AwareDatetime
    """When the token was handled: the revision's pod template carries this time in the
    coalmine.dev/restarted-at annotation, which its Deployment rolls out a few pods at a time
    (maxSurge 25%, maxUnavailable 0)."""


class AdoptionStatus(StatusModel):
    """The user's Deployment the rollout adopted (spec.workloadRef): docs/adoption.md."""

    deployment: str
    """Its name."""

    taken_over_at: AwareDatetime | None = None
    """When the rollout's Services stopped selecting its pods: from then on the stable
    revision serves the rollout's traffic alone. Unset while it still helps."""

    replicas: int | None = Field(default=None, ge=0)
    """The replica count coalmine last set on it (spec.workloadRef.scaleDown); unset while
    coalmine has not changed it."""


class CanaryRolloutStatus(StatusModel):
    """What the operator observed and did: its only memory across restarts."""

    phase: Phase | None = None

    message: str | None = None
    """A sentence for people about the current phase."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the operator last acted on."""

    stable_revision: str | None = None
    """The revision serving traffic when no canary runs."""

    canary_revision: str | None = None
    """The revision being rolled out, or the one that was aborted; unset when Healthy."""

    steps_hash: str | None = None
    """Hash of the steps currentStepIndex counts in (see CanaryRolloutSpec.steps_hash): when the
    steps are edited during a canary, the index no longer means anything, and the canary
    restarts at its first step rather than jump ahead or promote early."""

    stage: Stage | None = None

    rollback: bool | None = None
    """True while the canary is a fast rollback: its template matches a revision still kept
    (see revisionHistoryLimit), so it skips the steps."""

    current_step_index: int | None = Field(default=None, ge=0, le=MAX_STEPS)
    """Index in spec.steps of the step in progress; equal to the number of steps once all are
    done."""

    step_display: str | None = None
    """Steps done out of all steps, for people and `kubectl get`: `2/5` means two of five steps
    are done and the third is in progress."""

    step_started_at: AwareDatetime | None = None
    """When the current step started."""

    desired_weight: int | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    """Percentage of traffic the current step sends to the canary."""

    confirmed_weight: int | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    """Percentage of traffic the router (or the ready replicas) actually send to the canary."""

    pause_started_at: AwareDatetime | None = None
    """When the current pause began counting; unset outside pause steps."""

    aborted_at: AwareDatetime | None = None
    """When the canary was aborted; set exactly while the rollout is aborted."""

    abort_reason: str | None = Field(
        default=None, max_length=1024, pattern=CONDITION_REASON_PATTERN
    )
    """Why the canary was aborted, for programs: AbortedByUser, ProgressDeadlineExceeded,
    AnalysisFailed."""

    abort_message: str | None = None
    """Why the canary was aborted, for people."""

    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    """Conditions, at most one per type."""

    history: list[RevisionRecord] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    """The latest revisions, newest first (at most 10)."""

    pending_scale_downs: list[PendingScaleDown] = Field(
        default_factory=list, max_length=PENDING_SCALE_DOWN_LIMIT
    )
    """Revisions waiting out scaleDownDelaySeconds before they are scaled to zero (at most 10;
    the oldest is scaled down at once to make room)."""

    controls: Controls = Field(default_factory=Controls)

    paused_by_user: bool | None = None
    """True while the pause control (a coalmine.dev/pause token) holds the canary: nothing
    moves, its timers stop, until a coalmine.dev/resume token (or an abort)."""

    paused_by_user_at: AwareDatetime | None = None
    """When the pause control took hold; unset when not paused by the user."""

    step_held_seconds: float | None = Field(default=None, ge=0)
    """Seconds the pause control held the current step before the pause under way, if any:
    a timed pause and the progress deadline leave them out."""

    restart: RestartRecord | None = None

    adoption: AdoptionStatus | None = None

    replicas: int | None = Field(default=None, ge=0)
    """Pods the rollout's revisions are sized for now, stable and canary together (more than
    spec.replicas while a canary runs beside the stable revision): the scale subresource's
    status.replicas, which `kubectl scale` and HorizontalPodAutoscalers read."""

    selector: str | None = None
    """The label selector of the pods of every revision (coalmine.dev/rollout=<name>): the
    scale subresource's selector, whose pods a HorizontalPodAutoscaler measures."""

    analysis: list[AnalysisRunStatus] | None = Field(default=None, max_length=2)
    """The analysis runs of the current canary (an analysis step's and the background one)."""

    @field_validator("conditions")
    @classmethod
    def _one_condition_per_type(cls, conditions: list[Condition]) -> list[Condition]:
        seen: set[ConditionType] = set()
        for index, condition in enumerate(conditions):
            if condition.type in seen:
                raise field_problem(f"[{index}].type", f"duplicate condition {condition.type}")
            seen.add(condition.type)
        return conditions

    def condition(self, type_: ConditionType) -> Condition | None:
        """The condition of this type, if set."""
        return next((c for c in self.conditions if c.type is type_), None)

    def set_condition(
        self,
        type_: ConditionType,
        status: ConditionStatus,
        *,
        reason: str,
        message: str,
        now: datetime,
        observed_generation: int | None = None,
    ) -> bool:
        """Set a condition; lastTransitionTime moves only when the status changes.

        Returns whether anything changed, so a reconcile can skip a no-op status write.
        """
        old = self.condition(type_)
        new = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=(
                old.last_transition_time if old is not None and old.status is status else now
            ),
            observed_generation=observed_generation,
        )
        if old == new:
            return False
        others = [c for c in self.conditions if c.type is not type_]
        self.conditions = sorted([*others, new], key=lambda c: list(ConditionType).index(c.type))
        return True

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> CanaryRolloutStatus:
        """Parse the status of a raw object alone, e.g. to keep its memory when the spec is
        invalid. Raises SpecError naming a `status.` field."""
        try:
            return cls.model_validate(plain_json(obj.get("status") or {}))
        except ValidationError as error:
            raise SpecError(problems_from(error, ("status",))) from None
