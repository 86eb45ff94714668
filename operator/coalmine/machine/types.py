"""What the state machine reads and returns: the plan, its memory, the observation, the actions.

Small frozen dataclasses, so a decision is a value: tests compare them, and nothing the machine
returns can be changed behind its back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coalmine.api.limits import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DEFAULT_REVISION_HISTORY_LIMIT,
    DEFAULT_SCALE_DOWN_DELAY_SECONDS,
    PENDING_SCALE_DOWN_LIMIT,
)
from coalmine.api.vocabulary import AnalysisVerdict, Control, Phase, ScaleDown, Stage, StepAction

WAIT = 5.0
"""Seconds between looks while waiting for pods or the router: watch events usually come sooner
(a pod turning ready, a route's status), so this only bounds how late a missed one is seen."""
PENDING_LIMIT = PENDING_SCALE_DOWN_LIMIT
"""Revisions waiting out scaleDownDelaySeconds that the status can hold (the CRD's maxItems)."""
SURGE_LIMIT = 2
"""Replica ratio: the stable revision may grow to this many times spec.replicas (at least 2
pods) so a small canary share is never exceeded; beyond that the canary gets no pod."""


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
class Adoption:
    """The user's Deployment the template comes from (spec.workloadRef)."""

    deployment: str
    scale_down: ScaleDown = ScaleDown.ON_SUCCESS


@dataclass(frozen=True)
class Plan:
    """What the spec asks for, reduced to what the machine needs."""

    revision: str
    replicas: int
    steps: tuple[Step, ...]
    weighted: bool
    """True when a router applies weights (Gateway API, NGINX, Istio, SMI); False: replica ratio."""
    generation: int = 1
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    scale_down_delay_seconds: float = DEFAULT_SCALE_DOWN_DELAY_SECONDS
    abort_scale_down_delay_seconds: float = DEFAULT_SCALE_DOWN_DELAY_SECONDS
    revision_history_limit: int = DEFAULT_REVISION_HISTORY_LIMIT
    deleting: bool = False
    restore_stable_on_delete: bool = True
    steps_hash: str = ""
    """Changes when the steps change; a canary walking old steps starts over on the new ones."""
    background_from_step: int | None = None
    """The step index from which the background analysis judges the canary; None: none."""
    adoption: Adoption | None = None
    """The Deployment adopted (spec.workloadRef); None: the template is the spec's."""
    deleting_since: datetime | None = None
    """When deletion was asked (metadata.deletionTimestamp): what deletion waits for is bounded
    by the progress deadline from then."""


@dataclass(frozen=True)
class Restart:
    """A restart asked for (coalmine.dev/restart): the pods of ``revision``, stamped ``at``."""

    revision: str
    at: datetime

    @property
    def stamp(self) -> str:
        """The value its Deployment's pod template carries once the restart is under way."""
        return self.at.astimezone(UTC).isoformat(timespec="microseconds")


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
    """Last control token handled per control."""
    steps_hash: str = ""
    """The steps_hash of the plan the current canary walks."""
    promoted: frozenset[str] = frozenset()
    """Revisions the status records as having been stable: the only ones a fast rollback may
    return to (a Deployment that merely exists proves nothing: it may be a half-made canary)."""
    paused_at: datetime | None = None
    """When the pause control took hold; None: not paused by the user."""
    held_seconds: float = 0.0
    """Seconds the current step was held by the pause control before the pause under way (if
    any): the step's timers leave them out."""
    restart: Restart | None = None
    """The last restart asked for."""
    adopted: str | None = None
    """The adopted Deployment the two fields below are about (None: nothing adopted yet)."""
    taken_over: datetime | None = None
    """When the rollout's Services stopped selecting the adopted Deployment's pods, its
    traffic then served by the stable revision alone (None: not yet)."""
    adopted_replicas: int | None = None
    """The replica count coalmine last set on the adopted Deployment (None: never touched)."""

    @property
    def paused_by_user(self) -> bool:
        """Held by the pause control until a resume: nothing moves, the step's timers stop."""
        return self.paused_at is not None


@dataclass(frozen=True)
class RevisionObserved:
    """One revision's Deployment as observed."""

    replicas: int
    ready: int
    available: int
    created: datetime
    drifted: bool = False
    restarted: str | None = None
    """The restart stamp its pod template carries (see `Restart.stamp`); None: never restarted."""


@dataclass(frozen=True)
class AdoptedObserved:
    """The adopted Deployment as observed."""

    replicas: int
    ready: int
    marked: int | None = None
    """The replica count the adopted-replicas annotation says coalmine last set (None: none)."""
    selectable: bool = True
    """Its pods can be picked by a Service's selector (its own is matchLabels only): the
    rollout's Services can then serve them until the stable revision takes over."""
    labelled: bool = True
    """It carries this rollout's adopted-by label: it is not released yet."""


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
    """Control annotation tokens present on the object, by control."""
    step_analysis: AnalysisObserved | None = None
    """The verdict of the current analysis step's run (None: not started)."""
    background_analysis: AnalysisObserved | None = None
    """The verdict of the background analysis (None: none, or not started)."""
    adopted: AdoptedObserved | None = None
    """The adopted Deployment (None: none adopted, or it is gone)."""


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
class RestartRevision:
    """Replace a revision's pods a few at a time, never fewer ready than its replicas: its pod
    template gets ``stamp``, which its Deployment rolls out with no pod unavailable."""

    revision: str
    stamp: str


@dataclass(frozen=True)
class SelectRevisions:
    """Point the stable and canary Services at these revisions (canary None: no pods).

    ``adopted``: the stable Service (and the one of every revision) selects the adopted
    Deployment's pods too, as its own Service does: until the stable revision takes over.
    """

    stable: str
    canary: str | None
    adopted: bool = False


@dataclass(frozen=True)
class ScaleAdopted:
    """Set the adopted Deployment's replicas (and the annotation that says coalmine did)."""

    replicas: int


@dataclass(frozen=True)
class ReleaseAdopted:
    """Let go of the adopted Deployment: its label and annotation off; it stays as it is."""


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
    | RestartRevision
    | SelectRevisions
    | ScaleAdopted
    | ReleaseAdopted
    | SetWeight
    | FinalizeRouting
    | EmitEvent
)


@dataclass(frozen=True)
class Problem:
    """Something that stops the rollout which only a person can mend; shown as Ready=False."""

    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    memory: Memory
    requeue_after: float | None = None
    """Seconds until the machine wants to look again even if nothing changes; None: on events."""
    done_deleting: bool = False
    problem: Problem | None = None

    @property
    def mutating(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if not isinstance(a, EmitEvent))


# --- sizes -------------------------------------------------------------------------------------


def canary_replicas_for(weight: int, replicas: int) -> int:
    """Ready canary pods a weighted router needs to send ``weight`` percent of ``replicas``' load.

    Rounded up, so the canary never serves more per pod than the stable does; at least one pod
    for any weight above 0 (none when the rollout has no replicas at all).
    """
    if weight <= 0 or replicas <= 0:
        return 0
    return max(1, math.ceil(replicas * weight / 100))


def ratio_sizes(weight: int, replicas: int) -> tuple[int, int]:
    """Replica ratio: (canary, stable) pods whose ready share realises at most ``weight`` percent.

    - 0% is (0, replicas); 100% is (replicas, 0); a rollout without replicas is (0, 0).
    - Otherwise the canary gets floor(replicas * weight / 100) pods, at least one, and the stable
      the rest, at least one: the stable keeps serving while its weight is above 0.
    - If the canary's share still exceeds ``weight`` (few replicas, small weight), the stable
      grows (surges) until it does not, up to SURGE_LIMIT times replicas; a weight that needs
      more than that gives the canary no pod at all, never a larger share than asked.

    So 10 replicas at 41% are 4 canary / 6 stable (40%), 1 replica at 50% is 1 / 1, 2 replicas
    at 25% are 1 / 3, and 1 replica at 10% is 0 / 1.
    """
    if replicas <= 0:
        return 0, 0
    if weight <= 0:
        return 0, replicas
    if weight >= 100:
        return replicas, 0
    canary = max(1, replicas * weight // 100)
    stable = max(1, replicas - canary)
    if canary * 100 > weight * (canary + stable):
        # The smallest stable size that brings the canary's share down to the weight.
        stable = math.ceil(canary * (100 - weight) / weight)
        if stable > SURGE_LIMIT * max(replicas, 1):
            return 0, replicas
    return canary, stable


def ratio_weight(canary_ready: int, stable_ready: int) -> int:
    """The share of traffic, in percent, that ready pods behind one Service give the canary."""
    total = canary_ready + stable_ready
    return 0 if total == 0 else round(100 * canary_ready / total)
