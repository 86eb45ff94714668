"""Benchmarks: figures measured against the real local cluster, as JSON in bench/results/."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config

from coalmine import resources as r
from coalmine.kube import Informer, Kube
from devenv import cluster, paths
from devenv.namespaces import recreate_namespace
from devenv.operator import OperatorProcess, install_crds
from devenv.waiting import wait_for

RESULTS = paths.REPO_ROOT / "bench" / "results"


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid``, in MiB."""
    return round(cluster.process_memory(pid) / 2**20, 1)


def write_result(name: str, result: dict[str, Any]) -> None:
    """Write ``bench/results/<name>.json`` and show it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"bench: wrote {out.relative_to(paths.REPO_ROOT)}")


def start(
    namespace: str, operator_env: dict[str, str] | None = None
) -> tuple[client.ApiClient, OperatorProcess]:
    """The cluster up, the CRDs installed, the operator running, then ``namespace`` afresh.

    The operator starts first: a CanaryRollout an earlier run left in the namespace holds it
    until the operator releases its finalizer.
    """
    cluster.up(quiet=True)  # joins the cluster's network namespace before any thread starts
    install_crds()
    operator = OperatorProcess(operator_env)
    try:
        api = config.new_client_from_config(config_file=str(paths.KUBECONFIG))
        recreate_namespace(api, namespace)
    except BaseException:
        operator.stop()
        raise
    return api, operator


Status = dict[str, Any]


class Tracker:
    """When each rollout of a namespace first meets a condition, seen through an informer."""

    def __init__(self, kube: Kube, namespace: str, name: str | None = None) -> None:
        self.informer = Informer(kube, r.CANARY_ROLLOUTS, namespace=namespace, name=name)
        self.informer.handlers.append(self._changed)
        self.lock = threading.Lock()
        self.condition: Callable[[Status], bool] = lambda _: False
        self.seen: dict[str, float] = {}

    def start(self) -> None:
        self.informer.start()
        self.informer.synced.wait(60)

    def _changed(self, _: str, obj: dict[str, Any], __: object) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        with self.lock:
            if name not in self.seen and self.condition(obj.get("status") or {}):
                self.seen[name] = now

    def expect(self, condition: Callable[[Status], bool]) -> None:
        with self.lock:
            self.condition = condition
            self.seen = {}
            for obj in self.informer.select():  # those already there
                if condition(obj.get("status") or {}):
                    self.seen[obj["metadata"]["name"]] = time.monotonic()

    def wait(self, names: list[str], message: str, timeout: float = 3600) -> dict[str, float]:
        wait_for(
            lambda: sum(1 for n in names if n in self.seen),
            until=lambda count: count == len(names),
            timeout=timeout,
            interval=0.5,
            message=message,
        )
        with self.lock:
            return dict(self.seen)

    def stop(self) -> None:
        self.informer.stop()
