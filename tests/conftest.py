"""Shared pytest configuration: every test under tests/integration is marked `integration`;
tests marked `disruptive` run last; the Argo CD harness is one process for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv import argocd as argocd_harness
from devenv.argocd import ArgoCD

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
    # A test that kills or freezes the control plane leaves clients of the cluster that are not
    # ours (the controller-manager's informers, Traefik's) minutes behind, until their watches
    # time out: the tests that send real traffic must not run in that shadow. The heaviest
    # (`disruptive(rank=1)`: etcd killed, the API server frozen) go last of all. A stable sort
    # keeps every other order as collected.
    items.sort(key=_disruption)


def _disruption(item: pytest.Item) -> tuple[bool, int]:
    marker = item.get_closest_marker("disruptive")
    return (marker is not None, int(marker.kwargs.get("rank", 0)) if marker else 0)


@pytest.fixture(scope="session")
def argocd() -> Iterator[ArgoCD]:
    """Argo CD's Lua engine and diff (the coalmine-argocd harness), for the whole session."""
    if not argocd_harness.available():
        pytest.skip(f"{argocd_harness.binary()} is missing: run `make tools`")
    with ArgoCD() as engine:
        yield engine
