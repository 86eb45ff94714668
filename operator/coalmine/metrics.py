"""The operator's own Prometheus metrics, served on ``/metrics``.

Names are documented in docs/metrics.md; the Grafana dashboard and the benchmarks read them.
Only counters and histograms that are cheap to keep: no per-object series except a rollout's
current weight and phase, which users alert on.
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "coalmine_api_requests_total",
    "Kubernetes API requests made by the operator, by HTTP verb.",
    ["verb"],
)
API_LATENCY = Histogram(
    "coalmine_api_request_duration_seconds",
    "Latency of the operator's Kubernetes API requests, by HTTP verb.",
    ["verb"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INFORMER_HEALTHY = Gauge(
    "coalmine_informer_healthy",
    "1 while the watch-fed cache of a kind is synced and its watch works, else 0.",
    ["resource"],
)
INFORMER_OBJECTS = Gauge(
    "coalmine_informer_objects", "Objects kept in the cache of a kind.", ["resource"]
)
INFORMER_RESTARTS = Counter(
    "coalmine_informer_restarts_total",
    "Times a kind's watch had to start over: gone (410, re-listed) or error (backoff).",
    ["resource", "reason"],
)
ACTIVE = Gauge(
    "coalmine_active",
    "1 while this replica is the active one (it reconciles), 0 while it stands by.",
)
WORKQUEUE_DEPTH = Gauge(
    "coalmine_workqueue_depth", "Rollouts waiting for a free worker now (not the delayed ones)."
)
WORKQUEUE_WAIT = Histogram(
    "coalmine_workqueue_wait_seconds",
    "Time from a rollout's key being queued to a worker taking it.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_DURATION = Histogram(
    "coalmine_reconcile_duration_seconds",
    "Time one reconcile of one rollout takes.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILES = Counter("coalmine_reconciles_total", "Reconciles run, whatever their result.")
RECONCILE_ERRORS = Counter(
    "coalmine_reconcile_errors_total",
    "Reconciles that failed and will be retried, by kind of failure.",
    ["kind"],
)

ROLLOUT_INFO_PHASES = ("Healthy", "Progressing", "Paused", "Degraded", "Failed")
ROLLOUT_PHASE = Gauge(
    "coalmine_rollout_phase",
    "1 for the phase each CanaryRollout is in, 0 for the others.",
    ["namespace", "name", "phase"],
)
ROLLOUT_WEIGHT = Gauge(
    "coalmine_rollout_weight",
    "The canary weight the router confirmed, per CanaryRollout (0-100).",
    ["namespace", "name"],
)
ROLLOUTS = Gauge("coalmine_rollouts", "CanaryRollouts known to this operator, by phase.", ["phase"])
STEP_DURATION = Histogram(
    "coalmine_step_duration_seconds",
    "Time from a step's start to its completion, by kind of step.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
ROLLOUT_DURATION = Histogram(
    "coalmine_rollout_duration_seconds",
    "Time from a canary's start to its end, by outcome (Promoted, Aborted, ...).",
    ["outcome"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)

_phases: dict[tuple[str, str], str] = {}
_counts: dict[str, int] = dict.fromkeys(ROLLOUT_INFO_PHASES, 0)
_lock = threading.Lock()


def _move(key: tuple[str, str], phase: str | None) -> None:
    """Count ``key`` in ``phase`` (None: in none); keeps the per-phase totals in step."""
    before = _phases.pop(key, None)
    if before is not None:
        _counts[before] -= 1
        ROLLOUTS.labels(before).set(_counts[before])
    if phase is not None:
        _phases[key] = phase
        _counts[phase] = _counts.get(phase, 0) + 1
        ROLLOUTS.labels(phase).set(_counts[phase])


def observe_rollout(namespace: str, name: str, phase: str, weight: int) -> None:
    """Record where a rollout stands after a reconcile."""
    with _lock:
        _move((namespace, name), phase)
    for each in ROLLOUT_INFO_PHASES:
        ROLLOUT_PHASE.labels(namespace, name, each).set(1 if each == phase else 0)
    ROLLOUT_WEIGHT.labels(namespace, name).set(weight)


def forget_rollout(namespace: str, name: str) -> None:
    """A deleted rollout leaves no series behind."""
    with _lock:
        _move((namespace, name), None)
    for each in ROLLOUT_INFO_PHASES:
        with contextlib.suppress(KeyError):
            ROLLOUT_PHASE.remove(namespace, name, each)
    with contextlib.suppress(KeyError):
        ROLLOUT_WEIGHT.remove(namespace, name)


ANALYSIS_MEASUREMENTS = Counter(
    "coalmine_analysis_measurements_total",
    "Analysis measurements taken, by outcome (Successful, Failed, Inconclusive, Error).",
    ["outcome"],
)
