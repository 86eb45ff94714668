"""A real HorizontalPodAutoscaler scales a Deployment, and a CanaryRollout mid-canary, in the
local cluster: the controller manager's HPA controller reads metrics.k8s.io from metrics-server,
which scrapes the usage KWOK simulates for each pod (driven here by devenv.usage)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coalmine import kube as k
from coalmine.api.resource import API_VERSION, GROUP, KIND, PLURAL
from devenv import cluster
from devenv.manifests import deployment, plain_template
from devenv.usage import CpuLoad
from devenv.waiting import wait_for

from .conftest import Cluster
from .invariants import Watcher
from .rollouts import Rollouts, manifest, user_routing_object

REQUEST_MILLICORES = 100
TARGET_UTILIZATION = 50  # % of the request: 50m per pod


def autoscaler(max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": TARGET_UTILIZATION},
                    },
                }
            ],
        },
    }


def hpa_status(namespace: str, name: str = "web") -> dict[str, Any]:
    hpa = json.loads(cluster.kubectl("get", "hpa", name, "-n", namespace, "-o", "json"))
    status: dict[str, Any] = hpa.get("status") or {}
    return status


def current_utilization(status: dict[str, Any]) -> int | None:
    for metric in status.get("currentMetrics") or ():
        value = ((metric.get("resource") or {}).get("current") or {}).get("averageUtilization")
        if value is not None:
            return int(value)
    return None


def rescale_events(kube: Cluster, namespace: str, name: str = "web") -> list[str]:
    return [
        str(e.get("message"))
        for e in kube.raw.list(k.EVENTS, namespace)
        if e.get("reason") == "SuccessfulRescale"
        and e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
        and e["involvedObject"]["name"] == name
    ]


def test_an_hpa_scales_a_deployment_up_when_its_cpu_load_rises(
    kube: Cluster, namespace: str
) -> None:
    kube.raw.create(
        k.DEPLOYMENTS,
        namespace,
        deployment("web", "registry.example/web:1", 1, cpu_request=f"{REQUEST_MILLICORES}m"),
    )
    cluster.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(autoscaler(4)))
    # Idle (KWOK's default usage, 1m of 100m): the HPA reads the metric and keeps one pod.
    idle = wait_for(
        lambda: hpa_status(namespace),
        until=lambda s: current_utilization(s) is not None,
        timeout=90,
        message="the HPA to read the pod's CPU utilization from metrics.k8s.io",
    )
    assert (current_utilization(idle) or 0) < 10
    assert idle.get("desiredReplicas") == 1

    # 400m in all would need 8 pods at 50m each: the HPA scales to its maximum, 4, in one step.
    # (Below the maximum the count it settles on depends on how fast the metrics of new pods
    # arrive, as in any cluster; the maximum makes the outcome exact.)
    with CpuLoad(kube.api, namespace, "app=web", 400):
        wait_for(
            lambda: (kube.raw.get(k.DEPLOYMENTS, namespace, "web") or {})["spec"]["replicas"],
            until=lambda replicas: replicas == 4,
            timeout=90,
            message="the HPA to scale web from 1 to 4 replicas",
        )
        limited = wait_for(
            lambda: hpa_status(namespace),
            until=lambda s: s.get("currentReplicas") == 4 and limited_by_maximum(s),
            timeout=90,
            message="4 pods, the HPA still wanting more (ScalingLimited: TooManyReplicas)",
        )
    assert (current_utilization(limited) or 0) > TARGET_UTILIZATION
    assert rescale_events(kube, namespace) == [
        "New size: 4; reason: cpu resource utilization (percentage of request) above target"
    ]


def limited_by_maximum(status: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "ScalingLimited" and c.get("reason") == "TooManyReplicas"
        for c in status.get("conditions") or ()
    )


# --- a CanaryRollout, sized by an HPA in the middle of a canary (issue 13, item 1) ------------


def rollout_autoscaler(name: str, max_replicas: int) -> dict[str, Any]:
    body = autoscaler(max_replicas)
    body["metadata"]["name"] = name
    body["spec"]["minReplicas"] = 2
    body["spec"]["scaleTargetRef"] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
    }
    return body


def cpu_template(version: str) -> dict[str, Any]:
    """Pods KWOK makes ready at once, with the CPU request utilization is measured against."""
    return plain_template(version, resources={"requests": {"cpu": f"{REQUEST_MILLICORES}m"}})


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("router", ["replicaRatio", "gatewayAPI"])
def test_an_hpa_scales_a_canary_rollout_mid_canary_and_the_rollout_completes(
    kube: Cluster, namespace: str, rollouts: Rollouts, router: str
) -> None:
    allowed = cluster.kubectl(
        "auth",
        "can-i",
        "update",
        f"{PLURAL}.{GROUP}",
        "--subresource=scale",
        "-n",
        namespace,
        "--as=system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    )
    assert allowed.strip() == "yes", "the HPA controller's bootstrap role covers */scale"
    user_routing_object(kube, namespace, router, "shop")
    body = manifest(
        "shop", "v1", router=router, replicas=2, steps=[{"setWeight": 50}, {"pause": {}}]
    )
    body["spec"]["template"] = cpu_template("1")
    rollouts.create(body)
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    rollouts.patch_spec("shop", {"template": cpu_template("2")})
    paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=1)
    canary = paused["canaryRevision"]
    before = {stable: 1, canary: 1} if router == "replicaRatio" else {stable: 2, canary: 1}
    assert rollouts.deployments("shop") == before

    cluster.kubectl(
        "create", "-n", namespace, "-f", "-", stdin=json.dumps(rollout_autoscaler("shop", 4))
    )
    wait_for(
        lambda: hpa_status(namespace, "shop"),
        until=lambda s: current_utilization(s) is not None,
        timeout=90,
        message="the HPA to read the rollout's pods' CPU from metrics.k8s.io",
    )
    # 400m over the rollout's pods (both revisions, what status.selector picks) would need 8
    # pods at 50m: the HPA scales the CanaryRollout to its maximum, 4, mid-canary.
    # Every change to the rollout, its route, EndpointSlices and pods, checked against the
    # status at that moment: the canary never gets more than its step allows (invariants.py).
    with (
        Watcher(k.Kube.connect(kube.kubeconfig), namespace) as watcher,
        CpuLoad(kube.api, namespace, "coalmine.dev/rollout=shop", 400),
    ):
        after = {stable: 2, canary: 2} if router == "replicaRatio" else {stable: 4, canary: 2}
        wait_for(
            lambda: rollouts.deployments("shop"),
            until=lambda d: d == after,
            timeout=120,
            message=f"the HPA's new size applied to both revisions: {after}",
        )
        seen: list[int] = []

        def settled(status: dict[str, Any]) -> bool:
            seen.append(int(status.get("confirmedWeight") or 0))
            return (
                status.get("replicas") == sum(after.values())
                and status.get("confirmedWeight") == 50
                and status.get("phase") == "Paused"
            )

        held = rollouts.wait("shop", settled, "the step and its weight kept at the new size")
        assert rollouts.get("shop")["spec"]["replicas"] == 4
        assert held["currentStepIndex"] == 1
        # Growing, the stable's new pods come first: the canary's share dips, never rises.
        assert max(seen) <= 50, seen
        rollouts.control("shop", "promote")
        rollouts.wait_phase("shop", "Healthy", stableRevision=canary, timeout=90)
        wait_for(
            lambda: rollouts.deployments("shop"),
            until=lambda d: d == {stable: 0, canary: 4},
            timeout=60,
            message="promoted at the HPA's size",
        )
    assert watcher.history(), "the watcher saw no change at all"
    assert not watcher.violations(), watcher.violations()
    events = rescale_events(kube, namespace, "shop")
    print(f"\n  {router}: HPA events {events}; rollout events {rollouts.reasons('shop')}")
    assert events == [
        "New size: 4; reason: cpu resource utilization (percentage of request) above target"
    ]
    steps = [m for r_, m in rollouts.events("shop") if r_ == "StepCompleted"]
    assert len(steps) == 2, steps
