"""The local cluster is real: Deployments become available, pods get real IPs served by real
processes, Prometheus scrapes them, and the processes follow the pods' lifecycle."""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from devenv import cluster, paths
from devenv.waiting import wait_for

from .conftest import Cluster

POD_NETWORK = ipaddress.ip_network(paths.POD_CIDR)
DEMO_LABELS = {"app": "demo"}


@dataclass(frozen=True)
class DemoPod:
    name: str
    ip: str


def demo_deployment(replicas: int, version: str = "v1") -> client.V1Deployment:
    container = client.V1Container(
        name="app",
        image=f"coalmine.dev/demo-app:{version}",
        ports=[client.V1ContainerPort(container_port=8080, name="http")],
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="demo"),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=DEMO_LABELS),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=DEMO_LABELS),
                spec=client.V1PodSpec(containers=[container]),
            ),
        ),
    )


def running_pods(kube: Cluster, namespace: str) -> list[DemoPod]:
    pods = kube.api.sanitize_for_serialization(
        kube.core.list_namespaced_pod(namespace, label_selector="app=demo")
    )["items"]
    return [
        DemoPod(name=p["metadata"]["name"], ip=p["status"]["podIP"])
        for p in pods
        if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]
    ]


def available_replicas(kube: Cluster, namespace: str) -> int:
    status = kube.api.sanitize_for_serialization(
        kube.apps.read_namespaced_deployment_status("demo", namespace)
    )["status"]
    return int(status.get("availableReplicas", 0))


def get(url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def answers(ip: str, port: int = 8080) -> bool:
    try:
        get(f"http://{ip}:{port}/", timeout=1.0)
    except (urllib.error.URLError, OSError):
        return False
    return True


def prometheus_query(url: str, query: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=5) as response:
        payload = json.loads(response.read())
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


def runner_pids(namespace: str) -> dict[str, int]:
    state = json.loads((paths.STATE_DIR / "podrunner.json").read_text())
    return {
        key: int(entry["pid"])
        for key, entry in state["pods"].items()
        if key.startswith(f"{namespace}/")
    }


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo(kube: Cluster, namespace: str) -> list[DemoPod]:
    """Three demo-app replicas, available, each answered by its own process."""
    kube.apps.create_namespaced_deployment(namespace, demo_deployment(3))
    wait_for(
        lambda: available_replicas(kube, namespace),
        until=lambda n: n == 3,
        timeout=60,
        message="deployment demo to report availableReplicas == 3",
    )
    pods = running_pods(kube, namespace)
    for pod in pods:
        wait_for(
            lambda pod=pod: answers(pod.ip),  # type: ignore[misc]
            timeout=30,
            message=f"the process of pod {pod.name} to answer on {pod.ip}:8080",
        )
    return pods


def test_deployment_becomes_available_with_pod_ips_in_the_pod_network(
    demo: list[DemoPod],
) -> None:
    assert len(demo) == 3
    ips = {pod.ip for pod in demo}
    assert len(ips) == 3, "each pod has its own IP"
    for ip in ips:
        assert ipaddress.ip_address(ip) in POD_NETWORK


def test_each_pod_ip_is_answered_by_that_pods_own_process(
    demo: list[DemoPod], namespace: str
) -> None:
    for pod in demo:
        body = get(f"http://{pod.ip}:8080/")
        assert body["version"] == "v1"
        assert body["pod"] == pod.name
        assert body["namespace"] == namespace


def test_prometheus_scrapes_the_request_counter_of_each_pod(
    kube: Cluster, demo: list[DemoPod], namespace: str
) -> None:
    for pod in demo:
        for _ in range(5):
            get(f"http://{pod.ip}:8080/")
    query = (
        f'sum by (pod, namespace, version) (demo_http_requests_total{{namespace="{namespace}"}})'
    )
    series = wait_for(
        lambda: prometheus_query(kube.prometheus_url, query),
        until=lambda result: len(result) == 3 and all(float(s["value"][1]) >= 5 for s in result),
        timeout=45,
        message=f"Prometheus to return the request counter of the 3 pods: {query}",
    )
    assert {s["metric"]["pod"] for s in series} == {p.name for p in demo}
    assert {s["metric"]["namespace"] for s in series} == {namespace}
    assert {s["metric"]["version"] for s in series} == {"v1"}
    before = sum(float(s["value"][1]) for s in series)

    for pod in demo:
        for _ in range(10):
            get(f"http://{pod.ip}:8080/")
    wait_for(
        lambda: sum(float(s["value"][1]) for s in prometheus_query(kube.prometheus_url, query)),
        until=lambda total: total >= before + 30,
        timeout=45,
        message=f"the scraped request count to grow from {before:.0f} by the 30 new requests",
    )


def test_processes_follow_scale_down_and_deletion(
    kube: Cluster, demo: list[DemoPod], namespace: str
) -> None:
    pids = wait_for(
        lambda: runner_pids(namespace),
        until=lambda found: len(found) == 3,
        timeout=20,
        message="the pod runner to record 3 processes",
    )
    assert all(process_alive(pid) for pid in pids.values())

    kube.apps.patch_namespaced_deployment_scale("demo", namespace, {"spec": {"replicas": 1}})
    survivors = wait_for(
        lambda: [p for p in demo if answers(p.ip)],
        until=lambda alive: len(alive) == 1,
        timeout=45,
        message="two of the three demo processes to stop after scaling to 1",
    )
    stopped = [pid for key, pid in pids.items() if key != f"{namespace}/{survivors[0].name}"]
    assert len(stopped) == 2
    wait_for(
        lambda: [pid for pid in stopped if process_alive(pid)],
        until=lambda alive: not alive,
        timeout=15,
        message=f"processes {stopped} to exit",
    )

    kube.apps.delete_namespaced_deployment("demo", namespace)
    wait_for(
        lambda: answers(survivors[0].ip),
        until=lambda alive: not alive,
        timeout=45,
        message="the last demo process to stop after the deployment is deleted",
    )
    wait_for(
        lambda: [pid for pid in pids.values() if process_alive(pid)],
        until=lambda alive: not alive,
        timeout=15,
        message="every demo process to exit",
    )


def test_kubectl_from_the_built_tools_lists_nodes_and_pods(
    demo: list[DemoPod], namespace: str
) -> None:
    nodes = cluster.kubectl("get", "nodes", "-o", "name")
    assert nodes.split() == [f"node/kwok-node-{i}" for i in range(paths.NODE_COUNT)]
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "name")
    assert sorted(pods.split()) == sorted(f"pod/{p.name}" for p in demo)
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"


def test_a_second_start_reuses_the_healthy_cluster(kube: Cluster) -> None:
    info = cluster.up(quiet=True)
    assert info.reused
    assert not cluster.unhealthy_components()
