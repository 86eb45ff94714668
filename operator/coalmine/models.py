"""The CanaryRollout resource as the operator sees it: spec, status and their rules.

One definition of the resource serves three readers. `coalmine.crdgen` derives the CRD's
OpenAPI schema from these models, so the API server and the operator agree on field names,
types and defaults. The operator parses every object through `CanaryRollout.from_object`, which
repeats the checks the CRD's CEL rules make: an object the API server never validated (an older
CRD still installed, a status written by hand) then fails as one `SpecError` naming the field,
which becomes the InvalidSpec condition, instead of a KeyError halfway through a reconcile. And
the status models are the operator's only memory, so every field it relies on after a restart is
declared here, where the API server will not prune it.

Pure on purpose: pydantic and the standard library only, no I/O, so the state machine and its
tests use it without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, NamedTuple, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    Strict,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# --- identity of the resource -------------------------------------------------------------

GROUP = "coalmine.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "coalmine.dev/v1alpha1"
KIND: Final = "CanaryRollout"
PLURAL = "canaryrollouts"
SINGULAR = "canaryrollout"
# `canary` is Flagger's and `ro` is Argo Rollouts'; both may be installed beside coalmine.
SHORT_NAMES = ("crol",)
CATEGORIES = ("coalmine",)

# --- control annotations ------------------------------------------------------------------
# Promote and abort are annotations carrying a fresh token, not spec fields: a GitOps tool
# owns the spec and would revert (or report as drift) any field a human flips by hand.

PROMOTE_ANNOTATION = "coalmine.dev/promote"
PROMOTE_FULL_ANNOTATION = "coalmine.dev/promote-full"
ABORT_ANNOTATION = "coalmine.dev/abort"
RETRY_ANNOTATION = "coalmine.dev/retry"

# --- limits shared with the CRD -----------------------------------------------------------
# The CEL rules' cost is estimated from these bounds, so every list and string a rule walks
# is bounded; the models enforce the same numbers so both sides reject the same objects.

INT32_MAX = 2**31 - 1
MAX_WEIGHT = 100
MAX_STEPS = 100
MAX_REVISION_HISTORY_LIMIT = 50
HISTORY_LIMIT = 10
PENDING_SCALE_DOWN_LIMIT = 10
MAX_CONDITIONS = 16
MAX_ISTIO_ROUTES = 32
MAX_CONTAINERS = 64
MAX_PORT = 65535
CONTAINER_NAME_MAX_LENGTH = 63
IMAGE_MAX_LENGTH = 1024
DURATION_MAX_LENGTH = 64
NAME_MAX_LENGTH = 253
LABEL_MAX_LENGTH = 63
PORT_NAME_MAX_LENGTH = 15
# Besides `<service.name>`, the operator keeps `<service.name>-stable` and `-canary`; every one
# of them must be a DNS label of at most 63 characters.
SERVICE_SUFFIXES = ("-stable", "-canary")
SERVICE_NAME_MAX_LENGTH = LABEL_MAX_LENGTH - max(len(suffix) for suffix in SERVICE_SUFFIXES)
# The rollout's name is a label value on everything it owns, so it is a 63-character label too.
ROLLOUT_NAME_MAX_LENGTH = LABEL_MAX_LENGTH

# Regular expressions are written for both RE2 (the API server, CEL) and Python: no
# backslashes, so they survive being quoted inside CEL string literals unchanged.
DNS1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PORT_NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Exactly what Go's time.ParseDuration accepts, which is what CEL's duration() calls.
GO_DURATION_PATTERN = "^[-+]?(0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"
IMAGE_DIGEST_PATTERN = "@sha256:[0-9a-f]{64}$"
CONDITION_REASON_PATTERN = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

JsonObject = dict[str, Any]
"""A JSON object passed through untouched: the pod template and the API's raw objects."""

FreeForm = dict[str, JsonValue]
"""A JSON object whose shape belongs to a later feature (analysis); stored as written."""


def _integral(value: object) -> object:
    # The API server takes 20.0 for an integer field (and stores 20); so do we. Strings and
    # booleans stay refused, as they are there.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, Strict(), BeforeValidator(_integral)]
"""An integer as the API server reads one: no "3", no true, but 3.0 is 3."""

# The bounds sit before the converter: placed after it (or on an optional field's Field), pydantic
# cannot put them into the JSON schema as minimum/maximum.
Percent = Annotated[int, Strict(), Field(ge=0, le=MAX_WEIGHT), BeforeValidator(_integral)]
"""A traffic weight in percent, 0 to 100."""

IntOrString = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]
"""A port by number or by name; fields of this type check the value in a before-validator, so
an error names the field rather than one branch of the union."""


# --- errors -------------------------------------------------------------------------------


class Problem(NamedTuple):
    """One reason an object is invalid, at a Kubernetes-style field path."""

    field: str
    reason: str


class SpecError(ValueError):
    """A CanaryRollout the operator must not act on.

    `field` is a dotted path as the API server prints it (`spec.steps[2].setWeight`) and
    `reason` says what is wrong there; the operator puts both in the InvalidSpec condition.
    `problems` lists every problem found, the first one being `field`/`reason`.
    """

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        if not problems:
            raise ValueError("a SpecError needs at least one problem")
        self.problems = problems
        self.field, self.reason = problems[0]
        super().__init__(f"{self.field}: {self.reason}")


def _field_problem(subpath: str, reason: str) -> PydanticCustomError:
    # pydantic locates a validator's error at the validated field or model; `subpath` carries
    # the rest of the path (`.spec.containers[0].image`) so SpecError can name the exact field.
    return PydanticCustomError("coalmine_field", "{reason}", {"reason": reason, "subpath": subpath})


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts)


def _reason(kind: str, message: str, ctx: Mapping[str, Any]) -> str:
    # Reword the pydantic messages that speak Python ("Tuple should have...", "Value error,")
    # into the API server's vocabulary, which is what users see for the same mistakes.
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return "unknown field (not in the CanaryRollout schema)"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    return message


def _problems(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> tuple[Problem, ...]:
    problems = []
    for detail in error.errors(include_url=False):
        ctx = detail.get("ctx") or {}
        field = _path(prefix + tuple(detail["loc"])) + str(ctx.get("subpath", ""))
        problems.append(Problem(field, _reason(detail["type"], detail["msg"], ctx)))
    return tuple(problems)


# --- helpers ------------------------------------------------------------------------------

_GO_DURATION = re.compile(GO_DURATION_PATTERN)
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:[.]([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Go durations are int64 nanoseconds; CEL's duration() fails beyond that, so we do too.
_MAX_NANOSECONDS = 2**63 - 1


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration (`30s`, `5m`, `1h30m`, `1.5h`, `250ms`) into a timedelta.

    Accepts exactly what Go's `time.ParseDuration` accepts, because the CRD checks the same
    strings with CEL's `duration()`: a sign, then one or more decimal numbers each followed by a
    unit (ns, us, µs, ms, s, m, h), or a bare `0`. Nanoseconds are truncated to microseconds.
    Raises ValueError naming the input and the expected form.
    """
    if not _GO_DURATION.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: expected a Go duration such as 30s, 5m, 1h30m or 250ms "
            "(units ns, us, ms, s, m, h; no spaces, no days)"
        )
    negative = text.startswith("-")
    nanoseconds = 0
    for whole, fraction, unit in _GO_DURATION_PART.findall(text.lstrip("+-")):
        scale = _NANOSECONDS[unit]
        nanoseconds += int(whole or "0") * scale
        if fraction:
            nanoseconds += int(fraction) * scale // 10 ** len(fraction)
    if nanoseconds > _MAX_NANOSECONDS + negative:
        raise ValueError(f"invalid duration {text!r}: longer than about 292 years")
    micro = timedelta(microseconds=nanoseconds // 1_000)
    return -micro if negative else micro


def _short_hash(value: object) -> str:
    canonical = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def revision_hash(template: Mapping[str, Any]) -> str:
    """The revision name of a pod template: 10 lowercase hex characters, DNS-label safe.

    It hashes the canonical JSON of the whole template (keys sorted, nothing left out), so the
    same template always names the same revision, across restarts and key order, and any change
    at all, even to a label, makes a new revision: revisions are immutable.
    """
    return _short_hash(template)


def _check_containers(containers: object, subpath: str) -> None:
    if not isinstance(containers, list):
        raise _field_problem(subpath, "must be a list of containers")
    if len(containers) > MAX_CONTAINERS:
        raise _field_problem(subpath, f"must have at most {MAX_CONTAINERS} items")
    for index, container in enumerate(containers):
        where = f"{subpath}[{index}]"
        if not isinstance(container, Mapping):
            raise _field_problem(where, "must be an object")
        name = container.get("name")
        if not isinstance(name, str) or not name:
            raise _field_problem(f"{where}.name", "Required value: every container needs a name")
        if len(name) > CONTAINER_NAME_MAX_LENGTH:
            raise _field_problem(
                f"{where}.name", f"must be at most {CONTAINER_NAME_MAX_LENGTH} characters"
            )
        image = container.get("image")
        if not isinstance(image, str) or not image:
            raise _field_problem(f"{where}.image", "Required value: every container needs an image")
        if len(image) > IMAGE_MAX_LENGTH:
            raise _field_problem(f"{where}.image", f"must be at most {IMAGE_MAX_LENGTH} characters")


def images_of(template: Mapping[str, Any]) -> list[str]:
    """The container images of a pod template, init containers first, in template order."""
    return [image for _, image in _images(template)]


def _images(template: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    pod = template.get("spec")
    if not isinstance(pod, Mapping):
        return
    for key in ("initContainers", "containers"):
        containers = pod.get(key)
        if isinstance(containers, list):
            for index, container in enumerate(containers):
                if isinstance(container, Mapping) and isinstance(container.get("image"), str):
                    yield f".template.spec.{key}[{index}].image", container["image"]


def _plain(value: object) -> object:
    # kopf hands over Mapping views, not dicts; strict fields and the revision hash want the
    # JSON types themselves, and a private copy the caller cannot mutate underneath us.
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --- documented enums ---------------------------------------------------------------------


class DocumentedEnum(StrEnum):
    """A string enum whose members carry their meaning.

    The meaning reaches `help()`, the docs and the CRD description (so `kubectl explain`
    shows it), from one place.
    """

    _value_: str
    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        member.__doc__ = meaning
        return member

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        described = handler.resolve_ref_schema(json_schema)
        values = "\n".join(f"- {member.value}: {member.meaning}" for member in cls)
        described["description"] = f"{(cls.__doc__ or '').strip()}\n\n{values}"
        return json_schema


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


class RouterKind(StrEnum):
    """Which router moves traffic; named after the `spec.trafficRouting` field that selects it."""

    GATEWAY_API = "gatewayAPI"
    NGINX = "nginx"
    ISTIO = "istio"
    SMI = "smi"
    REPLICA_RATIO = "replicaRatio"


class StepAction(StrEnum):
    """What a step does; named after the step's field."""

    SET_WEIGHT = "setWeight"
    PAUSE = "pause"
    ANALYSIS = "analysis"


class Control(DocumentedEnum):
    """A control annotation; its value is a token the operator acts on once.

    Listed in precedence order: when several carry new tokens at once, only the first of them
    acts, and all are recorded as handled. A token that cannot act (promote with no canary in
    flight) is recorded too, so it never acts later by surprise.
    """

    ABORT = (
        ABORT_ANNOTATION,
        "send all traffic back to the stable revision and scale the canary down; the rollout "
        "stays aborted (phase Degraded) until a retry token or a new template.",
    )
    RETRY = (
        RETRY_ANNOTATION,
        "after an abort, start the same canary again from its first step.",
    )
    PROMOTE_FULL = (
        PROMOTE_FULL_ANNOTATION,
        "skip every remaining step and analysis: the canary becomes the stable revision now.",
    )
    PROMOTE = (
        PROMOTE_ANNOTATION,
        "complete the current step (a pause, timed or not, or an analysis step) and go on with "
        "the next one.",
    )

    @property
    def status_field(self) -> Literal["abort", "retry", "promote", "promote_full"]:
        """The `status.controls` attribute holding the last token handled for this control."""
        fields: dict[Control, Literal["abort", "retry", "promote", "promote_full"]] = {
            Control.ABORT: "abort",
            Control.RETRY: "retry",
            Control.PROMOTE: "promote",
            Control.PROMOTE_FULL: "promote_full",
        }
        return fields[self]


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
        "pause without duration, until a promote token.",
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

    AVAILABLE = (
        "Available",
        "True while the stable revision serves traffic; False when no revision can (phase Failed).",
    )
    PROGRESSING = (
        "Progressing",
        "True while a canary is in progress (the message says what it waits for); False "
        "otherwise, with reason Complete, Aborted, or RouterError when the router cannot be "
        "used.",
    )
    PAUSED = (
        "Paused",
        "True while the canary is held at a pause step; the message says until when, or that "
        "it waits for a promote token.",
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
        "the latest analysis result (reserved for the analysis feature): True passing, False "
        "failed, Unknown running or inconclusive.",
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


# --- spec ---------------------------------------------------------------------------------


class _SpecModel(BaseModel):
    # Strict scalars (Integer, StrictStr) because the API server does not coerce "3" to 3;
    # frozen because the spec is the user's, and the operator only reads it.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
    )

    def to_dict(self) -> JsonObject:
        """The JSON form, camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ServiceSpec(_SpecModel):
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
        value = _integral(value)
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


class GatewayAPIRouter(_SpecModel):
    """Split traffic with the backendRefs weights of a Gateway API HTTPRoute."""

    http_route: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the HTTPRoute whose rules send traffic to the Service."""

    namespace: StrictStr | None = Field(
        default=None, max_length=LABEL_MAX_LENGTH, pattern=DNS1123_LABEL_PATTERN
    )
    """Namespace of the HTTPRoute; the rollout's namespace when omitted."""


class NginxRouter(_SpecModel):
    """Split traffic with a canary Ingress beside an ingress-nginx Ingress."""

    ingress: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the Ingress that routes to the Service; coalmine adds a canary Ingress beside it."""


class IstioRouter(_SpecModel):
    """Split traffic with the route weights of an Istio VirtualService."""

    virtual_service: StrictStr = Field(
        max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN
    )
    """Name of the VirtualService, in the rollout's namespace."""

    routes: tuple[Annotated[StrictStr, Field(min_length=1, max_length=NAME_MAX_LENGTH)], ...] = (
        Field(min_length=1, max_length=MAX_ISTIO_ROUTES)
    )
    """Names of the HTTP routes in the VirtualService whose weights coalmine sets."""


class SMIRouter(_SpecModel):
    """Split traffic with an SMI TrafficSplit."""

    traffic_split: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the TrafficSplit coalmine creates and owns, in the rollout's namespace."""


class ReplicaRatio(_SpecModel):
    """No router: traffic follows the ratio of canary to stable ready pods behind the Service.

    `replicaRatio: {}` is the default (trafficRouting omitted), written explicitly.
    """


class TrafficRouting(_SpecModel):
    """How traffic is split between the stable and canary revisions: at most one router.

    Omitted, or `replicaRatio: {}`, means no router: the canary gets about weight% of the
    replicas, and the Service spreads traffic over all ready pods.
    """

    gateway_api: GatewayAPIRouter | None = Field(default=None, alias="gatewayAPI")

    nginx: NginxRouter | None = None

    istio: IstioRouter | None = None

    smi: SMIRouter | None = None

    replica_ratio: ReplicaRatio | None = None

    @model_validator(mode="after")
    def _at_most_one_router(self) -> Self:
        chosen = [kind.value for kind in RouterKind if self._router(kind) is not None]
        if len(chosen) > 1:
            raise _field_problem("", f"set at most one router, not {' and '.join(chosen)}")
        return self

    def _router(self, kind: RouterKind) -> _SpecModel | None:
        routers: dict[RouterKind, _SpecModel | None] = {
            RouterKind.GATEWAY_API: self.gateway_api,
            RouterKind.NGINX: self.nginx,
            RouterKind.ISTIO: self.istio,
            RouterKind.SMI: self.smi,
            RouterKind.REPLICA_RATIO: self.replica_ratio,
        }
        return routers[kind]

    @property
    def kind(self) -> RouterKind:
        """The router in use; replicaRatio when none is set."""
        for kind in RouterKind:
            if self._router(kind) is not None:
                return kind
        return RouterKind.REPLICA_RATIO


class Pause(_SpecModel):
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


class Step(_SpecModel):
    """One step of the canary: exactly one of setWeight, pause or analysis."""

    set_weight: Percent | None = None
    """Send this percentage of traffic (0-100) to the canary, once its pods are ready."""

    pause: Pause | None = None

    analysis: FreeForm | None = None
    """Run analysis templates against the canary and wait for the verdict (reserved)."""

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Self:
        actions = [action.value for action in StepAction if self._value(action) is not None]
        if len(actions) != 1:
            found = " and ".join(actions) if actions else "none"
            raise _field_problem(
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


PodTemplate = Annotated[
    JsonObject,
    WithJsonSchema({"type": "object", "additionalProperties": True}),
]


class CanaryRolloutSpec(_SpecModel):
    """The desired state: a pod template, the Service in front of it, and the canary steps."""

    replicas: Integer = Field(default=1, ge=0, le=INT32_MAX)
    """Pods of the stable revision when no canary runs; the canary's share comes out of them."""

    template: PodTemplate
    """The pod template (a full PodTemplateSpec). Every distinct template is an immutable
    revision with its own Deployment, named after its hash."""

    service: ServiceSpec

    image_policy: ImagePolicy = ImagePolicy.WARN

    traffic_routing: TrafficRouting | None = None

    steps: tuple[Step, ...] = Field(min_length=1, max_length=MAX_STEPS)
    """The canary steps, in order (1 to 100). After the last one the canary is promoted."""

    analysis: FreeForm | None = None
    """Background analysis that runs during the whole canary (reserved for the analysis
    feature)."""

    min_ready_seconds: Integer = Field(default=0, ge=0, le=INT32_MAX)
    """Seconds a new pod must be ready, without crashing, before it counts as available."""

    progress_deadline_seconds: Integer = Field(default=600, ge=1, le=INT32_MAX)
    """Seconds a step may wait for its pods to become available before the canary is aborted
    (reason ProgressDeadlineExceeded). Must be more than minReadySeconds."""

    scale_down_delay_seconds: Integer = Field(default=30, ge=0, le=INT32_MAX)
    """Seconds a revision keeps its pods after it stops receiving traffic, so in-flight
    requests finish and routers that cache endpoints catch up."""

    revision_history_limit: Integer = Field(default=3, ge=0, le=MAX_REVISION_HISTORY_LIMIT)
    """Old revisions whose Deployments are kept, scaled to zero (0-50). Going back to a kept
    revision is a fast rollback: it skips the steps."""

    deletion_policy: DeletionPolicy = DeletionPolicy.RESTORE_STABLE

    @field_validator("template")
    @classmethod
    def _template_has_containers(cls, template: JsonObject) -> JsonObject:
        metadata = template.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise _field_problem(".metadata", "must be an object")
        pod = template.get("spec")
        if pod is None:
            raise _field_problem(".spec", "Required value: the pod template needs a spec")
        if not isinstance(pod, Mapping):
            raise _field_problem(".spec", "must be an object")
        containers = pod.get("containers")
        if not containers:
            raise _field_problem(
                ".spec.containers", "Required value: the pod needs at least one container"
            )
        _check_containers(containers, ".spec.containers")
        if pod.get("initContainers") is not None:
            _check_containers(pod["initContainers"], ".spec.initContainers")
        return template

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        if self.progress_deadline_seconds <= self.min_ready_seconds:
            raise _field_problem(".progressDeadlineSeconds", "must be greater than minReadySeconds")
        if self.image_policy is ImagePolicy.REQUIRE_DIGEST:
            for where, image in _images(self.template):
                if not re.search(IMAGE_DIGEST_PATTERN, image):
                    raise _field_problem(
                        where, "imagePolicy RequireDigest: the image must end in @sha256:<digest>"
                    )
        return self

    @property
    def router(self) -> RouterKind:
        """The router in use; replicaRatio when trafficRouting is omitted."""
        return (
            RouterKind.REPLICA_RATIO if self.traffic_routing is None else self.traffic_routing.kind
        )

    @property
    def revision(self) -> str:
        """The revision name of the template (see `revision_hash`)."""
        return revision_hash(self.template)

    def steps_hash(self) -> str:
        """A short hash of the steps, to notice when they change during a canary."""
        return _short_hash([step.to_dict() for step in self.steps])


# --- status -------------------------------------------------------------------------------


class _StatusModel(BaseModel):
    # Lenient where the spec is strict: status is written by the operator itself, and an
    # operator rolled back to an older version must still read what a newer one wrote.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def to_dict(self) -> JsonObject:
        """The JSON form, camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(_StatusModel):
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


class RevisionRecord(_StatusModel):
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


class MeasurementStatus(_StatusModel):
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
    """The statistical judge's relative effect size, for judge metrics."""
    message: str = ""
    """What was measured and why it was judged so, for people."""


class MetricStatus(_StatusModel):
    """Where one analysis metric stands: counters for every measurement, the latest in full."""

    name: str
    """The metric's name."""
    verdict: str
    """Running, Successful, Failed, Inconclusive or Error."""
    successful: int = 0
    """Successful measurements so far."""
    failed: int = 0
    """Failed measurements so far (more than failureLimit aborts the canary)."""
    inconclusive: int = 0
    """Inconclusive measurements so far (more than inconclusiveLimit pauses the canary)."""
    errors: int = 0
    """Measurements that could not be taken (Prometheus unreachable, bad query, ...)."""
    consecutive_errors: int = 0
    """Errors since the last measurement that was not one."""
    longest_error_run: int = 0
    """The most errors there were in a row (consecutiveErrorLimit pauses the canary)."""
    measurements: list[MeasurementStatus] = Field(default_factory=list, max_length=10)
    """The latest measurements, oldest first (at most 10)."""


class AnalysisRunStatus(_StatusModel):
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


class PendingScaleDown(_StatusModel):
    """A revision that no longer receives traffic but keeps its pods for a while."""

    revision: str
    """The revision name."""

    scale_down_at: AwareDatetime
    """When its Deployment is scaled to zero: when it stopped receiving traffic plus
    scaleDownDelaySeconds."""


class Controls(_StatusModel):
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

    def last(self, control: Control) -> str | None:
        """The last token handled for `control`."""
        token: str | None = getattr(self, control.status_field)
        return token

    def record(self, control: Control, token: str) -> None:
        """Remember `token` as handled for `control`."""
        setattr(self, control.status_field, token)

    def pending(self, annotations: Mapping[str, str]) -> dict[Control, str]:
        """Controls whose annotation holds a new, non-empty token, in precedence order."""
        return {
            control: token
            for control in Control
            if (token := annotations.get(control.value, "")) and token != self.last(control)
        }


class CanaryRolloutStatus(_StatusModel):
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

    analysis: list[AnalysisRunStatus] | None = Field(default=None, max_length=2)
    """The analysis runs of the current canary (an analysis step's and the background one)."""

    kopf: FreeForm | None = None
    """Bookkeeping of the kopf framework (handler progress during deletion), kept here so
    the operator never writes annotations a GitOps tool would see as drift."""

    @field_validator("conditions")
    @classmethod
    def _one_condition_per_type(cls, conditions: list[Condition]) -> list[Condition]:
        seen: set[ConditionType] = set()
        for index, condition in enumerate(conditions):
            if condition.type in seen:
                raise _field_problem(f"[{index}].type", f"duplicate condition {condition.type}")
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
            return cls.model_validate(_plain(obj.get("status") or {}))
        except ValidationError as error:
            raise SpecError(_problems(error, ("status",))) from None


# --- the resource -------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads; the rest is kept as it came."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    name: str = Field(max_length=ROLLOUT_NAME_MAX_LENGTH)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: AwareDatetime | None = None
    deletion_timestamp: AwareDatetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: tuple[str, ...] = ()


class CanaryRollout(BaseModel):
    """A CanaryRollout: rolls out each new pod template as a canary, step by step."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: Literal["coalmine.dev/v1alpha1"] = API_VERSION
    kind: Literal["CanaryRollout"] = KIND
    metadata: ObjectMeta
    spec: CanaryRolloutSpec
    status: CanaryRolloutStatus = Field(default_factory=CanaryRolloutStatus)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> CanaryRollout:
        """Parse a CanaryRollout as the API server (or kopf) hands it over.

        Raises SpecError naming the first invalid field, metadata and spec before status.
        """
        plain = _plain(obj)
        if not isinstance(plain, dict):
            raise SpecError((Problem("", "a CanaryRollout must be a JSON object"),))
        status = plain.pop("status", None) or {}
        try:
            rollout = cls.model_validate(plain)
        except ValidationError as error:
            raise SpecError(_problems(error)) from None
        rollout.status = CanaryRolloutStatus.from_object({"status": status})
        return rollout

    def to_object(self) -> JsonObject:
        """The JSON form, as the API server stores it."""
        obj = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        # Metadata goes back exactly as it came: no empty labels or finalizers made up.
        obj["metadata"] = self.metadata.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return obj

    @property
    def pending_controls(self) -> dict[Control, str]:
        """Control annotations holding a token not handled yet, in precedence order."""
        return self.status.controls.pending(self.metadata.annotations)
