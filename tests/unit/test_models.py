"""The CanaryRollout models: parsing, defaults, the field paths of errors, and the helpers.

The operator trusts `CanaryRollout.from_object` to reject exactly what the API server rejects,
naming the same field, so the invalid manifests under tests/manifests/invalid (which a later
integration test applies to a real API server) are checked here against the models too.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from coalmine.api.durations import parse_duration
from coalmine.api.errors import SpecError
from coalmine.api.limits import GO_DURATION_PATTERN, HISTORY_LIMIT, MAX_STEPS
from coalmine.api.resource import API_VERSION, GROUP, VERSION, CanaryRollout
from coalmine.api.spec import CanaryRolloutSpec
from coalmine.api.status import CanaryRolloutStatus, Controls
from coalmine.api.template import images_of, revision_hash, template_problem
from coalmine.api.types import DocumentedEnum
from coalmine.api.vocabulary import (
    ConditionStatus,
    ConditionType,
    Control,
    DeletionPolicy,
    ImagePolicy,
    Outcome,
    Phase,
    ScaleDown,
    Stage,
    StepAction,
)
from coalmine.routers.gateway_api import GatewayAPIRouting

REPO = Path(__file__).resolve().parents[2]
INVALID_DIR = REPO / "tests" / "manifests" / "invalid"
EXAMPLE = REPO / "examples" / "canaryrollout-basic.yaml"
DIGEST = "sha256:" + "ab" * 32
T0 = datetime(2026, 11, 28, 0, 31, tzinfo=UTC)

# Every spec and status field set, as the API server would return it (timestamps as strings).
FULL = f"""
apiVersion: coalmine.dev/v1alpha1
kind: CanaryRollout
metadata:
  name: shop
  namespace: prod
  uid: 0d7c1b1e-8f1c-4c43-9a43-6b2f1f6d7a10
  generation: 7
  resourceVersion: "4711"
  creationTimestamp: "2026-11-27T09:00:00Z"
  labels:
    team: payments
  annotations:
    coalmine.dev/promote: token-2
    coalmine.dev/abort: token-a
  finalizers:
    - coalmine.dev/finalizer
spec:
  replicas: 10
  template:
    metadata:
      labels:
        app: shop
      annotations:
        prometheus.io/scrape: "true"
    spec:
      initContainers:
        - name: migrate
          image: coalmine.dev/demo-app@{DIGEST}
          command: ["migrate", "--up"]
      containers:
        - name: app
          image: coalmine.dev/demo-app:v2@{DIGEST}
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: DEMO_ERROR_RATE
              value: "0.01"
          resources:
            limits:
              cpu: 500m
  service:
    name: shop
    port: 80
    targetPort: http
  imagePolicy: RequireDigest
  trafficRouting:
    gatewayAPI:
      httpRoute: shop
      namespace: gateways
  steps:
    - setWeight: 10
    - pause:
        duration: 1h30m
    - analysis:
        templates:
          - templateName: error-rate
        args:
          - name: service
            value: shop
    - setWeight: 50
    - pause: {{}}
  analysis:
    templates:
      - templateName: latency
  minReadySeconds: 10
  progressDeadlineSeconds: 300
  scaleDownDelaySeconds: 60
  abortScaleDownDelaySeconds: 10
  revisionHistoryLimit: 5
  deletionPolicy: LeaveRouting
status:
  phase: Paused
  message: paused at 10% for 1h30m
  observedGeneration: 7
  stableRevision: 0123456789
  canaryRevision: abcdefabcd
  stepsHash: 5555aaaa55
  stage: Steps
  rollback: false
  currentStepIndex: 1
  stepDisplay: 2/5
  stepStartedAt: "2026-11-28T00:31:00Z"
  desiredWeight: 10
  confirmedWeight: 10
  pauseStartedAt: "2026-11-28T00:31:05Z"
  abortedAt: "2026-11-27T10:00:00Z"
  abortReason: AbortedByUser
  abortMessage: aborted on request
  conditions:
    - type: Available
      status: "True"
      reason: AllPodsAvailable
      message: ""
      lastTransitionTime: "2026-11-27T09:01:00Z"
      observedGeneration: 7
    - type: Paused
      status: "True"
      reason: PauseStep
      message: until 2026-11-28T02:01:05Z
      lastTransitionTime: "2026-11-28T00:31:05Z"
  history:
    - revision: abcdefabcd
      images: ["coalmine.dev/demo-app@{DIGEST}", "coalmine.dev/demo-app:v2@{DIGEST}"]
      outcome: InProgress
      startedAt: "2026-11-28T00:30:00Z"
    - revision: "0123456789"
      images: ["coalmine.dev/demo-app:v1"]
      outcome: Promoted
      startedAt: "2026-11-27T09:00:00Z"
      finishedAt: "2026-11-27T09:20:00Z"
      message: all steps passed
  pendingScaleDowns:
    - revision: ffffeeee00
      scaleDownAt: "2026-11-28T00:32:00Z"
  controls:
    abort: token-a
    retry: token-r
    promote: token-1
    promoteFull: token-f
"""

MINIMAL = """
apiVersion: coalmine.dev/v1alpha1
kind: CanaryRollout
metadata:
  name: shop
spec:
  template:
    spec:
      containers:
        - name: app
          image: coalmine.dev/demo-app:v1
  service:
    name: shop
    port: 8080
  steps:
    - setWeight: 50
"""


def _load(text: str) -> dict[str, Any]:
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict)
    return obj


def _spec_error(obj: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        CanaryRollout.from_object(obj)
    return caught.value


# --- parsing --------------------------------------------------------------------------------


def test_full_manifest_round_trips() -> None:
    obj = _load(FULL)
    # YAML reads the unquoted stableRevision 0123456789 as a string only because of the leading
    # zero; the API server hands strings over anyway.
    assert CanaryRollout.from_object(obj).to_object() == obj


def test_full_manifest_parses_into_typed_fields() -> None:
    rollout = CanaryRollout.from_object(_load(FULL))
    spec, status = rollout.spec, rollout.status

    assert spec.router == "gatewayAPI"
    assert isinstance(spec.routing, GatewayAPIRouting)
    assert spec.routing.namespace == "gateways"
    assert [step.action for step in spec.steps] == [
        StepAction.SET_WEIGHT,
        StepAction.PAUSE,
        StepAction.ANALYSIS,
        StepAction.SET_WEIGHT,
        StepAction.PAUSE,
    ]
    first_pause, last_pause = spec.steps[1].pause, spec.steps[4].pause
    assert first_pause is not None
    assert last_pause is not None
    assert first_pause.length == timedelta(hours=1, minutes=30)
    assert last_pause.length is None
    assert spec.image_policy is ImagePolicy.REQUIRE_DIGEST
    assert spec.deletion_policy is DeletionPolicy.LEAVE_ROUTING
    assert spec.service.resolved_target_port == "http"
    assert spec.revision == revision_hash(_load(FULL)["spec"]["template"])

    assert status.phase is Phase.PAUSED
    assert status.stage is Stage.STEPS
    assert status.step_started_at == T0
    assert status.history[1].outcome is Outcome.PROMOTED
    paused = status.condition(ConditionType.PAUSED)
    assert paused is not None
    assert paused.status is ConditionStatus.TRUE
    assert status.condition(ConditionType.ABORTED) is None
    assert rollout.metadata.generation == 7


def test_from_object_accepts_read_only_mappings_and_copies_them() -> None:
    obj = _load(MINIMAL)
    frozen = MappingProxyType({**obj, "spec": MappingProxyType(obj["spec"])})
    rollout = CanaryRollout.from_object(frozen)
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert rollout.spec.template is not None
    assert rollout.spec.template["spec"]["containers"][0]["image"] == "coalmine.dev/demo-app:v1"


def test_defaults() -> None:
    rollout = CanaryRollout.from_object(_load(MINIMAL))
    spec = rollout.spec
    assert spec.replicas == 1
    assert spec.image_policy is ImagePolicy.WARN
    assert spec.traffic_routing is None
    assert spec.router == "replicaRatio"
    assert spec.analysis is None
    assert spec.min_ready_seconds == 0
    assert spec.progress_deadline_seconds == 600
    assert spec.scale_down_delay_seconds == 30
    assert spec.revision_history_limit == 3
    assert spec.deletion_policy is DeletionPolicy.RESTORE_STABLE
    assert spec.service.target_port is None
    assert spec.service.resolved_target_port == 8080
    assert rollout.status == CanaryRolloutStatus()
    assert rollout.status.phase is None
    assert rollout.status.controls == Controls()


def test_explicit_replica_ratio_is_the_default_router() -> None:
    obj = _load(MINIMAL)
    obj["spec"]["trafficRouting"] = {"replicaRatio": {}}
    assert CanaryRollout.from_object(obj).spec.router == "replicaRatio"


@pytest.mark.parametrize(
    ("routing", "kind"),
    [
        ({"gatewayAPI": {"httpRoute": "shop"}}, "gatewayAPI"),
        ({"nginx": {"ingress": "shop"}}, "nginx"),
        ({"istio": {"virtualService": "shop", "routes": ["primary"]}}, "istio"),
        ({"smi": {"trafficSplit": "shop"}}, "smi"),
        ({"replicaRatio": {}}, "replicaRatio"),
    ],
)
def test_router_kind(routing: dict[str, Any], kind: str) -> None:
    obj = _load(MINIMAL)
    obj["spec"]["trafficRouting"] = routing
    assert CanaryRollout.from_object(obj).spec.router == kind


@pytest.mark.parametrize("routing", [{}, {"linkerd": {"service": "shop"}}])
def test_an_empty_or_unknown_router_is_refused_not_the_replica_ratio(
    routing: dict[str, Any],
) -> None:
    """Regression: an unknown router key, pruned by the API server, silently meant replicaRatio."""
    obj = _load(MINIMAL)
    obj["spec"]["trafficRouting"] = routing
    error = _spec_error(obj)
    assert error.field.startswith("spec.trafficRouting")


def test_python_names_work_as_well_as_camel_case() -> None:
    spec = CanaryRolloutSpec.model_validate(
        {
            "template": {"spec": {"containers": [{"name": "a", "image": "b"}]}},
            "service": {"name": "shop", "port": 80, "target_port": 8080},
            "steps": [{"set_weight": 5}],
            "scale_down_delay_seconds": 0,
        }
    )
    assert spec.steps[0].set_weight == 5
    assert spec.to_dict()["service"]["targetPort"] == 8080
    assert spec.to_dict()["scaleDownDelaySeconds"] == 0


def test_integral_floats_are_integers_as_on_the_api_server() -> None:
    obj = _load(MINIMAL)
    obj["spec"]["steps"] = [{"setWeight": 20.0}]
    obj["spec"]["replicas"] = 3.0
    obj["spec"]["service"]["targetPort"] = 8080.0
    spec = CanaryRollout.from_object(obj).spec
    assert spec.steps[0].set_weight == 20
    assert spec.replicas == 3
    assert spec.service.target_port == 8080
    assert isinstance(spec.replicas, int)


def test_spec_is_read_only() -> None:
    spec = CanaryRollout.from_object(_load(MINIMAL)).spec
    with pytest.raises(ValueError, match="frozen"):
        spec.replicas = 3  # type: ignore[misc]


def test_images_of() -> None:
    template = CanaryRollout.from_object(_load(FULL)).spec.template
    assert template is not None
    assert images_of(template) == [
        f"coalmine.dev/demo-app@{DIGEST}",
        f"coalmine.dev/demo-app:v2@{DIGEST}",
    ]
    assert images_of({}) == []
    assert images_of({"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}]}}) == [
        "x"
    ]


def test_example_parses() -> None:
    rollout = CanaryRollout.from_object(_load(EXAMPLE.read_text()))
    assert rollout.spec.router == "replicaRatio"
    assert rollout.spec.template is not None
    assert rollout.spec.template["spec"]["containers"][0]["image"] == "coalmine.dev/demo-app:v1"
    assert rollout.spec.template["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    assert any(s.pause is not None and s.pause.length is None for s in rollout.spec.steps)


def test_identity_constants_agree() -> None:
    assert f"{GROUP}/{VERSION}" == API_VERSION


# --- invalid specs name the field -----------------------------------------------------------

Edit = Callable[[dict[str, Any]], object]


def _set(path: str, value: object) -> Edit:
    def edit(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return edit


INVALID: list[tuple[str, Edit, str, str]] = [
    # (case, edit of FULL, expected field, substring of the reason)
    ("no spec", _drop("spec"), "spec", "Required value"),
    ("wrong kind", _set("kind", "Rollout"), "kind", "CanaryRollout"),
    ("wrong version", _set("apiVersion", "coalmine.dev/v1"), "apiVersion", "v1alpha1"),
    ("long name", _set("metadata.name", "x" * 64), "metadata.name", "63"),
    ("replicas as string", _set("spec.replicas", "10"), "spec.replicas", "integer"),
    ("replicas as bool", _set("spec.replicas", True), "spec.replicas", "integer"),
    ("replicas negative", _set("spec.replicas", -1), "spec.replicas", "greater than"),
    ("unknown spec field", _set("spec.replica", 3), "spec.replica", "unknown field"),
    ("template not object", _set("spec.template", []), "spec.template", "dictionary"),
    ("template metadata list", _set("spec.template.metadata", []), "spec.template.metadata", ""),
    ("template spec list", _set("spec.template.spec", []), "spec.template.spec", "object"),
    (
        "containers not list",
        _set("spec.template.spec.containers", {"name": "a"}),
        "spec.template.spec.containers",
        "list",
    ),
    (
        "container not object",
        _set("spec.template.spec.containers.0", "app"),
        "spec.template.spec.containers[0]",
        "object",
    ),
    (
        "container name empty",
        _set("spec.template.spec.containers.0.name", ""),
        "spec.template.spec.containers[0].name",
        "Required value",
    ),
    (
        "container name too long",
        _set("spec.template.spec.containers.0.name", "n" * 64),
        "spec.template.spec.containers[0].name",
        "63",
    ),
    (
        "image too long",
        _set("spec.template.spec.containers.0.image", "i" * 1025),
        "spec.template.spec.containers[0].image",
        "1024",
    ),
    (
        "too many containers",
        _set("spec.template.spec.containers", [{"name": f"c{i}", "image": "i"} for i in range(65)]),
        "spec.template.spec.containers",
        "at most 64",
    ),
    (
        "init container image by tag under RequireDigest",
        _set("spec.template.spec.initContainers.0.image", "coalmine.dev/demo-app:v2"),
        "spec.template.spec.initContainers[0].image",
        "RequireDigest",
    ),
    (
        "digest too short under RequireDigest",
        _set("spec.template.spec.containers.0.image", "coalmine.dev/demo-app@sha256:abcd"),
        "spec.template.spec.containers[0].image",
        "RequireDigest",
    ),
    ("service name too long", _set("spec.service.name", "s" * 57), "spec.service.name", "56"),
    ("service name digit first", _set("spec.service.name", "1shop"), "spec.service.name", ""),
    ("target port too high", _set("spec.service.targetPort", 65536), "spec.service.targetPort", ""),
    ("target port bool", _set("spec.service.targetPort", False), "spec.service.targetPort", ""),
    (
        "target port no letter",
        _set("spec.service.targetPort", "8080"),
        "spec.service.targetPort",
        "",
    ),
    (
        "target port name too long",
        _set("spec.service.targetPort", "a-very-long-port-name"),
        "spec.service.targetPort",
        "15",
    ),
    (
        "http route not a name",
        _set("spec.trafficRouting.gatewayAPI.httpRoute", "Shop Route"),
        "spec.trafficRouting.gatewayAPI.httpRoute",
        "pattern",
    ),
    (
        "two routers",
        _set("spec.trafficRouting.smi", {"trafficSplit": "shop"}),
        "spec.trafficRouting",
        "gatewayAPI and smi",
    ),
    (
        "unknown router",
        _set("spec.trafficRouting.linkerd", {}),
        "spec.trafficRouting.linkerd",
        "unknown field",
    ),
    ("no steps", _set("spec.steps", []), "spec.steps", "at least 1"),
    ("too many steps", _set("spec.steps", [{"setWeight": 1}] * 101), "spec.steps", "at most 100"),
    ("weight over 100", _set("spec.steps.3.setWeight", 101), "spec.steps[3].setWeight", "100"),
    ("weight as fraction", _set("spec.steps.0.setWeight", 10.5), "spec.steps[0].setWeight", ""),
    ("target port fraction", _set("spec.service.targetPort", 80.5), "spec.service.targetPort", ""),
    ("empty step", _set("spec.steps.2", {}), "spec.steps[2]", "found none"),
    (
        "two actions",
        _set("spec.steps.2", {"setWeight": 1, "pause": {}}),
        "spec.steps[2]",
        "found setWeight and pause",
    ),
    (
        "duration with a space",
        _set("spec.steps.1.pause.duration", "1 h"),
        "spec.steps[1].pause.duration",
        "invalid duration '1 h'",
    ),
    (
        "duration as number",
        _set("spec.steps.1.pause.duration", 30),
        "spec.steps[1].pause.duration",
        "string",
    ),
    (
        "unknown pause field",
        _set("spec.steps.1.pause.until", "promoted"),
        "spec.steps[1].pause.until",
        "unknown field",
    ),
    ("analysis not object", _set("spec.analysis", ["x"]), "spec.analysis", "dictionary"),
    ("image policy lower case", _set("spec.imagePolicy", "warn"), "spec.imagePolicy", "Warn"),
    (
        "deadline not above min ready",
        _set("spec.minReadySeconds", 300),
        "spec.progressDeadlineSeconds",
        "minReadySeconds",
    ),
    ("history limit", _set("spec.revisionHistoryLimit", 51), "spec.revisionHistoryLimit", "50"),
    ("deletion policy", _set("spec.deletionPolicy", "Orphan"), "spec.deletionPolicy", ""),
]


@pytest.mark.parametrize(
    ("edit", "field", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_spec_names_the_field(edit: Edit, field: str, reason: str) -> None:
    obj = _load(FULL)
    edit(obj)
    error = _spec_error(obj)
    assert error.field == field
    assert reason in error.reason
    assert str(error) == f"{field}: {error.reason}"
    assert error.problems[0] == (field, error.reason)


def test_all_problems_are_listed_first_one_first() -> None:
    obj = _load(FULL)
    obj["spec"]["replicas"] = -1
    obj["spec"]["steps"][0]["setWeight"] = 200
    error = _spec_error(obj)
    assert [p.field for p in error.problems] == ["spec.replicas", "spec.steps[0].setWeight"]


def test_not_an_object() -> None:
    with pytest.raises(SpecError, match="JSON object"):
        CanaryRollout.from_object(["not", "a", "rollout"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("status.phase", "Sleeping"), "status.phase"),
        (_set("status.conditions.1.type", "Available"), "status.conditions[1].type"),
        (_set("status.conditions.0.reason", "not camel case"), "status.conditions[0].reason"),
        (_set("status.stepStartedAt", "2026-11-28T00:31:00"), "status.stepStartedAt"),
        (_set("status.confirmedWeight", 101), "status.confirmedWeight"),
        (
            _set("status.history", [{"revision": "a", "outcome": "Done"}]),
            "status.history[0].outcome",
        ),
    ],
    ids=["phase", "duplicate condition", "reason", "naive time", "weight", "outcome"],
)
def test_invalid_status_names_the_field(edit: Edit, field: str) -> None:
    obj = _load(FULL)
    edit(obj)
    assert _spec_error(obj).field == field
    with pytest.raises(SpecError) as caught:
        CanaryRolloutStatus.from_object(obj)
    assert caught.value.field == field


def test_status_of_an_invalid_spec_still_reads() -> None:
    obj = _load(FULL)
    obj["spec"]["steps"] = []
    _spec_error(obj)
    assert CanaryRolloutStatus.from_object(obj).phase is Phase.PAUSED


def test_status_ignores_fields_it_does_not_know() -> None:
    # An operator rolled back to an older version still reads a newer one's status.
    status = CanaryRolloutStatus.from_object({"status": {"phase": "Healthy", "newField": 1}})
    assert status.phase is Phase.HEALTHY


# --- the invalid manifests, as the API server will see them ----------------------------------


def _manifests() -> list[Path]:
    return sorted(INVALID_DIR.glob("*.yaml"))


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def _within(field: str, prefix: str) -> bool:
    """`field` is `prefix` or a field below it (`a.b[0].c` is within `a.b`, not `a.bc`)."""
    return field == prefix or (field.startswith(prefix) and field[len(prefix)] in ".[")


def test_there_are_enough_invalid_manifests() -> None:
    assert len(_manifests()) >= 15


@pytest.mark.parametrize("path", _manifests(), ids=lambda path: path.stem)
def test_invalid_manifest_is_rejected_at_the_expected_field(path: Path) -> None:
    expected = _expectation(path)
    # The API server prints `<field>: <kind of error>: <detail>`; the models may be more precise
    # (spec.template.spec.containers[0].image where a CEL rule can only point at the list).
    field, _, kind = expected.partition(": ")
    error = _spec_error(_load(path.read_text()))
    assert _within(error.field, field), f"{error} does not name {field}"
    if kind.startswith("Required value"):
        assert error.reason.startswith("Required value"), error.reason


def test_invalid_manifests_are_valid_apart_from_their_mistake() -> None:
    # Each manifest must fail for one reason only, or the later test against the API server
    # could pass for the wrong one.
    for path in _manifests():
        assert len(_spec_error(_load(path.read_text())).problems) == 1, path.name


# --- revision_hash ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
templates = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(item) for item in value]
    return value


@given(templates)
def test_revision_hash_ignores_key_order(template: dict[str, Any]) -> None:
    assert revision_hash(_reversed_keys(template)) == revision_hash(template)


@given(templates, templates)
def test_revision_hash_differs_for_different_templates(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    if first != second:
        assert revision_hash(first) != revision_hash(second)


@given(templates)
def test_revision_hash_is_a_short_dns_label(template: dict[str, Any]) -> None:
    assert re.fullmatch("[0-9a-f]{10}", revision_hash(template))


def test_revision_hash_sees_every_change() -> None:
    template = _load(MINIMAL)["spec"]["template"]
    relabelled = copy.deepcopy(template)
    relabelled["metadata"] = {"labels": {"team": "a"}}
    assert revision_hash(relabelled) != revision_hash(template)


def test_revision_hash_is_pinned() -> None:
    # Every existing rollout names its Deployments with this hash: if the algorithm changed,
    # an operator upgrade would see a new revision everywhere and start a canary in every
    # namespace. Changing this value needs a migration, not a test update.
    template = {"spec": {"containers": [{"name": "app", "image": "coalmine.dev/demo-app:v1"}]}}
    assert revision_hash(template) == "1a51c48265"


# --- parse_duration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("+0", timedelta(0)),
        ("-0", timedelta(0)),
        ("0s", timedelta(0)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("90m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("1.h", timedelta(hours=1)),
        (".5s", timedelta(milliseconds=500)),
        ("2s500ms", timedelta(seconds=2, milliseconds=500)),
        ("1s1s", timedelta(seconds=2)),
        ("10us", timedelta(microseconds=10)),
        ("10µs", timedelta(microseconds=10)),
        ("10μs", timedelta(microseconds=10)),
        ("1500ns", timedelta(microseconds=1)),
        ("999ns", timedelta(0)),
        ("-1m30s", -timedelta(minutes=1, seconds=30)),
        ("+5m", timedelta(minutes=5)),
        ("2562047h47m16.854775807s", timedelta(hours=2562047, minutes=47, seconds=16.854775)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "+",
        "5",
        "s",
        ".s",
        "1d",
        "1w",
        "5 m",
        " 5m",
        "5m ",
        "1H",
        "5min",
        "1h-30m",
        "1..5s",
        "five seconds",
        "PT5M",
        "2562047h47m16.854775808s",
        "99999999999h",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_duration_error_shows_the_form() -> None:
    with pytest.raises(ValueError, match=r"'1d'.*30s, 5m, 1h30m") as caught:
        parse_duration("1d")
    assert "no days" in str(caught.value)


units = st.sampled_from(
    [
        ("h", timedelta(hours=1)),
        ("m", timedelta(minutes=1)),
        ("s", timedelta(seconds=1)),
        ("ms", timedelta(milliseconds=1)),
        ("us", timedelta(microseconds=1)),
    ]
)


@given(st.lists(st.tuples(st.integers(0, 10_000), units), min_size=1, max_size=4))
def test_parse_duration_adds_its_parts(parts: list[tuple[int, tuple[str, timedelta]]]) -> None:
    text = "".join(f"{count}{unit}" for count, (unit, _) in parts)
    assert parse_duration(text) == sum((count * size for count, (_, size) in parts), timedelta(0))


@given(st.text(alphabet="0123456789.+-hmsunµμ d", max_size=12))
def test_parse_duration_accepts_exactly_the_pattern(text: str) -> None:
    # The CRD's CEL rule checks GO_DURATION_PATTERN, then duration(); both must agree with us.
    matches = re.fullmatch(GO_DURATION_PATTERN, text) is not None
    problem = ""
    try:
        parse_duration(text)
    except ValueError as error:
        problem = str(error)
    # Only an overflow (beyond int64 nanoseconds, as in Go) fails a string of the right form.
    assert matches == (not problem or "292 years" in problem)


@given(st.integers(0, 10**6), st.integers(0, 999))
def test_pause_length(seconds: int, millis: int) -> None:
    obj = _load(MINIMAL)
    obj["spec"]["steps"] = [{"pause": {"duration": f"{seconds}s{millis}ms"}}]
    pause = CanaryRollout.from_object(obj).spec.steps[0].pause
    assert pause is not None
    assert pause.length == timedelta(seconds=seconds, milliseconds=millis)


@given(st.integers(-200, 300))
def test_weights(weight: int) -> None:
    obj = _load(MINIMAL)
    obj["spec"]["steps"] = [{"setWeight": weight}]
    if 0 <= weight <= 100:
        assert CanaryRollout.from_object(obj).spec.steps[0].set_weight == weight
    else:
        assert _spec_error(obj).field == "spec.steps[0].setWeight"


@given(st.integers(1, MAX_STEPS + 5))
def test_step_count(count: int) -> None:
    obj = _load(MINIMAL)
    obj["spec"]["steps"] = [{"setWeight": 1}] * count
    if count <= MAX_STEPS:
        assert len(CanaryRollout.from_object(obj).spec.steps) == count
    else:
        assert _spec_error(obj).field == "spec.steps"


# --- control annotations ---------------------------------------------------------------------


def test_control_annotations() -> None:
    assert [control.annotation for control in Control] == [
        "coalmine.dev/abort",
        "coalmine.dev/retry",
        "coalmine.dev/pause",
        "coalmine.dev/resume",
        "coalmine.dev/promote-full",
        "coalmine.dev/promote",
        "coalmine.dev/restart",
    ]
    assert [control.status_field for control in Control] == [
        "abort",
        "retry",
        "pause",
        "resume",
        "promote_full",
        "promote",
        "restart",
    ]
    assert set(Controls.model_fields) == {control.status_field for control in Control}


# --- conditions ------------------------------------------------------------------------------


def test_set_condition_moves_the_transition_time_only_on_a_status_change() -> None:
    status = CanaryRolloutStatus()
    later = T0 + timedelta(minutes=5)
    assert status.set_condition(
        ConditionType.PAUSED, ConditionStatus.TRUE, reason="PauseStep", message="a", now=T0
    )
    assert status.set_condition(
        ConditionType.PAUSED, ConditionStatus.TRUE, reason="PauseStep", message="b", now=later
    )
    paused = status.condition(ConditionType.PAUSED)
    assert paused is not None
    assert paused.last_transition_time == T0
    assert paused.message == "b"
    assert not status.set_condition(
        ConditionType.PAUSED, ConditionStatus.TRUE, reason="PauseStep", message="b", now=later
    )
    assert status.set_condition(
        ConditionType.PAUSED, ConditionStatus.FALSE, reason="Promoted", message="", now=later
    )
    paused = status.condition(ConditionType.PAUSED)
    assert paused is not None
    assert paused.last_transition_time == later


def test_conditions_stay_one_per_type_in_a_stable_order() -> None:
    status = CanaryRolloutStatus()
    for type_ in reversed(ConditionType):
        status.set_condition(type_, ConditionStatus.UNKNOWN, reason="Starting", message="", now=T0)
    status.set_condition(
        ConditionType.ABORTED, ConditionStatus.TRUE, reason="AbortedByUser", message="", now=T0
    )
    assert [c.type for c in status.conditions] == list(ConditionType)
    assert CanaryRolloutStatus.from_object({"status": status.to_dict()}) == status


def test_history_is_bounded() -> None:
    record = {"revision": "a", "outcome": "Aborted"}
    obj = {"status": {"history": [record] * (HISTORY_LIMIT + 1)}}
    with pytest.raises(SpecError) as caught:
        CanaryRolloutStatus.from_object(obj)
    assert caught.value.field == "status.history"


# --- documented enums ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "enum", [ImagePolicy, DeletionPolicy, Control, Phase, Stage, ConditionType, Outcome]
)
def test_every_enum_value_says_what_it_means(enum: type[DocumentedEnum]) -> None:
    for member in enum:
        assert member.meaning, f"{enum.__name__}.{member.name} has no meaning"
        assert member.__doc__ == member.meaning
        assert enum(member.value) is member
    assert all(c in string.ascii_letters for c in "".join(m.name for m in enum).replace("_", ""))


def test_phases_and_condition_types_are_the_documented_ones() -> None:
    assert [p.value for p in Phase] == ["Healthy", "Progressing", "Paused", "Degraded", "Failed"]
    assert [c.value for c in ConditionType] == [
        "Ready",
        "Available",
        "Progressing",
        "Paused",
        "Aborted",
        "InvalidSpec",
        "Analysis",
    ]
    assert [o.value for o in Outcome] == [
        "InProgress",
        "Promoted",
        "Aborted",
        "Superseded",
        "RolledBack",
    ]


# --- adoption (spec.workloadRef) ----------------------------------------------------------------


def test_a_workload_ref_replaces_the_template() -> None:
    obj = _load(MINIMAL)
    del obj["spec"]["template"]
    obj["spec"]["workloadRef"] = {"name": "web"}
    spec = CanaryRollout.from_object(obj).spec
    assert spec.template is None
    assert spec.workload_ref is not None
    assert (spec.workload_ref.name, spec.workload_ref.scale_down) == ("web", ScaleDown.ON_SUCCESS)
    with pytest.raises(ValueError, match="not read yet"):
        _ = spec.revision
    adopted = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "a", "image": "b"}]},
    }
    assert spec.with_template(adopted).revision == revision_hash(adopted)


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "Web"}, "spec.workloadRef.name"),
        ({"name": "web", "scaleDown": "sometimes"}, "spec.workloadRef.scaleDown"),
        ({}, "spec.workloadRef.name"),
        ({"name": "web", "kind": "StatefulSet"}, "spec.workloadRef.kind"),
    ],
)
def test_a_workload_ref_is_checked(ref: dict[str, Any], field: str) -> None:
    obj = _load(MINIMAL)
    del obj["spec"]["template"]
    obj["spec"]["workloadRef"] = ref
    assert _spec_error(obj).field == field


def test_an_adopted_template_is_checked_like_a_spec_template() -> None:
    good = {"spec": {"containers": [{"name": "a", "image": "web:1"}]}}
    assert template_problem(good) is None
    assert template_problem({"spec": {"containers": []}}) == (
        ".spec.containers",
        "Required value: the pod needs at least one container",
    )
    pinned = template_problem(good, require_digest=True)
    assert pinned is not None
    assert pinned.field == ".spec.containers[0].image"
