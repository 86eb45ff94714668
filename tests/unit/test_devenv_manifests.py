"""The one CanaryRollout builder that the demo, the benchmarks and the tests share, and the load
spread that drives simulated CPU usage: pure functions, checked without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine.api.resource import CanaryRollout
from devenv.manifests import ROUTERS, canary_rollout, demo_template
from devenv.usage import spread

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


@pytest.mark.parametrize("router", ROUTERS)
def test_every_router_gives_a_rollout_the_operator_accepts(router: str) -> None:
    body = canary_rollout("shop", demo_template("v1"), steps=STEPS, router=router)
    rollout = CanaryRollout.from_object(body)
    assert rollout.metadata.name == "shop"
    routing = body["spec"].get("trafficRouting")
    if router == "replicaRatio":
        assert routing is None
    else:
        assert list(routing) == [router]
        assert "shop" in routing[router].values()


def test_the_service_fronts_the_demo_apps_port() -> None:
    body = canary_rollout("shop", demo_template("v1"), steps=STEPS, replicas=2)
    assert body["spec"]["service"] == {"name": "shop", "port": 80, "targetPort": 8080}
    assert body["spec"]["replicas"] == 2


def test_extra_spec_fields_are_added_and_override_the_defaults() -> None:
    body = canary_rollout(
        "shop", demo_template("v1"), steps=STEPS, scaleDownDelaySeconds=5, imagePolicy="Deny"
    )
    assert body["spec"]["scaleDownDelaySeconds"] == 5
    assert body["spec"]["imagePolicy"] == "Deny"


def test_rollouts_built_from_one_step_list_do_not_share_it() -> None:
    first = canary_rollout("a", demo_template("v1"), steps=STEPS)
    first["spec"]["steps"][0]["setWeight"] = 10
    second = canary_rollout("b", demo_template("v1"), steps=STEPS)
    assert second["spec"]["steps"][0] == {"setWeight": 50}
    assert STEPS[0] == {"setWeight": 50}


@pytest.mark.parametrize(
    ("millicores", "pods", "expected"),
    [
        (400, ["a"], {"a": "400m"}),
        (400, ["b", "a"], {"a": "200m", "b": "200m"}),
        (100, ["c", "a", "b"], {"a": "34m", "b": "33m", "c": "33m"}),
        (0, ["a", "b"], {"a": "0m", "b": "0m"}),
        (400, [], {}),
    ],
)
def test_load_is_spread_evenly_and_always_the_same_way(
    millicores: int, pods: list[str], expected: dict[str, str]
) -> None:
    shares = spread(millicores, pods)
    assert shares == expected
    assert sum(int(v.removesuffix("m")) for v in shares.values()) == (millicores if pods else 0)
