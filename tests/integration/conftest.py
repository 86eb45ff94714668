"""Fixtures for tests against the real local cluster.

The cluster is a session resource: started when absent, reused when healthy. The test process
joins the cluster's network namespace first (pod IPs, the API server and Prometheus live there),
before any client thread starts. Each test gets a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from kubernetes import client, config

from coalmine.kube import Kube
from devenv import cluster, paths, traefik
from devenv.namespaces import delete_namespace, recreate_namespace
from devenv.operator import OperatorProcess, install_crds

if TYPE_CHECKING:
    from .rollouts import Rollouts


@dataclass(frozen=True)
class Cluster:
    """What a test needs to reach the local cluster."""

    api: client.ApiClient
    kubeconfig: str
    prometheus_url: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def raw(self) -> Kube:
        """The operator's own facade: plain dicts, as the API serves them."""
        return Kube(self.api)


@pytest.fixture(scope="session")
def kube() -> Iterator[Cluster]:
    info = cluster.up(quiet=True)
    api = config.new_client_from_config(config_file=str(info.kubeconfig))
    yield Cluster(api=api, kubeconfig=str(info.kubeconfig), prometheus_url=info.prometheus_url)
    api.close()


@pytest.fixture
def namespace(kube: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its default ServiceAccount ready; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:63].strip("-_.")
    recreate_namespace(kube.api, name, labels={"coalmine.dev/test": label})
    yield name
    delete_namespace(kube.api, name)


TEST_CRDS = ("istio-virtualservice.yaml", "smi-trafficsplit.yaml")


@pytest.fixture(scope="session")
def operator(kube: Cluster) -> Iterator[OperatorProcess]:
    """The operator in its own process, as a user runs it, for the whole session."""
    install_crds()
    for crd in TEST_CRDS:
        cluster.kubectl(
            "apply", "--server-side", "-f", str(paths.REPO_ROOT / "tests" / "crds" / crd)
        )
    # On the port the cluster's Prometheus scrapes (job coalmine-operator).
    process = OperatorProcess({"COALMINE_METRICS_PORT": str(paths.OPERATOR_METRICS_PORT)})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gateway_controller(kube: Cluster) -> Iterator[traefik.TraefikInfo]:
    """Traefik for a test module: reused when it runs already, stopped only if started here."""
    info = traefik.ensure_traefik()
    yield info
    if not info.reused:
        traefik.stop_traefik()


@pytest.fixture
def quiet_session_operator(operator: OperatorProcess) -> Iterator[None]:
    """Stop the session's admin operator while a test runs its own, then bring it back."""
    operator.stop()
    yield
    operator.start()


@pytest.fixture
def rollouts(kube: Cluster, namespace: str) -> Rollouts:
    """CanaryRollouts in the test's namespace."""
    from .rollouts import Rollouts  # noqa: PLC0415 - rollouts.py imports Cluster from here

    return Rollouts(kube, namespace)


__all__ = ["Cluster", "paths"]
