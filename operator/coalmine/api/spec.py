"""The CanaryRollout's spec: what the user asks for."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Self

from pydantic import (
    Field,
    StrictStr,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from coalmine.api.durations import parse_duration
from coalmine.api.errors import field_problem
from coalmine.api.limits import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DEFAULT_REVISION_HISTORY_LIMIT,
    DEFAULT_SCALE_DOWN_DELAY_SECONDS,
    DNS1035_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_PATTERN,
    DURATION_MAX_LENGTH,
    INT32_MAX,
    MAX_PORT,
    MAX_REVISION_HISTORY_LIMIT,
    MAX_STEPS,
    NAME_MAX_LENGTH,
    PORT_NAME_MAX_LENGTH,
    PORT_NAME_PATTERN,
    SERVICE_NAME_MAX_LENGTH,
)
from coalmine.api.template import check_digests, check_template, revision_hash, short_hash
from coalmine.api.types import (
    FreeForm,
    Integer,
    IntOrString,
    JsonObject,
    Percent,
    SpecModel,
    integral,
)
from coalmine.api.vocabulary import DeletionPolicy, ImagePolicy, ScaleDown, StepAction
from coalmine.routers.base import RoutingConfig
from coalmine.routers.registry import DEFAULT_ROUTER, ROUTERS


class ServiceSpec(SpecModel):
    """The Service clients use to reach the application.

    The operator creates and owns three Services: `<name>` selects the pods of every revision
    (with replicaRatio, traffic follows the replica counts through it); `<name>-stable` and
    `<name>-canary` select one revision each, and a router splits traffic between those two.
    """

    name: StrictStr = Field(max_length=SERVICE_NAME_MAX_LENGTH, pattern=DNS1035_LABEL_PATTERN)
    """Service name: a DNS-1035 label of at most 56 characters, leaving room for `-stable` and
    `-canary`."""

    port: Integer = Field(ge=1, le=MAX_PORT)
    """The port the Service exposes."""

    target_port: IntOrString | None = None
    """The container port, by number or by name; the same number as `port` when omitted."""

    @field_validator("target_port", mode="before")
    @classmethod
    def _target_port_in_range(cls, value: object) -> object:
        value = integral(value)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be a port number or a port name")
        if isinstance(value, int) and not 1 <= value <= MAX_PORT:
            raise ValueError(f"a port number must be between 1 and {MAX_PORT}")
        if isinstance(value, str) and not (
            len(value) <= PORT_NAME_MAX_LENGTH
            and re.fullmatch(PORT_NAME_PATTERN, value)
            and re.search("[a-z]", value)
        ):
            raise ValueError(
                "a port name must be at most 15 lowercase letters, digits and '-', with a letter"
            )
        return value

    @property
    def resolved_target_port(self) -> int | str:
        """The container port traffic goes to: `targetPort`, or `port` when it is unset."""
        return self.port if self.target_port is None else self.target_port


class RoutingChoice(SpecModel):
    """How traffic is split between the stable and canary revisions: exactly one router.

    Omit `trafficRouting` (or write `replicaRatio: {}`) for no router: the canary gets about
    weight% of the replicas, and the Service spreads traffic over all ready pods. Unknown router
    names are refused rather than ignored.
    """

    @model_validator(mode="after")
    def _exactly_one_router(self) -> Self:
        chosen = self._chosen()
        if len(chosen) != 1:
            found = " and ".join(kind for kind, _ in chosen) if chosen else "none"
            raise field_problem(
                "", f"set exactly one router of {', '.join(ROUTERS)} (found {found})"
            )
        return self

    def _chosen(self) -> list[tuple[str, RoutingConfig]]:
        return [
            (kind, value)
            for kind in ROUTERS
            if isinstance(value := getattr(self, kind, None), RoutingConfig)
        ]

    @property
    def kind(self) -> str:
        """The router in use: its key in spec.trafficRouting."""
        return self._chosen()[0][0]

    @property
    def config(self) -> RoutingConfig:
        """The router's block, as its own model."""
        return self._chosen()[0][1]


if TYPE_CHECKING:
    TrafficRouting = RoutingChoice
else:
    TrafficRouting = create_model(
        "TrafficRouting",
        __base__=RoutingChoice,
        __doc__=RoutingChoice.__doc__,
        **{
            kind: (entry.config | None, Field(default=None, alias=kind))
            for kind, entry in ROUTERS.items()
        },
    )


class Pause(SpecModel):
    """Hold the canary at its current weight: for `duration`, or, with `pause: {}`, until a
    promote token."""

    duration: StrictStr | None = Field(default=None, max_length=DURATION_MAX_LENGTH)
    """How long to hold, as a Go duration (30s, 5m, 1h30m, 250ms); omitted: until promoted."""

    @field_validator("duration")
    @classmethod
    def _duration_parses(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < timedelta(0):
            raise ValueError(f"invalid duration {value!r}: a pause cannot be negative")
        return value

    @property
    def length(self) -> timedelta | None:
        """The pause as a timedelta; None for a pause that waits for a promote token."""
        return None if self.duration is None else parse_duration(self.duration)


class Step(SpecModel):
    """One step of the canary: exactly one of setWeight, pause or analysis."""

    set_weight: Percent | None = None
    """Send this percentage of traffic (0-100) to the canary, once its pods are ready."""

    pause: Pause | None = None

    analysis: FreeForm | None = None
    """Run analysis templates against the canary and wait for the verdict (docs/analysis.md)."""

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Self:
        actions = [action.value for action in StepAction if self._value(action) is not None]
        if len(actions) != 1:
            found = " and ".join(actions) if actions else "none"
            raise field_problem(
                "", f"a step sets exactly one of setWeight, pause or analysis (found {found})"
            )
        return self

    def _value(self, action: StepAction) -> object:
        values: dict[StepAction, object] = {
            StepAction.SET_WEIGHT: self.set_weight,
            StepAction.PAUSE: self.pause,
            StepAction.ANALYSIS: self.analysis,
        }
        return values[action]

    @property
    def action(self) -> StepAction:
        """What this step does."""
        return next(action for action in StepAction if self._value(action) is not None)


class WorkloadRef(SpecModel):
    """An existing Deployment to adopt, in the rollout's namespace, instead of a template.

    Its pod template is the rollout's (a template edited in the Deployment, in Git, starts a
    canary); its first revision becomes stable beside it; then it is scaled down as scaleDown
    says, never deleted, and scaled back up when the rollout is deleted. See docs/adoption.md.
    """

    name: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """The Deployment's name."""

    scale_down: ScaleDown = ScaleDown.ON_SUCCESS


PodTemplate = Annotated[
    JsonObject,
    WithJsonSchema({"type": "object", "additionalProperties": True}),
]


class CanaryRolloutSpec(SpecModel):
    """The desired state: a pod template, the Service in front of it, and the canary steps."""

    replicas: Integer = Field(default=1, ge=0, le=INT32_MAX)
    """Pods of the stable revision when no canary runs; the canary's share comes out of them."""

    template: PodTemplate | None = None
    """The pod template (a full PodTemplateSpec). Every distinct template is an immutable
    revision with its own Deployment, named after its hash. Exactly one of template and
    workloadRef."""

    workload_ref: WorkloadRef | None = None

    service: ServiceSpec

    image_policy: ImagePolicy = ImagePolicy.WARN

    traffic_routing: TrafficRouting | None = None

    steps: tuple[Step, ...] = Field(min_length=1, max_length=MAX_STEPS)
    """The canary steps, in order (1 to 100). After the last one the canary is promoted."""

    analysis: FreeForm | None = None
    """Background analysis that judges the canary during its steps, from startingStep on
    (docs/analysis.md)."""

    min_ready_seconds: Integer = Field(default=0, ge=0, le=INT32_MAX)
    """Seconds a new pod must be ready, without crashing, before it counts as available."""

    progress_deadline_seconds: Integer = Field(
        default=DEFAULT_PROGRESS_DEADLINE_SECONDS, ge=1, le=INT32_MAX
    )
    """Seconds a step may wait for its pods to become available before the canary is aborted
    (reason ProgressDeadlineExceeded). Must be more than minReadySeconds."""

    scale_down_delay_seconds: Integer = Field(
        default=DEFAULT_SCALE_DOWN_DELAY_SECONDS, ge=0, le=INT32_MAX
    )
    """Seconds a revision keeps its pods after it stops receiving traffic, so in-flight
    requests finish and routers that cache endpoints catch up."""

    abort_scale_down_delay_seconds: Integer = Field(
        default=DEFAULT_SCALE_DOWN_DELAY_SECONDS, ge=0, le=INT32_MAX
    )
    """Seconds an aborted canary keeps its pods after traffic has left it, so the requests it
    was serving finish (0: scaled down at once). With the ratio of replicas traffic leaves a
    canary only as its pods go, so there it is scaled down at once."""

    revision_history_limit: Integer = Field(
        default=DEFAULT_REVISION_HISTORY_LIMIT, ge=0, le=MAX_REVISION_HISTORY_LIMIT
    )
    """Old revisions whose Deployments are kept, scaled to zero (0-50). Going back to a kept
    revision is a fast rollback: it skips the steps."""

    deletion_policy: DeletionPolicy = DeletionPolicy.RESTORE_STABLE

    @field_validator("template")
    @classmethod
    def _template_has_containers(cls, template: JsonObject | None) -> JsonObject | None:
        if template is not None:
            check_template(template)
        return template

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        if (self.template is None) == (self.workload_ref is None):
            found = "both" if self.template is not None else "neither"
            raise field_problem("", f"set exactly one of template and workloadRef (found {found})")
        if self.progress_deadline_seconds <= self.min_ready_seconds:
            raise field_problem(".progressDeadlineSeconds", "must be greater than minReadySeconds")
        if self.image_policy is ImagePolicy.REQUIRE_DIGEST and self.template is not None:
            check_digests(self.template, prefix=".template")
        return self

    @property
    def router(self) -> str:
        """The router in use (its key in spec.trafficRouting); replicaRatio when omitted."""
        return DEFAULT_ROUTER if self.traffic_routing is None else self.traffic_routing.kind

    @property
    def routing(self) -> RoutingConfig:
        """The router's configuration; `replicaRatio: {}` when trafficRouting is omitted."""
        if self.traffic_routing is None:
            return ROUTERS[DEFAULT_ROUTER].config()
        return self.traffic_routing.config

    @property
    def revision(self) -> str:
        """The revision name of the template (see `revision_hash`); with workloadRef, once the
        operator has put the adopted Deployment's template in (`with_template`)."""
        if self.template is None:
            raise ValueError("no template: an adopted Deployment's template is not read yet")
        return revision_hash(self.template)

    def with_template(self, template: JsonObject) -> CanaryRolloutSpec:
        """This spec with the pod template an adopted Deployment holds (spec.workloadRef)."""
        return self.model_copy(update={"template": template})

    def steps_hash(self) -> str:
        """A short hash of the steps, to notice when they change during a canary."""
        return short_hash([step.to_dict() for step in self.steps])
