"""A real HorizontalPodAutoscaler scales a Deployment in the local cluster: the controller
manager's HPA controller reads metrics.k8s.io from metrics-server, which scrapes the usage KWOK
simulates for each pod (driven here by devenv.usage)."""

from __future__ import annotations

import json
from typing import Any

from coalmine import kube as k
from devenv import cluster
from devenv.manifests import deployment
from devenv.usage import CpuLoad
from devenv.waiting import wait_for

from .conftest import Cluster

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


def hpa_status(namespace: str) -> dict[str, Any]:
    hpa = json.loads(cluster.kubectl("get", "hpa", "web", "-n", namespace, "-o", "json"))
    status: dict[str, Any] = hpa.get("status") or {}
    return status


def current_utilization(status: dict[str, Any]) -> int | None:
    for metric in status.get("currentMetrics") or ():
        value = ((metric.get("resource") or {}).get("current") or {}).get("averageUtilization")
        if value is not None:
            return int(value)
    return None


def rescale_events(kube: Cluster, namespace: str) -> list[str]:
    return [
        str(e.get("message"))
        for e in kube.raw.list(k.EVENTS, namespace)
        if e.get("reason") == "SuccessfulRescale"
        and e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
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
