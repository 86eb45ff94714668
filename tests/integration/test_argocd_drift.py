"""No drift fights with Argo CD: the objects a user keeps in Git, before, during and after a real
rollout, compared the way Argo CD compares them.

The Git manifests (a CanaryRollout and its HTTPRoute or VirtualService) are applied with
``kubectl apply``, as Argo CD's default sync does (client-side, recording the last applied
configuration). The operator then rolls a new template out and writes weights into the route.
At every stage each live object goes through Argo CD's legacy diff with the shipped
ignoreDifferences (deploy/argocd/ignore-differences.yaml, run by the coalmine-argocd harness on
Argo CD's libraries): it must equal Git, so the Application stays Synced and self-heal has
nothing to revert. The same diff without the rules must see the weights (the drift Argo CD
reports today), which shows the comparison is not blind.

A sync during the rollout (any commit syncs every manifest of the Application) is checked
against the real API server with server-side dry runs: the object Argo CD applies with
RespectIgnoreDifferences keeps the live weights, where the plain Git manifest would put Git's
weights back.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coalmine import kube as k
from devenv import argocdgen, cluster
from devenv.argocd import ArgoCD
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import (
    ROUTING_RESOURCES,
    Rollouts,
    manifest,
    router_weight,
    template,
    user_routing_manifest,
)

pytestmark = pytest.mark.usefixtures("operator")

RULES = argocdgen.ignore_rules()
NAME = "shop"
STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {}},
]


def git_route(router: str, namespace: str) -> dict[str, Any]:
    """The routing object as the user keeps it in Git (namespace set, as Argo CD sets it)."""
    route = user_routing_manifest(router, NAME, namespace)
    assert route is not None
    if router == "istio":
        # coalmine accepts every spelling of a Service's host; so must the rules.
        canary = route["spec"]["http"][0]["route"][1]["destination"]
        canary["host"] = f"{NAME}-canary.{namespace}.svc.cluster.local"
    return route


class App:
    """An Argo CD Application's manifests, synced into the cluster the way Argo CD syncs."""

    def __init__(self, kube: Cluster, namespace: str, router: str, workdir: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.router = router
        self.workdir = workdir
        rollout = manifest(NAME, "v1", router=router, steps=STEPS)
        rollout["metadata"]["namespace"] = namespace
        self.rollout = rollout
        self.route = git_route(router, namespace)
        self.route_resource = ROUTING_RESOURCES[router]

    def manifests(self) -> list[dict[str, Any]]:
        return [self.route, self.rollout]

    def write(self, name: str, objects: list[dict[str, Any]]) -> Path:
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        return path

    def sync(self) -> None:
        """Argo CD's default sync: kubectl apply (client-side) of every manifest."""
        cluster.kubectl("apply", "-f", str(self.write("git", self.manifests())))

    def dry_run_apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What applying ``obj`` now would leave in the cluster (a server-side dry run)."""
        path = self.write("dry-run", [obj])
        out = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", str(path))
        result: dict[str, Any] = json.loads(out)
        return result["items"][0] if result.get("kind") == "List" else result

    def live(self) -> list[dict[str, Any]]:
        route = self.kube.raw.get(self.route_resource, self.namespace, NAME)
        rollout = self.kube.raw.get(k.CANARY_ROLLOUTS, self.namespace, NAME)
        assert route is not None
        assert rollout is not None
        return [route, rollout]

    def weight(self) -> int | None:
        return router_weight(self.kube, self.namespace, self.router, NAME)


def weights(route: dict[str, Any]) -> list[int]:
    if route["kind"] == "HTTPRoute":
        return [int(ref["weight"]) for ref in route["spec"]["rules"][0]["backendRefs"]]
    return [int(d["weight"]) for d in route["spec"]["http"][0]["route"]]


def routes_key(route: dict[str, Any]) -> str:
    """The list of the route's spec that holds the weights."""
    return "rules" if route["kind"] == "HTTPRoute" else "http"


def assert_synced(argocd: ArgoCD, app: App, stage: str, weight: int) -> None:
    """Argo CD with the shipped rules sees no drift; without them it sees exactly the route's
    weights (unless they are Git's own)."""
    live_route, live_rollout = app.live()
    assert weights(live_route) == [100 - weight, weight], (stage, live_route["spec"])
    for git, live in zip(app.manifests(), app.live(), strict=True):
        result = argocd.diff(git, live, RULES)
        assert result.three_way, (stage, git["kind"])  # the last-applied annotation was used
        assert not result.skipped, (stage, result.skipped)
        assert not result.modified, (stage, git["kind"], result.predicted_live)
    assert argocd.diff(app.rollout, live_rollout).modified is False, stage
    without_rules = argocd.diff(app.route, live_route)
    assert without_rules.modified == (weight != 0), stage
    if without_rules.modified:
        # What self-heal would write back: Git's list of rules (a JSON merge patch replaces a
        # list whole), so Git's weights; nothing outside that list.
        predicted = copy.deepcopy(without_rules.predicted_live)
        key = routes_key(predicted)
        assert predicted["spec"][key] == app.route["spec"][key], stage
        predicted["spec"][key] = without_rules.normalized_live["spec"][key]
        assert predicted == without_rules.normalized_live, stage


def assert_a_sync_keeps_the_weights(argocd: ArgoCD, app: App, weight: int) -> None:
    live_route = app.live()[0]
    target = argocd.sync_target(app.route, live_route, RULES)
    kept = app.dry_run_apply(target)
    assert weights(kept) == [100 - weight, weight]
    reverted = app.dry_run_apply(app.route)
    assert weights(reverted) == [100, 0]


@pytest.fixture
def app_for(kube: Cluster, namespace: str, tmp_path: Path) -> Callable[[str], App]:
    """The Application of a test, for one router."""
    return lambda router: App(kube, namespace, router, tmp_path)


@pytest.mark.parametrize("router", ["gatewayAPI", "istio"])
def test_argocd_sees_no_drift_before_during_and_after_a_rollout(
    argocd: ArgoCD, rollouts: Rollouts, app_for: Callable[[str], App], router: str
) -> None:
    app = app_for(router)
    kube, namespace = app.kube, app.namespace
    app.sync()
    first = rollouts.wait_phase(NAME, "Healthy", timeout=90)["stableRevision"]
    assert_synced(argocd, app, "before", 0)

    app.rollout["spec"]["template"] = template("v2")  # a commit, synced
    app.sync()
    rollouts.wait_phase(NAME, "Paused", currentStepIndex=1, timeout=90)
    assert_synced(argocd, app, "paused at 20%", 20)
    assert_a_sync_keeps_the_weights(argocd, app, 20)

    rollouts.control(NAME, "promote")
    rollouts.wait_phase(NAME, "Paused", currentStepIndex=3, timeout=90)
    assert_synced(argocd, app, "paused at 50%", 50)
    assert_a_sync_keeps_the_weights(argocd, app, 50)

    rollouts.control(NAME, "promote")
    done = rollouts.wait(
        NAME,
        lambda s: s.get("phase") == "Healthy" and "canaryRevision" not in s,
        "promoted",
        timeout=90,
    )
    assert done["stableRevision"] != first  # v2 is stable now
    assert_synced(argocd, app, "after", 0)

    # The rules hide the weights and nothing else: a hand edit of the route is still drift.
    if router == "gatewayAPI":
        edit = [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/port", "value": 8080}]
    else:
        edit = [{"op": "replace", "path": "/spec/hosts/0", "value": "evil.example"}]
    kube.raw.patch(app.route_resource, namespace, NAME, edit, patch_type="json")
    live_route = app.live()[0]
    assert argocd.diff(app.route, live_route, RULES).modified


def test_coalmine_puts_its_weight_back_after_a_sync_reverts_it(
    argocd: ArgoCD, rollouts: Rollouts, app_for: Callable[[str], App]
) -> None:
    """A sync without RespectIgnoreDifferences writes Git's weights back mid-rollout; the
    operator notices and routes the weight of the current step again, as its status says."""
    app = app_for("gatewayAPI")
    app.sync()
    rollouts.wait_phase(NAME, "Healthy", timeout=90)
    app.rollout["spec"]["template"] = template("v2")
    app.sync()
    rollouts.wait_phase(NAME, "Paused", currentStepIndex=1, timeout=90)
    assert app.weight() == 20
    app.sync()  # the plain manifests again: Git's weights, 100/0
    wait_for(
        app.weight,
        until=lambda weight: weight == 20,
        timeout=15,
        message="the operator routing 20% again after a sync reverted the weights",
    )
    assert not argocd.diff(app.route, app.live()[0], RULES).modified
