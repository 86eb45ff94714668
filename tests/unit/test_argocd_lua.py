"""The Argo CD health check and actions in deploy/argocd/, run by a real Lua 5.1.

Argo CD runs resource customizations in gopher-lua (Lua 5.1) with the live object in the global
``obj``, and only the base, table and package libraries plus an ``os`` reduced to ``time`` and
``date``. A script that calls ``string.format`` or ``math.random`` works in a plain Lua and fails
in Argo CD, so the runtime here is cut down the same way before any script runs.

The objects the scripts read are not hand-written: the operator's own code makes them. The pure
state machine decides (driven through the simulated world of the machine tests), and
``coalmine.translate`` turns each decision into the status exactly as ``reconcile`` writes it, so a
renamed status field or phase breaks these tests instead of Argo CD users' dashboards. The same
simulation then takes the actions' output back, which checks that the annotations the actions
write are the ones the operator acts on.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine import translate as s
from coalmine.api.errors import SpecError
from coalmine.api.resource import API_VERSION, KIND, CanaryRollout
from coalmine.api.status import CanaryRolloutStatus

from .machine_world import EPOCH, World

lua51 = pytest.importorskip(
    "lupa.lua51",
    reason="lupa (Lua for Python) is not installed; the Argo CD Lua tests need a real Lua 5.1",
)

ARGOCD = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
ACTIONS = ("promote", "promote-full", "abort", "retry")
HEALTH_STATES = {"Healthy", "Progressing", "Suspended", "Degraded", "Missing", "Unknown"}
TOKEN = re.compile(r"^argocd-[0-9]{8}T[0-9]{6}Z-[0-9]+$")
NOW = 1_790_000_000  # a fixed second for the scripts' os.date: 2026-09-21T14:13:20Z

# Argo CD's Lua environment, made from a full one: what gopher-lua does not open there is
# removed, `os` keeps only time and date (with a clock the tests control), and require("os")
# returns that reduced table, as Argo CD preloads it. Without the string library, gopher-lua
# strings have no methods either, hence the metatable's __index goes too.
SANDBOX = """
local clock = ...
local real_date, real_time = os.date, os.time
local safe_os = {
  date = function(format, at) return real_date(format, at or clock()) end,
  time = function(fields) if fields == nil then return clock() end return real_time(fields) end,
}
getmetatable("").__index = nil
for _, name in ipairs({"string", "math", "io", "debug", "coroutine", "python"}) do
  _G[name] = nil
  package.loaded[name] = nil
end
os = safe_os
package.loaded.os = safe_os
package.path, package.cpath = "", ""
"""


def run_lua(path: Path, obj: Mapping[str, Any], *, now: int = NOW) -> Any:
    """Run one script as Argo CD does: a fresh Lua state, ``obj`` global, the chunk's result."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(SANDBOX, lambda: now)
    lua.globals().obj = lua.table_from(copy.deepcopy(dict(obj)), recursive=True)
    return to_python(lua.execute(path.read_text()), obj)


def to_python(value: Any, original: Any = None) -> Any:
    """A Lua result as JSON, read the way Argo CD reads it.

    Tables keyed 1..n are lists, other tables objects. An empty table is ambiguous: Argo CD
    encodes it as a list, then turns it back into an object where the object it passed in had
    one (lua.go, cleanReturnedObj). ``original`` is that object, at the same place.
    """
    if lua51.lua_type(value) != "table":
        return value
    items = dict(value.items())
    if not items:
        return {} if isinstance(original, dict) else []
    keys = list(items)
    if all(isinstance(key, int) for key in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
        was: list[Any] = original if isinstance(original, list) else []
        return [
            to_python(items[index], was[index - 1] if index <= len(was) else None)
            for index in range(1, len(items) + 1)
        ]
    had: dict[str, Any] = original if isinstance(original, dict) else {}
    return {str(key): to_python(item, had.get(str(key))) for key, item in items.items()}


def health(obj: Mapping[str, Any]) -> dict[str, str]:
    result: dict[str, str] = run_lua(ARGOCD / "health.lua", obj)
    assert result["status"] in HEALTH_STATES
    return result


def action(name: str, obj: Mapping[str, Any], *, now: int = NOW) -> dict[str, Any]:
    result: dict[str, Any] = run_lua(ARGOCD / "actions" / name / "action.lua", obj, now=now)
    return result


def enabled_actions(obj: Mapping[str, Any]) -> set[str]:
    actions: dict[str, dict[str, bool]] = run_lua(ARGOCD / "actions" / "discovery.lua", obj)
    # Every action is always listed, so the UI shows it (greyed out) rather than hiding it.
    assert set(actions) == set(ACTIONS)
    return {name for name, flags in actions.items() if not flags.get("disabled", False)}


# --- the operator, without a cluster ------------------------------------------------------------


def manifest(version: str, *, set_weight: int = 25) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "6f1c1f36-0d4f-4a53-9d27-5b0b3b2b7a11",
            "generation": 1,
            "resourceVersion": "1000",
        },
        "spec": {
            "replicas": 4,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": f"example.com/web:{version}"}]},
            },
            "service": {"name": "web", "port": 80, "targetPort": 8080},
            "imagePolicy": "Allow",
            "steps": [{"setWeight": set_weight}, {"pause": {}}, {"setWeight": 50}],
            "progressDeadlineSeconds": 60,
        },
    }


class Operator:
    """One CanaryRollout as the API server holds it, reconciled by the operator's pure code.

    Each pass does what ``reconcile`` does between its API calls: parse the object, derive the
    plan and the memory, decide, and write ``status_from(...).to_dict()`` as the new status (or
    ``invalid_status`` for a spec the models reject). The world around the machine stands in for
    Deployments and Services; every write bumps resourceVersion, as the API server would.
    """

    def __init__(
        self, obj: Mapping[str, Any], *, broken: Callable[[str], bool] = lambda _: False
    ) -> None:
        self.obj = copy.deepcopy(dict(obj))
        self.world: World | None = None
        self.broken = broken  # which revisions never get ready pods

    def bump(self) -> None:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def write_status(self, status: CanaryRolloutStatus) -> None:
        # reconcile skips a write that changes nothing, and only a write moves resourceVersion.
        if self.obj.get("status") != status.to_dict():
            self.obj["status"] = status.to_dict()
            self.bump()

    def reconcile(self, rounds: int = 120) -> None:
        """Reconcile until the machine waits for nothing but time or a person, or ``rounds``."""
        for _ in range(rounds):
            try:
                rollout = CanaryRollout.from_object(self.obj)
            except SpecError as error:
                old = CanaryRolloutStatus.from_object(self.obj)
                generation = self.obj["metadata"]["generation"]
                now = self.world.now if self.world else EPOCH
                self.write_status(s.invalid_status(old, error.field, error.reason, generation, now))
                return
            plan = s.plan_from(rollout)
            if self.world is None:
                self.world = World(plan)
            world = self.world
            world.plan = plan
            world.memory = s.memory_from(rollout.status)
            world.controls = s.controls_on(rollout.metadata.annotations)
            world.broken_revisions = {plan.revision} if self.broken(plan.revision) else set()
            decision = world.step()
            self.write_status(s.status_from(rollout, decision, world.now))
            world.pods_become_ready()
            if not decision.mutating and decision.requeue_after is None:
                return
            world.advance(min(1.0, decision.requeue_after or 1.0))

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """A user's edit of the spec: the API server bumps the generation."""
        change(self.obj["spec"])
        self.obj["metadata"]["generation"] += 1
        self.bump()

    def heal(self) -> None:
        """From now on every revision's pods become ready, those of existing ones too."""
        self.broken = lambda _: False
        for deployment in self.world.deployments.values() if self.world else ():
            deployment.broken = False

    def take(self, obj: Mapping[str, Any]) -> None:
        """An object an Argo CD action returned, as patched into the live one."""
        self.obj = copy.deepcopy(dict(obj))
        self.bump()

    @property
    def phase(self) -> str:
        return str(self.obj["status"]["phase"])

    @property
    def events(self) -> list[str]:
        return [event.reason for event in self.world.events] if self.world else []


def revision(version: str) -> str:
    """The revision name the operator gives the template of ``manifest(version)``."""
    return CanaryRollout.from_object(manifest(version)).spec.revision


def new_template(version: str) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["template"]["spec"]["containers"][0]["image"] = f"example.com/web:{version}"

    return change


def healthy() -> Operator:
    operator = Operator(manifest("v1"))
    operator.reconcile()
    assert operator.phase == "Healthy"
    return operator


def paused() -> Operator:
    operator = healthy()
    operator.edit(new_template("v2"))
    operator.reconcile()
    assert operator.phase == "Paused"
    return operator


def progressing() -> Operator:
    """A canary whose pods are not ready yet, well within its progress deadline."""
    operator = healthy()
    v2 = revision("v2")
    operator.broken = lambda revision: revision == v2
    operator.edit(new_template("v2"))
    operator.reconcile(rounds=5)
    assert operator.phase == "Progressing"
    assert operator.obj["status"]["canaryRevision"] == v2
    return operator


def aborted() -> Operator:
    operator = paused()
    operator.take(annotated(operator.obj, "abort", "by-hand"))
    operator.reconcile()
    assert operator.phase == "Degraded"
    return operator


def past_deadline() -> Operator:
    operator = progressing()
    operator.reconcile(rounds=200)
    assert operator.phase == "Degraded"
    return operator


def promoting() -> Operator:
    """A promote-full taken while the canary's pods are not ready: promoted, not yet done."""
    operator = progressing()
    operator.take(action("promote-full", operator.obj))
    operator.reconcile(rounds=3)
    assert operator.phase == "Progressing"
    assert operator.obj["status"]["stage"] != "Steps"
    return operator


def invalid() -> Operator:
    operator = Operator(manifest("v1", set_weight=150))
    operator.reconcile()
    assert operator.phase == "Failed"
    return operator


def never_available() -> Operator:
    """The first revision never gets its pods: no stable revision to fall back to."""
    operator = Operator(manifest("v1"), broken=lambda _: True)
    operator.reconcile(rounds=200)
    assert operator.phase == "Failed"
    return operator


def annotated(obj: Mapping[str, Any], control: str, token: str) -> dict[str, Any]:
    result = copy.deepcopy(dict(obj))
    result["metadata"].setdefault("annotations", {})[f"coalmine.dev/{control}"] = token
    return result


def without_annotations(obj: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(obj))
    result["metadata"].pop("annotations", None)
    return result


# --- the snippet users paste is the code tested here --------------------------------------------


def test_the_argocd_cm_snippet_inlines_exactly_the_tested_scripts() -> None:
    snippet = yaml.safe_load((ARGOCD / "resource-customizations.yaml").read_text())
    data = snippet["data"]
    assert set(data) == {
        "resource.customizations.health.coalmine.dev_CanaryRollout",
        "resource.customizations.actions.coalmine.dev_CanaryRollout",
    }
    health_lua = data["resource.customizations.health.coalmine.dev_CanaryRollout"]
    assert health_lua == (ARGOCD / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.coalmine.dev_CanaryRollout"])
    assert actions["discovery.lua"] == (ARGOCD / "actions" / "discovery.lua").read_text()
    assert [definition["name"] for definition in actions["definitions"]] == list(ACTIONS)
    for definition in actions["definitions"]:
        script = ARGOCD / "actions" / definition["name"] / "action.lua"
        assert definition["action.lua"] == script.read_text(), definition["name"]


def test_the_sandbox_refuses_what_argocd_refuses() -> None:
    # Guards the guard: were the sandbox as rich as plain Lua, the scripts could use string
    # functions here and still fail in Argo CD.
    probes = {
        'return string.format("%d", 1)': "string",
        'return ("x"):upper()': "index a string value",
        "return math.floor(1.5)": "math",
        'return io.open("/etc/hostname")': "io",
    }
    for code, name in probes.items():
        lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
        lua.execute(SANDBOX, lambda: NOW)
        with pytest.raises(lua51.LuaError, match=name):
            lua.execute(code)
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(SANDBOX, lambda: NOW)
    assert lua.execute('return require("os").date("!%Y-%m-%d")') == "2026-09-21"


# --- health -------------------------------------------------------------------------------------


def test_a_rollout_the_operator_has_not_seen_is_progressing() -> None:
    assert health(manifest("v1"))["status"] == "Progressing"


def test_a_spec_newer_than_the_status_is_progressing_whatever_the_phase() -> None:
    operator = healthy()
    operator.edit(new_template("v2"))  # synced by Argo CD, not reconciled yet
    assert operator.obj["status"]["phase"] == "Healthy"
    result = health(operator.obj)
    assert result == {
        "status": "Progressing",
        "message": "waiting for the coalmine operator to act on generation 2",
    }


def test_a_canary_on_its_way_is_progressing_with_the_operators_message() -> None:
    operator = progressing()
    result = health(operator.obj)
    assert result["status"] == "Progressing"
    assert result["message"] == operator.obj["status"]["message"]


def test_a_pause_step_is_suspended() -> None:
    operator = paused()
    assert health(operator.obj) == {
        "status": "Suspended",
        "message": operator.obj["status"]["message"],
    }
    assert "until promoted" in operator.obj["status"]["message"]


def test_an_aborted_canary_is_degraded() -> None:
    operator = aborted()
    assert operator.obj["status"]["abortReason"] == "AbortedByUser"
    assert health(operator.obj) == {
        "status": "Degraded",
        "message": operator.obj["status"]["message"],
    }
    assert operator.obj["status"]["message"].startswith("aborted: ")


def test_a_canary_past_its_progress_deadline_is_degraded() -> None:
    operator = past_deadline()
    result = health(operator.obj)
    assert result["status"] == "Degraded"
    assert operator.obj["status"]["abortReason"] == "ProgressDeadlineExceeded"
    assert result["message"] == operator.obj["status"]["message"]
    assert "ready pods within 60 s" in result["message"]


def test_an_invalid_spec_is_degraded_naming_the_field() -> None:
    operator = invalid()
    result = health(operator.obj)
    assert result["status"] == "Degraded"
    assert result["message"].startswith("invalid spec: spec.steps[0].setWeight: ")
    assert result["message"] == operator.obj["status"]["message"]


def test_a_first_revision_that_never_comes_up_is_degraded() -> None:
    operator = never_available()
    result = health(operator.obj)
    assert result["status"] == "Degraded"
    assert result["message"] == operator.obj["status"]["message"]
    assert not result["message"].startswith("invalid spec")


def test_the_stable_revision_being_the_desired_one_is_healthy() -> None:
    operator = healthy()
    assert "canaryRevision" not in operator.obj["status"]
    assert health(operator.obj) == {
        "status": "Healthy",
        "message": operator.obj["status"]["message"],
    }
    assert operator.obj["status"]["stableRevision"] == revision("v1")


def test_a_promoted_canary_is_healthy_again() -> None:
    operator = paused()
    operator.take(action("promote", operator.obj))
    operator.reconcile()
    assert health(operator.obj)["status"] == "Healthy"
    assert operator.obj["status"]["stableRevision"] == revision("v2")


# --- actions ------------------------------------------------------------------------------------


STATES: dict[str, Callable[[], Operator]] = {
    "healthy": healthy,
    "progressing": progressing,
    "paused": paused,
    "aborted": aborted,
    "promoting": promoting,
    "invalid": invalid,
}


@pytest.mark.parametrize("name", ACTIONS)
def test_an_action_sets_only_its_annotation_to_a_token(name: str) -> None:
    obj = paused().obj
    obj["metadata"]["annotations"] = {"example.com/owner": "team-a"}
    result = action(name, obj)
    token = result["metadata"]["annotations"].pop(f"coalmine.dev/{name}")
    assert TOKEN.match(token), token
    assert token == f"argocd-20260921T141320Z-{obj['metadata']['resourceVersion']}"
    assert result == obj


@pytest.mark.parametrize("name", ACTIONS)
def test_an_action_adds_the_annotations_map_when_there_is_none(name: str) -> None:
    obj = without_annotations(paused().obj)
    result = action(name, obj)
    assert list(result["metadata"]["annotations"]) == [f"coalmine.dev/{name}"]


@pytest.mark.parametrize("name", ACTIONS)
def test_each_request_gets_a_new_token(name: str) -> None:
    key = f"coalmine.dev/{name}"
    operator = paused()
    first = action(name, operator.obj)
    operator.take(first)  # the patch Argo CD sends moves the resourceVersion on
    again = action(name, operator.obj)
    later = action(name, first, now=NOW + 1)
    tokens = {first["metadata"]["annotations"][key]}
    tokens.add(again["metadata"]["annotations"][key])
    tokens.add(later["metadata"]["annotations"][key])
    assert len(tokens) == 3


@pytest.mark.parametrize("name", ACTIONS)
def test_a_double_click_is_one_request(name: str) -> None:
    # Same object version, same second: the same token, which the operator acts on once.
    obj = paused().obj
    assert action(name, obj) == action(name, obj)


def test_promote_ends_the_pause_and_the_canary_walks_on() -> None:
    operator = paused()
    assert operator.obj["status"]["currentStepIndex"] == 1
    operator.take(action("promote", operator.obj))
    operator.reconcile(rounds=1)
    assert "ControlIgnored" not in operator.events
    assert operator.obj["status"]["currentStepIndex"] == 2
    assert operator.phase == "Progressing"


def test_abort_then_retry_starts_the_canary_again() -> None:
    operator = paused()
    operator.take(action("abort", operator.obj))
    operator.reconcile()
    assert operator.phase == "Degraded"
    assert operator.obj["status"]["abortReason"] == "AbortedByUser"
    operator.take(action("retry", operator.obj))
    operator.reconcile()
    assert "Retried" in operator.events
    assert operator.phase == "Paused"  # back at the pause after the first step
    assert health(operator.obj)["status"] == "Suspended"


def test_promote_full_skips_the_remaining_steps() -> None:
    operator = progressing()
    operator.heal()
    operator.take(action("promote-full", operator.obj))
    operator.reconcile()
    assert "PromotedFull" in operator.events
    assert operator.phase == "Healthy"
    assert operator.obj["status"]["stableRevision"] == revision("v2")


# --- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("healthy", set()),
        ("progressing", {"promote-full", "abort"}),
        ("paused", {"promote", "promote-full", "abort"}),
        ("aborted", {"retry"}),
        ("promoting", set()),  # abort and promote-full no longer act once promotion began
        ("invalid", set()),
    ],
)
def test_discovery_offers_the_actions_that_fit_the_phase(state: str, expected: set[str]) -> None:
    assert enabled_actions(STATES[state]().obj) == expected


def test_discovery_offers_nothing_before_the_operator_reports() -> None:
    assert enabled_actions(manifest("v1")) == set()
    first = Operator(manifest("v1"), broken=lambda _: True)
    first.reconcile(rounds=3)  # the first revision coming up: Progressing, but no canary
    assert first.phase == "Progressing"
    assert enabled_actions(first.obj) == set()


@pytest.mark.parametrize("state", ["healthy", "progressing", "paused", "aborted"])
def test_every_action_offered_is_one_the_operator_acts_on(state: str) -> None:
    for name in enabled_actions(STATES[state]().obj):
        operator = STATES[state]()
        before = copy.deepcopy(operator.obj["status"])
        operator.heal()
        operator.take(action(name, operator.obj))
        operator.reconcile(rounds=1)
        assert "ControlIgnored" not in operator.events, (state, name)
        handled = operator.obj["status"]["controls"]
        field = {"promote-full": "promoteFull"}.get(name, name)
        assert handled[field].startswith("argocd-"), (state, name)
        assert operator.obj["status"] != before, (state, name)
