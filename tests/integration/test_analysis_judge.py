"""The statistical judge against the real Prometheus, on error rates that are mostly zero.

The case the judge exists for, and the one a median-based judge misses: per-interval error
ratios of a canary erring four times as often as its baseline, both 0 in most intervals. Two
rollouts run side by side in one namespace, each under its own steady traffic, each judged by the
default judge (meanRatio, confidence 0.95, every significant increase fails):

- `worse`: stable at DEMO_ERROR_RATE 1/800, canary at 1/200. Aborted by the judge.
- `same`: stable and canary both at 1/800. Promoted.

The demo app spreads its errors evenly (every 200th request of a pod fails at 1/200), and a
10 s rate window sampled every 5 s sees each error in about one point, so at ~10 requests a
second per pod the canary's points are non-zero about a quarter of the time, the baseline's about
one time in sixteen. The judge reads three minutes of them: about 70 points a side.
"""

from __future__ import annotations

from typing import Any

import pytest

from devenv.traffic import ServiceTraffic

from .conftest import Cluster
from .rollouts import Rollouts, manifest, template

pytestmark = pytest.mark.usefixtures("operator")

BASELINE_RATE = "0.00125"  # 1/800
WORSE_RATE = "0.005"  # 1/200: four times the baseline's
# Both rollouts' stable revisions have the same template, hence the same revision name.
SELECTOR = (
    'namespace="{{namespace}}",coalmine_rollout="{{rollout}}",coalmine_revision="{{revision}}"'
)
# One series per pod: the error ratio over each 10 s window, every 5 s.
ERROR_RATIO = (
    f'sum by (pod) (rate(demo_http_requests_total{{{SELECTOR},code=~"5.."}}[10s]))'
    f" / sum by (pod) (rate(demo_http_requests_total{{{SELECTOR}}}[10s]))"
)
JUDGED_SECONDS = 180


def error_rate_judge() -> dict[str, Any]:
    return {
        "name": "error-rate",
        "interval": "30s",
        "initialDelay": f"{JUDGED_SECONDS}s",
        "count": 1,
        "baseline": True,
        "provider": {"prometheus": {"query": ERROR_RATIO}},
        "judge": {"mannWhitney": {}},  # the defaults: meanRatio, every significant increase fails
    }


def rollout(name: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"setWeight": 50},
        {"analysis": {"metrics": [error_rate_judge()]}},
    ]
    body = manifest(name, "v1", steps=steps, replicas=4, progressDeadlineSeconds=600)
    body["spec"]["template"] = template("v1", DEMO_ERROR_RATE=BASELINE_RATE)
    return body


def judged(status: dict[str, Any]) -> dict[str, Any]:
    runs = status.get("analysis") or [{}]
    metrics = runs[0].get("metrics") or [{}]
    measurements = metrics[0].get("measurements") or [{}]
    return dict(measurements[-1])


def test_a_mostly_zero_error_rate_four_times_the_baselines_is_aborted_and_the_same_promoted(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    traffic = {
        name: ServiceTraffic(kube.raw, namespace, name, limit=JUDGED_SECONDS + 240)
        for name in ("worse", "same")
    }
    with traffic["worse"], traffic["same"]:
        stable: dict[str, str] = {}
        for name in ("worse", "same"):
            rollouts.create(rollout(name))
        for name in ("worse", "same"):
            stable[name] = rollouts.wait_phase(name, "Healthy", timeout=90)["stableRevision"]
        rollouts.set_template("worse", "v2", DEMO_ERROR_RATE=WORSE_RATE)
        rollouts.set_template("same", "v2", DEMO_ERROR_RATE=BASELINE_RATE)
        final = {
            name: rollouts.wait(
                name,
                lambda s, name=name: (  # type: ignore[misc]
                    s.get("phase") in ("Degraded", "Paused")
                    or (s.get("phase") == "Healthy" and s.get("stableRevision") != stable[name])
                ),
                "the judge's verdict",
                timeout=JUDGED_SECONDS + 150,
            )
            for name in ("worse", "same")
        }
    for name, status in final.items():
        said = judged(status).get("message") or [
            m for r, m in rollouts.events(name) if "judge" in m
        ]
        print(f"{name}: {dict(traffic[name].codes)} requests; phase {status['phase']}; {said}")
    worse, same = final["worse"], final["same"]
    assert worse["phase"] == "Degraded", worse.get("message")
    assert worse["abortReason"] == "AnalysisFailed"
    assert "error-rate" in worse["abortMessage"]
    assert worse["stableRevision"] == stable["worse"]
    measurement = judged(worse)
    assert measurement["outcome"] == "Failed"
    assert measurement["pValue"] <= 0.05
    assert measurement["message"].startswith("judge fail: significant increase")
    assert measurement["effectSize"] >= 1
    # Mostly zero on both sides: the typical difference, and the low end of its interval, are 0.
    assert (measurement["shift"], measurement["shiftLow"]) == (0, 0)
    assert "shiftHigh" not in measurement  # a judge of an increase: a half-line
    assert same["phase"] == "Healthy", same.get("message")
    assert same["stableRevision"] != stable["same"]
    assert any(
        "analysis successful" in m for r, m in rollouts.events("same") if r == "StepCompleted"
    )
