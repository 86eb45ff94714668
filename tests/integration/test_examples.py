"""Every manifest in examples/ works: applied as written, the rollout becomes Healthy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devenv import cluster, paths

from .rollouts import Rollouts

EXAMPLES = sorted((paths.REPO_ROOT / "examples").glob("*.yaml"))


def test_there_is_an_example_per_router() -> None:
    routers = set()
    for example in EXAMPLES:
        for doc in yaml.safe_load_all(example.read_text()):
            if doc and doc.get("kind") == "CanaryRollout":
                routing = doc["spec"].get("trafficRouting") or {"replicaRatio": {}}
                routers |= set(routing)
    assert routers == {"gatewayAPI", "nginx", "istio", "smi", "replicaRatio"}


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_becomes_healthy(example: Path, namespace: str, rollouts: Rollouts) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    status = rollouts.wait_phase("shop", "Healthy", timeout=60)
    assert status["stableRevision"]
