"""Every traffic router keeps the same promises against a real API server.

The test is parametrized over the registry itself, so a router added to ``ROUTERS`` without a
case here fails. For a weighted router it checks that ensure is idempotent (the second call
writes nothing), that every weight set reads back, that the user's routing object changes in
nothing but the weights, that finalizing restores the stable revision (or removes what the
router owns) and leaves the user's object alone, that ``restore_stable=False`` leaves the
router's objects to the garbage collector, and that a missing or foreign object is refused with
an error naming the spec field. For replicaRatio the weight is realised by ready pods, so the
test scales two revisions and reads the share back from the EndpointSlices.

The Istio and SMI CRDs are minimal stand-ins from tests/crds; they stay installed afterwards,
like the Gateway API CRDs the cluster launcher installs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coalmine import kube as k
from coalmine.kube import Kube, Obj, Resource
from coalmine.routers.base import RouterError, Target, ready_revisions
from coalmine.routers.registry import ROUTERS
from devenv import cluster
from devenv.waiting import wait_for

from .conftest import Cluster

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
CRDS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
WRITES = ("post", "put", "patch", "delete")
WEIGHTS = (0, 10, 50, 100, 30, 0)
STABLE, CANARY, ROOT = "shop-stable", "shop-canary", "shop"


# --- the user's objects, one builder per router ----------------------------------------------


def http_route(namespace: str) -> Obj:
    return {
        "apiVersion": k.HTTP_ROUTES.api_version,
        "kind": k.HTTP_ROUTES.kind,
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["shop.example"],
            "rules": [
                {
                    "backendRefs": [
                        {"name": STABLE, "port": 80, "weight": 100},
                        {"name": CANARY, "port": 80, "weight": 0},
                    ]
                }
            ],
        },
    }


def ingress(
    namespace: str, name: str = "shop", annotations: Mapping[str, str] | None = None
) -> Obj:
    return {
        "apiVersion": k.INGRESSES.api_version,
        "kind": k.INGRESSES.kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example"], "secretName": "shop-tls"}],
            "rules": [
                {
                    "host": "shop.example",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": STABLE, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def virtual_service(namespace: str) -> Obj:
    return {
        "apiVersion": k.VIRTUAL_SERVICES.api_version,
        "kind": k.VIRTUAL_SERVICES.kind,
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "hosts": ["shop.example"],
            "gateways": ["gw"],
            "http": [
                {
                    "name": "primary",
                    "match": [{"uri": {"prefix": "/shop"}}],
                    "route": [
                        {"destination": {"host": STABLE, "port": {"number": 80}}, "weight": 100},
                        {
                            "destination": {
                                "host": f"{CANARY}.{namespace}.svc.cluster.local",
                                "port": {"number": 80},
                            },
                            "weight": 0,
                        },
                    ],
                },
                {
                    "route": [
                        {"destination": {"host": "legacy.example.com"}, "weight": 70},
                        {"destination": {"host": "legacy-next.example.com"}, "weight": 30},
                    ]
                },
            ],
        },
    }


def foreign_traffic_split(namespace: str) -> Obj:
    return {
        "apiVersion": k.TRAFFIC_SPLITS.api_version,
        "kind": k.TRAFFIC_SPLITS.kind,
        "metadata": {"name": "foreign", "namespace": namespace},
        "spec": {"service": ROOT, "backends": [{"service": STABLE, "weight": 100}]},
    }


def _strip_backend_weights(route: Obj) -> Obj:
    for rule in route["spec"]["rules"]:
        for ref in rule.get("backendRefs") or []:
            ref.pop("weight", None)
    return route


def _strip_primary_weights(vs: Obj) -> Obj:
    for route in vs["spec"]["http"]:
        if route.get("name") == "primary":
            for destination in route["route"]:
                destination.pop("weight", None)
    return vs


# --- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A config the router must refuse, naming ``field``; ``setup`` makes the world for it."""

    config: Mapping[str, Any]
    field: str
    setup: Callable[[str], list[tuple[Resource, Obj]]] = lambda _: []
    """Objects to create first; they must survive the refusal and a finalize untouched."""


@dataclass(frozen=True)
class Case:
    config: Mapping[str, Any]
    user: Callable[[str], tuple[Resource, Obj]] | None = None
    strip: Callable[[Obj], Obj] = lambda obj: obj
    """The user's object without the weights the router may set."""
    owned: tuple[tuple[Resource, str], ...] = ()
    """Objects the router creates and owns."""
    refusals: tuple[Refusal, ...] = ()


def _foreign_canary_ingress(namespace: str) -> list[tuple[Resource, Obj]]:
    return [
        (k.INGRESSES, ingress(namespace, "other")),
        (
            k.INGRESSES,
            ingress(
                namespace,
                "other-canary",
                {"nginx.ingress.kubernetes.io/canary": "true"},
            ),
        ),
    ]


CASES: Mapping[str, Case] = {
    "replicaRatio": Case(config={}),
    "gatewayAPI": Case(
        config={"httpRoute": "shop"},
        user=lambda ns: (k.HTTP_ROUTES, http_route(ns)),
        strip=_strip_backend_weights,
        refusals=(Refusal({"httpRoute": "missing"}, "spec.trafficRouting.gatewayAPI.httpRoute"),),
    ),
    "nginx": Case(
        config={"ingress": "shop"},
        user=lambda ns: (k.INGRESSES, ingress(ns)),
        owned=((k.INGRESSES, "shop-canary"),),
        refusals=(
            Refusal({"ingress": "missing"}, "spec.trafficRouting.nginx.ingress"),
            Refusal(
                {"ingress": "other"},
                "spec.trafficRouting.nginx.ingress",
                setup=_foreign_canary_ingress,
            ),
        ),
    ),
    "istio": Case(
        config={"virtualService": "shop", "routes": ["primary"]},
        user=lambda ns: (k.VIRTUAL_SERVICES, virtual_service(ns)),
        strip=_strip_primary_weights,
        refusals=(
            Refusal(
                {"virtualService": "missing", "routes": ["primary"]},
                "spec.trafficRouting.istio.virtualService",
            ),
            Refusal(
                {"virtualService": "shop", "routes": ["primary", "absent"]},
                "spec.trafficRouting.istio.routes[1]",
            ),
        ),
    ),
    "smi": Case(
        config={"trafficSplit": "shop"},
        owned=((k.TRAFFIC_SPLITS, "shop"),),
        refusals=(
            Refusal(
                {"trafficSplit": "foreign"},
                "spec.trafficRouting.smi.trafficSplit",
                setup=lambda ns: [(k.TRAFFIC_SPLITS, foreign_traffic_split(ns))],
            ),
        ),
    ),
}


# --- fixtures and helpers ----------------------------------------------------------------------


def _established(api: Kube, name: str) -> bool:
    crd = api.get(CRDS, None, name) or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


@pytest.fixture(scope="module")
def test_crds(kube: Cluster) -> None:
    """The minimal Istio and SMI CRDs, established and served."""
    api = Kube(kube.api)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(path))
    for resource in (k.VIRTUAL_SERVICES, k.TRAFFIC_SPLITS):
        name = f"{resource.plural}.{resource.group}"
        wait_for(
            functools.partial(_established, api, name),
            timeout=30,
            message=f"CRD {name} to be Established",
        )
        wait_for(
            functools.partial(api.list, resource, "default"),
            until=lambda _: True,
            timeout=30,
            message=f"the API server to serve {resource.plural}",
        )


def _writes(api: Kube) -> int:
    counts = api.request_counts()
    return sum(counts.get(verb, 0) for verb in WRITES)


def _service(namespace: str, name: str, selector: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def _deployment(namespace: str, revision: str, replicas: int) -> Obj:
    labels = {"app": "shop", "coalmine.dev/revision": revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"shop-{revision}", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/x:1",
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ]
                },
            },
        },
    }


def _view(obj: Obj | None, strip: Callable[[Obj], Obj]) -> Obj | None:
    """The object as compared across writes: no server bookkeeping, no router-set weights."""
    if obj is None:
        return None
    obj = copy.deepcopy(obj)
    for key in ("resourceVersion", "generation", "managedFields"):
        obj["metadata"].pop(key, None)
    return strip(obj)


@dataclass
class World:
    api: Kube
    namespace: str
    target: Target
    case: Case
    user: tuple[Resource, str] | None = None
    user_before: Obj | None = None

    def user_now(self) -> Obj | None:
        if self.user is None:
            return None
        return _view(self.api.get(self.user[0], self.namespace, self.user[1]), self.case.strip)

    def owned_gone(self) -> bool:
        return all(self.api.get(r, self.namespace, n) is None for r, n in self.case.owned)


def _world(api: Kube, namespace: str, case_name: str, case: Case) -> World:
    owner = api.create(
        CONFIG_MAPS,
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    owner_ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
    api.create(k.SERVICES, namespace, _service(namespace, ROOT, {"app": "shop"}))
    for name, revision in ((STABLE, "rev1"), (CANARY, "rev2")):
        selector = {"app": "shop", "coalmine.dev/revision": revision}
        api.create(k.SERVICES, namespace, _service(namespace, name, selector))
    target = Target(
        namespace=namespace,
        rollout="shop",
        owner=owner_ref,
        root_service=ROOT,
        stable_service=STABLE,
        canary_service=CANARY,
        port=80,
        stable_revision="rev1",
        canary_revision="rev2",
        config=ROUTERS[case_name].config.model_validate(case.config),
    )
    world = World(api=api, namespace=namespace, target=target, case=case)
    if case.user is not None:
        resource, body = case.user(namespace)
        api.create(resource, namespace, body)
        world.user = (resource, body["metadata"]["name"])
        world.user_before = world.user_now()
    return world


# --- the contract ------------------------------------------------------------------------------


def _weighted_contract(name: str, w: World) -> None:
    router, api, target = ROUTERS[name].router, w.api, w.target
    assert router.read_weight(api, target) == 0, "a fresh ensure starts on the stable revision"
    for weight in WEIGHTS:
        router.set_weight(api, target, weight)
        assert router.read_weight(api, target) == weight
        assert w.user_now() == w.user_before, "only the weights of the user's object may change"

    router.set_weight(api, target, 40)
    router.finalize(api, target, restore_stable=True)
    if w.case.owned:
        wait_for(w.owned_gone, timeout=10, message=f"{name} to delete what it owns")
    else:
        assert router.read_weight(api, target) == 0
    assert w.user_now() == w.user_before, "finalize must leave the user's object as it was"
    router.finalize(api, target, restore_stable=True)  # a second finalize finds nothing to do

    # Without restore_stable, the weight stays: ownerReferences clean up owned objects.
    router.ensure(api, target)
    router.set_weight(api, target, 20)
    router.finalize(api, target, restore_stable=False)
    assert router.read_weight(api, target) == 20
    if w.case.owned:
        api.delete(CONFIG_MAPS, w.namespace, "owner")
        wait_for(
            w.owned_gone,
            timeout=30,
            message=f"the garbage collector to delete {name}'s objects with their owner",
        )
    assert w.user_now() == w.user_before


def _wait_for_share(w: World, *, pods: int, expected: int) -> None:
    def seen() -> tuple[int, int | None]:
        ready = ready_revisions(w.api, w.namespace, ROOT)
        return sum(ready.values()), ROUTERS["replicaRatio"].router.read_weight(w.api, w.target)

    wait_for(
        seen,
        until=lambda value: value == (pods, expected),
        timeout=30,
        message=f"{pods} ready endpoints behind Service {ROOT}, {expected}% of them canary",
    )


def _replica_ratio_contract(name: str, w: World) -> None:
    router, api, target, ns = ROUTERS[name].router, w.api, w.target, w.namespace
    api.create(k.DEPLOYMENTS, ns, _deployment(ns, "rev1", 4))
    api.create(k.DEPLOYMENTS, ns, _deployment(ns, "rev2", 0))
    for stable, canary, expected in ((4, 0, 0), (3, 1, 25), (2, 2, 50)):
        for revision, replicas in (("rev1", stable), ("rev2", canary)):
            api.patch(k.DEPLOYMENTS, ns, f"shop-{revision}", {"spec": {"replicas": replicas}})
        _wait_for_share(w, pods=4, expected=expected)
    # Replica counts realise the weight: setting one and finalizing change nothing by themselves.
    router.set_weight(api, target, 90)
    router.finalize(api, target, restore_stable=True)
    assert router.read_weight(api, target) == 50
    assert api.get(k.DEPLOYMENTS, ns, "shop-rev2") is not None


def _refusals(name: str, w: World) -> None:
    router, api = ROUTERS[name].router, w.api
    for refusal in w.case.refusals:
        target = dataclasses.replace(
            w.target, config=ROUTERS[name].config.model_validate(refusal.config)
        )
        kept = [
            (resource, api.create(resource, w.namespace, body))
            for resource, body in refusal.setup(w.namespace)
        ]
        with pytest.raises(RouterError) as refused:
            router.ensure(api, target)
        assert refused.value.field == refusal.field, refused.value
        router.finalize(api, target, restore_stable=True)
        for resource, before in kept:
            now = api.get(resource, w.namespace, before["metadata"]["name"])
            assert now is not None, "a refused router must not delete objects it does not own"
            assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.usefixtures("test_crds")
@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_router_contract(name: str, kube: Cluster, namespace: str) -> None:
    assert set(ROUTERS) == set(CASES), "every router in the registry needs a case here"
    router, case = ROUTERS[name].router, CASES[name]
    api = Kube(kube.api)
    w = _world(api, namespace, name, case)

    router.ensure(api, w.target)
    writes = _writes(api)
    router.ensure(api, w.target)
    assert _writes(api) == writes, "a second ensure must find nothing to write"

    if ROUTERS[name].config.weighted:
        _weighted_contract(name, w)
    else:
        _replica_ratio_contract(name, w)
    _refusals(name, w)
