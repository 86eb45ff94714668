"""Analysis against the real Prometheus scraping demo-app pods under real traffic.

Traffic goes to the ready endpoints of the rollout's Service, as kube-proxy would send it, so
with the replica-ratio router the canary gets its share; Prometheus scrapes every 5 s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from coalmine.resources import ANALYSIS_TEMPLATES
from devenv import cluster
from devenv.manifests import SELECTOR, error_rate_metric, min_sample
from devenv.traffic import ServiceTraffic
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import Rollouts, manifest, template

pytestmark = pytest.mark.usefixtures("operator")


def error_rate(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "initialDelay": "10s",
        "count": 3,
        "inconclusiveLimit": 1,
        "minSample": min_sample(10),
    }
    return error_rate_metric(**{**base, **overrides})


def steps_with(metric: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"setWeight": 50}, {"analysis": {"metrics": [metric]}}]


def start(rollouts: Rollouts, metric: dict[str, Any], **env: str) -> str:
    """v1 stable, then a v2 canary whose analysis step uses ``metric``."""
    rollouts.create(manifest("shop", "v1", steps=steps_with(metric), replicas=4))
    stable = str(rollouts.wait_phase("shop", "Healthy")["stableRevision"])
    rollouts.patch_spec("shop", {"template": template("v2", **env)})
    return stable


def run_of(status: dict[str, Any]) -> dict[str, Any]:
    runs = status.get("analysis") or [{}]
    return dict(runs[0])


def test_a_healthy_canary_is_promoted(kube: Cluster, namespace: str, rollouts: Rollouts) -> None:
    with ServiceTraffic(kube.raw, namespace, "shop"):
        stable = start(rollouts, error_rate())
        done = rollouts.wait(
            "shop",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") != stable,
            "the healthy canary promoted after its analysis",
            timeout=120,
        )
    assert done["stableRevision"]
    assert any(
        "analysis successful" in m for r, m in rollouts.events("shop") if r == "StepCompleted"
    )


def test_a_canary_with_30_percent_errors_is_aborted_quickly(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    with ServiceTraffic(kube.raw, namespace, "shop"):
        stable = start(rollouts, error_rate(), DEMO_ERROR_RATE="0.3")
        began = time.monotonic()
        rollouts.wait_phase("shop", "Degraded", timeout=120)
        took = time.monotonic() - began
        aborted = rollouts.wait(
            "shop", lambda s: s.get("confirmedWeight") == 0, "traffic back on stable", timeout=30
        )
    print(f"bad canary aborted {took:.1f} s after the new template (initialDelay 10 s)")
    assert aborted["abortReason"] == "AnalysisFailed"
    assert "error-rate" in aborted["abortMessage"]
    assert aborted["stableRevision"] == stable
    assert aborted["confirmedWeight"] == 0
    reasons = rollouts.reasons("shop")
    assert "AnalysisFailed" in reasons
    assert "Aborted" in reasons


def test_a_canary_without_traffic_is_inconclusive_and_never_promoted(
    namespace: str, rollouts: Rollouts
) -> None:
    stable = start(rollouts, error_rate())
    paused = rollouts.wait(
        "shop",
        lambda s: s.get("phase") == "Paused" and run_of(s).get("verdict") == "Inconclusive",
        "an Inconclusive analysis holding the canary",
        timeout=90,
    )
    assert paused["stableRevision"] == stable
    time.sleep(6)  # one more interval: still not promoted
    assert rollouts.status("shop")["stableRevision"] == stable
    assert "AnalysisInconclusive" in rollouts.reasons("shop")


def test_prometheus_outage_pauses_the_analysis_which_resumes_after(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    # A restarted Prometheus has no fresh samples for a moment: room for that no-data.
    metric = error_rate(count=5, consecutiveErrorLimit=2, initialDelay="12s", inconclusiveLimit=6)
    with ServiceTraffic(kube.raw, namespace, "shop"):
        stable = start(rollouts, metric)
        rollouts.wait(
            "shop",
            lambda s: run_of(s).get("metrics", [{}])[0].get("successful", 0) >= 1,
            "a first successful measurement",
            timeout=90,
        )
        cluster.stop_component("prometheus")
        try:
            paused = rollouts.wait(
                "shop",
                lambda s: s.get("phase") == "Paused" and run_of(s).get("verdict") == "Error",
                "metric errors to pause the rollout",
                timeout=60,
            )
            assert paused["stableRevision"] == stable
            assert "MetricError" in rollouts.reasons("shop")
        finally:
            cluster.start_component("prometheus")
        done = rollouts.wait(
            "shop",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") != stable,
            "the analysis to resume and promote once Prometheus is back",
            timeout=120,
        )
    assert done["stableRevision"] != stable


def latency_judge() -> dict[str, Any]:
    mean = (
        f"sum(rate(demo_http_request_duration_seconds_sum{{{SELECTOR}}}[10s]))"
        f" / sum(rate(demo_http_request_duration_seconds_count{{{SELECTOR}}}[10s]))"
    )
    return {
        "name": "latency",
        "interval": "45s",
        "initialDelay": "45s",
        "count": 1,
        "baseline": True,
        "provider": {"prometheus": {"query": mean}},
        "judge": {
            "mannWhitney": {
                "confidence": 0.95,
                "effectSize": {"measure": "shift", "allowedIncrease": 1.2},
                "direction": "increase",
                "minPoints": 5,
            }
        },
    }


@pytest.mark.parametrize(
    ("canary_latency", "expected"),
    [("80", "Degraded"), ("20", "Healthy")],
    ids=["latency-regression-caught", "same-distribution-passes"],
)
def test_the_statistical_judge(
    kube: Cluster, namespace: str, rollouts: Rollouts, canary_latency: str, expected: str
) -> None:
    noise = {"DEMO_LATENCY_JITTER_MS": "10"}
    body = manifest("shop", "v1", steps=steps_with(latency_judge()), replicas=4)
    body["spec"]["template"] = template("v1", DEMO_LATENCY_MS="20", **noise)
    with ServiceTraffic(kube.raw, namespace, "shop"):
        rollouts.create(body)
        stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
        rollouts.patch_spec(
            "shop", {"template": template("v2", DEMO_LATENCY_MS=canary_latency, **noise)}
        )
        final = rollouts.wait(
            "shop",
            lambda s: (
                s.get("phase") in ("Degraded", "Paused")
                or (s.get("phase") == "Healthy" and s.get("stableRevision") != stable)
            ),
            "the judge's verdict",
            timeout=150,
        )
    measurement = run_of(final)["metrics"][0]["measurements"][-1] if final.get("analysis") else {}
    print(f"judge: canary {canary_latency} ms -> {final['phase']}: {measurement}")
    assert final["phase"] == expected, final.get("message")
    if expected == "Degraded":
        assert final["abortReason"] == "AnalysisFailed"
        assert measurement.get("pValue") is not None
        assert "latency" in final["abortMessage"]


def test_an_invalid_condition_is_reported_before_any_traffic_moves(
    namespace: str, rollouts: Rollouts
) -> None:
    bad = error_rate(successCondition="result <")
    rollouts.create(manifest("shop", "v1", steps=steps_with(error_rate()), replicas=2))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    rollouts.patch_spec("shop", {"template": template("v2"), "steps": steps_with(bad)})
    failed = rollouts.wait_phase("shop", "Failed", timeout=30)
    invalid = next(c for c in failed["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    assert "error-rate" in invalid["message"]
    assert "successCondition" in invalid["message"]
    assert rollouts.deployments("shop") == {stable: 2}, "no canary was created"
    wait_for(lambda: rollouts.reasons("shop"), until=lambda r: "InvalidSpec" in r, message="event")


def test_a_shared_analysis_template_with_arguments(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """An AnalysisTemplate in the namespace, referenced by name with an argument."""
    metric = error_rate(successCondition="result < double(args.maxErrorRate)")
    kube.raw.create(
        ANALYSIS_TEMPLATES,
        namespace,
        {
            "apiVersion": "coalmine.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "error-rate"},
            "spec": {"args": [{"name": "maxErrorRate"}], "metrics": [metric]},
        },
    )
    analysis = {
        "templates": [{"name": "error-rate"}],
        "args": [{"name": "maxErrorRate", "value": "0.05"}],
    }
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": analysis}]
    with ServiceTraffic(kube.raw, namespace, "shop"):
        rollouts.create(manifest("shop", "v1", steps=steps, replicas=4))
        rollouts.wait_phase("shop", "Healthy")
        rollouts.patch_spec("shop", {"template": template("v2", DEMO_ERROR_RATE="0.3")})
        aborted = rollouts.wait_phase("shop", "Degraded", timeout=120)
    assert aborted["abortReason"] == "AnalysisFailed"
    assert "error-rate" in aborted["abortMessage"]
