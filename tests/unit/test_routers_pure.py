"""The routers' pure parts: weights, Istio host matching and routes, the NGINX canary Ingress,
patches of owned objects and SMI backends. The API round trips are in the integration contract
test; these pin down the shapes and the refusals without a cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from coalmine.resources import Obj
from coalmine.routers import base, istio, nginx, smi
from coalmine.routers.base import RouterError, Target, percentage, split
from coalmine.routers.replica_ratio import ReplicaRatioRouting

OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1", "controller": True}


def target(**config: Any) -> Target:
    """A Target whose trafficRouting block is the router's model, validated as the spec is."""
    model: type[base.RoutingConfig] = ReplicaRatioRouting
    for key, candidate in (
        ("virtualService", istio.IstioRouting),
        ("ingress", nginx.NginxRouting),
        ("trafficSplit", smi.SMIRouting),
    ):
        if key in config:
            model = candidate
    return Target(
        namespace="shop-ns",
        rollout="shop",
        owner=OWNER,
        root_service="shop",
        stable_service="shop-stable",
        canary_service="shop-canary",
        port=80,
        config=model.model_validate(config),
    )


# --- split and percentage ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "expected"),
    [(0, (100, 0)), (30, (70, 30)), (100, (0, 100)), (-5, (100, 0)), (150, (0, 100))],
)
def test_split_clamps_to_a_percentage(weight: int, expected: tuple[int, int]) -> None:
    assert split(weight) == expected


@pytest.mark.parametrize(
    ("stable", "canary", "expected"),
    [(100, 0, 0), (70, 30, 30), (1, 1, 50), (3, 1, 25), (0, 0, None)],
)
def test_percentage(stable: int, canary: int, expected: int | None) -> None:
    assert percentage(stable, canary) == expected


def test_split_reads_back_as_itself() -> None:
    assert all(percentage(*split(weight)) == weight for weight in range(101))


# --- Istio ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "shop-stable",
        "shop-stable.shop-ns",
        "shop-stable.shop-ns.svc",
        "shop-stable.shop-ns.svc.cluster.local",
        "shop-stable.shop-ns.svc.cluster.local.",
        "Shop-Stable.Shop-NS.svc",
    ],
)
def test_host_matches_every_spelling_of_the_service(host: str) -> None:
    assert istio.host_matches(host, "shop-stable", "shop-ns")


@pytest.mark.parametrize(
    "host",
    [
        "shop-stable.other-ns",
        "shop-stable.other-ns.svc.cluster.local",
        "shop-stable-x",
        "shop-stable.shop-ns.svc.example.org",
        "shop-stable.shop-ns.cluster.local",
        "*.shop-ns.svc.cluster.local",
        "",
        None,
        42,
    ],
)
def test_host_does_not_match_other_services(host: object) -> None:
    assert not istio.host_matches(host, "shop-stable", "shop-ns")


def destination(host: str, weight: int | None = None) -> Obj:
    out: Obj = {"destination": {"host": host, "port": {"number": 80}}}
    if weight is not None:
        out["weight"] = weight
    return out


def virtual_service(*http: Obj) -> Obj:
    return {"metadata": {"name": "vs"}, "spec": {"hosts": ["shop"], "http": list(http)}}


def primary(*destinations: Obj, name: str = "primary") -> Obj:
    return {"name": name, "route": list(destinations)}


def test_find_routes_locates_the_destinations_of_each_named_route() -> None:
    vs = virtual_service(
        {"route": [destination("legacy")]},
        primary(destination("shop-canary.shop-ns.svc", 0), destination("shop-stable", 100)),
        primary(destination("shop-stable", 90), destination("shop-canary", 10), name="api"),
    )
    refs = istio.find_routes(vs, target(virtualService="vs", routes=["primary", "api", "primary"]))
    assert refs == [
        istio.RouteRef(1, "primary", 1, 0, "shop-stable", "shop-canary.shop-ns.svc"),
        istio.RouteRef(2, "api", 0, 1, "shop-stable", "shop-canary"),
    ]
    assert istio.routed_weight(vs, refs) is None  # 0 % and 10 %: the routes disagree


@pytest.mark.parametrize(
    ("http", "routes", "field", "reason"),
    [
        ([], ["primary"], "routes[0]", "no HTTP route named 'primary'"),
        (
            [primary(destination("shop-stable", 100), destination("shop-canary", 0))],
            ["primary", "other"],
            "routes[1]",
            "no HTTP route named 'other'",
        ),
        ([primary(destination("shop-stable", 100))], ["primary"], "routes[0]", "shop-canary"),
        ([primary(destination("shop-canary", 100))], ["primary"], "routes[0]", "shop-stable"),
        (
            [
                primary(
                    destination("shop-stable", 50),
                    destination("shop-canary", 0),
                    destination("shop-stable.shop-ns", 50),
                )
            ],
            ["primary"],
            "routes[0]",
            "exactly once (found 2)",
        ),
        (
            [
                primary(
                    destination("shop-stable", 80),
                    destination("shop-canary", 0),
                    destination("mirror", 20),
                )
            ],
            ["primary"],
            "routes[0]",
            "also sends to 'mirror'",
        ),
        ([primary()], ["primary"], "routes[0]", "shop-stable"),
    ],
)
def test_find_routes_refuses_routes_it_cannot_weight(
    http: list[Obj], routes: object, field: str, reason: str
) -> None:
    with pytest.raises(RouterError) as refused:
        istio.find_routes(virtual_service(*http), target(virtualService="vs", routes=routes))
    assert refused.value.field == f"spec.trafficRouting.istio.{field}"
    assert reason in refused.value.reason


def test_weight_patch_tests_what_it_relies_on_before_setting_weights() -> None:
    refs = [istio.RouteRef(3, "primary", 1, 0, "shop-stable", "shop-canary.shop-ns")]
    assert istio.weight_patch(refs, 30) == [
        {"op": "test", "path": "/spec/http/3/name", "value": "primary"},
        {"op": "test", "path": "/spec/http/3/route/1/destination/host", "value": "shop-stable"},
        {
            "op": "test",
            "path": "/spec/http/3/route/0/destination/host",
            "value": "shop-canary.shop-ns",
        },
        {"op": "add", "path": "/spec/http/3/route/1/weight", "value": 70},
        {"op": "add", "path": "/spec/http/3/route/0/weight", "value": 30},
    ]


@pytest.mark.parametrize(
    ("stable", "canary", "expected"),
    [(100, 0, 0), (75, 25, 25), (None, 100, 100), (None, None, None), ("50", 50, None)],
)
def test_routed_weight_reads_the_destinations(
    stable: object, canary: object, expected: int | None
) -> None:
    route = primary(destination("shop-stable"), destination("shop-canary"))
    for dest, weight in zip(route["route"], (stable, canary), strict=True):
        if weight is not None:
            dest["weight"] = weight
    vs = virtual_service(route)
    refs = istio.find_routes(vs, target(virtualService="vs", routes=["primary"]))
    assert istio.routed_weight(vs, refs) == expected


def test_holds_only_when_every_route_has_exactly_the_weights() -> None:
    vs = virtual_service(
        primary(destination("shop-stable", 70), destination("shop-canary", 30)),
        primary(destination("shop-stable", 70), destination("shop-canary", 30), name="api"),
    )
    refs = istio.find_routes(vs, target(virtualService="vs", routes=["primary", "api"]))
    assert istio.holds(vs, refs, 30)
    assert not istio.holds(vs, refs, 31)
    vs["spec"]["http"][1]["route"][0]["weight"] = 7  # reads as 30 % too, but is not what we set
    vs["spec"]["http"][1]["route"][1]["weight"] = 3
    assert istio.routed_weight(vs, refs) == 30
    assert not istio.holds(vs, refs, 30)


# --- NGINX ------------------------------------------------------------------------------------


def backend(service: str, port: int = 80) -> Obj:
    return {"service": {"name": service, "port": {"number": port}}}


def user_ingress(**spec: Any) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "shop-ns", "uid": "user-uid"},
        "spec": spec,
    }


TLS = [{"hosts": ["shop.example"], "secretName": "shop-tls"}]
RULES = [
    {
        "host": "shop.example",
        "http": {
            "paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("shop-stable")},
                {"path": "/static", "pathType": "Prefix", "backend": backend("static")},
            ]
        },
    },
    {"host": "admin.example", "http": {"paths": [{"path": "/", "backend": backend("admin")}]}},
    {
        "host": "api.example",
        "http": {"paths": [{"path": "/v1", "backend": backend("shop-stable")}]},
    },
]


def test_canary_ingress_retargets_the_stable_backends_and_keeps_the_rest_of_the_rules() -> None:
    user = user_ingress(ingressClassName="nginx", tls=TLS, rules=RULES)
    before = copy.deepcopy(user)
    canary = nginx.canary_ingress(user, target(ingress="shop"), 25)
    assert user == before, "the user's Ingress is read, never changed"
    assert canary["metadata"] == {
        "name": "shop-canary",
        "namespace": "shop-ns",
        "labels": {"app.kubernetes.io/managed-by": "coalmine", "coalmine.dev/rollout": "shop"},
        "ownerReferences": [OWNER],
        "annotations": {
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": "25",
        },
    }
    assert canary["spec"] == {
        "ingressClassName": "nginx",
        "tls": TLS,
        "rules": [
            {
                "host": "shop.example",
                "http": {
                    "paths": [
                        {"path": "/", "pathType": "Prefix", "backend": backend("shop-canary")}
                    ]
                },
            },
            {
                "host": "api.example",
                "http": {"paths": [{"path": "/v1", "backend": backend("shop-canary")}]},
            },
        ],
    }


def test_canary_ingress_follows_a_default_backend_and_the_legacy_class_annotation() -> None:
    user = user_ingress(defaultBackend=backend("shop-stable", 8080))
    user["metadata"]["annotations"] = {
        "kubernetes.io/ingress.class": "nginx-internal",
        "nginx.ingress.kubernetes.io/rewrite-target": "/",
    }
    canary = nginx.canary_ingress(user, target(ingress="shop"), 0)
    assert canary["spec"] == {"defaultBackend": backend("shop-canary", 8080)}
    assert canary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "0",
        "kubernetes.io/ingress.class": "nginx-internal",
    }


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"rules": [{"host": "a", "http": {"paths": [{"path": "/", "backend": backend("x")}]}}]},
        {"rules": [{"host": "a"}], "defaultBackend": backend("x")},
        {"defaultBackend": {"resource": {"kind": "Bucket", "name": "shop-stable"}}},
    ],
)
def test_canary_ingress_refuses_an_ingress_without_a_stable_backend(spec: Obj) -> None:
    with pytest.raises(RouterError) as refused:
        nginx.canary_spec(user_ingress(**spec), target(ingress="shop"))
    assert refused.value.field == "spec.trafficRouting.nginx.ingress"
    assert "shop-stable" in refused.value.reason


def test_canary_name_must_fit_an_object_name() -> None:
    assert nginx.canary_name(target(ingress="a" * 246)) == "a" * 246 + "-canary"
    with pytest.raises(RouterError):
        nginx.canary_name(target(ingress="a" * 247))


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "30",
            },
            30,
        ),
        (
            {
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "0",
            },
            0,
        ),
        (
            {
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "x",
            },
            None,
        ),
        (
            {
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "101",
            },
            None,
        ),
        ({"nginx.ingress.kubernetes.io/canary": "true"}, None),
        ({"nginx.ingress.kubernetes.io/canary-weight": "30"}, None),
        (None, None),
    ],
)
def test_annotated_weight(annotations: dict[str, str] | None, expected: int | None) -> None:
    assert nginx.annotated_weight({"metadata": {"annotations": annotations}}) == expected


def test_pointer_escapes_keys() -> None:
    assert base.pointer("metadata", "labels", "a.io/b~c") == "/metadata/labels/a.io~1b~0c"


def test_owned_patch_is_empty_when_in_sync() -> None:
    desired = nginx.canary_ingress(user_ingress(rules=RULES), target(ingress="shop"), 10)
    current = copy.deepcopy(desired)
    current["metadata"].update(uid="c-1", resourceVersion="7")
    current["metadata"]["labels"]["team"] = "web"  # someone else's label stays
    current["metadata"]["annotations"]["note"] = "hi"
    assert base.owned_patch(current, desired) == []


def test_owned_patch_sets_only_what_differs_after_testing_the_uid() -> None:
    tgt = target(ingress="shop")
    current = nginx.canary_ingress(user_ingress(rules=RULES), tgt, 10)
    current["metadata"]["uid"] = "c-1"
    del current["metadata"]["labels"]
    desired = nginx.canary_ingress(user_ingress(rules=RULES[:1], tls=TLS), tgt, 40)
    assert base.owned_patch(current, desired) == [
        {"op": "test", "path": "/metadata/uid", "value": "c-1"},
        {"op": "add", "path": "/metadata/labels", "value": desired["metadata"]["labels"]},
        {
            "op": "add",
            "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1canary-weight",
            "value": "40",
        },
        {"op": "add", "path": "/spec", "value": desired["spec"]},
    ]


def test_owned_patch_restores_the_owner_reference() -> None:
    desired = smi.traffic_split(target(trafficSplit="shop"), 0)
    current = copy.deepcopy(desired)
    current["metadata"]["ownerReferences"] = []
    assert base.owned_patch(current, desired)[1:] == [
        {"op": "add", "path": "/metadata/ownerReferences", "value": [OWNER]}
    ]


def test_belongs_to_needs_our_label_and_this_rollout() -> None:
    ours = smi.traffic_split(target(trafficSplit="shop"), 0)
    assert base.belongs_to(ours, target())
    other_rollout = copy.deepcopy(ours)
    other_rollout["metadata"]["labels"]["coalmine.dev/rollout"] = "cart"
    assert not base.belongs_to(other_rollout, target())
    assert not base.belongs_to({"metadata": {"name": "shop"}}, target())


# --- SMI --------------------------------------------------------------------------------------


def test_traffic_split_sends_the_root_service_to_stable_and_canary() -> None:
    split_obj = smi.traffic_split(target(trafficSplit="shop-split"), 30)
    assert split_obj["apiVersion"] == "split.smi-spec.io/v1alpha4"
    assert split_obj["kind"] == "TrafficSplit"
    assert split_obj["metadata"]["name"] == "shop-split"
    assert split_obj["metadata"]["ownerReferences"] == [OWNER]
    assert split_obj["spec"] == {
        "service": "shop",
        "backends": [
            {"service": "shop-stable", "weight": 70},
            {"service": "shop-canary", "weight": 30},
        ],
    }
    assert smi.split_weight(split_obj, target()) == 30


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        ([{"service": "shop-canary", "weight": 1}, {"service": "shop-stable", "weight": 3}], 25),
        ([{"service": "shop-stable", "weight": 0}, {"service": "shop-canary", "weight": 0}], None),
        ([{"service": "shop-stable", "weight": 100}], None),
        (
            [
                {"service": "shop-stable", "weight": 50},
                {"service": "shop-canary", "weight": 50},
                {"service": "mirror", "weight": 0},
            ],
            None,
        ),
        (
            [{"service": "shop-stable", "weight": 50}, {"service": "shop-stable", "weight": 50}],
            None,
        ),
        (
            [{"service": "shop-stable", "weight": "90"}, {"service": "shop-canary", "weight": 10}],
            None,
        ),
        (
            [{"service": "shop-stable", "weight": True}, {"service": "shop-canary", "weight": 1}],
            None,
        ),
        ([{"service": "shop-stable", "weight": -1}, {"service": "shop-canary", "weight": 1}], None),
        (None, None),
    ],
)
def test_split_weight_needs_exactly_the_two_services(
    backends: list[Obj] | None, expected: int | None
) -> None:
    assert smi.split_weight({"spec": {"backends": backends}}, target()) == expected
