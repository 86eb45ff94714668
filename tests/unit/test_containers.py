"""How the pod runner runs a pod of the operator image: the pure part, from the pod to podman.

The pod is the one ``deploy/`` makes (its Deployment's pod template, scheduled and given an IP),
so what the local cluster runs is what the shipped manifests ask for.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import containers, paths
from devenv.containers import HttpProbe
from devenv.podrunner import ProcessSpec, desired_processes, terminating_containers

DEPLOYMENT = paths.REPO_ROOT / "deploy" / "operator" / "deployment.yaml"


def operator_pod(**status: Any) -> dict[str, Any]:
    template = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    spec["containers"][0]["image"] = "coalmine:dev"  # what kustomize's images: makes of it
    spec["nodeName"] = "kwok-node-1"
    return {
        "metadata": {
            "name": "coalmine-5d8f-abcde",
            "namespace": "coalmine-system",
            "uid": "0123456789abcdef",
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
        "status": {"phase": "Running", "podIP": "10.244.1.5", **status},
    }


def test_the_deployments_pod_runs_as_its_manifest_says() -> None:
    spec = containers.container_spec(operator_pod())
    assert spec is not None
    env = dict(spec.env)
    assert env["KUBERNETES_SERVICE_HOST"] == paths.ADVERTISE_ADDRESS
    assert env["KUBERNETES_SERVICE_PORT"] == str(paths.API_SERVER_PORT)
    assert env["POD_ID"] == "coalmine-5d8f-abcde", "fieldRef metadata.name"
    assert env["COALMINE_METRICS_ADDRESS"] == "10.244.1.5", "fieldRef status.podIP"
    assert env["COALMINE_STANDALONE"] == "false"
    assert spec.user == "65532:65532"
    assert spec.read_only
    assert spec.tmpfs == (("/tmp", "rw,mode=1777,size=64m"),)
    assert spec.service_account == "coalmine"
    assert spec.readiness is not None
    assert spec.readiness.port == 8080, "the named port `health`"
    assert spec.readiness.path == "/readyz"
    assert spec.grace_s == 30
    assert spec.drop_capabilities
    assert spec.no_new_privileges
    assert spec.command is None, "the image's entrypoint runs the operator"


def test_podman_run_joins_the_cluster_namespace_with_the_service_account() -> None:
    spec = containers.container_spec(operator_pod())
    assert spec is not None
    argv = spec.podman_run(Path("/state/sa"), netns="cm-test")
    assert argv[:3] == ["podman", "run", "--rm"]
    assert "--network=ns:/run/netns/cm-test" in argv
    assert f"--volume=/state/sa:{containers.SERVICE_ACCOUNT_DIR}:ro" in argv
    assert "--env=COALMINE_METRICS_ADDRESS=10.244.1.5" in argv
    assert [a for a in argv if a.startswith("--read-only")] == [
        "--read-only",
        "--read-only-tmpfs=false",
    ]
    assert "--cap-drop=all" in argv
    assert argv[-1] == "coalmine:dev", "no command or args: the image's own"
    assert spec.name.startswith(f"{paths.NETNS}_coalmine-system_coalmine-5d8f-abcde_01234567")


def test_command_and_args_replace_the_images() -> None:
    pod = operator_pod()
    pod["spec"]["containers"][0]["command"] = ["python", "-m", "coalmine"]
    pod["spec"]["containers"][0]["args"] = ["--help"]
    spec = containers.container_spec(pod)
    assert spec is not None
    argv = spec.podman_run(None)
    assert '--entrypoint=["python", "-m", "coalmine"]' in argv
    assert argv[-2:] == ["coalmine:dev", "--help"]
    assert not any(a.startswith("--volume") for a in argv)


@pytest.mark.parametrize(
    ("change", "runs"),
    [
        (lambda p: None, True),
        (lambda p: p["status"].update(phase="Pending"), False),
        (lambda p: p["status"].pop("podIP"), False),
        (lambda p: p["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z"), False),
        (lambda p: p["spec"]["containers"][0].update(image="nginx:1.27"), False),
        (lambda p: p["spec"]["containers"][0].update(image="localhost/coalmine:v2"), True),
        (lambda p: p["spec"]["containers"][0].update(image="example.com/coalmine:1"), False),
    ],
    ids=["running", "pending", "no-ip", "deleting", "other-image", "localhost", "registry"],
)
def test_which_pods_run(change: Any, runs: bool) -> None:
    pod = operator_pod()
    change(pod)
    assert (containers.container_spec(pod) is not None) == runs


def test_no_service_account_when_automount_is_off() -> None:
    pod = operator_pod()
    pod["spec"]["automountServiceAccountToken"] = False
    spec = containers.container_spec(pod)
    assert spec is not None
    assert spec.service_account is None


def test_probe_defaults_are_kubernetes() -> None:
    container = {"readinessProbe": {"httpGet": {"port": 9000}}}
    assert containers.readiness_probe(container) == HttpProbe(path="/", port=9000)
    assert containers.readiness_probe({"readinessProbe": {"tcpSocket": {"port": 1}}}) is None


def test_env_from_the_downward_api() -> None:
    pod = operator_pod()
    container = {
        "env": [
            {"name": "A", "value": "1"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "L",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}
                },
            },
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}},
        ]
    }
    assert containers.resolve_env(pod, container) == (
        ("A", "1"),
        ("NS", "coalmine-system"),
        ("NODE", "kwok-node-1"),
        ("L", "coalmine"),
    )


def test_the_runner_tells_containers_from_demo_apps() -> None:
    demo = operator_pod()
    demo["metadata"].update(name="web-1", uid="uid-web-1")
    demo["spec"]["containers"][0]["image"] = "coalmine.dev/demo-app:v1"
    deleting = operator_pod()
    deleting["metadata"].update(name="old", uid="uid-old", deletionTimestamp="2026-01-01T00:00:00Z")
    desired = desired_processes([operator_pod(), demo, deleting])
    kinds = {key[1]: type(spec) for key, spec in desired.items()}
    assert kinds == {"coalmine-5d8f-abcde": containers.ContainerSpec, "web-1": ProcessSpec}
    assert terminating_containers([operator_pod(), demo, deleting]) == [
        ("coalmine-system", "old", "uid-old")
    ]
