"""Manifests the demo, the benchmarks and the tests build alike: one definition each."""

from __future__ import annotations

from typing import Any

#: PromQL selector of one revision of a rollout's pods (query template variables).
SELECTOR = 'namespace="{{namespace}}",coalmine_revision="{{revision}}"'


def demo_template(version: str, *, app: str = "shop", **env: str) -> dict[str, Any]:
    """A pod template of the demo app; env tunes it (DEMO_ERROR_RATE, DEMO_LATENCY_MS, ...)."""
    container: dict[str, Any] = {
        "name": "app",
        "image": f"coalmine.dev/demo-app:{version}",
        "ports": [{"containerPort": 8080, "name": "http"}],
    }
    if env:
        container["env"] = [{"name": key, "value": value} for key, value in sorted(env.items())]
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [container]}}


def http_route(name: str, gateway: str = "gw") -> dict[str, Any]:
    """A user's HTTPRoute splitting between the rollout's stable and canary Services."""
    refs = [
        {"name": f"{name}-stable", "port": 80, "weight": 100},
        {"name": f"{name}-canary", "port": 80, "weight": 0},
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": gateway}], "rules": [{"backendRefs": refs}]},
    }


def error_rate_metric(**overrides: Any) -> dict[str, Any]:
    """The demo app's 5xx ratio per revision, judged against 5%, measured every 5 s."""
    metric: dict[str, Any] = {
        "name": "error-rate",
        "interval": "5s",
        "failureLimit": 0,
        "provider": {
            "prometheus": {
                "query": (
                    f'sum(rate(demo_http_requests_total{{{SELECTOR},code=~"5.."}}[20s]))'
                    f" / sum(rate(demo_http_requests_total{{{SELECTOR}}}[20s]))"
                )
            }
        },
        "successCondition": "result < 0.05",
    }
    metric.update(overrides)
    return metric


def min_sample(count: int) -> dict[str, Any]:
    """At least ``count`` requests to the revision in the last 20 s before a value counts."""
    return {
        "query": f"sum(increase(demo_http_requests_total{{{SELECTOR}}}[20s]))",
        "min": count,
    }
