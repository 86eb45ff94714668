"""Argo CD's view of real rollouts: the health Lua and the actions, run in Argo CD's engine (the
coalmine-argocd harness) against CanaryRollouts the operator drives in the cluster, the actions'
output applied back as Argo CD applies it (a JSON merge patch of the live object)."""

from __future__ import annotations

import pytest

from coalmine import kube as k
from devenv.argocd import ArgoCD

from .rollouts import Rollouts, manifest

pytestmark = pytest.mark.usefixtures("operator")


def apply_action(argocd: ArgoCD, rollouts: Rollouts, name: str, control: str) -> None:
    """What Argo CD does with an action's result: it patches the live object with the change."""
    obj = rollouts.get(name)  # Argo CD reads the object from the API server first
    result = argocd.action(control, obj)
    annotations = result["metadata"]["annotations"]
    rollouts.raw.patch(
        k.CANARY_ROLLOUTS, rollouts.namespace, name, {"metadata": {"annotations": annotations}}
    )


def test_health_and_actions_on_a_real_rollout(argocd: ArgoCD, rollouts: Rollouts) -> None:
    rollouts.create(manifest("shop", "v1"))
    rollouts.wait_phase("shop", "Healthy")
    assert argocd.health(rollouts.get("shop"))["status"] == "Healthy"

    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    paused = rollouts.get("shop")
    assert argocd.health(paused)["status"] == "Suspended"
    assert {"promote", "abort", "promote-full"} <= argocd.enabled_actions(paused)

    apply_action(argocd, rollouts, "shop", "abort")
    rollouts.wait_phase("shop", "Degraded")
    degraded = rollouts.get("shop")
    assert argocd.health(degraded)["status"] == "Degraded"
    assert "retry" in argocd.enabled_actions(degraded)

    apply_action(argocd, rollouts, "shop", "retry")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3)

    # The incident controls: held by the pause action, Suspended, only resume, abort and
    # restart offered; resumed, the promotes are back.
    apply_action(argocd, rollouts, "shop", "pause")
    rollouts.wait("shop", lambda s: s.get("pausedByUser") is True, "held by the pause control")
    held = rollouts.get("shop")
    assert argocd.health(held) == {"status": "Suspended", "message": held["status"]["message"]}
    assert argocd.enabled_actions(held) == {"resume", "abort", "restart"}
    apply_action(argocd, rollouts, "shop", "resume")
    rollouts.wait("shop", lambda s: not s.get("pausedByUser"), "resumed")
    assert "promote-full" in argocd.enabled_actions(rollouts.get("shop"))

    apply_action(argocd, rollouts, "shop", "promote-full")
    done = rollouts.wait_phase("shop", "Healthy", timeout=60)
    assert "canaryRevision" not in done
    assert argocd.health(rollouts.get("shop"))["status"] == "Healthy"
    apply_action(argocd, rollouts, "shop", "restart")
    restarted = rollouts.wait("shop", lambda s: bool(s.get("restart")), "restart recorded")
    assert restarted["restart"]["revision"] == done["stableRevision"]
