"""Incident controls on the real cluster (issue 13, item 5): pause, resume, restart, and an
aborted canary's pods kept for abortScaleDownDelaySeconds.

Times in these tests are read from the operator's own status (stepStartedAt, scaleDownAt), never
measured as speed: a loaded machine may be slow, but the rules must hold whatever the pace.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from coalmine import kube as k
from coalmine import resources as r
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import Rollouts, condition, manifest, router_weight, user_routing_object

pytestmark = pytest.mark.usefixtures("operator")


def wait_reason(rollouts: Rollouts, name: str, reason: str) -> list[str]:
    """The messages of the events with this reason, once there is one."""
    return wait_for(
        lambda: [m for r, m in rollouts.events(name) if r == reason],
        until=bool,
        timeout=20,
        message=f"a {reason} event",
    )


def test_pause_holds_a_timed_pause_whatever_the_time_then_resume_goes_on(
    rollouts: Rollouts,
) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 25},
        {"pause": {"duration": "6s"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    rollouts.create(manifest("shop", "v1", steps=steps))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=1)
    token = rollouts.control("shop", "pause")
    held = rollouts.wait(
        "shop", lambda s: (s.get("controls") or {}).get("pause") == token, "pause handled"
    )
    assert held["pausedByUser"] is True
    paused = condition(held, "Paused")
    assert (paused["status"], paused["reason"]) == ("True", "PausedByUser")
    assert held["phase"] == "Paused", "the phase stays what it was"

    # Held well past the 6 s pause: still at step 1, still at 25%.
    threading.Event().wait(12)
    status = rollouts.status("shop")
    assert status["currentStepIndex"] == 1
    assert status["confirmedWeight"] == 25
    assert status["pausedByUser"] is True
    promote = rollouts.control("shop", "promote")
    rollouts.wait("shop", lambda s: s["controls"].get("promote") == promote, "promote recorded")
    assert rollouts.status("shop")["currentStepIndex"] == 1, "promote is ignored while held"
    assert any("resume first" in m for m in wait_reason(rollouts, "shop", "ControlIgnored"))

    rollouts.control("shop", "resume")
    resumed = rollouts.wait("shop", lambda s: not s.get("pausedByUser"), "resumed")
    assert resumed.get("stepHeldSeconds", 0) >= 12
    assert condition(resumed, "Paused")["reason"] == "PauseStep"
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3, timeout=60)
    reasons = rollouts.reasons("shop")
    assert reasons.count("PausedByUser") == 1
    assert reasons.count("Resumed") == 1


def test_abort_acts_on_a_held_canary_and_ends_the_hold(rollouts: Rollouts) -> None:
    rollouts.create(manifest("shop", "v1"))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    rollouts.control("shop", "pause")
    rollouts.wait("shop", lambda s: s.get("pausedByUser") is True, "held")
    rollouts.control("shop", "abort")
    aborted = rollouts.wait_phase("shop", "Degraded")
    assert aborted["abortReason"] == "AbortedByUser"
    assert "pausedByUser" not in aborted
    assert condition(aborted, "Paused")["status"] == "False"


def test_restart_replaces_the_stable_pods_never_fewer_ready(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    rollouts.create(manifest("shop", "v1", replicas=4))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    name = f"shop-{stable}"
    selector = f"coalmine.dev/revision={stable}"

    def pods() -> set[str]:
        items = kube.raw.list(r.PODS, namespace, label_selector=selector)
        return {p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")}

    before = pods()
    assert len(before) == 4
    lowest: list[int] = []
    stop = threading.Event()

    def watch_ready() -> None:
        while not stop.is_set():
            deployment = kube.raw.fetch(k.DEPLOYMENTS, namespace, name) or {}
            lowest.append(int((deployment.get("status") or {}).get("availableReplicas", 0)))
            stop.wait(0.1)

    sampler = threading.Thread(target=watch_ready, daemon=True)
    sampler.start()
    try:
        token = rollouts.control("shop", "restart")
        handled = rollouts.wait(
            "shop", lambda s: s["controls"].get("restart") == token, "restart handled"
        )
        assert handled["restart"]["revision"] == stable
        wait_for(
            pods,
            until=lambda now: len(now) == 4 and not now & before,
            timeout=90,
            message="every stable pod replaced",
        )
        wait_for(
            lambda: (kube.raw.fetch(k.DEPLOYMENTS, namespace, name) or {}).get("status", {}),
            until=lambda s: s.get("availableReplicas") == 4 and s.get("replicas") == 4,
            timeout=30,
            message="the restart finished",
        )
    finally:
        stop.set()
        sampler.join()
    assert min(lowest) >= 4, f"fewer than 4 pods available during the restart: {min(lowest)}"
    status = rollouts.status("shop")
    assert status["phase"] == "Healthy"
    assert status["stableRevision"] == stable, "the revision keeps its name"
    reasons = rollouts.reasons("shop")
    assert "DriftReverted" not in reasons, "the restart is not taken for drift"
    assert reasons.count("Restarting") == 1


def test_an_aborted_canary_keeps_its_pods_for_the_abort_delay(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    rollouts.create(manifest("shop", "v1", router="gatewayAPI", abortScaleDownDelaySeconds=20))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    canary = paused["canaryRevision"]
    size = rollouts.deployments("shop")[canary]
    assert size == 2
    rollouts.control("shop", "abort")
    aborted = rollouts.wait_phase("shop", "Degraded")
    assert router_weight(kube, namespace, "gatewayAPI", "shop") == 0
    pending = {p["revision"]: p["scaleDownAt"] for p in aborted.get("pendingScaleDowns") or []}
    if canary not in pending:
        aborted = rollouts.wait(
            "shop",
            lambda s: canary in {p["revision"] for p in s.get("pendingScaleDowns") or []},
            "the aborted canary listed in pendingScaleDowns",
        )
        pending = {p["revision"]: p["scaleDownAt"] for p in aborted["pendingScaleDowns"]}
    due = datetime.fromisoformat(pending[canary].replace("Z", "+00:00"))
    aborted_at = datetime.fromisoformat(aborted["abortedAt"].replace("Z", "+00:00"))
    assert (due - aborted_at).total_seconds() >= 20
    # Until then the canary keeps its pods (traffic has left it: weight 0 above).
    checks = 0
    while datetime.now(UTC) < due - (due - aborted_at) / 4:
        assert rollouts.deployments("shop")[canary] == size, "scaled down before its delay"
        checks += 1
        threading.Event().wait(0.5)
    assert checks, "the canary's pods were never looked at before its delay ran out"
    wait_for(
        lambda: rollouts.deployments("shop")[canary],
        until=lambda replicas: replicas == 0,
        timeout=30,
        message="the aborted canary scaled down once its delay ran out",
    )
    assert datetime.now(UTC) >= due
    wait_for(
        lambda: rollouts.status("shop").get("pendingScaleDowns") or [],
        until=lambda p: canary not in {x["revision"] for x in p},
        timeout=20,
        message="no longer pending",
    )


@pytest.mark.parametrize("router", ["replicaRatio", "gatewayAPI"])
def test_kubectl_scale_mid_rollout_resizes_both_revisions_and_keeps_the_step(
    kube: Cluster, namespace: str, rollouts: Rollouts, router: str
) -> None:
    """The scale subresource (issue 13, item 1), as `kubectl scale crol` uses it."""
    user_routing_object(kube, namespace, router, "shop")
    rollouts.create(manifest("shop", "v1", router=router, replicas=4))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    scale = kube.raw.request("GET", k.CANARY_ROLLOUTS.path(namespace, "shop", "scale"))
    assert scale["spec"]["replicas"] == 4
    assert scale["status"]["selector"] == "coalmine.dev/rollout=shop"
    rollouts.set_template("shop", "v2")
    paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    canary = paused["canaryRevision"]
    kube.raw.patch(
        k.CANARY_ROLLOUTS, namespace, "shop", {"spec": {"replicas": 8}}, subresource="scale"
    )
    expected = {stable: 4, canary: 4} if router == "replicaRatio" else {stable: 8, canary: 4}
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d == expected,
        timeout=30,
        message=f"resized to {expected}",
    )
    status = rollouts.wait(
        "shop",
        lambda s: s.get("replicas") == sum(expected.values()) and s.get("confirmedWeight") == 50,
        "status.replicas follows, the weight stays",
        timeout=60,
    )
    assert status["currentStepIndex"] == 3
    assert status["phase"] == "Paused"
    rollouts.control("shop", "promote")
    rollouts.wait_phase("shop", "Healthy", stableRevision=canary)
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d == {stable: 0, canary: 8},
        timeout=30,
        message="promoted at the new size",
    )
    steps = [m for r, m in rollouts.events("shop") if r == "StepCompleted"]
    assert len(steps) == 4, steps
