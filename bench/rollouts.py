"""Step latency and API writes with many rollouts in flight, against the real cluster.

50 CanaryRollouts (Gateway API router, 2 replicas each) are rolled out at once. Each is held at
an indefinite pause; the benchmark opens every gate with a promote token and measures, per
rollout, the time from the promote request returning to the operator's status reporting the
next weight as confirmed by the router (seen through a watch, so with no polling delay). The
operator's own ``/metrics`` give its API writes during each round, divided by the steps it
completed. Written to ``bench/results/rollouts.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request
import uuid
from typing import Any

from bench import Tracker, rss_mib, start, write_result
from coalmine import kube as k
from coalmine.kube import Kube
from devenv.loadgen import percentile
from devenv.manifests import canary_rollout, http_route, plain_template
from devenv.namespaces import delete_namespace
from devenv.waiting import wait_for

NAMESPACE = "bench-rollouts"
METRICS_PORT = 9400
STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {}},
    {"setWeight": 30},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {}},
]
ROUNDS = ((1, 30, 3), (3, 60, 5))
"""(pause step released, weight then expected, step index then expected)."""


def rollout(name: str, version: str) -> dict[str, Any]:
    # No demo app: KWOK alone makes these pods Ready, with no process to run per pod.
    return canary_rollout(
        name,
        plain_template(version, app=name),
        steps=STEPS,
        replicas=2,
        router="gatewayAPI",
        scaleDownDelaySeconds=5,
    )


def operator_metrics() -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("coalmine_api_requests_total{"):
            verb = line.split('verb="')[1].split('"')[0]
            values[verb] = float(line.rsplit(" ", 1)[1])
    return values


WRITE_VERBS = ("post", "patch", "put", "delete")


def roll_out(kube: Kube, names: list[str], result: dict[str, Any]) -> None:
    """First revision everywhere, then a new one held at its first pause."""
    started = time.monotonic()
    for name in names:
        kube.create(k.HTTP_ROUTES, NAMESPACE, http_route(name))
        kube.create(k.CANARY_ROLLOUTS, NAMESPACE, rollout(name, "v1"))
    wait_phase(kube, names, lambda s: s.get("phase") == "Healthy", "all Healthy")
    result["first_apply_all_healthy_seconds"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    for name in names:
        kube.patch(k.CANARY_ROLLOUTS, NAMESPACE, name, {"spec": rollout(name, "v2")["spec"]})
    wait_phase(
        kube,
        names,
        lambda s: s.get("currentStepIndex") == 1 and s.get("phase") == "Paused",
        "all canaries at their first pause",
    )
    result["new_revision_to_first_pause_seconds"] = round(time.monotonic() - started, 1)


def gate_round(kube: Kube, tracker: Tracker, names: list[str], weight: int, step: int) -> Any:
    """Promote every rollout at once; per rollout, the time to its next weight confirmed."""
    tracker.expect(
        lambda s: s.get("currentStepIndex", -1) >= step and s.get("confirmedWeight") == weight
    )
    before = operator_metrics()
    opened: dict[str, float] = {}
    for name in names:
        token = {"coalmine.dev/promote": uuid.uuid4().hex}
        kube.patch(k.CANARY_ROLLOUTS, NAMESPACE, name, {"metadata": {"annotations": token}})
        opened[name] = time.monotonic()
    seen = tracker.wait(names, f"every rollout to confirm weight {weight}", timeout=180)
    # The follow-up reconciles (next pause reached, status written) belong to the step's cost.
    wait_phase(
        kube,
        names,
        lambda s: s.get("currentStepIndex") == step and s.get("phase") == "Paused",
        "the next pause",
    )
    after = operator_metrics()
    latencies = [seen[n] - opened[n] for n in names]
    writes = sum(after.get(v, 0) - before.get(v, 0) for v in WRITE_VERBS)
    reads = after.get("get", 0) - before.get("get", 0)
    steps_done = 2 * len(names)  # the pause released and the weight step after it
    return latencies, {
        "weight": weight,
        "gate_to_confirmed_seconds": summary(latencies),
        "operator_api_writes": writes,
        "api_writes_per_step": round(writes / steps_done, 2),
        "api_reads_per_step": round(reads / steps_done, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollouts", type=int, default=50)
    args = parser.parse_args()
    names = [f"app-{i:02d}" for i in range(args.rollouts)]

    api, operator = start(NAMESPACE, {"COALMINE_METRICS_PORT": str(METRICS_PORT)})
    kube = Kube(api)
    result: dict[str, Any] = {
        "benchmark": "rollouts",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "rollouts_in_flight": len(names),
        "router": "gatewayAPI",
        "replicas_per_rollout": 2,
    }
    try:
        wait_for(operator_metrics, until=lambda _: True, timeout=30, message="operator /metrics")
        result["operator_rss_mib_idle"] = rss_mib(operator.pid)
        roll_out(kube, names, result)
        result["operator_rss_mib_in_flight"] = rss_mib(operator.pid)
        tracker = Tracker(kube, NAMESPACE)
        tracker.start()
        rounds, latencies = [], []
        for _pause, weight, step in ROUNDS:
            round_latencies, report = gate_round(kube, tracker, names, weight, step)
            latencies += round_latencies
            rounds.append(report)
        tracker.stop()
        result["rounds"] = rounds
        result["gate_to_confirmed_seconds"] = summary(latencies)
        result["api_writes_per_step"] = round(
            statistics.mean(r["api_writes_per_step"] for r in rounds), 2
        )
        result["operator_rss_mib_after"] = rss_mib(operator.pid)
    finally:
        delete_namespace(api, NAMESPACE)  # the operator still runs to release the finalizers
        operator.stop()
    write_result("rollouts", result)
    return 0


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def wait_phase(kube: Kube, names: list[str], done: Any, message: str) -> None:
    def pending() -> list[str]:
        items = kube.list(k.CANARY_ROLLOUTS, NAMESPACE)
        ok = {o["metadata"]["name"] for o in items if done(o.get("status") or {})}
        return [n for n in names if n not in ok]

    wait_for(pending, until=lambda left: not left, timeout=300, interval=0.5, message=message)


if __name__ == "__main__":
    sys.exit(main())
