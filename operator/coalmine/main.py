"""The kopf handlers: the only module that knows kopf.

Each CanaryRollout gets a daemon (a thread) that reconciles it, then sleeps until the machine's
requested time or until something relevant changes: the rollout itself, or one of the
Deployments and EndpointSlices it owns. Those watch events only wake the daemon; they carry no
state, so a restart loses nothing (the status is the only memory).

Deletion goes through kopf's finalizer: traffic back to stable, confirmed, then let go.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import prometheus_client

from coalmine import metrics
from coalmine import resources as k
from coalmine.analysis import runner as analyses
from coalmine.analysis.prometheus import Prometheus
from coalmine.kube import ConflictError, Kube, KubeError, NotFoundError
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
CONTEXT = threading.local()
"""The rollout the current thread works on, for log lines."""
_KUBE: list[Kube] = []


_SETTINGS: list[Settings] = []
_RUNNER: list[analyses.Runner] = []


def _settings() -> Settings:
    """Read once: the peering priority, random by default, must stay the same all along."""
    if not _SETTINGS:
        _SETTINGS.append(Settings())
    return _SETTINGS[0]


def _runner() -> analyses.Runner:
    if not _RUNNER:
        settings = _settings()
        _RUNNER.append(analyses.Runner(_kube(), Prometheus(), settings.prometheus_address))
    return _RUNNER[0]


def _kube() -> Kube:
    if not _KUBE:
        settings = _settings()
        _KUBE.append(Kube.connect(settings.kubeconfig, connections=settings.workers))
    return _KUBE[0]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = _settings()
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
    settings.peering.mandatory = not config.standalone
    settings.peering.name = config.peering_name
    settings.peering.priority = config.peering_priority
    settings.peering.lifetime = config.peering_lifetime
    settings.execution.max_workers = config.workers
    # With only a Role (the namespaced install) kopf may not list namespaces or CRDs.
    settings.scanning.disabled = config.namespace is not None
    kube = _kube()
    if not config.standalone:
        _ensure_peering(kube, config)


def _ensure_peering(kube: Kube, config: Settings) -> None:
    """Create the peering object the replicas meet in, when it is absent.

    It cannot ship in deploy/ beside its CRD: one `kubectl apply` maps every object's kind
    before the CRD is established.
    """
    resource = k.KOPF_PEERINGS if config.namespace else k.CLUSTER_KOPF_PEERINGS
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": config.peering_name, "namespace": config.namespace},
    }
    try:
        kube.create(resource, config.namespace, body)
    except ConflictError:
        return  # another replica made it first
    except NotFoundError as error:
        # A first install: the peering CRD is not established yet. Soon will be.
        raise kopf.TemporaryError(f"peering CRD not ready: {error.message}", delay=2) from error


@kopf.daemon(*ROLLOUTS, cancellation_timeout=10.0, initial_delay=0)
def run(stopped: kopf.DaemonStopped, namespace: str | None, name: str, **_: Any) -> None:
    """Reconcile one rollout whenever it or something it owns changes, or its timer is due."""
    namespace = namespace or "default"
    wake = WAKEUPS.event(namespace, name)
    kube = _kube()
    CONTEXT.rollout = f"{namespace}/{name}"
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


def _outranked(kube: Kube, settings: Settings) -> bool:
    """Whether a live replica with a higher priority is in the peering object.

    kopf pauses this replica when it sees one, but two replicas started together may each
    miss the other for a moment; checking before every reconcile keeps it to one at a time.
    """
    resource = k.KOPF_PEERINGS if settings.namespace else k.CLUSTER_KOPF_PEERINGS
    peering = kube.get(resource, settings.namespace, settings.peering_name) or {}
    for record in (peering.get("status") or {}).values():
        if not isinstance(record, dict) or "priority" not in record or "lastseen" not in record:
            continue
        seen = datetime.fromisoformat(str(record["lastseen"]))
        alive = (now() - seen).total_seconds() <= float(record.get("lifetime", 60))
        if alive and int(record["priority"]) > settings.peering_priority:
            return True
    return False


PEERING_GRACE_SECONDS = 3.0
"""After start, replicas wait this long before acting: each must see the others' keep-alives."""
_STARTED = time.monotonic()


def _reconcile_once(kube: Kube, namespace: str, name: str) -> float | None:
    settings = _settings()
    if not settings.standalone:
        waited = time.monotonic() - _STARTED
        if waited < PEERING_GRACE_SECONDS:
            return PEERING_GRACE_SECONDS - waited
        if _outranked(kube, settings):
            return RETRY_SECONDS  # kopf will pause this replica; until then, leave it alone
    obj = kube.get(k.CANARY_ROLLOUTS, namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    try:
        return reconcile(kube, obj, now, runner=_runner()).requeue_after
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


class _RolloutContext(logging.Filter):
    """Puts the rollout a daemon thread works on into every log record it emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        rollout = getattr(CONTEXT, "rollout", None)
        if rollout and not hasattr(record, "rollout"):
            record.rollout = rollout
        return True


class _JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the rollout when known."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rollout = getattr(record, "rollout", None)
        ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers carry the object
        if rollout is None and isinstance(ref, dict) and ref.get("name"):
            rollout = f"{ref.get('namespace') or ''}/{ref['name']}"
        if rollout:
            line["rollout"] = rollout
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RolloutContext())
    if settings.log_format == "json":
        handler.setFormatter(_JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # kopf reports every handler call at INFO; ours log what matters. Peering's pause and
    # resume lines are kept: they say which replica is active.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf._core.engines.peering").setLevel(logging.INFO)


def cli() -> None:
    """``coalmine-operator``: run the operator (every namespace, or COALMINE_NAMESPACE)."""
    settings = _settings()
    configure_logging(settings)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_address)
    liveness = (
        f"http://{settings.metrics_address}:{settings.health_port}/healthz"
        if settings.health_port
        else None
    )
    kopf.run(
        clusterwide=settings.namespace is None,
        namespaces=[settings.namespace] if settings.namespace else (),
        standalone=settings.standalone,
        priority=settings.peering_priority,
        liveness_endpoint=liveness,
    )
