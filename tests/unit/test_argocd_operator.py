"""The Argo CD health check and actions against statuses the operator's own code writes.

tests/unit/test_argocd_customizations.py runs the scripts on the fixed objects of their
upstream-format tests. What this module adds: its objects are not hand-written. The pure state
machine decides (driven through the simulated world of the machine tests), and
``coalmine.translate`` turns each decision into the status exactly as ``reconcile`` writes it, so a
renamed status field or phase breaks these tests instead of Argo CD users' dashboards. The same
simulation then takes the actions' output back, which checks that the annotations the actions
write are the ones the operator acts on. The scripts run in Argo CD's engine (the
``coalmine-argocd`` harness), as built-ins with open libraries for health, restricted otherwise.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from coalmine import translate as s
from coalmine.api.errors import SpecError
from coalmine.api.resource import API_VERSION, KIND, CanaryRollout
from coalmine.api.status import CanaryRolloutStatus
from devenv import argocdgen
from devenv.argocd import ArgoCD

from .machine_world import EPOCH, World

ACTIONS = tuple(name for name, _ in argocdgen.ACTIONS)
HEALTH_STATES = {"Healthy", "Progressing", "Suspended", "Degraded", "Missing", "Unknown"}
TOKEN = re.compile(r"^argocd-[0-9]+$")


def health(argocd: ArgoCD, obj: Mapping[str, Any]) -> dict[str, str]:
    result = argocd.health(obj)
    assert result["status"] in HEALTH_STATES
    # Pasted into argocd-cm (restricted libraries) the script says the same.
    assert argocd.health(obj, libraries="restricted") == result
    return result


def action(argocd: ArgoCD, name: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    return argocd.action(name, obj)


def enabled_actions(argocd: ArgoCD, obj: Mapping[str, Any]) -> set[str]:
    # Every action is always listed, so the UI shows it (greyed out) rather than hiding it.
    assert set(argocd.discovery(obj)) == set(ACTIONS)
    return argocd.enabled_actions(obj)


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

    def reconcile(self, rounds: int = 120, *, settle: bool = True) -> None:
        """Reconcile until the machine waits for nothing but time or a person.

        Fails after ``rounds`` if it still acts, unless ``settle`` is False (a test that looks
        at the rollout half-way)."""
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
            before = world.snapshot()
            decision = world.step()
            observed = world.history[-1][0]
            ready = sum(observed.stable_endpoints.values())
            self.write_status(s.status_from(rollout, decision, world.now, stable_ready=ready))
            world.pods_become_ready()
            if world.snapshot() == before and decision.requeue_after is None:
                return
            world.advance(min(1.0, decision.requeue_after or 1.0))
        if settle:
            raise AssertionError(f"not settled after {rounds} rounds: {self.obj.get('status')}")

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
    operator.reconcile(rounds=5, settle=False)
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
    operator.reconcile(rounds=200, settle=False)
    assert operator.phase == "Degraded"
    return operator


def promoting() -> Operator:
    """A promote-full taken while the canary's pods are not ready: promoted, not yet done."""
    operator = progressing()
    operator.take(annotated(operator.obj, "promote-full", "argocd-1"))
    operator.reconcile(rounds=3, settle=False)
    assert operator.phase == "Progressing"
    assert operator.obj["status"]["stage"] != "Steps"
    return operator


def held() -> Operator:
    """A canary walking its steps, held by the pause control."""
    operator = progressing()
    operator.take(annotated(operator.obj, "pause", "by-hand"))
    operator.reconcile(rounds=3, settle=False)  # held, still waiting for the canary's pods
    assert operator.obj["status"]["pausedByUser"] is True
    return operator


def invalid() -> Operator:
    operator = Operator(manifest("v1", set_weight=150))
    operator.reconcile()
    assert operator.phase == "Failed"
    return operator


def never_available() -> Operator:
    """The first revision never gets its pods: no stable revision to fall back to."""
    operator = Operator(manifest("v1"), broken=lambda _: True)
    operator.reconcile(rounds=200, settle=False)
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


# --- health -------------------------------------------------------------------------------------


def test_a_rollout_the_operator_has_not_seen_is_progressing(argocd: ArgoCD) -> None:
    assert health(argocd, manifest("v1"))["status"] == "Progressing"


def test_a_spec_newer_than_the_status_is_progressing_whatever_the_phase(argocd: ArgoCD) -> None:
    operator = healthy()
    operator.edit(new_template("v2"))  # synced by Argo CD, not reconciled yet
    assert operator.obj["status"]["phase"] == "Healthy"
    assert health(argocd, operator.obj) == {
        "status": "Progressing",
        "message": "waiting for the coalmine operator to act on generation 2",
    }


def test_a_canary_on_its_way_is_progressing_with_the_operators_message(argocd: ArgoCD) -> None:
    operator = progressing()
    result = health(argocd, operator.obj)
    assert result["status"] == "Progressing"
    assert result["message"] == operator.obj["status"]["message"]


def test_a_pause_step_is_suspended(argocd: ArgoCD) -> None:
    operator = paused()
    assert health(argocd, operator.obj) == {
        "status": "Suspended",
        "message": operator.obj["status"]["message"],
    }
    assert "until promoted" in operator.obj["status"]["message"]
    # A pause step is not the pause control: its condition's reason says which.
    paused_condition = [c for c in operator.obj["status"]["conditions"] if c["type"] == "Paused"]
    assert [c["reason"] for c in paused_condition] == ["PauseStep"]


def test_an_aborted_canary_is_degraded(argocd: ArgoCD) -> None:
    operator = aborted()
    assert operator.obj["status"]["abortReason"] == "AbortedByUser"
    assert health(argocd, operator.obj) == {
        "status": "Degraded",
        "message": operator.obj["status"]["message"],
    }
    assert operator.obj["status"]["message"].startswith("aborted: ")


def test_a_canary_past_its_progress_deadline_is_degraded(argocd: ArgoCD) -> None:
    operator = past_deadline()
    result = health(argocd, operator.obj)
    assert result["status"] == "Degraded"
    assert operator.obj["status"]["abortReason"] == "ProgressDeadlineExceeded"
    assert result["message"] == operator.obj["status"]["message"]
    assert "ready pods within 60 s" in result["message"]


def test_an_invalid_spec_is_degraded_naming_the_field(argocd: ArgoCD) -> None:
    operator = invalid()
    result = health(argocd, operator.obj)
    assert result["status"] == "Degraded"
    assert result["message"].startswith("invalid spec: spec.steps[0].setWeight: ")
    assert result["message"] == operator.obj["status"]["message"]


def test_a_first_revision_that_never_comes_up_is_degraded(argocd: ArgoCD) -> None:
    operator = never_available()
    result = health(argocd, operator.obj)
    assert result["status"] == "Degraded"
    assert result["message"] == operator.obj["status"]["message"]
    assert not result["message"].startswith("invalid spec")


def test_the_stable_revision_being_the_desired_one_is_healthy(argocd: ArgoCD) -> None:
    operator = healthy()
    assert "canaryRevision" not in operator.obj["status"]
    assert health(argocd, operator.obj) == {
        "status": "Healthy",
        "message": operator.obj["status"]["message"],
    }
    assert operator.obj["status"]["stableRevision"] == revision("v1")


def test_a_promoted_canary_is_healthy_again(argocd: ArgoCD) -> None:
    operator = paused()
    operator.take(action(argocd, "promote", operator.obj))
    operator.reconcile()
    assert health(argocd, operator.obj)["status"] == "Healthy"
    assert operator.obj["status"]["stableRevision"] == revision("v2")


# --- actions ------------------------------------------------------------------------------------


STATES: dict[str, Callable[[], Operator]] = {
    "healthy": healthy,
    "progressing": progressing,
    "paused": paused,
    "aborted": aborted,
    "promoting": promoting,
    "held": held,
    "invalid": invalid,
}


@pytest.mark.parametrize("name", ACTIONS)
def test_an_action_sets_only_its_annotation_to_a_token(argocd: ArgoCD, name: str) -> None:
    obj = paused().obj
    obj["metadata"]["annotations"] = {"example.com/owner": "team-a"}
    result = action(argocd, name, obj)
    token = result["metadata"]["annotations"].pop(f"coalmine.dev/{name}")
    assert TOKEN.match(token), token
    assert token == f"argocd-{obj['metadata']['resourceVersion']}"
    assert result == obj


@pytest.mark.parametrize("name", ACTIONS)
def test_an_action_adds_the_annotations_map_when_there_is_none(argocd: ArgoCD, name: str) -> None:
    obj = without_annotations(paused().obj)
    result = action(argocd, name, obj)
    assert list(result["metadata"]["annotations"]) == [f"coalmine.dev/{name}"]


@pytest.mark.parametrize("name", ACTIONS)
def test_each_request_gets_a_new_token(argocd: ArgoCD, name: str) -> None:
    key = f"coalmine.dev/{name}"
    operator = paused()
    first = action(argocd, name, operator.obj)
    operator.take(first)  # the patch Argo CD sends moves the resourceVersion on
    again = action(argocd, name, operator.obj)
    assert again["metadata"]["annotations"][key] != first["metadata"]["annotations"][key]


@pytest.mark.parametrize("name", ACTIONS)
def test_a_double_click_is_one_request(argocd: ArgoCD, name: str) -> None:
    # Two requests that read the same object version get the same token: the operator acts once.
    obj = paused().obj
    assert action(argocd, name, obj) == action(argocd, name, obj)


def test_promote_ends_the_pause_and_the_canary_walks_on(argocd: ArgoCD) -> None:
    operator = paused()
    assert operator.obj["status"]["currentStepIndex"] == 1
    operator.take(action(argocd, "promote", operator.obj))
    operator.reconcile(rounds=1, settle=False)
    assert "ControlIgnored" not in operator.events
    assert operator.obj["status"]["currentStepIndex"] == 2
    assert operator.phase == "Progressing"


def test_abort_then_retry_starts_the_canary_again(argocd: ArgoCD) -> None:
    operator = paused()
    operator.take(action(argocd, "abort", operator.obj))
    operator.reconcile()
    assert operator.phase == "Degraded"
    assert operator.obj["status"]["abortReason"] == "AbortedByUser"
    operator.take(action(argocd, "retry", operator.obj))
    operator.reconcile()
    assert "Retried" in operator.events
    assert operator.phase == "Paused"  # back at the pause after the first step
    assert health(argocd, operator.obj)["status"] == "Suspended"


def test_promote_full_skips_the_remaining_steps(argocd: ArgoCD) -> None:
    operator = progressing()
    operator.heal()
    operator.take(action(argocd, "promote-full", operator.obj))
    operator.reconcile()
    assert "PromotedFull" in operator.events
    assert operator.phase == "Healthy"
    assert operator.obj["status"]["stableRevision"] == revision("v2")


# --- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("healthy", {"restart"}),
        ("progressing", {"promote-full", "abort", "pause", "restart"}),
        ("paused", {"promote", "promote-full", "abort", "pause", "restart"}),
        ("aborted", {"retry", "restart"}),
        # abort and promote-full no longer act once promotion began; a pause still holds it.
        ("promoting", {"pause", "restart"}),
        # Held by the pause control: only what undoes the hold, or takes the canary out.
        ("held", {"resume", "abort", "restart"}),
        ("invalid", set()),
    ],
)
def test_discovery_offers_the_actions_that_fit_the_phase(
    argocd: ArgoCD, state: str, expected: set[str]
) -> None:
    assert enabled_actions(argocd, STATES[state]().obj) == expected


def test_discovery_offers_nothing_before_the_operator_reports(argocd: ArgoCD) -> None:
    assert enabled_actions(argocd, manifest("v1")) == set()
    first = Operator(manifest("v1"), broken=lambda _: True)
    # The first revision coming up: Progressing, but no canary.
    first.reconcile(rounds=3, settle=False)
    assert first.phase == "Progressing"
    # Only a restart of its pods: the first revision is the stable one from the start.
    assert first.obj["status"]["stableRevision"] == revision("v1")
    assert enabled_actions(argocd, first.obj) == {"restart"}


OFFERED = [
    ("healthy", "restart"),
    ("progressing", "promote-full"),
    ("progressing", "abort"),
    ("progressing", "pause"),
    ("progressing", "restart"),
    ("paused", "promote"),
    ("paused", "promote-full"),
    ("paused", "abort"),
    ("paused", "pause"),
    ("paused", "restart"),
    ("aborted", "retry"),
    ("aborted", "restart"),
    ("promoting", "pause"),
    ("promoting", "restart"),
    ("held", "resume"),
    ("held", "abort"),
    ("held", "restart"),
]


def test_the_offered_pairs_are_what_discovery_offers(argocd: ArgoCD) -> None:
    for state in {state for state, _ in OFFERED}:
        offered = {name for other, name in OFFERED if other == state}
        assert enabled_actions(argocd, STATES[state]().obj) == offered, state


@pytest.mark.parametrize(
    ("state", "name"), [pytest.param(state, name, id=f"{state}-{name}") for state, name in OFFERED]
)
def test_every_action_offered_is_one_the_operator_acts_on(
    argocd: ArgoCD, state: str, name: str
) -> None:
    operator = STATES[state]()
    before = copy.deepcopy(operator.obj["status"])
    operator.heal()
    operator.take(action(argocd, name, operator.obj))
    operator.reconcile(rounds=1, settle=False)
    assert "ControlIgnored" not in operator.events, (state, name)
    handled = operator.obj["status"]["controls"]
    field = {"promote-full": "promoteFull"}.get(name, name)
    assert handled.get(field, "").startswith("argocd-"), (state, name)
    assert operator.obj["status"] != before, (state, name)
