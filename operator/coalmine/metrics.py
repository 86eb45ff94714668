"""The operator's own Prometheus metrics, served on ``/metrics``.

Names are documented in docs/metrics.md; the Grafana dashboard and the benchmarks read them.
Only counters and histograms that are cheap to keep: no per-object series except a rollout's
current weight and phase, which users alert on.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
