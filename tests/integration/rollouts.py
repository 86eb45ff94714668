"""Helpers for tests that drive CanaryRollouts through the real operator and cluster."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from coalmine import kube as k
from devenv.manifests import ROUTERS, canary_rollout, http_route
from devenv.manifests import demo_template as template  # re-exported for the tests

__all__ = [
    "DEFAULT_STEPS",
    "ROUTERS",
    "ROUTING_RESOURCES",
    "Rollouts",
    "manifest",
    "router_weight",
    "template",
    "user_routing_manifest",
    "user_routing_object",
]
from devenv.waiting import wait_for

from .conftest import Cluster

DEFAULT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "1s"}},
    {"setWeight": 50},
    {"pause": {}},
]


def manifest(
    name: str,
    version: str,
    *,
    router: str = "replicaRatio",
    steps: list[dict[str, Any]] | None = None,
    replicas: int = 4,
    **spec: Any,
) -> dict[str, Any]:
    """The tests' CanaryRollout of the demo app: short delays, a deadline that fails fast."""
    return canary_rollout(
        name,
        template(version),
        steps=steps or DEFAULT_STEPS,
        replicas=replicas,
        router=router,
        **{"scaleDownDelaySeconds": 2, "progressDeadlineSeconds": 60, **spec},
    )


def adopting_manifest(
    name: str, deployment: str, *, replicas: int = 2, scale_down: str | None = None, **spec: Any
) -> dict[str, Any]:
    """A CanaryRollout that adopts Deployment ``deployment`` (spec.workloadRef, no template)."""
    body = manifest(name, "v1", replicas=replicas, **{"scaleDownDelaySeconds": 1, **spec})
    del body["spec"]["template"]
    body["spec"]["workloadRef"] = {"name": deployment}
    if scale_down is not None:
        body["spec"]["workloadRef"]["scaleDown"] = scale_down
    return body


def user_routing_manifest(router: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The routing object a user owns (HTTPRoute, Ingress, VirtualService), as kept in Git."""
    stable, canary = f"{name}-stable", f"{name}-canary"
    metadata = {"name": name, "namespace": namespace}
    if router == "gatewayAPI":
        return {**http_route(name), "metadata": metadata}
    if router == "nginx":
        backend = {"service": {"name": stable, "port": {"number": 80}}}
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": metadata,
            "spec": {
                "ingressClassName": "nginx",
                "rules": [{"host": "shop.example", "http": {"paths": [path]}}],
            },
        }
    if router == "istio":
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": metadata,
            "spec": {
                "hosts": ["shop.example"],
                "http": [
                    {
                        "name": "primary",
                        "route": [
                            {"destination": {"host": stable}, "weight": 100},
                            {"destination": {"host": canary}, "weight": 0},
                        ],
                    }
                ],
            },
        }
    return None


ROUTING_RESOURCES = {
    "gatewayAPI": k.HTTP_ROUTES,
    "nginx": k.INGRESSES,
    "istio": k.VIRTUAL_SERVICES,
}


def user_routing_object(kube: Cluster, namespace: str, router: str, name: str) -> None:
    """Create the routing object a user owns before the rollout (none for SMI, replicaRatio)."""
    body = user_routing_manifest(router, name, namespace)
    if body is not None:
        kube.raw.create(ROUTING_RESOURCES[router], namespace, body)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    """The status condition of this type, or {} when there is none yet."""
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def router_weight(kube: Cluster, namespace: str, router: str, name: str) -> int | None:
    """The canary weight as the routing object holds it, read independently of the operator."""
    raw = kube.raw
    canary = f"{name}-canary"
    if router == "gatewayAPI":
        route = raw.get(k.HTTP_ROUTES, namespace, name) or {}
        refs = {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}
        return int(refs[canary])
    if router == "nginx":
        ingress = raw.get(k.INGRESSES, namespace, canary) or {}
        return int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"])
    if router == "istio":
        vs = raw.get(k.VIRTUAL_SERVICES, namespace, name) or {}
        route = vs["spec"]["http"][0]["route"]
        return int({d["destination"]["host"]: d.get("weight", 0) for d in route}[canary])
    if router == "smi":
        split = raw.get(k.TRAFFIC_SPLITS, namespace, name) or {}
        return int({b["service"]: b["weight"] for b in split["spec"]["backends"]}[canary])
    return None


class Rollouts:
    """Create, change, control and read CanaryRollouts in one namespace."""

    def __init__(self, kube: Cluster, namespace: str) -> None:
        self.kube = kube
        self.raw = kube.raw
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> None:
        self.raw.create(k.CANARY_ROLLOUTS, self.namespace, body)

    def get(self, name: str) -> dict[str, Any]:
        obj = self.raw.get(k.CANARY_ROLLOUTS, self.namespace, name)
        assert obj is not None, f"CanaryRollout {name} is gone"
        return obj

    def names(self) -> list[str]:
        return [o["metadata"]["name"] for o in self.raw.list(k.CANARY_ROLLOUTS, self.namespace)]

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def set_template(self, name: str, version: str, **env: str) -> None:
        self.patch_spec(name, {"template": template(version, **env)})

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.raw.patch(k.CANARY_ROLLOUTS, self.namespace, name, {"spec": spec})

    def control(self, name: str, control: str) -> str:
        token = uuid.uuid4().hex[:12]
        annotations = {f"coalmine.dev/{control}": token}
        self.raw.patch(
            k.CANARY_ROLLOUTS, self.namespace, name, {"metadata": {"annotations": annotations}}
        )
        return token

    def delete(self, name: str) -> None:
        self.raw.delete(k.CANARY_ROLLOUTS, self.namespace, name)

    def wait(
        self,
        name: str,
        until: Callable[[dict[str, Any]], bool],
        message: str,
        timeout: float = 60,
    ) -> dict[str, Any]:
        return wait_for(
            lambda: self.status(name), until=until, timeout=timeout, message=f"{name}: {message}"
        )

    def wait_phase(
        self, name: str, phase: str, timeout: float = 60, **fields: Any
    ) -> dict[str, Any]:
        def done(status: dict[str, Any]) -> bool:
            return status.get("phase") == phase and all(
                status.get(key) == value for key, value in fields.items()
            )

        wanted = ", ".join(f"{k}={v}" for k, v in fields.items())
        return self.wait(name, done, f"phase {phase} {wanted}", timeout)

    def events(self, name: str) -> list[tuple[str, str]]:
        events = [
            e
            for e in self.raw.list(k.EVENTS, self.namespace)
            if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "CanaryRollout"
        ]
        # eventTime has microseconds (events.k8s.io); firstTimestamp only seconds.
        events.sort(
            key=lambda e: (
                e.get("eventTime") or e.get("firstTimestamp") or "",
                e["metadata"]["name"],
            )
        )
        return [(e.get("reason", ""), e.get("message", "")) for e in events]

    def reasons(self, name: str) -> list[str]:
        return [reason for reason, _ in self.events(name)]

    def deployments(self, name: str) -> dict[str, int]:
        items = self.raw.list(
            k.DEPLOYMENTS, self.namespace, label_selector=f"coalmine.dev/rollout={name}"
        )
        return {
            d["metadata"]["labels"]["coalmine.dev/revision"]: int(d["spec"].get("replicas", 0))
            for d in items
        }
