"""The ignoreDifferences coalmine ships (deploy/argocd/ignore-differences.yaml), under Argo CD's
own semantics: gojq runs each expression as ``del(...)``, and the legacy three-way diff then
compares what is left (the ``coalmine-argocd`` harness reproduces both on Argo CD's libraries).

The rules must hide exactly the weights coalmine writes, so a rollout is never drift, and
nothing else: any other edit of a route must still show. tests/integration/test_argocd_drift.py
checks the same on the objects of a real rollout.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devenv import argocdgen
from devenv.argocd import ArgoCD, Obj, applied

RULES = argocdgen.ignore_rules()
NAMESPACE = "shop"


def http_route(*refs: dict[str, Any], extra_rules: tuple[dict[str, Any], ...] = ()) -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["shop.example"],
            "rules": [{"backendRefs": list(refs)}, *extra_rules],
        },
    }


def virtual_service(*routes: dict[str, Any]) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": NAMESPACE},
        "spec": {"hosts": ["shop.example"], "http": list(routes)},
    }


def destination(host: str, weight: int) -> dict[str, Any]:
    return {"destination": {"host": host, "port": {"number": 80}}, "weight": weight}


def weights(obj: Obj) -> list[Any]:
    """Every weight left in a route, in document order (None where there is none)."""
    if obj["kind"] == "HTTPRoute":
        return [
            ref.get("weight")
            for rule in obj["spec"]["rules"]
            for ref in rule.get("backendRefs", [])
        ]
    return [d.get("weight") for route in obj["spec"]["http"] for d in route.get("route", [])]


# --- what the rules remove ----------------------------------------------------------------------


def test_httproute_rules_remove_the_weights_of_stable_canary_pairs_only(argocd: ArgoCD) -> None:
    route = http_route(
        {"name": "shop-stable", "port": 80, "weight": 90},
        {"name": "shop-canary", "port": 80, "weight": 10},
        {"name": "other", "port": 80, "weight": 5},  # not coalmine's
        extra_rules=(
            # Names that do not pair up, a ServiceImport, a second ref of the same name (coalmine
            # sets the first only), and group "core" spelled out.
            {"backendRefs": [{"name": "a-stable", "weight": 1}, {"name": "b-canary", "weight": 2}]},
            {
                "backendRefs": [
                    {"name": "x-stable", "kind": "ServiceImport", "weight": 3},
                    {"name": "x-canary", "weight": 4},
                ]
            },
            {
                "backendRefs": [
                    {"name": "y-stable", "group": "core", "weight": 5},
                    {"name": "y-canary"},
                    {"name": "y-stable", "weight": 6},
                ]
            },
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]},
        ),
    )
    normalized = argocd.normalize(route, RULES)
    assert weights(normalized) == [None, None, 5, 1, 2, 3, 4, None, None, 6]
    # Everything else is untouched.
    for rule_before, rule_after in zip(
        route["spec"]["rules"], normalized["spec"]["rules"], strict=True
    ):
        for ref_before, ref_after in zip(
            rule_before.get("backendRefs", []), rule_after.get("backendRefs", []), strict=True
        ):
            assert {k: v for k, v in ref_before.items() if k != "weight"} == {
                k: v for k, v in ref_after.items() if k != "weight"
            }
    route_without = copy.deepcopy(normalized)
    assert {k: v for k, v in route_without["spec"].items() if k != "rules"} == {
        "parentRefs": [{"name": "gw"}],
        "hostnames": ["shop.example"],
    }


def test_virtualservice_rules_remove_the_weights_coalmine_can_write_only(argocd: ArgoCD) -> None:
    service = virtual_service(
        {
            "name": "primary",
            "route": [destination("shop-stable", 80), destination("shop-canary", 20)],
        },
        # Host spellings coalmine accepts: <name>.<ns>, .svc, .svc.cluster.local, a root dot, case.
        {
            "name": "spelled",
            "route": [
                destination("Shop-Stable.shop.svc", 70),
                destination("shop-canary.shop.svc.cluster.local.", 30),
            ],
        },
        # coalmine never writes these: no name, another namespace, a third destination, a pair
        # of two different services.
        {"route": [destination("shop-stable", 60), destination("shop-canary", 40)]},
        {
            "name": "elsewhere",
            "route": [destination("shop-stable.other", 50), destination("shop-canary", 50)],
        },
        {
            "name": "three",
            "route": [
                destination("shop-stable", 80),
                destination("shop-canary", 10),
                destination("mirror", 10),
            ],
        },
        {"name": "mixed", "route": [destination("a-stable", 90), destination("b-canary", 10)]},
    )
    normalized = argocd.normalize(service, RULES)
    assert weights(normalized) == [None, None, None, None, 60, 40, 50, 50, 80, 10, 10, 90, 10]


# --- the diff Argo CD computes ------------------------------------------------------------------


GIT_ROUTE = http_route(
    {"name": "shop-stable", "port": 80, "weight": 100},
    {"name": "shop-canary", "port": 80, "weight": 0},
)


def rolled_out(obj: Obj, stable: int, canary: int) -> Obj:
    """The live route mid-rollout: what coalmine's JSON patch writes, and server defaults."""
    live = applied(obj)
    refs = live["spec"]["rules"][0]["backendRefs"]
    refs[0]["weight"], refs[1]["weight"] = stable, canary
    for ref in refs:
        ref.update(group="", kind="Service")  # Gateway API's CRD defaults
    live["status"] = {"parents": [{"parentRef": {"name": "gw"}, "conditions": []}]}
    return live


@pytest.mark.parametrize(("stable", "canary"), [(100, 0), (90, 10), (50, 50), (0, 100)])
def test_a_rollout_weight_is_not_drift(argocd: ArgoCD, stable: int, canary: int) -> None:
    live = rolled_out(GIT_ROUTE, stable, canary)
    result = argocd.diff(GIT_ROUTE, live, RULES)
    assert result.three_way
    assert not result.modified, result
    # Without the rules every weight but Git's own is drift, which self-heal would revert.
    assert argocd.diff(GIT_ROUTE, live).modified == ((stable, canary) != (100, 0))


def test_a_weight_added_where_git_has_none_is_not_drift(argocd: ArgoCD) -> None:
    git = http_route({"name": "shop-stable", "port": 80}, {"name": "shop-canary", "port": 80})
    live = rolled_out(git, 75, 25)
    assert not argocd.diff(git, live, RULES).modified


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda live: live["spec"].update(hostnames=["evil.example"]), id="hostname"),
        pytest.param(
            lambda live: live["spec"]["rules"][0]["backendRefs"][0].update(port=8080), id="port"
        ),
        pytest.param(
            lambda live: live["spec"]["rules"][0]["backendRefs"][1].update(name="other-canary"),
            id="backend",
        ),
        pytest.param(lambda live: live["spec"]["parentRefs"][0].update(name="gw2"), id="parent"),
    ],
)
def test_any_other_edit_of_the_route_is_still_drift(argocd: ArgoCD, edit: Any) -> None:
    live = rolled_out(GIT_ROUTE, 80, 20)
    edit(live)
    assert argocd.diff(GIT_ROUTE, live, RULES).modified


def test_a_field_git_never_set_is_not_compared_with_or_without_the_rules(argocd: ArgoCD) -> None:
    # Argo CD's three-way diff keeps of the live object only what the last applied one names
    # (so server defaults are no drift); the rules change nothing about that.
    live = rolled_out(GIT_ROUTE, 100, 0)
    live["spec"]["rules"][0]["matches"] = [{"path": {"value": "/x"}}]
    assert not argocd.diff(GIT_ROUTE, live).modified
    assert not argocd.diff(GIT_ROUTE, live, RULES).modified


def test_a_weight_coalmine_does_not_own_is_still_drift(argocd: ArgoCD) -> None:
    git = http_route(
        {"name": "shop-stable", "port": 80, "weight": 100},
        {"name": "shop-canary", "port": 80, "weight": 0},
        {"name": "legacy", "port": 80, "weight": 0},
    )
    live = rolled_out(git, 90, 10)
    assert not argocd.diff(git, live, RULES).modified
    live["spec"]["rules"][0]["backendRefs"][2]["weight"] = 5
    assert argocd.diff(git, live, RULES).modified


def test_a_virtualservice_weight_is_not_drift_but_a_port_is(argocd: ArgoCD) -> None:
    git = virtual_service(
        {
            "name": "primary",
            "route": [destination("shop-stable", 100), destination("shop-canary", 0)],
        }
    )
    live = applied(git)
    live["spec"]["http"][0]["route"][0]["weight"] = 40
    live["spec"]["http"][0]["route"][1]["weight"] = 60
    assert not argocd.diff(git, live, RULES).modified
    assert argocd.diff(git, live).modified
    live["spec"]["http"][0]["route"][1]["destination"]["port"]["number"] = 8080
    assert argocd.diff(git, live, RULES).modified


# --- what a sync applies with RespectIgnoreDifferences=true -----------------------------------


def test_a_sync_keeps_the_live_weights(argocd: ArgoCD) -> None:
    live = rolled_out(GIT_ROUTE, 70, 30)
    target = argocd.sync_target(GIT_ROUTE, live, RULES)
    assert weights(target) == [70, 30]
    # Fields outside the rules array come from Git, as without the option.
    git = copy.deepcopy(GIT_ROUTE)
    git["spec"]["hostnames"] = ["shop.example", "www.shop.example"]
    target = argocd.sync_target(git, live, RULES)
    assert target["spec"]["hostnames"] == ["shop.example", "www.shop.example"]
    assert weights(target) == [70, 30]


def test_a_sync_does_not_apply_git_edits_inside_the_rules_list(argocd: ArgoCD) -> None:
    """The limitation docs/argocd.md describes: Argo CD copies ignored fields back with a JSON
    merge patch, which replaces a list whole, so the live rules win over Git's, edits included."""
    git = copy.deepcopy(GIT_ROUTE)
    git["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/api"}}]
    live = rolled_out(GIT_ROUTE, 70, 30)
    target = argocd.sync_target(git, live, RULES)
    assert "matches" not in target["spec"]["rules"][0]
    assert target["spec"]["rules"] == live["spec"]["rules"]
    # And so the route stays OutOfSync after such a sync.
    assert argocd.diff(git, live, RULES).modified
