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
_lock = threading.Lock()


def observe_rollout(namespace: str, name: str, phase: str, weight: int) -> None:
    """Record where a rollout stands after a reconcile."""
    with _lock:
        _phases[(namespace, name)] = phase
        counts = dict.fromkeys(ROLLOUT_INFO_PHASES, 0)
        for known in _phases.values():
            counts[known] = counts.get(known, 0) + 1
    for each in ROLLOUT_INFO_PHASES:
        ROLLOUT_PHASE.labels(namespace, name, each).set(1 if each == phase else 0)
    for each, count in counts.items():
        ROLLOUTS.labels(each).set(count)
    ROLLOUT_WEIGHT.labels(namespace, name).set(weight)


def forget_rollout(namespace: str, name: str) -> None:
    """A deleted rollout leaves no series behind."""
    with _lock:
        _phases.pop((namespace, name), None)
        counts = dict.fromkeys(ROLLOUT_INFO_PHASES, 0)
        for known in _phases.values():
            counts[known] = counts.get(known, 0) + 1
    for each in ROLLOUT_INFO_PHASES:
        with contextlib.suppress(KeyError):
            ROLLOUT_PHASE.remove(namespace, name, each)
    with contextlib.suppress(KeyError):
        ROLLOUT_WEIGHT.remove(namespace, name)
    for each, count in counts.items():
        ROLLOUTS.labels(each).set(count)


ANALYSIS_MEASUREMENTS = Counter(
    "coalmine_analysis_measurements_total",
    "Analysis measurements taken, by outcome (Successful, Failed, Inconclusive, Error).",
    ["outcome"],
)
