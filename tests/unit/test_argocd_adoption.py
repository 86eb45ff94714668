"""The ignoreDifferences docs/argocd.md gives for adopted Deployments and autoscaled rollouts,
under Argo CD's own diff (the ``coalmine-argocd`` harness, as in test_argocd_ignore_differences).

The rules are read from the doc itself, so what users copy is what is tested: with them, what
coalmine (or an autoscaler) changes is no drift and a RespectIgnoreDifferences sync keeps it;
without them, it is drift that self-heal would revert.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.argocd import ArgoCD, Obj, applied

DOC = Path(__file__).resolve().parents[2] / "docs" / "argocd.md"


def doc_rules(kind: str) -> list[dict[str, Any]]:
    """The ignoreDifferences of the doc's YAML block for ``kind``."""
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        spec = (yaml.safe_load(block) or {}).get("spec") or {}
        rules = [rule for rule in spec.get("ignoreDifferences") or [] if rule["kind"] == kind]
        if rules:
            return rules
    raise AssertionError(f"docs/argocd.md has no ignoreDifferences for {kind}")


GIT_DEPLOYMENT: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "example.com/web:1"}]},
        },
    },
}


def adopted(replicas: int) -> Obj:
    """The live Deployment once coalmine adopted it and scaled it to ``replicas``."""
    live = applied(GIT_DEPLOYMENT)
    live["metadata"]["labels"] = {"coalmine.dev/adopted-by": "shop"}
    live["metadata"]["annotations"]["coalmine.dev/adopted-replicas"] = str(replicas)
    live["spec"]["replicas"] = replicas
    live["status"] = {"replicas": replicas, "readyReplicas": replicas}
    return live


@pytest.mark.parametrize("replicas", [0, 2])
def test_an_adopted_deployments_replicas_are_what_the_rule_removes(
    argocd: ArgoCD, replicas: int
) -> None:
    """Argo CD diffs built-in kinds with a strategic merge the harness does not reproduce; its
    normalization (what the rule removes before any diff) is the same code for every kind."""
    rules = doc_rules("Deployment")
    assert rules == [
        {"group": "apps", "kind": "Deployment", "name": "web", "jsonPointers": ["/spec/replicas"]}
    ]
    live = argocd.normalize(adopted(replicas), rules)
    git = argocd.normalize(GIT_DEPLOYMENT, rules)
    assert "replicas" not in live["spec"]
    assert "replicas" not in git["spec"]
    assert live["spec"] == git["spec"], "nothing else of the spec differs"
    assert argocd.normalize(adopted(replicas), [])["spec"]["replicas"] == replicas


def test_the_rule_is_for_that_deployment_only(argocd: ArgoCD) -> None:
    other = copy.deepcopy(GIT_DEPLOYMENT)
    other["metadata"]["name"] = "api"
    assert argocd.normalize(other, doc_rules("Deployment"))["spec"]["replicas"] == 4


def test_an_autoscaled_rollouts_replicas_are_no_drift(argocd: ArgoCD) -> None:
    rules = doc_rules("CanaryRollout")
    git: Obj = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "replicas": 4,
            "workloadRef": {"name": "web"},
            "service": {"name": "shop", "port": 80},
            "steps": [{"setWeight": 20}, {"pause": {}}],
        },
    }
    live = applied(git)
    live["spec"]["replicas"] = 9  # the HorizontalPodAutoscaler's
    assert not argocd.diff(git, live, rules).modified
    assert argocd.diff(git, live).modified
    assert argocd.sync_target(git, live, rules)["spec"]["replicas"] == 9
    # Left out of Git, replicas is no drift even without the rule (three-way diff).
    without = copy.deepcopy(git)
    del without["spec"]["replicas"]
    live_without = applied(without)
    live_without["spec"]["replicas"] = 9
    assert not argocd.diff(without, live_without).modified
