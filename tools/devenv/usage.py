"""Simulated CPU load on pods, as metrics-server reports it to a HorizontalPodAutoscaler.

No container runs in the local cluster, so nothing uses real CPU. KWOK reports each pod's usage
from the pod's annotation ``kwok.x-k8s.io/usage-cpu`` (1m without it; KWOK's
ClusterResourceUsage ``usage-from-annotation``, which build-tools.sh copies from its module)
on its kubelet-like ``/metrics/resource`` endpoints; metrics-server scrapes those every 10 s and
serves ``metrics.k8s.io``, which the HPA controller reads. Writing the annotation is therefore
how a test raises or lowers load.

:class:`CpuLoad` models load the way it reaches an app through its Service: a total spread evenly
over the ready pods a label selector picks, re-spread as pods come and go, so an HPA that adds
pods sees the usage per pod fall, as it would in production. It works for any pods: a plain
Deployment's, or a CanaryRollout's (select them with ``coalmine.dev/rollout=<name>``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

CPU_ANNOTATION = "kwok.x-k8s.io/usage-cpu"


def spread(millicores: int, pods: Sequence[str]) -> dict[str, str]:
    """Each pod's share of ``millicores``, as an annotation value (``"250m"``).

    Shares differ by at most 1m; the pods first in name order take the remainder, so the same
    pods always get the same share.
    """
    if not pods:
        return {}
    base, extra = divmod(millicores, len(pods))
    ordered = sorted(pods)
    return {pod: f"{base + (1 if i < extra else 0)}m" for i, pod in enumerate(ordered)}


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    conditions = status.get("conditions") or ()
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def set_cpu(api: client.ApiClient, namespace: str, pod: str, usage: str) -> None:
    """Set one pod's simulated CPU usage (a quantity: ``"250m"``, ``"1"``)."""
    body = {"metadata": {"annotations": {CPU_ANNOTATION: usage}}}
    client.CoreV1Api(api).patch_namespaced_pod(pod, namespace, body)


class CpuLoad:
    """A total CPU load (millicores) kept spread over the ready pods a label selector picks.

    Use it as a context manager: a background thread re-spreads the load every ``interval``
    seconds while the block runs; :meth:`set` changes the total. On exit the pods keep their
    last usage (say ``set(0)`` first to end the load).
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        millicores: int,
        *,
        interval: float = 1.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.millicores = millicores
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-load", daemon=True)
        self.applied: dict[str, str] = {}
        """The usage last written per pod."""

    def set(self, millicores: int) -> None:
        """Change the total load; applied at once."""
        self.millicores = millicores
        self.apply()

    def apply(self) -> dict[str, str]:
        """One pass: spread the current total over the ready pods; returns the shares."""
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        pods = self.core.api_client.sanitize_for_serialization(listed)["items"]
        ready = {str(p["metadata"]["name"]): p for p in pods if _ready(p)}
        shares = spread(self.millicores, list(ready))
        for name, usage in shares.items():
            annotations = ready[name]["metadata"].get("annotations") or {}
            if annotations.get(CPU_ANNOTATION) == usage:
                continue
            try:
                set_cpu(self.core.api_client, self.namespace, name, usage)
            except ApiException as exc:
                if exc.status != 404:  # a pod deleted meanwhile takes no load
                    raise
        self.applied = shares
        return shares

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.apply()
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                continue  # the API server may be down in a fault test: next interval

    def __enter__(self) -> CpuLoad:
        self.apply()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
