"""The words of the CanaryRollout API: every enum, each member documented where it is declared."""

from __future__ import annotations

from enum import StrEnum

from coalmine.api.types import DocumentedEnum
from coalmine.labels import control_annotation


class ImagePolicy(DocumentedEnum):
    """How strictly container images must be pinned to an immutable digest."""

    REQUIRE_DIGEST = (
        "RequireDigest",
        "every container and init container image must end in @sha256:<64 hex digits>; the "
        "API server rejects anything else.",
    )
    WARN = (
        "Warn",
        "images pinned only by tag are accepted; the operator records a Warning event per "
        "image without a digest, since a tag can move under a revision.",
    )
    ALLOW = "Allow", "tags are accepted without comment."


class DeletionPolicy(DocumentedEnum):
    """What the finalizer does with the traffic router when the rollout is deleted."""

    RESTORE_STABLE = (
        "RestoreStable",
        "the router is set back to send all traffic to the stable Service, and the canary "
        "backend coalmine added is removed, before the rollout goes away.",
    )
    LEAVE_ROUTING = (
        "LeaveRouting",
        "the router object is left as it is: for a router deleted together with the rollout, "
        "or owned by another tool.",
    )


class ScaleDown(DocumentedEnum):
    """When an adopted Deployment (spec.workloadRef) is scaled down; it is never deleted."""

    NEVER = (
        "never",
        "it keeps its pods: it serves through your own Service beside the rollout's revisions, "
        "and rolls out a template edited in Git by itself, past the canary.",
    )
    ON_SUCCESS = (
        "onSuccess",
        "to zero once the rollout has taken over its traffic: the stable revision available, "
        "the rollout's Services (and the router) sending nothing to its pods any more, and "
        "scaleDownDelaySeconds after that. No pod of it leaves while coalmine routes to it.",
    )
    PROGRESSIVELY = (
        "progressively",
        "one pod less for each ready pod of the stable revision, while both serve, like a "
        "rolling update of the Deployment itself (its pods should finish their requests on "
        "termination, as in any rolling update); at zero once the stable revision is available.",
    )


class StepAction(StrEnum):
    """What a step does; named after the step's field."""

    SET_WEIGHT = "setWeight"
    PAUSE = "pause"
    ANALYSIS = "analysis"


class Control(DocumentedEnum):
    """A control: an annotation `coalmine.dev/<control>` whose value is a token acted on once.

    Listed in precedence order: when several carry new tokens at once, only the first of them
    acts, and all are recorded as handled. A token that cannot act (promote with no canary in
    flight) is recorded too, so it never acts later by surprise.
    """

    ABORT = (
        "abort",
        "send all traffic back to the stable revision and scale the canary down; the rollout "
        "stays aborted (phase Degraded) until a retry token or a new template.",
    )
    RETRY = (
        "retry",
        "after an abort, start the same canary again from its first step.",
    )
    PAUSE = (
        "pause",
        "hold the canary in flight at its current weight, whatever the step: nothing moves and "
        "its timers stop (a timed pause does not run out, the progress deadline does not pass) "
        "until a resume token; an abort still acts.",
    )
    RESUME = (
        "resume",
        "undo a pause: the canary goes on from where it was held, its timers counting again.",
    )
    PROMOTE_FULL = (
        "promote-full",
        "skip every remaining step and analysis: the canary becomes the stable revision now.",
    )
    PROMOTE = (
        "promote",
        "complete the current step (a pause, timed or not, or an analysis step) and go on with "
        "the next one.",
    )
    RESTART = (
        "restart",
        "replace the stable revision's pods a few at a time (a surge of 25%), never below the "
        "ready count its traffic needs: for pods that went bad without a new template.",
    )

    @property
    def annotation(self) -> str:
        """The annotation carrying this control's tokens."""
        return control_annotation(self.value)

    @property
    def status_field(self) -> str:
        """The `status.controls` attribute holding the last token handled for this control."""
        return self.value.replace("-", "_")


class Phase(DocumentedEnum):
    """Where the rollout stands, in one word (the detail is in the conditions)."""

    HEALTHY = (
        "Healthy",
        "no canary is in progress: the stable revision is the desired one, has its pods "
        "available and receives all traffic.",
    )
    PROGRESSING = (
        "Progressing",
        "a canary revision is being rolled out or promoted (the operator is scaling it, moving "
        "traffic to it, or waiting for its pods or its analysis), or the first revision is "
        "coming up.",
    )
    PAUSED = (
        "Paused",
        "the canary is held at a pause step, until the step's duration has passed or, for a "
        "pause without duration, until a promote token. (The pause control leaves the phase as "
        "it is: see status.pausedByUser and the Paused condition.)",
    )
    DEGRADED = (
        "Degraded",
        "the canary was aborted (abort token, failed analysis, progress deadline exceeded) and "
        "all traffic is back on the stable revision; a retry token or a new template starts "
        "again.",
    )
    FAILED = (
        "Failed",
        "nothing can be served as the spec asks: the spec is invalid (see the InvalidSpec "
        "condition), or the first revision never came up, so there is no stable revision to "
        "fall back to. It waits for a new spec.",
    )


class Stage(DocumentedEnum):
    """Where the canary is within its phase: the sub-steps that must survive a restart."""

    STEPS = "Steps", "walking spec.steps (or, with no canary, holding the stable revision)."
    FULL_WEIGHT = (
        "FullWeight",
        "promoting: the canary is scaled to full size, then receives all traffic.",
    )
    SWITCH_STABLE = (
        "SwitchStable",
        "promoting: the stable Service is switched to select the new revision.",
    )
    RETURN_TO_STABLE = (
        "ReturnToStable",
        "promoting: the canary weight goes back to 0, the traffic now served by the new stable "
        "revision through the stable Service.",
    )
    ABORTING = (
        "Aborting",
        "aborting: traffic goes back to the stable revision, then the canary is scaled down.",
    )


class ConditionType(DocumentedEnum):
    """The kinds of condition in `status.conditions`, at most one of each."""

    READY = (
        "Ready",
        "True while the operator can act on the spec as written; False with the reason that "
        "stops it, naming the field or object: InvalidSpec, RouterError, OwnershipConflict, "
        "APIRejected, RevisionGone, WorkloadNotFound, WorkloadInvalid, Unreadable, "
        "InternalError. It retries with a growing delay.",
    )
    AVAILABLE = (
        "Available",
        "True while the stable Service has ready endpoints; False while it has none (the message "
        "names the revision that serves nothing).",
    )
    PROGRESSING = (
        "Progressing",
        "True while a canary is in progress (the message says what it waits for); False "
        "otherwise, with reason Complete, Aborted, or RouterError when the router cannot be "
        "used.",
    )
    PAUSED = (
        "Paused",
        "True while the canary is held: by the pause control (reason PausedByUser, until a "
        "resume token; status.pausedByUser is true), or at a pause step (reason PauseStep; the "
        "message says until when, or that it waits for a promote token).",
    )
    ABORTED = (
        "Aborted",
        "True from an abort until a retry token or a new template; the reason is the one in "
        "status.abortReason (AbortedByUser, ProgressDeadlineExceeded, AnalysisFailed).",
    )
    INVALID_SPEC = (
        "InvalidSpec",
        "True when the spec cannot be used; the message names the field "
        "(spec.steps[2].setWeight: ...). Nothing changes in the cluster while it is True.",
    )
    ANALYSIS = (
        "Analysis",
        "the latest analysis run of the current canary: True successful, False failed, Unknown "
        "running, inconclusive or unable to measure (reason AnalysisRunning, ...).",
    )


class ConditionStatus(StrEnum):
    """Kubernetes condition status values."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Outcome(DocumentedEnum):
    """How a revision's canary ended (or that it has not ended yet)."""

    IN_PROGRESS = "InProgress", "the current canary; its steps are running."
    PROMOTED = "Promoted", "it finished its steps (or got a promote-full token) and became stable."
    ABORTED = "Aborted", "it was aborted and traffic went back to the stable revision."
    SUPERSEDED = (
        "Superseded",
        "the template changed to yet another revision before this canary finished.",
    )
    ROLLED_BACK = (
        "RolledBack",
        "the template went back to an earlier revision: this canary was dropped for the stable "
        "one before it finished, or, restored by a fast rollback, it became stable again.",
    )


class AnalysisVerdict(DocumentedEnum):
    """Where an analysis metric, or a whole analysis run (the worst of its metrics), stands."""

    RUNNING = "Running", "more measurements are needed (or, without count, always)."
    SUCCESSFUL = "Successful", "count measurements were judged within every limit."
    FAILED = "Failed", "more Failed measurements than failureLimit: the canary is aborted."
    INCONCLUSIVE = (
        "Inconclusive",
        "more Inconclusive measurements than inconclusiveLimit: the rollout pauses.",
    )
    ERROR = (
        "Error",
        "the latest consecutiveErrorLimit measurements were Errors: the rollout pauses, never "
        "promotes, and resumes once a measurement works again.",
    )

    @property
    def done(self) -> bool:
        """Whether the verdict is final: the metric is measured no more (Running and Error are
        not: an Error lifts when the metric source answers again)."""
        return self not in (AnalysisVerdict.RUNNING, AnalysisVerdict.ERROR)
