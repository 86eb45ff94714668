"""CanaryRollouts driven through the real operator process against the real cluster."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine import kube as k
from devenv.operator import OperatorProcess
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import ROUTERS, Rollouts, manifest, router_weight, user_routing_object

pytestmark = pytest.mark.usefixtures("operator")


def step_events(rollouts: Rollouts, name: str) -> list[str]:
    return [message for reason, message in rollouts.events(name) if reason == "StepCompleted"]


@pytest.mark.parametrize("router", ROUTERS)
def test_full_rollout_through_every_step(
    kube: Cluster, namespace: str, rollouts: Rollouts, router: str
) -> None:
    user_routing_object(kube, namespace, router, "shop")
    rollouts.create(manifest("shop", "v1", router=router))
    first = rollouts.wait_phase("shop", "Healthy")
    stable = first["stableRevision"]
    assert rollouts.deployments("shop") == {stable: 4}

    rollouts.set_template("shop", "v2")
    paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    canary = paused["canaryRevision"]
    assert paused["stepDisplay"] == "3/4"
    if router == "replicaRatio":
        assert rollouts.deployments("shop") == {stable: 2, canary: 2}
        assert paused["confirmedWeight"] == 50
    else:
        assert router_weight(kube, namespace, router, "shop") == 50
        assert paused["confirmedWeight"] == 50
        assert rollouts.deployments("shop")[stable] == 4, "stable keeps full size"

    rollouts.control("shop", "promote")
    done = rollouts.wait_phase("shop", "Healthy", stableRevision=canary)
    assert "canaryRevision" not in done
    if router != "replicaRatio":
        assert router_weight(kube, namespace, router, "shop") == 0
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d == {stable: 0, canary: 4},
        timeout=30,
        message="the old stable scaled to 0 after scaleDownDelaySeconds",
    )
    assert len(step_events(rollouts, "shop")) == 4
    outcomes = {h["revision"]: h["outcome"] for h in rollouts.status("shop")["history"]}
    assert outcomes[canary] == "Promoted"


def test_timed_pause_then_promote_full(namespace: str, rollouts: Rollouts) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 25},
        {"pause": {"duration": "3s"}},
        {"setWeight": 75},
        {"pause": {}},
        {"setWeight": 90},
    ]
    rollouts.create(manifest("shop", "v1", steps=steps))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=1)
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3, timeout=30)
    reached = rollouts.status("shop")
    paused_for = [
        m for r, m in rollouts.events("shop") if r == "StepCompleted" and "pause of 3" in m
    ]
    assert paused_for, "the timed pause ended by itself"
    rollouts.control("shop", "promote-full")
    rollouts.wait_phase("shop", "Healthy", stableRevision=reached["canaryRevision"])
    assert "PromotedFull" in rollouts.reasons("shop")
    assert len(step_events(rollouts, "shop")) == 3, "promote-full skipped the last two steps"


def test_abort_then_retry(kube: Cluster, namespace: str, rollouts: Rollouts) -> None:
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    rollouts.create(manifest("shop", "v1", router="gatewayAPI"))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    rollouts.set_template("shop", "v2")
    canary = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)["canaryRevision"]

    rollouts.control("shop", "abort")
    aborted = rollouts.wait_phase("shop", "Degraded")
    assert aborted["abortReason"] == "AbortedByUser"
    assert router_weight(kube, namespace, "gatewayAPI", "shop") == 0
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d == {stable: 4, canary: 0},
        timeout=30,
        message="the canary scaled down after traffic returned to stable",
    )
    conditions = {c["type"]: c for c in aborted["conditions"]}
    assert conditions["Aborted"]["status"] == "True"

    rollouts.control("shop", "retry")
    again = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    assert again["canaryRevision"] == canary
    assert router_weight(kube, namespace, "gatewayAPI", "shop") == 50


def test_supersede_then_fast_rollback(namespace: str, rollouts: Rollouts) -> None:
    rollouts.create(manifest("shop", "v1", revisionHistoryLimit=3))
    v1 = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    rollouts.set_template("shop", "v2")
    v2 = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)["canaryRevision"]

    rollouts.set_template("shop", "v3")
    v3 = rollouts.wait(
        "shop",
        lambda s: s.get("canaryRevision") not in (None, v2) and s.get("phase") == "Paused",
        "the new canary replaces the superseded one",
    )["canaryRevision"]
    assert rollouts.deployments("shop")[v2] == 0
    assert "Superseded" in rollouts.reasons("shop")
    rollouts.control("shop", "promote-full")
    rollouts.wait_phase("shop", "Healthy", stableRevision=v3)

    # Back to v1, still kept at 0 replicas: straight back, no steps.
    before = len(step_events(rollouts, "shop"))
    rollouts.set_template("shop", "v1")
    rollouts.wait_phase("shop", "Healthy", stableRevision=v1, timeout=30)
    assert len(step_events(rollouts, "shop")) == before
    assert "RolledBack" in rollouts.reasons("shop")


def test_progress_deadline_aborts_a_canary_that_never_becomes_ready(
    namespace: str, rollouts: Rollouts
) -> None:
    rollouts.create(manifest("shop", "v1", progressDeadlineSeconds=5))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    unschedulable = {
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {
                    "nodeSelector": {"coalmine.dev/no-such-node": "true"},
                    "containers": [
                        {
                            "name": "app",
                            "image": "coalmine.dev/demo-app:v2",
                            "ports": [{"containerPort": 8080}],
                        }
                    ],
                },
            }
        }
    }
    rollouts.patch_spec("shop", unschedulable["spec"])
    degraded = rollouts.wait_phase("shop", "Degraded", timeout=40)
    assert degraded["abortReason"] == "ProgressDeadlineExceeded"
    assert degraded["stableRevision"] == stable
    assert "ProgressDeadlineExceeded" in rollouts.reasons("shop")


def test_drift_in_a_managed_deployment_is_reverted(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    rollouts.create(manifest("shop", "v1"))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    name = f"shop-{stable}"
    kube.raw.patch(
        k.DEPLOYMENTS,
        namespace,
        name,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil:latest"}]}}}},
        patch_type="strategic",
    )

    def image() -> str:
        deployment = kube.raw.get(k.DEPLOYMENTS, namespace, name) or {}
        return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])

    wait_for(
        image, until=lambda i: i == "coalmine.dev/demo-app:v1", timeout=30, message="drift restored"
    )
    # Events follow the status write that records their transition: a moment after the fix.
    wait_for(
        lambda: rollouts.reasons("shop"),
        until=lambda r: "DriftReverted" in r,
        timeout=10,
        message="a DriftReverted event",
    )


def test_deletion_returns_traffic_to_stable_and_keeps_the_users_route(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    rollouts.create(manifest("shop", "v1", router="gatewayAPI"))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    assert router_weight(kube, namespace, "gatewayAPI", "shop") == 50

    rollouts.delete("shop")
    wait_for(
        rollouts.names,
        until=lambda names: names == [],
        timeout=30,
        message="the CanaryRollout to be finalized and deleted",
    )
    assert router_weight(kube, namespace, "gatewayAPI", "shop") == 0
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d == {},
        timeout=30,
        message="owned Deployments garbage-collected",
    )


def test_invalid_spec_is_reported_without_touching_the_cluster(
    namespace: str, rollouts: Rollouts
) -> None:
    body = manifest("shop", "v1")
    rollouts.create(body)
    rollouts.wait_phase("shop", "Healthy")
    # The API server accepts this one; the operator's own check (a router missing its object)
    # must not break the stable revision.
    rollouts.patch_spec("shop", {"trafficRouting": {"gatewayAPI": {"httpRoute": "missing"}}})
    status = rollouts.wait(
        "shop",
        lambda s: any(
            c["type"] == "Progressing" and c["reason"] == "RouterError"
            for c in s.get("conditions", [])
        ),
        "a RouterError condition naming the missing HTTPRoute",
    )
    assert "missing" in status["message"]
    assert set(rollouts.deployments("shop").values()) == {4}


def test_operator_restart_mid_rollout_repeats_and_skips_no_step(
    kube: Cluster, namespace: str, rollouts: Rollouts, operator: OperatorProcess
) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"pause": {"duration": "4s"}},
        {"setWeight": 40},
        {"pause": {"duration": "4s"}},
        {"setWeight": 60},
        {"pause": {}},
    ]
    rollouts.create(manifest("shop", "v1", steps=steps, replicas=5))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    rollouts.wait("shop", lambda s: s.get("currentStepIndex", 0) >= 2, "step 3 reached")
    operator.kill()
    operator.start()
    rollouts.wait_phase("shop", "Paused", currentStepIndex=5, timeout=60)
    completed = step_events(rollouts, "shop")
    numbers = [m.split(" ")[1] for m in completed]
    # Each step exactly once, none skipped (events carry whole seconds, hence sorted).
    assert sorted(numbers) == ["1/6", "2/6", "3/6", "4/6", "5/6"], completed
