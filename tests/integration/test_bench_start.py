"""A benchmark starts on a cluster an earlier, crashed run left behind: its operator runs before
the old namespace is deleted, so a CanaryRollout left there (and its finalizer) never hangs it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import bench
from coalmine import kube as k
from devenv.manifests import canary_rollout, demo_template
from devenv.namespaces import delete_namespace, recreate_namespace
from devenv.operator import OperatorProcess
from devenv.waiting import wait_for

from .conftest import Cluster


@pytest.fixture
def no_session_operator(operator: OperatorProcess) -> Iterator[None]:
    """Only the operators this test starts run meanwhile (any other would free the rollout)."""
    operator.stop()
    yield
    operator.start()


@pytest.mark.usefixtures("no_session_operator")
def test_a_benchmark_starts_where_a_crashed_run_left_a_rollout(kube: Cluster) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    recreate_namespace(kube.api, namespace)
    earlier = OperatorProcess()
    try:
        kube.raw.create(
            k.CANARY_ROLLOUTS,
            namespace,
            canary_rollout("left", demo_template("v1"), steps=[{"setWeight": 50}], replicas=1),
        )
        wait_for(
            lambda: ((kube.raw.get(k.CANARY_ROLLOUTS, namespace, "left") or {})["metadata"]).get(
                "finalizers"
            ),
            timeout=60,
            message="the earlier run's operator to put its finalizer on the rollout",
        )
    finally:
        earlier.kill()  # the earlier run crashed: nobody releases that finalizer now

    api, operator = bench.start(namespace)
    try:
        assert operator.alive()
        assert kube.raw.list(k.CANARY_ROLLOUTS, namespace) == []
    finally:
        operator.stop()
        delete_namespace(kube.api, namespace)
        api.close()
