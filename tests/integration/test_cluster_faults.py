"""The local cluster survives what fault-injection tests do to it: its API server or etcd killed
and restarted, or frozen, mid-way through a scale-up. Nodes and pods end Ready by themselves and
Deployments keep scaling, so those tests test coalmine, not the environment."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from coalmine import kube as k
from devenv import cluster, faults, paths
from devenv.manifests import deployment
from devenv.waiting import wait_for

from .conftest import Cluster

pytestmark = pytest.mark.disruptive(rank=1)  # etcd and the API server themselves

# KWOK alone makes the first Ready; the pod runner starts a process and marks the second Ready.
WORKLOADS = {"plain": "registry.example/plain:1", "demo": "coalmine.dev/demo-app:v1"}


@pytest.fixture
def workloads(kube: Cluster, namespace: str) -> Iterator[dict[str, str]]:
    """Two Deployments of 2 pods, ready; whatever a test does to the cluster is undone after."""
    for name, image in WORKLOADS.items():
        kube.raw.create(k.DEPLOYMENTS, namespace, deployment(name, image, 2))
    faults.wait_healthy([namespace], timeout=60)
    yield WORKLOADS
    faults.recover()


def get_json(*args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json"))


def pod_names(namespace: str) -> set[str]:
    return {p["metadata"]["name"] for p in get_json("pods", "-n", namespace)["items"]}


def node_not_ready_events(kube: Cluster, namespace: str) -> list[str]:
    events = kube.raw.list(k.EVENTS, namespace)
    return [e["involvedObject"]["name"] for e in events if e.get("reason") == "NodeNotReady"]


def scale(kube: Cluster, namespace: str, replicas: int) -> None:
    for name in WORKLOADS:
        kube.apps.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}
        )


FAULTS: dict[str, Callable[[], object]] = {
    "api-server-restarted": lambda: faults.restart(faults.API_SERVER, down_for=5),
    "etcd-restarted": lambda: faults.restart(faults.ETCD, down_for=5),
    "api-server-and-etcd-frozen-15s": lambda: _frozen(15, faults.API_SERVER, faults.ETCD),
}


def _frozen(seconds: float, *names: str) -> None:
    with faults.frozen(*names):
        time.sleep(seconds)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_pods_stay_ready_through_a_control_plane_outage_mid_scale_up(
    kube: Cluster, namespace: str, workloads: dict[str, str], fault: str
) -> None:
    before = pod_names(namespace)
    scale(kube, namespace, 3)  # mid-way: new pods are being created when the fault hits
    FAULTS[fault]()

    faults.wait_healthy([namespace], timeout=90)
    assert before <= pod_names(namespace), "a running pod was replaced"
    assert not node_not_ready_events(kube, namespace), "pods were marked NotReady"

    # The control plane works again: a Deployment scales, its new pods become Ready.
    scale(kube, namespace, 4)
    faults.wait_healthy([namespace], timeout=60)
    assert len(pod_names(namespace)) == 8


def set_ready(obj: dict[str, Any], status: str, reason: str | None = None) -> None:
    """Replace the object's status with its Ready condition changed, as a controller does."""
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = status
            condition["reason"] = reason
    cluster.kubectl("replace", "--subresource=status", "-f", "-", stdin=json.dumps(obj))


def test_pods_the_node_controller_marked_not_ready_become_ready_again(
    namespace: str, workloads: dict[str, str]
) -> None:
    """After an outage longer than the node monitor's grace period every pod was NotReady for
    good: KWOK only makes Pending pods Ready. A kubelet re-posts Ready once its node is back."""
    for pod in get_json("pods", "-n", namespace)["items"]:
        # What the node lifecycle controller does to the pods of a node it lost
        # (MarkPodsNotReady): Ready=False, the rest as it was. KWOK's pods and the demo app's.
        set_ready(pod, "False")
    assert faults.pods_not_ready(namespace), "the pods were not marked NotReady"
    faults.wait_healthy([namespace], timeout=20)


def test_a_node_the_node_controller_lost_becomes_ready_again() -> None:
    name = "kwok-node-0"
    set_ready(get_json("node", name), "Unknown", "NodeStatusUnknown")
    wait_for(
        faults.nodes_not_ready,
        until=lambda names: not names,
        timeout=20,
        message="every node Ready again",
    )
    # Still where metrics-server scrapes it: the stage that brought it back kept its address.
    addresses = get_json("node", name)["status"].get("addresses") or []
    assert [a["address"] for a in addresses if a["type"] == "InternalIP"] == [paths.NODE_ADDRESS]


@pytest.mark.usefixtures("kube")
def test_prometheus_stopped_and_started_answers_again() -> None:
    faults.stop(faults.PROMETHEUS)
    assert "prometheus unhealthy" in faults.problems()
    faults.start(faults.PROMETHEUS)
    faults.wait_healthy(timeout=30)


def test_a_frozen_api_server_is_reported_until_thawed(kube: Cluster) -> None:
    with faults.frozen(faults.API_SERVER):
        assert f"{faults.API_SERVER} unhealthy" in faults.problems()
    faults.wait_healthy(timeout=30)
    assert client.VersionApi(kube.api).get_code().git_version == "v1.36.3"
