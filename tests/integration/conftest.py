"""Fixtures for tests against the real local cluster.

The cluster is a session resource: started when absent, reused when healthy. The test process
joins the cluster's network namespace first (pod IPs, the API server and Prometheus live there),
before any client thread starts. Each test gets a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client, config

from devenv import cluster, paths
from devenv.waiting import wait_for


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
    kube.core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name, labels={"coalmine.dev/test": request.node.name[:63]}
            )
        )
    )
    wait_for(
        lambda: kube.core.read_namespaced_service_account("default", name),
        timeout=30,
        message=f"the default ServiceAccount of namespace {name}",
    )
    yield name
    kube.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def kubectl(kube: Cluster) -> object:
    """The pinned kubectl, run against the local cluster."""
    return cluster.kubectl


__all__ = ["Cluster", "paths"]
