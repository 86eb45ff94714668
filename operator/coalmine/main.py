"""The kopf handlers: the only module that knows kopf.

Each CanaryRollout gets a daemon (a thread) that reconciles it, then sleeps until the machine's
requested time or until something relevant changes: the rollout itself, or one of the
Deployments and EndpointSlices it owns. Those watch events only wake the daemon; they carry no
state, so a restart loses nothing (the status is the only memory).

Deletion goes through kopf's finalizer: traffic back to stable, confirmed, then let go.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import prometheus_client

from coalmine import kube as k
from coalmine import metrics
from coalmine.kube import Kube, KubeError
from coalmine.reconcile import RETRY_SECONDS, reconcile
from coalmine.settings import Settings

log = logging.getLogger("coalmine")

FINALIZER = "coalmine.dev/finalizer"
ROLLOUTS = ("coalmine.dev", "v1alpha1", "canaryrollouts")
MANAGED = {"app.kubernetes.io/managed-by": "coalmine"}


def now() -> datetime:
    return datetime.now(UTC)


class Wakeups:
    """One event per rollout that its daemon waits on; set when something it owns changes."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, namespace: str, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((namespace, name), threading.Event())

    def wake(self, namespace: str | None, name: str | None) -> None:
        if namespace and name:
            self.event(namespace, name).set()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._events.pop((namespace, name), None)


WAKEUPS = Wakeups()
_KUBE: list[Kube] = []


def _kube() -> Kube:
    if not _KUBE:
        _KUBE.append(Kube.connect(Settings().kubeconfig))
    return _KUBE[0]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = Settings()
    # Our own finalizer name, so `kubectl get -o yaml` says who holds the object.
    settings.persistence.finalizer = FINALIZER
    # Keep kopf's bookkeeping out of metadata: annotations written by the operator would show
    # up in GitOps diffs. The CRD declares status.kopf for it.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    # kopf's own per-handler events would drown ours (which have specific reasons).
    settings.posting.level = logging.WARNING
    # Long watches with a server-side timeout: a silent connection is detected and renewed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.standalone = config.standalone
    settings.execution.max_workers = config.workers
    _kube()


@kopf.daemon(*ROLLOUTS, cancellation_timeout=10.0, initial_delay=0)
def run(stopped: kopf.DaemonStopped, namespace: str | None, name: str, **_: Any) -> None:
    """Reconcile one rollout whenever it or something it owns changes, or its timer is due."""
    namespace = namespace or "default"
    wake = WAKEUPS.event(namespace, name)
    kube = _kube()
    while not stopped:
        wake.clear()
        delay = _reconcile_once(kube, namespace, name)
        if delay is None:
            break
        deadline = time.monotonic() + delay
        # Short slices, so a stopping operator is noticed quickly; a wake-up returns at once.
        while not stopped and not wake.is_set() and time.monotonic() < deadline:
            wake.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
    WAKEUPS.forget(namespace, name)


def _reconcile_once(kube: Kube, namespace: str, name: str) -> float | None:
    obj = kube.get(k.CANARY_ROLLOUTS, namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    try:
        return reconcile(kube, obj, now).requeue_after
    except KubeError as error:
        # API trouble is temporary by nature: report it and look again soon.
        metrics.RECONCILE_ERRORS.labels("api").inc()
        log.warning("reconcile of %s/%s failed, retrying: %s", namespace, name, error)
        return RETRY_SECONDS
    except Exception:
        metrics.RECONCILE_ERRORS.labels("crash").inc()
        log.exception("reconcile of %s/%s crashed, retrying", namespace, name)
        return RETRY_SECONDS
    finally:
        metrics.RECONCILES.inc()


@kopf.on.event(*ROLLOUTS)
def rollout_changed(namespace: str | None, name: str | None, **_: Any) -> None:
    WAKEUPS.wake(namespace, name)


def _wake_owner(labels: Mapping[str, str], namespace: str | None) -> None:
    WAKEUPS.wake(namespace, labels.get("coalmine.dev/rollout"))


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    _wake_owner(labels, namespace)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels=MANAGED)
def endpoints_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    _wake_owner(labels, namespace)


@kopf.on.delete(*ROLLOUTS)
def finalize(body: kopf.Body, **_: Any) -> None:
    """Send traffic back to stable (unless deletionPolicy says leave it), then let go."""
    kube = _kube()
    result = _call(lambda: reconcile(kube, dict(body), now, deleting=True))
    if not result:
        raise kopf.TemporaryError("waiting for traffic to return to stable", delay=1)


def _call(fn: Callable[[], Any]) -> bool:
    try:
        return bool(fn().finalized)
    except KubeError as error:
        raise kopf.TemporaryError(str(error), delay=RETRY_SECONDS) from error


def cli() -> None:
    """``coalmine-operator``: run the operator against every namespace."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # kopf reports every handler call at INFO; ours log what matters.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    settings = Settings()
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_address)
    kopf.run(clusterwide=True, standalone=settings.standalone)
