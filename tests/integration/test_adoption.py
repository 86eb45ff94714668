"""Adopting a plain Deployment (spec.workloadRef), with real traffic through Traefik: issue 13,
item 2.

A user runs a Deployment behind their Service and an HTTPRoute. They add a CanaryRollout that
adopts it, switch the route to the rollout's Services (both in Git, in that order), and coalmine
takes over: its first revision (the Deployment's template) comes up beside the Deployment, the
rollout's stable Service serves the Deployment's pods until the revision's are ready and the
route reads back all traffic on it, then the revision's alone, and scaleDownDelaySeconds later
the Deployment goes to zero. Steady load runs through Traefik the whole time: no request may
fail. Then the Deployment's template is edited (in Git): a canary. Deleting the rollout scales
the Deployment back up, and the finalizer lets go only once its pods are ready.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from coalmine import kube as k
from coalmine import resources as r
from coalmine.kube import Kube
from coalmine.routers.base import ready_endpoints
from devenv import cluster, traefik
from devenv.loadgen import LoadGenerator
from devenv.manifests import demo_template, deployment
from devenv.waiting import wait_for

from .conftest import Cluster
from .gateway import one_request, wait_listening, wait_servers, wait_weights
from .rollouts import Rollouts, adopting_manifest, condition

pytestmark = pytest.mark.usefixtures("operator")

RATE = 100
REPLICAS = 4
PLAIN = "example.com/plain:1"
"""An image KWOK makes pods of that are ready at once (no process behind them)."""


def route(*backends: str) -> dict[str, Any]:
    refs = [
        {"name": name, "port": 80, "weight": 100 if index == 0 else 0}
        for index, name in enumerate(backends)
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": refs}]},
    }


def adopting() -> dict[str, Any]:
    return adopting_manifest(
        "shop",
        "web",
        replicas=REPLICAS,
        scale_down="onSuccess",
        steps=[{"setWeight": 25}, {"pause": {}}],
        scaleDownDelaySeconds=5,
        trafficRouting={"gatewayAPI": {"httpRoute": "web"}},
    )


def slices(raw: Kube, namespace: str) -> bool:
    """Whether the canary Service (no pod yet) has its EndpointSlice, empty."""
    selector = "kubernetes.io/service-name=shop-canary"
    return bool(raw.list(r.ENDPOINT_SLICES, namespace, label_selector=selector))


def ready_replicas(kube: Cluster, namespace: str) -> tuple[int, int]:
    live = kube.raw.fetch(k.DEPLOYMENTS, namespace, "web") or {}
    spec, status = live.get("spec") or {}, live.get("status") or {}
    return int(spec.get("replicas", 0)), int(status.get("readyReplicas") or 0)


def test_a_deployment_is_adopted_under_traffic_without_a_failed_request(
    kube: Cluster,
    namespace: str,
    rollouts: Rollouts,
    gateway_controller: traefik.TraefikInfo,
) -> None:
    host = f"web.{namespace}.example"
    traefik.apply(traefik.gateway_manifest(namespace, "gw", hostname=host))
    raw = kube.raw
    raw.create(k.DEPLOYMENTS, namespace, deployment("web", "coalmine.dev/demo-app:v1", REPLICAS))
    raw.create(
        r.SERVICES,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    raw.create(k.HTTP_ROUTES, namespace, route("web"))
    traefik.wait_gateway_programmed(namespace, "gw")
    wait_for(
        lambda: ready_replicas(kube, namespace),
        until=lambda counts: counts == (REPLICAS, REPLICAS),
        timeout=60,
        message="the user's Deployment ready",
    )
    wait_for(
        lambda: one_request(host),
        until=lambda answer: answer == (200, "v1"),
        timeout=30,
        message="v1 answering through Traefik",
    )

    with LoadGenerator(traefik.WEB_URL, host=host, rate=RATE, duration=240, workers=8) as load:
        started = load.now()
        marks: dict[str, float] = {}
        # In Git: the CanaryRollout that adopts the Deployment ...
        rollouts.create(adopting())
        status = rollouts.wait(
            "shop", lambda s: bool(s.get("stableRevision")), "a stable revision", timeout=30
        )
        stable = status["stableRevision"]
        assert status["adoption"]["deployment"] == "web"
        # ... then the route, onto the rollout's Services: they serve the Deployment's pods too
        # until the revision's are ready, so the switch finds ready pods whatever the moment.
        # Until the route names them, the rollout is not Ready (its router says why) and the
        # stable Service selects the Deployment's pods by the Deployment's own selector.
        waiting = rollouts.wait(
            "shop",
            lambda s: condition(s, "Ready").get("reason") == "RouterError",
            "Ready=False: the route does not send to the rollout's Services yet",
        )
        assert "shop-stable" in condition(waiting, "Ready")["message"]
        service = wait_for(
            lambda: raw.get(r.SERVICES, namespace, "shop-stable"),
            until=bool,
            timeout=30,
            message="the rollout's stable Service",
        )
        assert service is not None
        assert service["spec"]["selector"] == {"app": "web"}, "it serves the Deployment's pods"
        # The route is switched once the rollout's Services have their endpoints (the second
        # commit, docs/adoption.md): a gateway refuses a backend whose EndpointSlices it cannot
        # find yet (Traefik answers 500 for its share).
        wait_for(
            lambda: (ready_endpoints(raw, namespace, "shop-stable"), slices(raw, namespace)),
            until=lambda found: found[0] >= REPLICAS and found[1],
            timeout=30,
            message="the rollout's Services with their EndpointSlices",
        )
        marks["route switched"] = time.time()
        raw.patch(
            k.HTTP_ROUTES,
            namespace,
            "web",
            {"spec": route("shop-stable", "shop-canary")["spec"]},
        )
        taken = rollouts.wait(
            "shop",
            lambda s: bool((s.get("adoption") or {}).get("takenOverAt")),
            "the stable revision took over",
            timeout=90,
        )
        assert taken["phase"] == "Healthy"
        marks["taken over"] = time.time()
        wait_listening(wait_servers(kube, namespace, "shop-stable", stable))
        wait_for(
            lambda: ready_replicas(kube, namespace),
            until=lambda counts: counts == (0, 0),
            timeout=60,
            message="the user's Deployment scaled to zero (scaleDown: onSuccess)",
        )
        marks["deployment at 0"] = time.time()
        wait_for(
            lambda: raw.list(r.PODS, namespace, label_selector="app=web,!coalmine.dev/revision"),
            until=lambda pods: not pods,
            timeout=30,
            message="the Deployment's pods gone",
        )
        time.sleep(3)  # a moment of traffic on the revision alone
        migration = load.window(started)
        print(
            f"\n  migration: {migration.requests} requests in {migration.seconds:.1f} s, "
            f"failed {migration.failed} {migration.by_status}, versions {migration.by_version}"
        )
        if migration.failed:
            to_wall = time.time() - time.monotonic()
            failed = traefik.failed_requests(namespace, since=started + to_wall - 5)
            timeline = ", ".join(f"{e.status} {e.service} {e.address} {e.at:.3f}" for e in failed)
            print(f"  failed in Traefik's access log: {timeline}; marks {marks}")
        assert migration.failed == 0, f"the migration lost requests: {migration.by_status}"
        adoption = rollouts.status("shop")["adoption"]
        assert adoption["replicas"] == 0
        service = raw.get(r.SERVICES, namespace, "shop-stable") or {}
        assert service["spec"]["selector"]["coalmine.dev/revision"] == stable
        reasons = rollouts.reasons("shop")
        assert reasons.count("TakenOver") == 1
        assert reasons.count("AdoptedScaled") == 1
        listed = cluster.kubectl("get", "crol", "shop", "-n", namespace)
        assert "ADOPTED" in listed, listed
        assert " web " in listed, listed

        # In Git: the Deployment's template, edited. A canary of it.
        edited = load.now()
        raw.patch(
            k.DEPLOYMENTS,
            namespace,
            "web",
            {"spec": {"template": demo_template("v2", app="web")}},
            patch_type="strategic",
        )
        paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=1, timeout=90)
        assert paused["stableRevision"] == stable
        assert paused["confirmedWeight"] == 25
        canary = paused["canaryRevision"]
        # As in test_traefik.py: the promotion starts once Traefik itself serves the step.
        wait_weights(namespace, 75, 25)
        wait_listening(wait_servers(kube, namespace, "shop-canary", canary))
        rollouts.control("shop", "promote")
        rollouts.wait_phase("shop", "Healthy", stableRevision=canary, timeout=90)
        assert ready_replicas(kube, namespace) == (0, 0), "no pod of the Deployment came back"
        canary_window = load.window(edited)
        whole = load.stop()
    if canary_window.failed:
        to_wall = time.time() - time.monotonic()
        failed = traefik.failed_requests(namespace, since=edited + to_wall - 1)
        print(
            "  canary failures: " + ", ".join(f"{e.status} {e.service} {e.at:.3f}" for e in failed)
        )
        print(f"  canary events: {rollouts.events('shop')[-8:]}")
    print(
        f"  canary of the edited template: {canary_window.requests} requests, failed "
        f"{canary_window.failed} {canary_window.by_status}; whole run: {whole.requests} "
        f"requests, failed {whole.failed}"
    )
    assert whole.failed == 0, whole.by_status

    # Deleting the rollout: the route back to the user's Service first (in Git), then the
    # Deployment is scaled back up, and the finalizer waits for its pods.
    raw.patch(k.HTTP_ROUTES, namespace, "web", {"spec": route("web")["spec"]})
    rollouts.delete("shop")
    wait_for(
        rollouts.names,
        until=lambda names: "shop" not in names,
        timeout=90,
        message="the CanaryRollout gone",
    )
    assert ready_replicas(kube, namespace) == (REPLICAS, REPLICAS), (
        "the finalizer let go before the Deployment was back"
    )
    assert rollouts.reasons("shop")[-2:] == ["AdoptedScaled", "Released"]
    labels = (raw.fetch(k.DEPLOYMENTS, namespace, "web") or {})["metadata"].get("labels") or {}
    assert "coalmine.dev/adopted-by" not in labels


# --- without traffic: what else can happen to an adopted Deployment ----------------------------


def test_a_missing_deployment_is_named_and_adopted_once_it_exists(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    rollouts.create(adopting_manifest("shop", "later"))
    waiting = rollouts.wait(
        "shop",
        lambda s: condition(s, "Ready").get("reason") == "WorkloadNotFound",
        "Ready=False WorkloadNotFound",
    )
    message = condition(waiting, "Ready")["message"]
    assert message.startswith("spec.workloadRef.name: Deployment "), message
    assert "WorkloadNotFound" in rollouts.reasons("shop")
    kube.raw.create(k.DEPLOYMENTS, namespace, deployment("later", PLAIN, 2))
    rollouts.wait(
        "shop",
        lambda s: (s.get("adoption") or {}).get("replicas") == 0 and s.get("phase") == "Healthy",
        "adopted once it exists (the retry comes with a growing delay)",
        timeout=120,
    )
    let_go(rollouts)


def test_a_count_someone_else_sets_is_left_alone_and_a_second_adopter_refused(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    kube.raw.create(k.DEPLOYMENTS, namespace, deployment("plain", PLAIN, 2))
    rollouts.create(adopting_manifest("shop", "plain"))
    rollouts.wait("shop", lambda s: (s.get("adoption") or {}).get("replicas") == 0, "scaled")
    # A GitOps sync without ignoreDifferences puts the count of Git back.
    kube.raw.patch(k.DEPLOYMENTS, namespace, "plain", {"spec": {"replicas": 2}})
    wait_reason = wait_for(
        lambda: [m for r_, m in rollouts.events("shop") if r_ == "AdoptedScaledElsewhere"],
        until=bool,
        timeout=30,
        message="AdoptedScaledElsewhere",
    )
    assert "docs/argocd.md" in wait_reason[0]
    time.sleep(5)
    live = kube.raw.fetch(k.DEPLOYMENTS, namespace, "plain") or {}
    assert live["spec"]["replicas"] == 2, "coalmine fought over the replicas"
    assert rollouts.reasons("shop").count("AdoptedScaled") == 1

    rollouts.create(adopting_manifest("other", "plain"))
    refused = rollouts.wait(
        "other",
        lambda s: condition(s, "Ready").get("reason") == "OwnershipConflict",
        "the second adopter refused",
    )
    assert f"CanaryRollout {namespace}/shop" in condition(refused, "Ready")["message"]
    let_go(rollouts)


def let_go(rollouts: Rollouts) -> None:
    """Delete the test's rollouts and wait until they are gone, rather than leave them to the
    namespace's deletion (an operator started later would still find them there)."""
    for name in rollouts.names():
        rollouts.delete(name)
    wait_for(rollouts.names, until=lambda names: not names, timeout=60, message="rollouts gone")
