"""Argo CD's view of real rollouts: the health Lua and the actions, run in a real Lua runtime
against CanaryRollouts the operator drives in the cluster, the actions' output applied back."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine import kube as k
from tests.unit.test_argocd_lua import action, enabled_actions, health

from .rollouts import Rollouts, manifest

pytestmark = pytest.mark.usefixtures("operator")


def apply_action(rollouts: Rollouts, name: str, control: str) -> None:
    """What Argo CD does with an action's result: it writes the modified object back."""
    obj = rollouts.get(name)
    result: dict[str, Any] = action(control, obj)
    annotations = result["metadata"]["annotations"]
    rollouts.raw.patch(
        k.CANARY_ROLLOUTS, rollouts.namespace, name, {"metadata": {"annotations": annotations}}
    )


def test_health_and_actions_on_a_real_rollout(rollouts: Rollouts) -> None:
    rollouts.create(manifest("shop", "v1"))
    rollouts.wait_phase("shop", "Healthy")
    assert health(rollouts.get("shop"))["status"] == "Healthy"

    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    paused = rollouts.get("shop")
    assert health(paused)["status"] == "Suspended"
    assert {"promote", "abort", "promote-full"} <= enabled_actions(paused)

    apply_action(rollouts, "shop", "abort")
    rollouts.wait_phase("shop", "Degraded")
    degraded = rollouts.get("shop")
    assert health(degraded)["status"] == "Degraded"
    assert "retry" in enabled_actions(degraded)

    apply_action(rollouts, "shop", "retry")
    rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    apply_action(rollouts, "shop", "promote-full")
    done = rollouts.wait_phase("shop", "Healthy", timeout=60)
    assert "canaryRevision" not in done
    assert health(rollouts.get("shop"))["status"] == "Healthy"
