"""Real traffic through Traefik: split error per step, failed requests during a promotion, and
the time from the abort decision to 0% canary traffic, all as the load generator saw them.

It runs the `make demo` scenario (v2 healthy and promoted, v3 with 20% errors aborted by the
background analysis) under 100 requests/s through Traefik. Written to
``bench/results/traffic.json``.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import Any

from bench import write_result
from coalmine import kube as k
from devenv import demo, traefik
from devenv.loadgen import LoadGenerator
from devenv.waiting import wait_for


def main() -> int:
    kube, operator = demo.setup("20s")
    result: dict[str, Any] = {
        "benchmark": "traffic",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "gateway": "Traefik v3.6.12, Gateway API",
        "rate_per_second": 100,
    }
    try:
        with LoadGenerator(traefik.WEB_URL, rate=100, duration=600) as load:
            wait_for(
                lambda: load.counters().completed,
                until=lambda n: n >= 50,
                message="traffic through Traefik",
            )
            v2 = demo.roll_out(kube, load, "v2")
            # Each step's split: the share of v2 answers against the configured weight.
            result["split_error_pp"] = [
                {"weight": w, "observed": round(share, 2), "error_pp": round(share - w, 2), "n": n}
                for w, share, n in v2.splits
            ]
            result["v2_outcome"] = v2.outcome
            result["failed_requests_during_promotion"] = v2.failed
            # Wall and monotonic clocks, to place the operator's abortedAt among the samples.
            offset = time.time() - time.monotonic()
            v3 = demo.roll_out(kube, load, "v3", DEMO_ERROR_RATE="0.2")
            time.sleep(3)  # requests sent after the abort, to see that none reach v3
            status = (kube.get(k.CANARY_ROLLOUTS, demo.NAMESPACE, demo.NAME) or {})["status"]
            aborted_at = datetime.fromisoformat(status["abortedAt"].replace("Z", "+00:00"))
            decided = aborted_at.timestamp() - offset
            last_v3 = max(
                (s.started + s.latency for s in load.samples() if s.version == "v3"),
                default=decided,
            )
            result["v3_outcome"] = v3.outcome
            result["abort_decision_to_zero_canary_traffic_seconds"] = round(
                max(0.0, last_v3 - decided), 3
            )
            result["v3_requests_answered_after_decision"] = sum(
                1 for s in load.samples(since=decided) if s.version == "v3"
            )
    finally:
        operator.stop()
        demo._stop_previous_operator()
    write_result("traffic", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
