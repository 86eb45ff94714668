"""Which pods get a demo app process, and how the runner converges its children.

``desired_processes`` is the runner's whole policy, so it is tested as a table
of pod shapes; the reconcile test then checks that real children follow it.
"""

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from devenv.podrunner import (
    DEFAULT_PORT,
    PodKey,
    ProcessSpec,
    Runner,
    desired_processes,
    split_image,
)

DIGEST = "sha256:" + "ab12cd34ef56" + "0" * 52


def container(
    image: str = "coalmine.dev/demo-app:1.0.0",
    name: str = "app",
    env: list[dict[str, Any]] | None = None,
    ports: list[int] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": image}
    if env is not None:
        spec["env"] = env
    if ports is not None:
        spec["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in ports]
    return spec


def pod(
    name: str = "web-1",
    *containers: dict[str, Any],
    namespace: str = "shop",
    uid: str | None = None,
    phase: str = "Running",
    ip: str | None = "10.244.1.7",
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status["podIP"] = ip
    return {
        "metadata": metadata,
        "spec": {"containers": list(containers) or [container()]},
        "status": status,
    }


def spec(
    name: str = "web-1",
    *,
    version: str = "1.0.0",
    ip: str = "10.244.1.7",
    port: int = DEFAULT_PORT,
    env: tuple[tuple[str, str], ...] = (),
    namespace: str = "shop",
) -> ProcessSpec:
    return ProcessSpec(ip=ip, port=port, version=version, env=env, namespace=namespace, pod=name)


def key(name: str = "web-1", namespace: str = "shop", uid: str | None = None) -> PodKey:
    return (namespace, name, uid or f"uid-{name}")


CASES: list[tuple[str, list[dict[str, Any]], dict[PodKey, ProcessSpec]]] = [
    ("no pods", [], {}),
    ("running demo pod", [pod()], {key(): spec()}),
    (
        "other images are ignored",
        [
            pod("nginx", container("nginx:1.27")),
            pod("lookalike", container("coalmine.dev/demo-app-v2:1.0.0")),
            pod("other-registry", container("docker.io/coalmine.dev/demo-app:1.0.0")),
        ],
        {},
    ),
    ("pending pod is ignored", [pod(phase="Pending", ip=None)], {}),
    ("running pod without an IP yet is ignored", [pod(ip=None)], {}),
    ("succeeded pod is ignored", [pod(phase="Succeeded")], {}),
    ("failed pod is ignored", [pod(phase="Failed")], {}),
    ("terminating pod is ignored", [pod(deleting=True)], {}),
    (
        "digest form takes DEMO_VERSION",
        [
            pod(
                "web-1",
                container(
                    f"coalmine.dev/demo-app@{DIGEST}",
                    env=[{"name": "DEMO_VERSION", "value": "2.0.0"}],
                ),
            )
        ],
        {key(): spec(version="2.0.0", env=(("DEMO_VERSION", "2.0.0"),))},
    ),
    (
        "digest form without DEMO_VERSION takes the short digest",
        [pod("web-1", container(f"coalmine.dev/demo-app@{DIGEST}"))],
        {key(): spec(version="ab12cd34ef56")},
    ),
    (
        "tag wins over digest when both are given",
        [pod("web-1", container(f"coalmine.dev/demo-app:1.4.0@{DIGEST}"))],
        {key(): spec(version="1.4.0")},
    ),
    (
        "literal env is passed in order, valueFrom is ignored",
        [
            pod(
                "web-1",
                container(
                    env=[
                        {"name": "DEMO_ERROR_RATE", "value": "0.2"},
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                        {"name": "EMPTY"},
                        {"name": "DEMO_LATENCY_MS", "value": "50"},
                    ]
                ),
            )
        ],
        {
            key(): spec(
                env=(("DEMO_ERROR_RATE", "0.2"), ("EMPTY", ""), ("DEMO_LATENCY_MS", "50")),
            )
        },
    ),
    ("no ports means the default port", [pod("web-1", container(ports=[]))], {key(): spec()}),
    (
        "first containerPort is used",
        [pod("web-1", container(ports=[9090, 9091]))],
        {key(): spec(port=9090)},
    ),
    (
        "sidecars are skipped and the demo container is found",
        [
            pod(
                "web-1",
                container("envoyproxy/envoy:v1.31", name="proxy", ports=[15001]),
                container("coalmine.dev/demo-app:3.1.0", ports=[8081]),
            )
        ],
        {key(): spec(version="3.1.0", port=8081)},
    ),
    (
        "two demo containers in one pod still make one process, from the first",
        [
            pod(
                "web-1",
                container("coalmine.dev/demo-app:1.0.0", name="a", ports=[8080]),
                container("coalmine.dev/demo-app:2.0.0", name="b", ports=[8081]),
            )
        ],
        {key(): spec(version="1.0.0", port=8080)},
    ),
    (
        "several pods across namespaces",
        [
            pod("web-1", ip="10.244.1.7"),
            pod("web-2", container("coalmine.dev/demo-app:1.1.0"), ip="10.244.1.8"),
            pod("web-1", namespace="staging", uid="uid-staging", ip="10.244.2.7"),
            pod("web-3", phase="Pending", ip=None),
        ],
        {
            key("web-1"): spec("web-1", ip="10.244.1.7"),
            key("web-2"): spec("web-2", version="1.1.0", ip="10.244.1.8"),
            key("web-1", "staging", "uid-staging"): spec(
                "web-1", ip="10.244.2.7", namespace="staging"
            ),
        },
    ),
    (
        "a re-created pod is a different key",
        [pod("web-1", uid="uid-new", ip="10.244.1.9")],
        {key(uid="uid-new"): spec(ip="10.244.1.9")},
    ),
]


@pytest.mark.parametrize(
    ("pods", "expected"),
    [(pods, expected) for _, pods, expected in CASES],
    ids=[c[0] for c in CASES],
)
def test_desired_processes(pods: list[dict[str, Any]], expected: dict[PodKey, ProcessSpec]) -> None:
    assert desired_processes(pods) == expected


def test_deleting_a_pod_removes_its_process() -> None:
    before = [pod("web-1", ip="10.244.1.7"), pod("web-2", ip="10.244.1.8")]
    after = [pod("web-2", ip="10.244.1.8")]

    assert set(desired_processes(before)) == {key("web-1"), key("web-2")}
    assert set(desired_processes(after)) == {key("web-2")}


def test_ip_change_changes_the_spec() -> None:
    old = desired_processes([pod(ip="10.244.1.7")])[key()]
    new = desired_processes([pod(ip="10.244.1.9")])[key()]

    assert old != new


def test_serialized_client_objects_are_accepted() -> None:
    model = client.V1Pod(
        metadata=client.V1ObjectMeta(name="web-1", namespace="shop", uid="uid-web-1"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="app",
                    image="coalmine.dev/demo-app:1.0.0",
                    ports=[client.V1ContainerPort(container_port=8080)],
                    env=[client.V1EnvVar(name="DEMO_LATENCY_MS", value="5")],
                )
            ]
        ),
        status=client.V1PodStatus(phase="Running", pod_ip="10.244.1.7"),
    )
    plain = client.ApiClient().sanitize_for_serialization(model)

    assert desired_processes([plain]) == {key(): spec(env=(("DEMO_LATENCY_MS", "5"),))}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("coalmine.dev/demo-app:1.0.0", ("coalmine.dev/demo-app", "1.0.0", None)),
        ("coalmine.dev/demo-app", ("coalmine.dev/demo-app", None, None)),
        (f"coalmine.dev/demo-app@{DIGEST}", ("coalmine.dev/demo-app", None, DIGEST)),
        (f"coalmine.dev/demo-app:2@{DIGEST}", ("coalmine.dev/demo-app", "2", DIGEST)),
        ("localhost:5000/demo-app", ("localhost:5000/demo-app", None, None)),
        ("localhost:5000/demo-app:v3", ("localhost:5000/demo-app", "v3", None)),
    ],
)
def test_split_image(image: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_image(image) == expected


def _state(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _wait_serving(url: str, timeout: float = 10.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=1)
        except requests.ConnectionError:
            time.sleep(0.05)
    return requests.get(url, timeout=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_runner_starts_restarts_and_stops_children(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "podrunner.json"
    runner = Runner(state_file, tmp_path / "logs")
    port = _free_port()
    first = {key(): spec(ip="127.0.0.1", port=port)}
    try:
        runner.reconcile(first)
        pid = _state(state_file)["pods"]["shop/web-1"]["pid"]
        assert _state(state_file)["pods"]["shop/web-1"] == {
            "pid": pid,
            "ip": "127.0.0.1",
            "port": port,
            "version": "1.0.0",
        }
        assert _wait_serving(f"http://127.0.0.1:{port}/").json()["version"] == "1.0.0"

        runner.reconcile(first)
        assert _state(state_file)["pods"]["shop/web-1"]["pid"] == pid, "unchanged spec restarted"

        second = {key(): spec(ip="127.0.0.1", port=port, version="2.0.0")}
        runner.reconcile(second)
        new_pid = _state(state_file)["pods"]["shop/web-1"]["pid"]
        assert new_pid != pid
        assert _wait_serving(f"http://127.0.0.1:{port}/").json()["version"] == "2.0.0"

        # A child that dies on its own is noticed and, having run only briefly, backs off.
        os.kill(new_pid, signal.SIGKILL)
        runner.children[key()].process.wait(timeout=5)
        assert runner.needs_attention()
        runner.retry()
        assert _state(state_file)["pods"] == {}

        runner.reconcile({})
        assert _state(state_file)["pods"] == {}
        assert (tmp_path / "logs" / "shop_web-1.log").exists()
    finally:
        runner.stop_all()
    assert runner.children == {}
    assert _state(state_file)["pods"] == {}
    assert isinstance(_state(state_file)["updated"], float)
