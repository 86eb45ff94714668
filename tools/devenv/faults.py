"""Faults that fault-injection tests inflict on the local cluster, and waits for "healthy again".

The operator must survive its control plane and its metrics going away: the API server or etcd
killed and restarted, or frozen (SIGSTOP) for a while, Prometheus stopped. These functions do
that to the processes ``devenv.cluster`` started, found by their recorded pids, and
:func:`wait_healthy` waits until every component answers again, every node is Ready and the pods
of the namespaces a test names are Ready again, so a test checks the operator, not the
environment. The caller must already be inside the cluster's network namespace (the test
fixtures are).

A frozen process stays frozen if a test dies before thawing it: use :func:`frozen`, or call
:func:`recover` in a fixture's teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable, Iterator
from typing import Any

from devenv import cluster
from devenv.waiting import wait_for

API_SERVER = "kube-apiserver"
ETCD = "etcd"
PROMETHEUS = "prometheus"


def _pid(name: str) -> int:
    pid = cluster.COMPONENTS_BY_NAME[name].pid()
    if pid is None:
        raise cluster.ClusterError(f"{name} is not running")
    return pid


def kill(name: str) -> None:
    """Crash a component (SIGKILL to its process group) and wait until it is gone."""
    pid = _pid(name)
    # Each component leads its own process group (started in a new session).
    os.killpg(pid, signal.SIGKILL)
    wait_for(
        cluster.COMPONENTS_BY_NAME[name].pid,
        until=lambda alive: alive is None,
        timeout=10,
        message=f"{name} (pid {pid}) to die after SIGKILL",
    )


def start(name: str) -> float:
    """Start a component that is down and wait until it answers its health probe; the seconds."""
    started = time.monotonic()
    cluster.start_component(name)
    return time.monotonic() - started


def stop(name: str) -> None:
    """Stop a component the polite way (SIGTERM, then SIGKILL after a grace period)."""
    cluster.stop_component(name)


def restart(name: str, down_for: float = 0.0) -> float:
    """Kill a component, leave it down for ``down_for`` seconds, start it again.

    Returns the seconds from the kill until it answered its probe again.
    """
    started = time.monotonic()
    kill(name)
    time.sleep(down_for)
    start(name)
    return time.monotonic() - started


def freeze(name: str) -> None:
    """Freeze a component (SIGSTOP): its connections stay open, nothing answers on them."""
    os.killpg(_pid(name), signal.SIGSTOP)


def thaw(name: str) -> None:
    """Let a frozen component run again (SIGCONT); harmless when it is not frozen."""
    pid = cluster.COMPONENTS_BY_NAME[name].pid()
    if pid is not None:
        os.killpg(pid, signal.SIGCONT)


@contextlib.contextmanager
def frozen(*names: str) -> Iterator[None]:
    """Components frozen for the duration of the block, thawed whatever happens in it."""
    try:
        for name in names:
            freeze(name)
        yield
    finally:
        for name in reversed(names):
            thaw(name)


def recover(timeout: float = 120.0) -> None:
    """Undo whatever a fault test left: thaw every component, start any that is down, wait."""
    for component in cluster.COMPONENTS:
        thaw(component.name)
    for component in cluster.COMPONENTS:
        if component.pid() is None:
            start(component.name)
    wait_healthy(timeout=timeout)


# --- healthy again ---------------------------------------------------------------------------


def _get_json(*args: str) -> dict[str, Any]:
    # A short request timeout: a frozen API server must count as "not yet", not hang the wait.
    out = cluster.kubectl("get", *args, "-o", "json", "--request-timeout=5s")
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def nodes_not_ready() -> list[str]:
    """Names of the nodes whose Ready condition is not True."""
    nodes = _get_json("nodes")["items"]
    return [n["metadata"]["name"] for n in nodes if _condition(n, "Ready") != "True"]


def pods_not_ready(namespace: str) -> list[str]:
    """Pods of a namespace that are not (yet) Running and Ready; terminating ones do not count."""
    pods = _get_json("pods", "-n", namespace)["items"]
    return [
        f"{p['metadata']['name']} ({p['status'].get('phase')}, Ready={_condition(p, 'Ready')})"
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p["status"].get("phase") != "Running" or _condition(p, "Ready") != "True")
    ]


def deployments_not_ready(namespace: str) -> list[str]:
    """Deployments of a namespace whose ready replicas differ from their desired replicas."""
    items = _get_json("deployments", "-n", namespace)["items"]
    late = []
    for d in items:
        want = int(d["spec"].get("replicas", 1))
        status = d.get("status") or {}
        ready = int(status.get("readyReplicas", 0))
        current = status.get("observedGeneration") == d["metadata"].get("generation")
        if ready != want or not current:
            late.append(f"{d['metadata']['name']} ({ready}/{want} ready)")
    return late


def problems(namespaces: Iterable[str] = ()) -> list[str]:
    """What keeps the cluster from being healthy right now; empty when it is."""
    found = [f"{name} unhealthy" for name in cluster.unhealthy_components()]
    if found:
        return found  # the API may not answer: the rest would only repeat it
    found += [f"node {name} not Ready" for name in nodes_not_ready()]
    for namespace in namespaces:
        found += [f"pod {namespace}/{pod} not Ready" for pod in pods_not_ready(namespace)]
        found += [f"deployment {namespace}/{d}" for d in deployments_not_ready(namespace)]
    return found


def wait_healthy(namespaces: Iterable[str] = (), timeout: float = 120.0) -> float:
    """Wait until every component answers, every node is Ready, and in each namespace given
    every pod is Running and Ready and every Deployment has its replicas ready.

    Returns the seconds it took; fails naming what was still wrong after ``timeout``.
    """
    started = time.monotonic()
    wanted = list(namespaces)
    wait_for(
        lambda: problems(wanted),
        until=lambda found: not found,
        timeout=timeout,
        interval=0.5,
        message="the cluster to be healthy again",
    )
    return time.monotonic() - started
