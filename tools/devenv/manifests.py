"""Manifests the demo, the benchmarks and the tests build alike: one definition each."""

from __future__ import annotations

import copy
from typing import Any

from coalmine.api.resource import API_VERSION, KIND

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


def plain_template(version: str, *, app: str = "shop", **container: Any) -> dict[str, Any]:
    """Pods that run nothing (KWOK makes them Ready): rollouts that cost no process.

    ``container`` adds fields to the container (resources, ...).
    """
    image = {"name": "app", "image": f"registry.example/{app}:{version}", **container}
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [image]}}


def deployment(
    name: str, image: str, replicas: int, *, cpu_request: str | None = None
) -> dict[str, Any]:
    """A plain Deployment of one container (pods labelled app=<name>), for tests of the cluster
    itself; ``cpu_request`` is what an HPA's utilization is measured against."""
    labels = {"app": name}
    container: dict[str, Any] = {"name": "app", "image": image, "ports": [{"containerPort": 8080}]}
    if cpu_request is not None:
        container["resources"] = {"requests": {"cpu": cpu_request}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


#: The routers a CanaryRollout can name, as ``trafficRouting`` keys (replicaRatio: none).
ROUTERS = ("replicaRatio", "gatewayAPI", "nginx", "istio", "smi")


def traffic_routing(router: str, name: str) -> dict[str, Any] | None:
    """``spec.trafficRouting`` for ``router``, splitting through the object named ``name``."""
    return {
        "replicaRatio": None,
        "gatewayAPI": {"gatewayAPI": {"httpRoute": name}},
        "nginx": {"nginx": {"ingress": name}},
        "istio": {"istio": {"virtualService": name, "routes": ["primary"]}},
        "smi": {"smi": {"trafficSplit": name}},
    }[router]


def canary_rollout(
    name: str,
    template: dict[str, Any],
    *,
    steps: list[dict[str, Any]],
    replicas: int = 4,
    router: str = "replicaRatio",
    **spec: Any,
) -> dict[str, Any]:
    """A CanaryRollout of ``template`` behind Service ``name`` (port 80 to the pods' 8080).

    Traffic moves by ``router`` through the routing object named ``name`` (see
    :func:`traffic_routing`); images from any registry are allowed (the demo's are not in
    one). ``spec`` adds or overrides fields: analysis, scaleDownDelaySeconds, ...
    """
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": template,
            "service": {"name": name, "port": 80, "targetPort": 8080},
            "imagePolicy": "Allow",
            # Callers share step lists between rollouts: each manifest gets its own copy.
            "steps": copy.deepcopy(steps),
            **spec,
        },
    }
    routing = traffic_routing(router, name)
    if routing is not None:
        body["spec"]["trafficRouting"] = routing
    return body


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
