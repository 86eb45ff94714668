"""Detection latency: from a bad canary's errors becoming visible in Prometheus to the canary's
weight confirmed at 0 by the router.

A v1 stable takes traffic spread over the Service's endpoints; v2 is rolled out with 30% errors
and an analysis step (interval 5 s, failureLimit 0). The benchmark polls Prometheus every 100 ms
for the canary's first 5xx rate above zero (the errors are visible), and watches the rollout for
the abort with weight 0 confirmed by the Gateway API router's read-back. Written to
``bench/results/analysis.json``. Goal: under 1 s beyond the analysis interval.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

from bench import Tracker, start, write_result
from coalmine import kube as k
from coalmine.kube import Kube
from devenv import paths
from devenv.manifests import canary_rollout, demo_template, error_rate_metric, http_route
from devenv.namespaces import delete_namespace
from devenv.traffic import ServiceTraffic
from devenv.waiting import wait_for

NAMESPACE = "bench-analysis"
INTERVAL = 5


def rollout(name: str) -> dict[str, Any]:
    metric = error_rate_metric(interval=f"{INTERVAL}s", count=20, inconclusiveLimit=20)
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": {"metrics": [metric]}}]
    return canary_rollout(name, demo_template("v1"), steps=steps, router="gatewayAPI")


def errors_visible(revision: str) -> bool:
    query = (
        f'sum(rate(demo_http_requests_total{{namespace="{NAMESPACE}",'
        f'coalmine_revision="{revision}",code=~"5.."}}[20s])) > 0'
    )
    url = f"{paths.PROMETHEUS_URL}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our Prometheus
        return bool(json.loads(response.read())["data"]["result"])


def trial(kube: Kube, name: str) -> dict[str, Any]:
    kube.create(k.HTTP_ROUTES, NAMESPACE, http_route(name))
    kube.create(k.CANARY_ROLLOUTS, NAMESPACE, rollout(name))
    wait_for(
        lambda: (kube.get(k.CANARY_ROLLOUTS, NAMESPACE, name) or {}).get("status", {}),
        until=lambda s: s.get("phase") == "Healthy",
        timeout=60,
        message=f"{name} Healthy",
    )
    tracker = Tracker(kube, NAMESPACE, name)
    tracker.start()
    tracker.expect(lambda s: bool(s.get("abortReason")) and s.get("confirmedWeight") == 0)
    with ServiceTraffic(kube, NAMESPACE, name, rate=50):
        kube.patch(
            k.CANARY_ROLLOUTS,
            NAMESPACE,
            name,
            {"spec": {"template": demo_template("v2", DEMO_ERROR_RATE="0.3")}},
        )
        canary = wait_for(
            lambda: (
                (kube.get(k.CANARY_ROLLOUTS, NAMESPACE, name) or {})
                .get("status", {})
                .get("canaryRevision")
            ),
            timeout=30,
            message="the canary revision",
        )
        visible = wait_for(
            lambda: time.monotonic() if errors_visible(str(canary)) else None,
            timeout=120,
            interval=0.1,
            message="the canary's errors in Prometheus",
        )
        confirmed = tracker.wait([name], "the bad canary aborted, weight 0", timeout=180)[name]
    tracker.stop()
    assert visible is not None
    return {
        "rollout": name,
        "errors_visible_to_weight_0_seconds": round(confirmed - visible, 2),
    }


def main() -> int:
    api, operator = start(NAMESPACE)
    kube = Kube(api)
    trials = []
    try:
        for index in range(3):
            trials.append(trial(kube, f"shop-{index}"))
    finally:
        delete_namespace(api, NAMESPACE)  # the operator still runs to release the finalizers
        operator.stop()
    values = [t["errors_visible_to_weight_0_seconds"] for t in trials]
    result = {
        "benchmark": "analysis",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "analysis_interval_seconds": INTERVAL,
        "trials": trials,
        "detection_latency_seconds": {
            "median": statistics.median(values),
            "max": max(values),
            "beyond_interval_median": round(statistics.median(values) - INTERVAL, 2),
            "goal_beyond_interval": 1.0,
        },
    }
    write_result("analysis", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
