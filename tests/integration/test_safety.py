"""Issue 9 on the real cluster: each defect a fault-injection run found, one test per item.

Items 1, 2, 3 and 9 are also pinned in the pure machine (tests/unit/test_safety_machine.py);
here the operator runs as users run it, against the real API server. The crash, outage and
hostile-input suites of items 10-12 live in test_faults.py and test_hostile.py.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from coalmine import resources as r
from coalmine.api.resource import CanaryRollout
from devenv import paths
from devenv.manifests import deployment, traffic_routing

from .conftest import Cluster
from .rollouts import ROUTERS, Rollouts, condition, manifest, template, user_routing_object

pytestmark = pytest.mark.usefixtures("operator")

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]


def blocked(rollouts: Rollouts, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
    """Wait for Ready=False with ``reason``; returns that condition."""
    status = rollouts.wait(
        name,
        lambda s: (
            condition(s, "Ready").get("reason") == reason
            and condition(s, "Ready").get("status") == "False"
        ),
        f"Ready=False with reason {reason}",
        timeout=timeout,
    )
    return condition(status, "Ready")


def wait_available(rollouts: Rollouts) -> None:
    """Available reads the stable Service's endpoints, which follow its new selector a moment
    after a promotion switched it (the EndpointSlice controller's update wakes the rollout)."""
    rollouts.wait(
        "shop",
        lambda s: condition(s, "Available").get("status") == "True",
        "Available=True once the stable Service's endpoints follow the promotion",
        timeout=30,
    )


def warnings(rollouts: Rollouts, name: str, reason: str) -> list[str]:
    return [message for kind, message in rollouts.events(name) if kind == reason]


# --- item 2 ----------------------------------------------------------------------------------


def test_item_2_one_replica_at_half_weight_keeps_a_stable_pod(rollouts: Rollouts) -> None:
    """Replica ratio, replicas 1, setWeight 50: the canary got the one pod and the stable none,
    so the confirmed weight was 100 at a 50% step."""
    rollouts.create(manifest("shop", "v1", replicas=1, steps=STEPS))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    rollouts.set_template("shop", "v2")
    paused = rollouts.wait_phase("shop", "Paused")
    assert paused["confirmedWeight"] == 50
    assert rollouts.deployments("shop") == {stable: 1, paused["canaryRevision"]: 1}


def test_item_2_zero_replicas_then_a_canary_never_stalls(rollouts: Rollouts) -> None:
    """replicas: 0 then a canary computed a stable size of -1, refused with a 422, stuck."""
    rollouts.create(manifest("shop", "v1", replicas=0, steps=STEPS))
    rollouts.wait_phase("shop", "Healthy")
    rollouts.set_template("shop", "v2")
    paused = rollouts.wait_phase("shop", "Paused")
    assert set(rollouts.deployments("shop").values()) == {0}
    assert condition(paused, "Ready")["status"] == "True"


# --- item 3 ----------------------------------------------------------------------------------


def canary_beside_a_stable_that_never_serves(
    rollouts: Rollouts, body: dict[str, Any]
) -> dict[str, Any]:
    """Creates ``body`` with a first template that never listens, then a good one; checks that
    Available=False and every StableUnavailable warning name the stable revision. The status
    once the good canary paused at its first step, not aborted."""
    body["spec"]["template"] = template("v1", DEMO_ERROR_RATE="not-a-rate")  # never listens
    rollouts.create(body)
    status = rollouts.wait(
        "shop",
        lambda s: condition(s, "Available").get("status") == "False",
        "Available=False while the stable serves nothing",
    )
    stable = status["stableRevision"]
    assert stable in condition(status, "Available")["message"]
    rollouts.set_template("shop", "v2")
    paused = rollouts.wait_phase("shop", "Paused", timeout=90)
    assert "abortReason" not in paused, paused.get("abortMessage")
    messages = warnings(rollouts, "shop", "StableUnavailable")
    assert messages
    assert all(stable in message for message in messages), "it names the stable revision"
    return paused


def test_item_3_a_bad_stable_revision_is_named_and_a_good_canary_goes_on(
    rollouts: Rollouts,
) -> None:
    """The stable revision never got ready; a good template came; the canary was aborted with a
    message naming the stable, and Available said True with no ready endpoint."""
    body = manifest("shop", "v1", steps=STEPS, progressDeadlineSeconds=15)
    paused = canary_beside_a_stable_that_never_serves(rollouts, body)
    rollouts.control("shop", "promote")
    rollouts.wait_phase("shop", "Healthy", stableRevision=paused["canaryRevision"])
    wait_available(rollouts)


def test_item_3_a_bad_stable_revision_behind_a_router_does_not_hold_a_good_canary(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """Issue 13, item 6, with a router: the canary's weight needs only its own ready pods, so
    nothing waits for a stable that never gets ready; events and Available name the stable."""
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    body = manifest("shop", "v1", router="gatewayAPI", steps=STEPS, progressDeadlineSeconds=15)
    paused = canary_beside_a_stable_that_never_serves(rollouts, body)
    assert paused["confirmedWeight"] == 50
    assert condition(paused, "Available")["status"] == "False", "the stable still serves nothing"
    rollouts.control("shop", "promote")
    rollouts.wait_phase("shop", "Healthy", stableRevision=paused["canaryRevision"])
    wait_available(rollouts)


# --- item 4 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ROUTERS)
def test_item_4_a_63_character_name_rolls_out_on_every_router(
    kube: Cluster, namespace: str, rollouts: Rollouts, router: str
) -> None:
    """Pod names are cut to 58 characters; the revision was parsed back from them, so a long
    rollout's canary endpoints were never counted (stuck, or aborted on the deadline)."""
    name = "long-" + "x" * 57 + "z"
    assert len(name) == 63
    user_routing_object(kube, namespace, router, "shop")
    body = manifest(name, "v1", router=router, steps=STEPS)
    body["spec"]["service"]["name"] = "shop"
    traffic = traffic_routing(router, "shop")
    if traffic is not None:
        body["spec"]["trafficRouting"] = traffic
    rollouts.create(body)
    rollouts.wait_phase(name, "Healthy")
    rollouts.set_template(name, "v2")
    paused = rollouts.wait_phase(name, "Paused", timeout=90)
    assert paused["confirmedWeight"] == 50
    rollouts.control(name, "promote")
    rollouts.wait_phase(name, "Healthy", stableRevision=paused["canaryRevision"], timeout=90)


# --- item 5 ----------------------------------------------------------------------------------


@pytest.fixture
def other_namespace(kube: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.raw.create(
        r.Resource("", "v1", "namespaces", "Namespace", False),
        None,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    kube.raw.delete(r.Resource("", "v1", "namespaces", "Namespace", False), None, name)


def test_item_5_a_route_in_another_namespace_needs_a_reference_grant(
    kube: Cluster, namespace: str, other_namespace: str, rollouts: Rollouts
) -> None:
    """A rollout in namespace A naming an HTTPRoute in namespace B rewrote B's weights."""
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": other_namespace},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "shop-stable", "namespace": namespace, "port": 80, "weight": 100},
                        {"name": "shop-canary", "namespace": namespace, "port": 80, "weight": 0},
                    ]
                }
            ],
        },
    }
    kube.raw.create(r.HTTP_ROUTES, other_namespace, route)
    body = manifest("shop", "v1", router="gatewayAPI", steps=STEPS)
    body["spec"]["trafficRouting"] = {
        "gatewayAPI": {"httpRoute": "shop", "namespace": other_namespace}
    }
    rollouts.create(body)
    refused = blocked(rollouts, "shop", "RouterError")
    assert "ReferenceGrant" in refused["message"]
    assert "spec.trafficRouting.gatewayAPI.namespace" in refused["message"]
    before = kube.raw.get(r.HTTP_ROUTES, other_namespace, "shop") or {}
    rollouts.set_template("shop", "v2")
    time.sleep(3)
    after = kube.raw.get(r.HTTP_ROUTES, other_namespace, "shop") or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "no write to the other namespace's route without a grant"
    )
    kube.raw.create(
        r.REFERENCE_GRANTS,
        other_namespace,
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "coalmine", "namespace": other_namespace},
            "spec": {
                "from": [
                    {"group": "coalmine.dev", "kind": "CanaryRollout", "namespace": namespace}
                ],
                "to": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
            },
        },
    )
    paused = rollouts.wait_phase("shop", "Paused", timeout=60)
    assert paused["confirmedWeight"] == 50
    routed = kube.raw.get(r.HTTP_ROUTES, other_namespace, "shop") or {}
    weights = {ref["name"]: ref["weight"] for ref in routed["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"shop-stable": 50, "shop-canary": 50}


def test_item_5_a_service_another_rollout_manages_is_refused_on_the_newcomer(
    rollouts: Rollouts,
) -> None:
    """Two rollouts naming the same Service silently shared it, both reporting Healthy."""
    rollouts.create(manifest("first", "v1", steps=STEPS))
    rollouts.wait_phase("first", "Healthy")
    second = manifest("second", "v1", steps=STEPS)
    second["spec"]["service"]["name"] = "first"
    rollouts.create(second)
    refused = blocked(rollouts, "second", "OwnershipConflict")
    assert "CanaryRollout" in refused["message"]
    assert "first" in refused["message"]
    assert rollouts.status("first")["phase"] == "Healthy"
    rollouts.set_template("first", "v2")
    rollouts.wait_phase("first", "Paused")  # the owner is not disturbed


def test_item_5_a_route_another_rollout_routes_through_is_refused_on_the_newcomer(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """Two rollouts weighting backends of one HTTPRoute would each set weights the other's
    share depends on: the older keeps the route, the newcomer is refused and writes nothing."""
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    rollouts.create(manifest("shop", "v1", router="gatewayAPI", steps=STEPS))
    rollouts.wait_phase("shop", "Healthy")
    # The user lists the second rollout's Services in the same rule: weights set by either
    # would change the other's share of the rule's traffic.
    route = kube.raw.get(r.HTTP_ROUTES, namespace, "shop") or {}
    for ref in list(route["spec"]["rules"][0]["backendRefs"]):
        route["spec"]["rules"][0]["backendRefs"].append(
            {**ref, "name": ref["name"].replace("shop-", "second-"), "weight": 0}
        )
    before = kube.raw.patch(r.HTTP_ROUTES, namespace, "shop", {"spec": route["spec"]})
    second = manifest("second", "v1", router="gatewayAPI", steps=STEPS)
    second["spec"]["trafficRouting"] = traffic_routing("gatewayAPI", "shop")
    rollouts.create(second)
    refused = blocked(rollouts, "second", "OwnershipConflict")
    assert f"HTTPRoute {namespace}/shop" in refused["message"]
    assert f"CanaryRollout {namespace}/shop" in refused["message"]
    after = kube.raw.get(r.HTTP_ROUTES, namespace, "shop") or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    rollouts.set_template("shop", "v2")
    rollouts.wait_phase("shop", "Paused")  # the owner is not disturbed


# --- item 6 ----------------------------------------------------------------------------------

HOSTILE: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (spec changes, Ready reason, the field or object the message names)
    "port-as-a-word": (
        {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "x:1", "ports": [{"containerPort": "http"}]}
                    ]
                }
            }
        },
        "InvalidSpec",
        "spec.template.spec.containers[0].ports[0].containerPort",
    ),
    "label-value-refused": (
        {
            "template": {
                "metadata": {"labels": {"app": "not a label value!"}},
                "spec": {"containers": [{"name": "app", "image": "x:1"}]},
            }
        },
        "InvalidSpec",
        "spec.template.metadata.labels[app]",
    ),
    "template-too-large": (
        {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "x:1",
                            "env": [{"name": "BIG", "value": "x" * 140_000}],
                        }
                    ]
                }
            }
        },
        "InvalidSpec",
        "spec.template",
    ),
    "nginx-ingress-missing": (
        {"trafficRouting": {"nginx": {"ingress": "absent"}}},
        "RouterError",
        "Ingress",
    ),
    "smi-split-not-ours": (
        {"trafficRouting": {"smi": {"trafficSplit": "foreign"}}},
        "RouterError",
        "TrafficSplit",
    ),
}


def _foreign_objects(kube: Cluster, namespace: str) -> None:
    kube.raw.create(
        r.TRAFFIC_SPLITS,
        namespace,
        {
            "apiVersion": "split.smi-spec.io/v1alpha4",
            "kind": "TrafficSplit",
            "metadata": {"name": "foreign"},
            "spec": {"service": "x", "backends": [{"service": "x", "weight": 100}]},
        },
    )


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_item_6_a_failure_ends_as_a_condition_and_one_event(
    kube: Cluster, namespace: str, rollouts: Rollouts, case: str
) -> None:
    """Accepted by the API server, yet unusable: a traceback every 5 s, and no phase, condition
    or event. Now: Ready=False naming the field or object, one Warning event, a growing backoff,
    and a healthy rollout beside it goes on."""
    _foreign_objects(kube, namespace)
    changes, reason, names = HOSTILE[case]
    rollouts.create(manifest("healthy", "v1", steps=STEPS))
    body = manifest("hostile", "v1", steps=STEPS)
    body["spec"].update(changes)
    rollouts.create(body)
    refused = blocked(rollouts, "hostile", reason)
    assert names in refused["message"], refused
    rollouts.set_template("healthy", "v2")
    rollouts.wait_phase("healthy", "Paused")
    time.sleep(6)  # a few retries' worth
    assert len(warnings(rollouts, "hostile", reason)) == 1, rollouts.events("hostile")


def test_item_6_a_service_not_owned_by_coalmine_is_refused(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    kube.raw.create(
        r.SERVICES,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop"},
            "spec": {"selector": {"app": "elsewhere"}, "ports": [{"port": 80}]},
        },
    )
    rollouts.create(manifest("shop", "v1", steps=STEPS))
    refused = blocked(rollouts, "shop", "OwnershipConflict")
    assert "not managed by coalmine" in refused["message"]
    service = kube.raw.get(r.SERVICES, namespace, "shop") or {}
    assert service["spec"]["selector"] == {"app": "elsewhere"}, "never taken over"


def test_item_6_a_deployment_not_owned_by_coalmine_under_a_revisions_name_is_refused(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """Someone else's Deployment named like the next revision's: never taken over."""
    rollouts.create(manifest("shop", "v1", steps=STEPS))
    rollouts.wait_phase("shop", "Healthy")
    v2 = manifest("shop", "v2", steps=STEPS)
    revision = CanaryRollout.from_object(v2).spec.revision
    foreign = deployment(f"shop-{revision}", "registry.example/foreign:1", 1)
    kube.raw.create(r.DEPLOYMENTS, namespace, foreign)
    rollouts.set_template("shop", "v2")
    refused = blocked(rollouts, "shop", "OwnershipConflict")
    assert f"Deployment shop-{revision}" in refused["message"]
    assert "not managed by coalmine" in refused["message"]
    kept = kube.raw.get(r.DEPLOYMENTS, namespace, f"shop-{revision}") or {}
    assert (
        kept["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/foreign:1"
    )
    assert rollouts.status("shop")["stableRevision"] != revision


def test_item_6_an_ingress_rule_that_already_has_a_canary_is_refused(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    user_routing_object(kube, namespace, "nginx", "shop")
    rival = json.loads(json.dumps(kube.raw.get(r.INGRESSES, namespace, "shop")))
    rival["metadata"] = {
        "name": "someone-elses-canary",
        "annotations": {"nginx.ingress.kubernetes.io/canary": "true"},
    }
    kube.raw.create(r.INGRESSES, namespace, rival)
    rollouts.create(manifest("shop", "v1", router="nginx", steps=STEPS))
    # Refused from the start: ours would never be the canary of that rule.
    refused = blocked(rollouts, "shop", "RouterError")
    assert "someone-elses-canary" in refused["message"]
    assert "one canary per rule" in refused["message"]
    assert kube.raw.get(r.INGRESSES, namespace, "shop-canary") is None, "nothing created"


def test_item_6_an_ingress_that_is_itself_a_canary_is_refused(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    user_routing_object(kube, namespace, "nginx", "shop")
    kube.raw.patch(
        r.INGRESSES,
        namespace,
        "shop",
        {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary": "true"}}},
    )
    rollouts.create(manifest("shop", "v1", router="nginx", steps=STEPS))
    refused = blocked(rollouts, "shop", "RouterError")
    assert "itself a canary" in refused["message"]


# --- item 7 ----------------------------------------------------------------------------------


def _create_raw(namespace: str, document: str) -> None:
    """POST bytes as they are: no client of ours has to build a 1,500-level object."""
    path = f"/apis/coalmine.dev/v1alpha1/namespaces/{namespace}/canaryrollouts"
    subprocess.run(
        [
            str(paths.binary("kubectl")),
            f"--kubeconfig={paths.KUBECONFIG}",
            "create",
            "--raw",
            path,
            "-f",
            "-",
        ],
        input=document.encode(),
        check=True,
        capture_output=True,
    )


def test_item_7_a_deeply_nested_object_does_not_stop_the_operator(
    namespace: str, rollouts: Rollouts
) -> None:
    """A CanaryRollout nested 1,500 levels deep is accepted by the API server and killed the
    operator for the whole cluster (RecursionError while decoding the watch)."""
    body = manifest("deep", "v1", steps=STEPS)
    marker = '"__DEEP__"'
    body["spec"]["template"]["spec"]["nested"] = "__DEEP__"
    depth = 1500
    document = json.dumps(body).replace(marker, '{"a":' * depth + "1" + "}" * depth)
    _create_raw(namespace, document)
    rollouts.create(manifest("beside", "v1", steps=STEPS))
    refused = blocked(rollouts, "deep", "Unreadable")
    assert "64 levels" in refused["message"]
    rollouts.wait_phase("beside", "Healthy")
    rollouts.set_template("beside", "v2")
    rollouts.wait_phase("beside", "Paused")


# --- item 8 ----------------------------------------------------------------------------------


def test_item_8_an_unknown_router_name_is_refused_without_strict_validation(
    namespace: str,
) -> None:
    """Sent without strict field validation, an unknown router was pruned to {} and silently
    became the replica ratio."""
    body = manifest("shop", "v1", steps=STEPS)
    body["spec"]["trafficRouting"] = {"linkerd": {"service": "shop"}}
    result = subprocess.run(
        [
            str(paths.binary("kubectl")),
            f"--kubeconfig={paths.KUBECONFIG}",
            "create",
            "--validate=false",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        input=json.dumps(body).encode(),
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"trafficRouting" in result.stderr, result.stderr
