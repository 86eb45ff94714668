"""The Helm chart renders what deploy/ installs, and passes `helm lint`; deploy/ installs in one
apply.

Two ways to install one operator must not drift apart: with default values, `helm template`
must give the objects of `kubectl kustomize deploy/`, and with ``watchNamespace`` those of
``deploy/namespaced/``, apart from the differences listed here (and in docs/install.md#helm).
Both renderers are the real programs, built from pinned modules into ``.tools/bin``.
"""

from __future__ import annotations

import difflib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import paths

CHART = paths.REPO_ROOT / "charts" / "coalmine"
HELM = paths.binary("helm")
KUBECTL = paths.binary("kubectl")
#: Labels only Helm sets (its conventions: which release and chart made an object).
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}
#: What the chart leaves out on purpose, and why (docs/install.md#helm says the same).
NOT_IN_CHART = {
    ("Namespace", "", "coalmine-system"): (
        "Helm installs into the release namespace, made by `--create-namespace`; the chart "
        "does not own it (docs/install.md#helm labels it for the restricted standard)"
    ),
}

pytestmark = pytest.mark.skipif(
    not (HELM.exists() and KUBECTL.exists()), reason="helm and kubectl missing: run `make tools`"
)

ObjectKey = tuple[str, str, str]


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr}"
    return result.stdout


def _objects(text: str) -> dict[ObjectKey, dict[str, Any]]:
    found = {}
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        metadata = doc["metadata"]
        found[(doc["kind"], metadata.get("namespace", ""), metadata["name"])] = _without_helm(doc)
    return found


def _without_helm(value: Any) -> Any:
    """``value`` without Helm's own labels, wherever labels appear (metadata, selectors)."""
    if isinstance(value, dict):
        return {k: _without_helm(v) for k, v in value.items() if k not in HELM_LABELS}
    if isinstance(value, list):
        return [_without_helm(v) for v in value]
    return value


def helm_template(*flags: str) -> str:
    return _run(
        str(HELM),
        "template",
        "coalmine",
        str(CHART),
        "--namespace=coalmine-system",
        "--include-crds",
        *flags,
    )


def kustomize(path: Path) -> str:
    return _run(str(KUBECTL), "kustomize", str(path))


def _assert_same(helm: dict[ObjectKey, Any], kustomized: dict[ObjectKey, Any]) -> None:
    for key in NOT_IN_CHART:
        assert key in kustomized, f"{key} is listed as a difference but deploy/ lacks it too"
        kustomized.pop(key)
    assert sorted(helm) == sorted(kustomized), "the two installs hold different objects"
    for key, expected in kustomized.items():
        if helm[key] != expected:
            diff = difflib.unified_diff(
                json.dumps(expected, indent=1, sort_keys=True).splitlines(),
                json.dumps(helm[key], indent=1, sort_keys=True).splitlines(),
                "kubectl kustomize",
                "helm template",
                lineterm="",
            )
            pytest.fail(f"{key} differs:\n" + "\n".join(diff))


def test_default_values_render_what_deploy_installs() -> None:
    _assert_same(_objects(helm_template()), _objects(kustomize(paths.REPO_ROOT / "deploy")))


def test_watch_namespace_renders_the_namespaced_variant() -> None:
    _assert_same(
        _objects(helm_template("--set=watchNamespace=default")),
        _objects(kustomize(paths.REPO_ROOT / "deploy" / "namespaced")),
    )


@pytest.mark.parametrize("path", ["deploy", "deploy/namespaced"])
def test_one_apply_installs_on_a_fresh_cluster(path: str) -> None:
    """No object of deploy/ is of a kind whose CRD the same apply creates: kubectl maps every
    kind before it sends anything, so on a fresh cluster such an apply fails (the built-in
    ClusterAnalysisTemplates are a second apply, deploy/analysis/, for that reason)."""
    objects = [doc for doc in yaml.safe_load_all(kustomize(paths.REPO_ROOT / path)) if doc]
    defined = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"])
        for crd in objects
        if crd["kind"] == "CustomResourceDefinition"
    }
    custom = [
        (obj["kind"], obj["metadata"]["name"])
        for obj in objects
        if (obj["apiVersion"].rpartition("/")[0], obj["kind"]) in defined
    ]
    assert not custom, f"{path} holds objects of its own CRDs: {custom}"


def _env(objects: dict[ObjectKey, dict[str, Any]], name: str = "coalmine") -> dict[str, Any]:
    deployment = objects[("Deployment", "coalmine-system", name)]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_values_reach_the_objects() -> None:
    objects = _objects(
        helm_template(
            "--set=image.repository=registry.example.com/coalmine",
            "--set=image.tag=v1.2.3",
            "--set=replicas=3",
            "--set=shard=blue",
            "--set=logFormat=text",
            "--set=metrics.serviceMonitor.enabled=true",
            "--set=grafanaDashboard.enabled=true",
        )
    )
    deployment = objects[("Deployment", "coalmine-system", "coalmine")]
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/coalmine:v1.2.3"
    env = _env(objects)
    assert env["COALMINE_SHARD"] == "blue"
    assert env["COALMINE_LOG_FORMAT"] == "text"
    monitor = objects[("ServiceMonitor", "coalmine-system", "coalmine")]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    dashboard = objects[("ConfigMap", "coalmine-system", "coalmine-dashboard")]
    assert json.loads(dashboard["data"]["coalmine-dashboard.json"])["uid"] == "coalmine"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_a_second_release_peers_apart() -> None:
    """Two releases (two shards) each meet in their own peering object, or one pauses both."""
    objects = _objects(
        _run(
            str(HELM),
            "template",
            "coalmine-blue",
            str(CHART),
            "--namespace=coalmine-system",
            "--set=shard=blue",
        )
    )
    assert _env(objects, "coalmine-blue")["COALMINE_PEERING_NAME"] == "coalmine-blue"
    rules = objects[("ClusterRole", "", "coalmine-blue")]["rules"]
    named = [rule["resourceNames"] for rule in rules if "resourceNames" in rule]
    assert named == [["coalmine-blue"]]


@pytest.mark.parametrize(
    "flags",
    [(), ("--set=watchNamespace=default", "--set=metrics.serviceMonitor.enabled=true")],
    ids=["defaults", "namespaced-with-monitor"],
)
def test_helm_lint(flags: tuple[str, ...]) -> None:
    result = subprocess.run(
        [str(HELM), "lint", "--strict", str(CHART), *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
