"""Issue 10, item 6: the controller core (informers, work queue, workers) on the real cluster.

- Two workers serve 30 rollouts: every one reaches its first pause, and every one is promoted
  (a fixed pool bounds concurrency, not the number of rollouts served).
- A watch broken by an API server restart resumes, and nothing acts on stale data: a spec
  changed while the operator's watches were still down is acted on once they are back, and no
  status is ever computed from an older object than one already acted on.
- A rollout edited while its reconcile runs is reconciled again at once: the edit lands while
  the reconcile waits on a Prometheus that does not answer, and nothing else would look at the
  rollout for five minutes.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coalmine import resources as r
from coalmine.kube import Kube
from devenv import faults, paths
from devenv.manifests import plain_template
from devenv.operator import OperatorProcess
from devenv.waiting import wait_for

from .chaos import quiet_namespaces
from .conftest import Cluster
from .invariants import Watcher, observed_generations_go_back
from .rollouts import Rollouts, manifest, user_routing_object

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


def statuses(kube: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = kube.raw.request("GET", r.CANARY_ROLLOUTS.path(namespace)).get("items") or []
    return {o["metadata"]["name"]: dict(o.get("status") or {}) for o in items}


def wait_every(
    kube: Cluster, namespace: str, names: list[str], until: Any, *, message: str, timeout: float
) -> None:
    def late() -> list[str]:
        found = statuses(kube, namespace)
        return [name for name in names if not until(found.get(name) or {})]

    wait_for(late, until=lambda left: not left, timeout=timeout, interval=1, message=message)


@pytest.mark.timeout(600)
def test_two_workers_take_30_rollouts_to_their_first_pause_and_promote_them_all(
    kube: Cluster, namespace: str, rollouts: Rollouts, quiet_session_operator: None
) -> None:
    operator = OperatorProcess({"COALMINE_WORKERS": "2"})
    try:
        names = [f"r{i:02d}" for i in range(30)]
        for name in names:
            body = manifest(name, "v1", steps=STEPS, replicas=1)
            body["spec"]["template"] = plain_template("v1", app=name)
            rollouts.create(body)
        wait_every(
            kube,
            namespace,
            names,
            lambda s: s.get("phase") == "Healthy",
            message="all Healthy",
            timeout=180,
        )
        for name in names:
            rollouts.patch_spec(name, {"template": plain_template("v2", app=name)})
        wait_every(
            kube,
            namespace,
            names,
            lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == 1,
            message="all at their first pause",
            timeout=180,
        )
        canaries = {name: s["canaryRevision"] for name, s in statuses(kube, namespace).items()}
        for name in names:
            rollouts.control(name, "promote")
        wait_every(
            kube,
            namespace,
            names,
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") in canaries.values(),
            message="all promoted",
            timeout=180,
        )
        assert operator.alive(), operator.tail()
    finally:
        operator.stop()


@pytest.mark.disruptive
@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(300)
def test_a_watch_broken_by_an_api_server_restart_resumes_and_nothing_acts_on_stale_data(
    kube: Cluster, namespace: str, rollouts: Rollouts, operator: OperatorProcess
) -> None:
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    body = manifest("shop", "v1", router="gatewayAPI", steps=STEPS, replicas=2)
    body["spec"]["template"] = plain_template("v1")
    with Watcher(Kube.connect(kube.kubeconfig), namespace) as watcher:
        rollouts.create(body)
        rollouts.wait_phase("shop", "Healthy")
        rollouts.patch_spec("shop", {"template": plain_template("v2")})
        v2 = rollouts.wait_phase("shop", "Paused", currentStepIndex=1)["canaryRevision"]
        log_before = Path(operator.log).read_text(errors="replace")
        quiet_namespaces(kube.raw)
        try:
            faults.restart(faults.API_SERVER, down_for=3)
            # At once: the operator's watches are still backing off, its caches stale.
            rollouts.patch_spec("shop", {"template": plain_template("v3")})
            changed = time.monotonic()
            watching = informer_healthy("canaryrollouts")
            generation = rollouts.get("shop")["metadata"]["generation"]
            # Acted on: the new canary started from the new spec. (Not its pods' readiness:
            # after an API server restart the controller manager takes its own time.)
            rollouts.wait(
                "shop",
                lambda s: (
                    s.get("canaryRevision") not in (None, v2)
                    and s.get("observedGeneration") == generation
                ),
                "the change made while the watches were down acted on",
                timeout=60,
            )
            print(
                f"\nacted on a change made while the operator's watch of rollouts was "
                f"{'up again' if watching else 'still broken'}, {time.monotonic() - changed:.1f} s "
                "after it was made"
            )
        finally:
            faults.wait_healthy(timeout=60)
    assert not watcher.violations()
    assert not observed_generations_go_back(watcher.history()), "a status from stale data"
    log = Path(operator.log).read_text(errors="replace")[len(log_before) :]
    # The broken watches were said, not silent, and so was their recovery.
    assert "informer canaryrollouts: " in log
    assert "informer canaryrollouts: healthy again" in log


def informer_healthy(resource: str) -> bool | None:
    """What the session operator's /metrics says of its cache of ``resource`` (None: unknown)."""
    url = f"http://127.0.0.1:{paths.OPERATOR_METRICS_PORT}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(rf'coalmine_informer_healthy\{{resource="{resource}"\}} (\S+)', text)
    return None if match is None else float(match.group(1)) == 1.0


class SilentPrometheus:
    """A server that takes queries and never answers them, until released."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.asked = threading.Event()
        self.released = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while not self.released.is_set():
                connection, _ = self.server.accept()
                self.asked.set()
                self.released.wait(60)
                connection.close()

    def close(self) -> None:
        self.released.set()
        self.server.close()


@pytest.fixture
def silent_prometheus() -> Iterator[SilentPrometheus]:
    server = SilentPrometheus()
    yield server
    server.close()


@pytest.mark.usefixtures("operator")
def test_a_rollout_edited_while_its_reconcile_runs_is_reconciled_again(
    rollouts: Rollouts, silent_prometheus: SilentPrometheus
) -> None:
    metric = {
        "name": "slow",
        "initialDelay": "0s",
        "interval": "5m",  # nothing else brings the rollout back for five minutes
        "count": 1,
        "provider": {
            "prometheus": {
                "address": f"http://127.0.0.1:{silent_prometheus.port}",
                "query": "vector(0)",
                "timeout": "30s",
            }
        },
        "successCondition": "result < 1",
    }
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": {"metrics": [metric]}}]
    body = manifest("shop", "v1", steps=steps, replicas=2)
    body["spec"]["template"] = plain_template("v1")
    rollouts.create(body)
    rollouts.wait_phase("shop", "Healthy")
    rollouts.patch_spec("shop", {"template": plain_template("v2")})
    assert silent_prometheus.asked.wait(60), "the analysis never asked Prometheus"
    # The reconcile is blocked in its query now: the edit lands while it runs.
    rollouts.control("shop", "abort")
    edited = time.monotonic()
    time.sleep(1)
    silent_prometheus.released.set()
    aborted = rollouts.wait(
        "shop",
        lambda s: s.get("abortReason") == "AbortedByUser",
        "the abort sent during the reconcile acted on",
        timeout=20,
    )
    print(f"\nabort sent mid-reconcile acted on after {time.monotonic() - edited:.1f} s")
    assert aborted["phase"] == "Degraded"
