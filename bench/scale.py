"""One operator replica against 100, 500, 1,000 and 2,000 rollouts: the curve of issue 10.

At each size N (rollouts are added, never recreated, from one size to the next):

- N replica-ratio rollouts (1 replica, steps `setWeight: 50` then `pause: {}`): the time until
  the new ones are Healthy, then, after a new template on all N, until every canary reaches its
  first pause; then, all paused, one minute idle (API requests and operator CPU); then every
  gate opened at once (a promote token each): the burst throughput, in steps per second.
- 50 Gateway API rollouts beside them: gates opened at a steady 10 per second, each timed from
  the promote to its next weight confirmed by the router (seen through an informer's watch).
- The operator's resident memory and CPU seconds, and its API reads and writes per step.

JSON in bench/results/scale.json, one PNG per figure against N in bench/results/scale-*.png.
Never asserted: figures to read, beside the goals they are measured against.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from bench import RESULTS, Status, Tracker, rss_mib, start, write_result
from coalmine import resources as r
from coalmine.kube import Kube
from devenv import cluster, paths
from devenv.loadgen import percentile
from devenv.manifests import canary_rollout, http_route, plain_template
from devenv.namespaces import delete_namespace, recreate_namespace
from devenv.operator import OperatorProcess
from devenv.waiting import wait_for

SIZES = (100, 500, 1000, 2000)
GATEWAY_ROLLOUTS = 50
GATES_PER_SECOND = 10.0
IDLE_SECONDS = 60.0
RATIO_NAMESPACE = "bench-scale"
GATEWAY_NAMESPACE = "bench-scale-gw"
METRICS_PORT = 9401
RATIO_STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
GATEWAY_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 40},
    {"pause": {}},
]
WRITES = ("post", "patch", "put", "delete")
READS = ("get", "list")


def rollout(name: str, version: int, *, gateway: bool) -> dict[str, Any]:
    """One replica of pods that run nothing; Gateway API or replica ratio."""
    return canary_rollout(
        name,
        plain_template(f"v{version}", app=name),
        steps=GATEWAY_STEPS if gateway else RATIO_STEPS,
        replicas=1,
        router="gatewayAPI" if gateway else "replicaRatio",
        scaleDownDelaySeconds=5,
        abortScaleDownDelaySeconds=0,
    )


class Operator:
    """The operator process, its metrics and its resource use."""

    def __init__(self, process: OperatorProcess) -> None:
        self.process = process
        wait_for(self.requests, timeout=60, message="the operator's /metrics")

    def requests(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("coalmine_api_requests_total{"):
                verb = line.split('verb="')[1].split('"')[0]
                counts[verb] = float(line.rsplit(" ", 1)[1])
        return counts

    def cpu_seconds(self) -> float:
        return cluster.process_cpu_seconds(self.process.pid)

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)


def count(delta: dict[str, float], verbs: tuple[str, ...]) -> float:
    return sum(delta.get(verb, 0.0) for verb in verbs)


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {verb: after[verb] - before.get(verb, 0.0) for verb in after}


def promote(kube: Kube, namespace: str, name: str, control: str = "promote") -> None:
    token = {f"coalmine.dev/{control}": uuid.uuid4().hex}
    kube.patch(r.CANARY_ROLLOUTS, namespace, name, {"metadata": {"annotations": token}})


def paused_at(step: int) -> Callable[[Status], bool]:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def healthy() -> Callable[[Status], bool]:
    return lambda s: s.get("phase") == "Healthy" and "canaryRevision" not in s


class Scale:
    def __init__(self, kube: Kube, operator: Operator) -> None:
        self.kube = kube
        self.operator = operator
        self.ratio = Tracker(kube, RATIO_NAMESPACE)
        self.gateway = Tracker(kube, GATEWAY_NAMESPACE)
        self.ratio_names: list[str] = []
        self.gateway_names = [f"gw-{i:02d}" for i in range(GATEWAY_ROLLOUTS)]
        self.version = 1

    def start(self) -> None:
        self.ratio.start()
        self.gateway.start()
        for name in self.gateway_names:
            self.kube.create(r.HTTP_ROUTES, GATEWAY_NAMESPACE, http_route(name))
            self.kube.create(r.CANARY_ROLLOUTS, GATEWAY_NAMESPACE, rollout(name, 1, gateway=True))
        self.gateway.expect(healthy())
        self.gateway.wait(self.gateway_names, "the Gateway API rollouts Healthy")

    def size(self, n: int) -> dict[str, Any]:
        result: dict[str, Any] = {"rollouts": n, "gateway_rollouts": GATEWAY_ROLLOUTS}
        new = [f"app-{i:04d}" for i in range(len(self.ratio_names), n)]
        self.ratio.expect(healthy())
        started = time.monotonic()
        for name in new:
            self.kube.create(
                r.CANARY_ROLLOUTS, RATIO_NAMESPACE, rollout(name, self.version, gateway=False)
            )
        self.ratio_names += new
        self.ratio.wait(self.ratio_names, f"{n} rollouts Healthy")
        result["new_rollouts_all_healthy_seconds"] = round(time.monotonic() - started, 1)

        self.version += 1
        self.ratio.expect(paused_at(1))
        started = time.monotonic()
        busy = self._cpu()
        for name in self.ratio_names:
            body = rollout(name, self.version, gateway=False)
            self.kube.patch(r.CANARY_ROLLOUTS, RATIO_NAMESPACE, name, {"spec": body["spec"]})
        self.ratio.wait(self.ratio_names, f"{n} canaries at their first pause")
        result["new_template_to_first_pause_seconds"] = round(time.monotonic() - started, 1)
        # Who was busy meanwhile: the operator, or the control plane on the same two cores.
        result["first_pause_cpu_seconds"] = {
            name: round(seconds, 1) for name, seconds in difference(self._cpu(), busy).items()
        }

        result["gates"] = self._gates()
        result["idle"] = self._idle(n)
        result["burst"] = self._burst(n)
        result["operator_rss_mib"] = self.operator.rss_mib()
        result["operator_cpu_seconds"] = round(self.operator.cpu_seconds(), 1)
        result["control_plane_rss_mib"] = {
            name: round(size / 2**20, 1) for name, size in cluster.resident_memory().items()
        }
        return result

    def _cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the operator and by each part of the local cluster."""
        return {"operator": self.operator.cpu_seconds(), **cluster.cpu_seconds()}

    def _gates(self) -> dict[str, Any]:
        """The 50 Gateway API rollouts: to their first pause, then gates at a steady pace."""
        self.gateway.expect(paused_at(1))
        for name in self.gateway_names:
            body = rollout(name, self.version, gateway=True)
            self.kube.patch(r.CANARY_ROLLOUTS, GATEWAY_NAMESPACE, name, {"spec": body["spec"]})
        self.gateway.wait(self.gateway_names, "Gateway API canaries at their first pause")
        self.gateway.expect(
            lambda s: s.get("currentStepIndex", 0) >= 3 and s.get("confirmedWeight") == 40
        )
        before = self.operator.requests()
        opened: dict[str, float] = {}
        for name in self.gateway_names:
            promote(self.kube, GATEWAY_NAMESPACE, name)
            opened[name] = time.monotonic()
            time.sleep(1 / GATES_PER_SECOND)
        seen = self.gateway.wait(self.gateway_names, "every gate's weight confirmed")
        delta = difference(self.operator.requests(), before)
        latencies = [seen[name] - opened[name] for name in self.gateway_names]
        steps = 2 * len(self.gateway_names)  # the pause released and the weight step after it
        # Promoted, and the old revisions scaled down: nothing left to do before the idle minute.
        self.gateway.expect(lambda s: healthy()(s) and not s.get("pendingScaleDowns"))
        for name in self.gateway_names:
            promote(self.kube, GATEWAY_NAMESPACE, name, "promote-full")
        self.gateway.wait(self.gateway_names, "the Gateway API rollouts promoted, scaled down")
        return {
            "per_second": GATES_PER_SECOND,
            "gate_to_confirmed_seconds": {
                "p50": round(statistics.median(latencies), 3),
                "p99": round(percentile(sorted(latencies), 99), 3),
                "max": round(max(latencies), 3),
                "n": len(latencies),
            },
            "api_writes_per_step": round(count(delta, WRITES) / steps, 2),
            "api_reads_per_step": round(count(delta, READS) / steps, 2),
        }

    def _idle(self, n: int) -> dict[str, Any]:
        before_requests = self.operator.requests()
        before_cpu = self._cpu()
        time.sleep(IDLE_SECONDS)
        delta = difference(self.operator.requests(), before_requests)
        used = difference(self._cpu(), before_cpu)
        minutes = IDLE_SECONDS / 60
        requests = count(delta, WRITES + READS)
        return {
            "seconds": IDLE_SECONDS,
            "api_requests_per_minute": round(requests / minutes, 1),
            "api_requests_per_minute_per_100_rollouts": round(requests / minutes * 100 / n, 2),
            "api_writes_per_minute": round(count(delta, WRITES) / minutes, 1),
            "operator_cpu_percent": round(100 * used["operator"] / IDLE_SECONDS, 1),
            "control_plane_cpu_percent": {
                name: round(100 * seconds / IDLE_SECONDS, 1)
                for name, seconds in used.items()
                if name != "operator"
            },
        }

    def _burst(self, n: int) -> dict[str, Any]:
        self.ratio.expect(healthy())
        before = self.operator.requests()
        started = time.monotonic()
        for name in self.ratio_names:
            promote(self.kube, RATIO_NAMESPACE, name)
        self.ratio.wait(self.ratio_names, f"{n} canaries promoted")
        elapsed = time.monotonic() - started
        # The old revisions scale down in a later pass: their writes belong to these steps (and
        # must not spill into the next size's timings), as in _gates.
        self.ratio.expect(lambda s: healthy()(s) and not s.get("pendingScaleDowns"))
        self.ratio.wait(self.ratio_names, f"{n} old revisions scaled down")
        delta = difference(self.operator.requests(), before)
        return {
            "all_gates_to_all_promoted_seconds": round(elapsed, 1),
            "steps_per_second": round(n / elapsed, 1),
            "api_writes_per_step": round(count(delta, WRITES) / n, 2),
            "api_reads_per_step": round(count(delta, READS) / n, 2),
        }


FIGURES: tuple[tuple[str, str, Callable[[dict[str, Any]], float]], ...] = (
    ("healthy", "new rollouts Healthy (s)", lambda s: s["new_rollouts_all_healthy_seconds"]),
    (
        "first-pause",
        "all canaries at first pause (s)",
        lambda s: s["new_template_to_first_pause_seconds"],
    ),
    (
        "gate-p99",
        "gate to weight confirmed, p99 (s)",
        lambda s: s["gates"]["gate_to_confirmed_seconds"]["p99"],
    ),
    ("burst", "burst throughput (steps/s)", lambda s: s["burst"]["steps_per_second"]),
    ("rss", "operator RSS (MiB)", lambda s: s["operator_rss_mib"]),
    (
        "idle-requests",
        "idle API requests / min / 100 rollouts",
        lambda s: s["idle"]["api_requests_per_minute_per_100_rollouts"],
    ),
    ("idle-cpu", "idle operator CPU (%)", lambda s: s["idle"]["operator_cpu_percent"]),
    ("writes-per-step", "API writes per step (gates)", lambda s: s["gates"]["api_writes_per_step"]),
)


def plot(sizes: list[dict[str, Any]]) -> list[str]:
    import matplotlib  # noqa: PLC0415 - only this benchmark draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    xs = [s["rollouts"] for s in sizes]
    for key, label, value in FIGURES:
        figure, axes = plt.subplots(figsize=(5, 3.2))
        axes.plot(xs, [value(s) for s in sizes], marker="o")
        axes.set_xlabel("rollouts")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        figure.tight_layout()
        path = RESULTS / f"scale-{key}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(str(path.relative_to(paths.REPO_ROOT)))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    api, process = start(RATIO_NAMESPACE, {"COALMINE_METRICS_PORT": str(METRICS_PORT)})
    recreate_namespace(api, GATEWAY_NAMESPACE, timeout=900)
    kube = Kube(api)
    operator = Operator(process)
    result: dict[str, Any] = {
        "benchmark": "scale",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "operator_workers": int(os.environ.get("COALMINE_WORKERS", "8")),
        "operator_rss_mib_start": operator.rss_mib(),
        "sizes": [],
    }
    try:
        scale = Scale(kube, operator)
        scale.start()
        for n in sizes:
            print(f"bench-scale: {n} rollouts", flush=True)
            result["sizes"].append(scale.size(n))
            write_result("scale", result)
        result["plots"] = plot(result["sizes"])
    finally:
        # Deleted while the operator still runs, so it releases the rollouts' finalizers.
        for namespace in (RATIO_NAMESPACE, GATEWAY_NAMESPACE):
            delete_namespace(api, namespace)
        for namespace in (RATIO_NAMESPACE, GATEWAY_NAMESPACE):
            delete_namespace(api, namespace, wait=900)
        operator.process.stop()
    write_result("scale", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
