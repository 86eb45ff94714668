"""Issue 9, item 12: hostile CanaryRollouts, generated, sent to the real API server.

A hypothesis strategy makes CanaryRollouts of every sort: valid ones with random steps, sizes,
names and unicode where Kubernetes allows it; the invalid ones the CRD refuses (every manifest
of tests/manifests/invalid/, and random breakages of valid ones); objects nested far deeper
than anyone writes; huge ones; unicode where Kubernetes does not allow it; names that collide
with another rollout's Services. Each is POSTed as raw JSON while the operator runs, and must be
either refused with a message that names the field, or accepted and given a phase or a
condition by the operator within seconds (Ready=False naming the reason, for what it cannot
use), and deleted cleanly (its finalizer released) afterwards. Meanwhile a healthy rollout
beside them goes on and is promoted at the end.

``COALMINE_HOSTILE_EXAMPLES`` sets how many are generated (60 in ``make test``, 300 in
``make chaos``); hypothesis prints how to replay a failing one.
"""

from __future__ import annotations

import json
import os
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from coalmine import resources as r
from devenv import paths
from devenv.manifests import plain_template
from devenv.operator import OperatorProcess
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import Rollouts, condition, manifest

pytestmark = [pytest.mark.usefixtures("operator"), pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("COALMINE_HOSTILE_EXAMPLES") or 60)
API_SERVER_BODY_LIMIT = 3 * 1024 * 1024
"""The largest request body the API server reads (its MaxRequestBodyBytes)."""
SETTLE_SECONDS = 20.0
"""An accepted rollout has a phase or a condition within this long, however hostile."""

INVALID = sorted((paths.REPO_ROOT / "tests" / "manifests" / "invalid").glob("*.yaml"))
BESIDE = "beside"
DEEP = '"__DEEP__"'


@dataclass(frozen=True)
class Hostile:
    """One generated object: its JSON, and what should become of it."""

    what: str
    name: str
    document: str
    refused_naming: str | None = None
    """The API server must refuse it, with this in its message (a field, or the name)."""
    may_be_refused: tuple[str, ...] = ()
    """The API server may refuse it for its size or depth, saying so with one of these."""
    reason: str | None = None
    """Accepted, it must end with Ready=False and this reason."""


# --- the strategy --------------------------------------------------------------------------------

LABEL_CHARS = string.ascii_lowercase + string.digits
name_label = st.builds(
    lambda head, body: head + body,
    st.sampled_from(string.ascii_lowercase),
    st.text(LABEL_CHARS + "-", max_size=40).map(lambda s: s.rstrip("-")),
)
UNICODE = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


PLACEHOLDER = "uniqid"


def _unique(name: str) -> str:
    """A name that becomes one no earlier example took when it is sent (`fresh`): hypothesis
    replays examples, and the API server remembers (strategies must not draw randomness of
    their own). At most 47 characters: the Service named after it keeps room for "-stable"."""
    return f"{name[:40]}-{PLACEHOLDER}"


def fresh(sample: Hostile) -> Hostile:
    """The sample with its placeholder replaced by a new unique suffix, everywhere."""
    suffix = uuid.uuid4().hex[:6]
    return replace(
        sample,
        name=sample.name.replace(PLACEHOLDER, suffix),
        document=sample.document.replace(PLACEHOLDER, suffix),
    )


@st.composite
def valid_steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    step = st.one_of(
        st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
        st.just({"pause": {}}),
        st.builds(lambda s: {"pause": {"duration": f"{s}s"}}, st.integers(0, 5)),
    )
    return draw(st.lists(step, min_size=1, max_size=8))


@st.composite
def valid(draw: st.DrawFn) -> Hostile:
    name = _unique(draw(name_label))
    body = manifest(name, "v1", steps=draw(valid_steps()), replicas=draw(st.integers(0, 4)))
    body["spec"]["template"] = plain_template("v1", app=name)
    container = body["spec"]["template"]["spec"]["containers"][0]
    # Unicode where Kubernetes takes any string: env values, annotations.
    container["env"] = [
        {"name": f"E{i}", "value": value}
        for i, value in enumerate(draw(st.lists(UNICODE, max_size=3)))
    ]
    body["metadata"]["annotations"] = {"note.example/u": draw(UNICODE)}
    return Hostile("valid", name, json.dumps(body))


def _invalid_manifest(path: Path) -> Callable[[], Hostile]:
    def make() -> Hostile:
        lines = path.read_text().splitlines()
        expect = lines[0].removeprefix("# expect: ").strip()
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        if "metadata.name" not in expect:
            name = _unique(name)
            body["metadata"]["name"] = name
        return Hostile(f"invalid: {path.stem}", name, json.dumps(body), refused_naming=expect)

    return make


BREAKAGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    # what: (the field the message names, the breakage)
    "replicas-float": ("spec.replicas", lambda b: b["spec"].update(replicas=1.5)),
    "weight-string": (
        "spec.steps[0].setWeight",
        lambda b: b["spec"].update(steps=[{"setWeight": "fifty"}]),
    ),
    "steps-not-a-list": ("spec.steps", lambda b: b["spec"].update(steps={"setWeight": 5})),
    "unknown-router": (
        "spec.trafficRouting",
        lambda b: b["spec"].update(trafficRouting={"linkerd": {"service": "x"}}),
    ),
    "service-name-unicode": (
        "spec.service.name",
        lambda b: b["spec"]["service"].update(name="sh\u00f6p"),
    ),
    "service-name-too-long-for-its-suffixes": (
        "spec.service.name",
        lambda b: b["spec"]["service"].update(name="s" * 60),
    ),
    "template-not-an-object": ("spec.template", lambda b: b["spec"].update(template="pod")),
    "too-many-containers": (
        "spec.template.spec.containers",
        lambda b: b["spec"]["template"]["spec"].update(
            containers=[{"name": f"c{i}", "image": "x:1"} for i in range(65)]
        ),
    ),
}


@st.composite
def broken(draw: st.DrawFn) -> Hostile:
    what = draw(st.sampled_from(sorted(BREAKAGES)))
    field, breakage = BREAKAGES[what]
    name = _unique(draw(name_label))
    body = manifest(name, "v1", steps=[{"setWeight": 50}])
    body["spec"]["template"] = plain_template("v1", app=name)
    breakage(body)
    return Hostile(f"broken: {what}", name, json.dumps(body), refused_naming=field)


@st.composite
def unicode_name(draw: st.DrawFn) -> Hostile:
    name = draw(UNICODE.filter(lambda s: s.strip() and not s.isascii()))
    body = manifest("x", "v1", steps=[{"setWeight": 50}])
    body["metadata"]["name"] = name
    return Hostile("unicode name", name, json.dumps(body), refused_naming="metadata.name")


@st.composite
def huge(draw: st.DrawFn) -> Hostile:
    """Large values: accepted by the API server up to its own limits, too big to be a revision."""
    size = draw(st.sampled_from([200_000, 1_000_000, 2_000_000]))
    name = _unique("huge")
    body = manifest(name, "v1", steps=[{"setWeight": 50}])
    body["spec"]["template"] = plain_template("v1", app=name)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "BIG", "value": draw(st.sampled_from("x\u00e9\u4e2d")) * size}]
    # Small enough for the API server and too big for a revision (InvalidSpec names
    # spec.template), or refused by the API server itself: either way, said.
    return Hostile(
        f"huge ({size} characters)",
        name,
        json.dumps(body),
        reason="InvalidSpec",
        may_be_refused=("too large", "request entity", "exceeds"),
    )


def _service_of(target: str) -> Hostile:
    name = _unique("collide")
    body = manifest(name, "v1", steps=[{"setWeight": 50}])
    body["spec"]["template"] = plain_template("v1", app=name)
    body["spec"]["service"]["name"] = target
    return Hostile(
        f"service {target} of another rollout", name, json.dumps(body), reason="OwnershipConflict"
    )


@st.composite
def colliding(draw: st.DrawFn) -> Hostile:
    """Services another rollout manages: the one beside, under its own or a suffixed name."""
    target = draw(st.sampled_from([BESIDE, f"{BESIDE}-stable", f"{BESIDE}-canary"]))
    if draw(st.booleans()):
        return _service_of(target)
    # A rollout named like another's Service: its own root Service collides.
    name = target if target != BESIDE else f"{BESIDE}-stable"
    body = manifest(name, "v1", steps=[{"setWeight": 50}])
    body["spec"]["template"] = plain_template("v1", app=name)
    return Hostile(
        f"named {name}, another rollout's Service",
        name,
        json.dumps(body),
        reason="OwnershipConflict",
    )


def _nested(depth: int) -> Hostile:
    name = _unique(f"deep-{depth}")
    body = manifest(name, "v1", steps=[{"setWeight": 50}])
    body["spec"]["template"] = plain_template("v1", app=name)
    body["spec"]["template"]["spec"]["nested"] = "__DEEP__"
    document = json.dumps(body).replace(DEEP, '{"a":' * depth + "1" + "}" * depth)
    return Hostile(
        f"nested {depth} deep", name, document, reason="Unreadable", may_be_refused=("depth",)
    )


@st.composite
def deep(draw: st.DrawFn) -> Hostile:
    """Nested where the schema keeps unknown fields (a pod template): accepted, unusable."""
    return _nested(draw(st.sampled_from([70, 300, 1500, 5000])))


NESTED_70 = _nested(70)
"""Its first reconcile went on from the answer to the finalizer patch, the raw object rather
than the cache's stub, and acted on it as if it were readable (Ready=True, a Deployment)."""

REFUSED_NEWCOMER = _service_of(BESIDE)
"""Refused (OwnershipConflict), then deleted: its finalizer was never released (the deletion
checked the Services' owner too, and stopped there), so its namespace could never go."""


hostile = st.one_of(
    valid(),
    st.sampled_from(INVALID).map(lambda p: _invalid_manifest(p)()),
    broken(),
    unicode_name(),
    deep(),
    huge(),
    colliding(),
)


# --- sending and judging -------------------------------------------------------------------------


def post(kube: Cluster, namespace: str, document: str) -> tuple[int, str]:
    """POST bytes as they are (no client of ours has to build a 5,000-level object)."""
    api = kube.api
    url = f"{api.configuration.host}{r.CANARY_ROLLOUTS.path(namespace)}"
    payload = document.encode()
    try:
        response = api.rest_client.pool_manager.request(
            "POST",
            url,
            body=payload,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=30,
            retries=False,
        )
    except urllib3.exceptions.HTTPError:
        if len(payload) <= API_SERVER_BODY_LIMIT:
            raise
        # The API server answers 413 as soon as the body passes its limit and closes the
        # connection, often before the client has sent it all and could read that answer.
        return 413, f"request entity too large: {len(payload)} bytes, the connection was closed"
    body = response.data.decode(errors="replace")
    if response.status < 400:
        return response.status, body[:300]  # the object itself: it may nest 5,000 levels
    try:
        message = str(json.loads(body).get("message", body))
    except ValueError:
        message = body
    return response.status, message


def settled(obj: dict[str, Any]) -> bool:
    """The operator has said something about this generation: a phase, or why not."""
    status = obj.get("status") or {}
    ready = condition(status, "Ready")
    if ready.get("status") == "False":
        return bool(ready.get("reason")) and bool(ready.get("message"))
    return bool(status.get("phase")) and status.get("observedGeneration") == obj["metadata"].get(
        "generation"
    )


def judge(kube: Cluster, namespace: str, sample: Hostile, operator: OperatorProcess) -> str:
    """Send one object; what became of it (for the log), or an AssertionError."""
    sample = fresh(sample)
    code, message = post(kube, namespace, sample.document)
    note(f"{sample.what}: HTTP {code}: {message[:300]}")
    rollouts = Rollouts(kube, namespace)
    if code >= 400:
        said = [word for word in sample.may_be_refused if word in message.lower()]
        if said:
            return f"refused ({code}), saying {said[0]}: {message[:100]}"
        assert code in (400, 409, 422), (sample.what, code, message)
        assert sample.refused_naming is not None, f"{sample.what} was refused: {message}"
        assert sample.refused_naming in message, (sample.what, message)
        return f"refused naming {sample.refused_naming}"
    assert sample.refused_naming is None, f"{sample.what} was accepted: {sample.document[:300]}"
    obj = wait_for(
        lambda: rollouts.get(sample.name),
        until=settled,
        timeout=SETTLE_SECONDS,
        message=f"{sample.what}: a phase or Ready=False",
    )
    status = obj.get("status") or {}
    ready = condition(status, "Ready")
    if sample.reason is not None:
        assert ready.get("reason") == sample.reason, (sample.what, status)
    outcome = (
        f"Ready=False {ready.get('reason')}: {str(ready.get('message'))[:80]}"
        if ready.get("status") == "False"
        else f"phase {status.get('phase')}"
    )
    rollouts.delete(sample.name)
    wait_for(
        lambda: sample.name in rollouts.names(),
        until=lambda present: not present,
        timeout=SETTLE_SECONDS,
        message=f"{sample.what}: deleted, its finalizer released",
    )
    assert operator.alive(), operator.tail()
    return outcome


@pytest.fixture
def beside(rollouts: Rollouts) -> Iterator[str]:
    """A healthy rollout that must keep working among the hostile ones."""
    body = manifest(BESIDE, "v1", steps=[{"setWeight": 50}, {"pause": {}}], replicas=2)
    body["spec"]["template"] = plain_template("v1", app=BESIDE)
    rollouts.create(body)
    rollouts.wait_phase(BESIDE, "Healthy")
    rollouts.patch_spec(BESIDE, {"template": plain_template("v2", app=BESIDE)})
    yield BESIDE
    paused = rollouts.wait_phase(BESIDE, "Paused", currentStepIndex=1)
    rollouts.control(BESIDE, "promote")
    rollouts.wait_phase(BESIDE, "Healthy", stableRevision=paused["canaryRevision"])


def test_item_12_hostile_rollouts_are_refused_naming_the_field_or_get_a_condition(
    kube: Cluster, namespace: str, beside: str, operator: OperatorProcess
) -> None:
    outcomes: list[str] = []
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(sample=hostile)
    @example(sample=REFUSED_NEWCOMER)
    @example(sample=NESTED_70)
    def one(sample: Hostile) -> None:
        outcomes.append(f"{sample.what}: {judge(kube, namespace, sample, operator)}")

    one()
    print(f"\n{len(outcomes)} hostile rollouts in {time.monotonic() - started:.0f} s:")
    for line in outcomes:
        print(f"  {line}")
