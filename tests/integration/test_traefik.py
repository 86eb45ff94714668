"""A canary rollout measured end to end through a real gateway: Traefik with Gateway API.

The router tests prove that the operator writes the right weights into an HTTPRoute; this test
proves what users care about: that those weights are the share of real requests each version
answers, that moving weights, promoting and scaling the old stable down lose no request, and
that an abort takes the canary out of traffic. Steady load (200 requests/s, keep-alive) runs
through Traefik for the whole rollout; each answer of the demo app names its version.

A step's split is measured only once Traefik serves the new weights (read back from its API),
not merely once the operator confirmed them: the two differ by Traefik's configuration
throttle, which is Traefik's business, not the operator's.

Demo pods become Ready only once their process listens (the pod runner marks them, as a
kubelet's readiness probe would), so no request may fail during the whole v2 rollout; should
one fail, Traefik's access log and the pods' Ready times say why.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from devenv import traefik
from devenv.loadgen import LoadGenerator, Sample, Summary
from devenv.waiting import wait_for

from .conftest import Cluster
from .gateway import one_request, pod_ips, wait_listening, wait_servers, wait_weights
from .rollouts import Rollouts, manifest, router_weight, user_routing_object

pytestmark = pytest.mark.usefixtures("operator")

RATE = 200
SPLIT_REQUESTS = 1000
#: Allowed distance between the configured weight and the observed share, in percentage points.
TOLERANCE_PP = 5.0
STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {}},
]
#: How long after becoming Ready a demo pod may still refuse connections (its process starts).
READY_RACE_S = 2.0


def _report(label: str, summary: Summary, version: str | None = None, weight: int = 0) -> float:
    """Print one line for the test log; the error (percentage points) of ``version``'s share."""
    line = (
        f"\n  {label}: {summary.requests} requests in {summary.seconds:.1f} s, "
        f"split {summary.by_version}, failed {summary.failed} {summary.by_status}, "
        f"p50/p99 {summary.latency_ms['p50']:.1f}/{summary.latency_ms['p99']:.1f} ms"
    )
    if version is None:
        print(line)
        return 0.0
    share = summary.share(version)
    error = share * 100 - weight
    print(f"{line}; {version} at {share:.1%} for weight {weight} ({error:+.2f} pp)")
    return error


def _ready_since(kube: Cluster, namespace: str) -> dict[str, float]:
    """Pod IP -> when the pod became Ready (epoch seconds, truncated to the second)."""
    ready = {}
    for pod in kube.core.list_namespaced_pod(namespace).items:
        status = pod.status
        if status is None or not status.pod_ip:
            continue
        for condition in status.conditions or []:
            since = condition.last_transition_time
            if condition.type == "Ready" and condition.status == "True" and since is not None:
                ready[str(status.pod_ip)] = since.timestamp()
    return ready


def _attribute_failures(
    kube: Cluster, namespace: str, samples: list[Sample]
) -> tuple[list[str], list[str]]:
    """Split failed requests into the dev environment's readiness race and everything else.

    KWOK marks a pod Ready the moment it runs, and only then does the pod runner start the demo
    process, which needs a few hundred milliseconds to listen. A canary pod added while its
    Service already has traffic can thus be sent requests that its port refuses: Traefik
    answers 502 within a millisecond. Such a failure is the environment's, not the operator's,
    and is recognised by Traefik's access log (a 502 with no time spent on the backend) and the
    pod's Ready time (under READY_RACE_S before the request). Anything else is unexplained.
    """
    failed = [s for s in samples if s.failed]
    if not failed:
        return [], []
    to_wall = time.time() - time.monotonic()
    logged = traefik.failed_requests(namespace, since=failed[0].started + to_wall - 5)
    ready = _ready_since(kube, namespace)
    race: list[str] = []
    unexplained: list[str] = []
    for sample in failed:
        at = sample.started + to_wall
        near = [e for e in logged if e.status == sample.status and abs(e.at - at) < 0.5]
        entry = min(near, key=lambda e: abs(e.at - at), default=None)
        if entry is None:
            unexplained.append(f"{sample.status or sample.error}: not in Traefik's access log")
            continue
        logged.remove(entry)
        ip = entry.address.rpartition(":")[0]
        # Ready times are truncated to the second: allow one more.
        since_ready = entry.at - ready.get(ip, -math.inf)
        line = (
            f"502 from {entry.address} ({entry.service}) {entry.origin_ms:.2f} ms on the "
            f"backend, {since_ready:.1f} s after the pod became Ready"
        )
        if entry.status == 502 and entry.origin_ms < 100 and 0 <= since_ready <= READY_RACE_S + 1:
            race.append(line)
        else:
            unexplained.append(line)
    return race, unexplained


class Timeline:
    """What happened when, on the load generator's clock, to explain any failed request."""

    def __init__(self, load: LoadGenerator) -> None:
        self.load = load
        self.events: list[tuple[float, str]] = []

    def mark(self, label: str) -> float:
        now = self.load.now()
        self.events.append((now, label))
        return now

    def explain_failures(self) -> None:
        """Print the failed requests grouped by the last event before them."""
        failed = [s for s in self.load.samples() if s.failed]
        if not failed or not self.events:
            return
        origin = self.events[0][0]
        groups: dict[tuple[str, str], list[float]] = {}
        for sample in failed:
            before = [label for at, label in self.events if at <= sample.started]
            key = (before[-1] if before else "-", str(sample.status or sample.error))
            groups.setdefault(key, []).append(sample.started - origin)
        print(f"\n  {len(failed)} failed requests, by the last event before them:")
        for (event, status), times in groups.items():
            print(
                f"    {len(times)} x {status} after '{event}' "
                f"(t {min(times):.2f} to {max(times):.2f} s)"
            )
        print("  events (t, s): " + ", ".join(f"{at - origin:.2f} {e}" for at, e in self.events))


def test_weights_split_real_traffic_through_traefik(
    kube: Cluster,
    namespace: str,
    rollouts: Rollouts,
    gateway_controller: traefik.TraefikInfo,
) -> None:
    started = time.monotonic()
    # A hostname of its own keeps this test's routes apart from any other namespace's.
    host = f"shop.{namespace}.example"
    traefik.apply(traefik.gateway_manifest(namespace, "gw", hostname=host))
    user_routing_object(kube, namespace, "gatewayAPI", "shop")
    rollouts.create(
        manifest("shop", "v1", router="gatewayAPI", steps=STEPS, scaleDownDelaySeconds=3)
    )
    v1 = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    traefik.wait_gateway_programmed(namespace, "gw")
    wait_weights(namespace, 100, 0)
    servers = wait_servers(kube, namespace, "shop-stable", v1)
    assert all(s.startswith("http://10.244.") for s in servers), "backends are pod IPs"
    wait_listening(servers)
    wait_for(
        lambda: one_request(host),
        until=lambda answer: answer == (200, "v1"),
        timeout=20,
        message="v1 answering through Traefik",
    )

    errors: dict[str, float] = {}
    with LoadGenerator(traefik.WEB_URL, host=host, rate=RATE, duration=150, workers=16) as load:
        timeline = Timeline(load)
        try:
            total = _roll_out_under_load(
                kube, namespace, rollouts, load=load, timeline=timeline, v1=v1, errors=errors
            )
        finally:
            timeline.explain_failures()

    _report("whole run", total)
    print(
        f"\n  split errors (pp): {', '.join(f'{k} {v:+.2f}' for k, v in errors.items())}; "
        f"test took {time.monotonic() - started:.1f} s"
    )


def _roll_out_under_load(
    kube: Cluster,
    namespace: str,
    rollouts: Rollouts,
    *,
    load: LoadGenerator,
    timeline: Timeline,
    v1: str,
    errors: dict[str, float],
) -> Summary:
    mark = timeline.mark("load started")
    baseline = load.wait_for_requests(400, mark)
    _report("v1 only", baseline)
    assert baseline.by_version == {"v1": baseline.requests}
    assert baseline.failed == 0

    # --- v2: measured at each paused weight, then promoted --------------------------------
    rollout_started = timeline.mark("v2 template")
    rollouts.set_template("shop", "v2")
    v2 = ""
    for step, weight in ((1, 20), (3, 50)):
        paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=step)
        timeline.mark(f"paused at {weight} (operator)")
        assert paused["confirmedWeight"] == weight
        v2 = paused["canaryRevision"]
        wait_weights(namespace, 100 - weight, weight)
        wait_listening(wait_servers(kube, namespace, "shop-canary", v2))
        mark = timeline.mark(f"weight {weight} live in Traefik")
        split = load.wait_for_requests(SPLIT_REQUESTS, mark)
        errors[f"v2@{weight}"] = _report(f"v2 at weight {weight}", split, "v2", weight)
        assert abs(errors[f"v2@{weight}"]) <= TOLERANCE_PP
        assert split.failed == 0
        timeline.mark(f"promote from {weight}")
        rollouts.control("shop", "promote")

    rollouts.wait_phase("shop", "Healthy", stableRevision=v2)
    timeline.mark("v2 stable (operator)")
    # The promotion scaled the canary up to full size: wait out its pods' start (see above), so
    # that the window below holds nothing but the old stable's scale-down.
    wait_listening(wait_servers(kube, namespace, "shop-stable", v2))
    promoted = timeline.mark("all v2 pods listening")
    assert rollouts.deployments("shop")[v1] == 4, "the window starts before the scale-down"
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d == {v1: 0, v2: 4},
        timeout=30,
        message="the old stable scaled to 0 after scaleDownDelaySeconds",
    )
    timeline.mark("v1 scaled to 0")
    wait_for(
        lambda: pod_ips(kube, namespace, v1),
        until=lambda ips: not ips,
        timeout=30,
        message="the old stable's pods gone",
    )
    mark = timeline.mark("v1 pods gone")
    after = load.wait_for_requests(400, mark)
    _report("v2 promoted, v1 scaled down", after)
    assert after.by_version == {"v2": after.requests}
    scale_down = load.window(promoted)
    _report("v2 stable, v1 scale-down", scale_down)
    assert scale_down.failed == 0, f"the old stable's scale-down lost requests: {scale_down}"
    whole = load.window(rollout_started)
    _report("v2 rollout, weight changes and scale-down", whole)
    # The pod runner marks a demo pod Ready only once its process listens, as a kubelet's
    # readiness probe would: moving weights, promoting and scaling down must lose nothing.
    if whole.failed:
        race, unexplained = _attribute_failures(kube, namespace, load.samples(rollout_started))
        raise AssertionError(f"requests failed during the v2 rollout: {race + unexplained}")

    # --- v3, failing 20% of its requests: aborted by hand ---------------------------------
    timeline.mark("v3 template (20% errors)")
    rollouts.set_template("shop", "v3", DEMO_ERROR_RATE="0.2")
    paused = rollouts.wait_phase("shop", "Paused", currentStepIndex=1)
    v3 = paused["canaryRevision"]
    wait_weights(namespace, 80, 20)
    wait_listening(wait_servers(kube, namespace, "shop-canary", v3))
    mark = timeline.mark("v3 at weight 20 live in Traefik")
    bad = load.wait_for_requests(500, mark)
    errors["v3@20"] = _report("v3 at weight 20 (20% errors)", bad, "v3", 20)
    assert bad.by_version.get("v3", 0) > 0
    assert bad.failed > 0, "the bad canary's errors reach the clients"

    timeline.mark("abort")
    rollouts.control("shop", "abort")
    aborted = rollouts.wait_phase("shop", "Degraded")
    operator_confirmed = timeline.mark("abort confirmed (operator)")
    assert aborted["abortReason"] == "AbortedByUser"
    assert router_weight(kube, namespace, "gatewayAPI", "shop") == 0
    wait_weights(namespace, 100, 0)
    traefik_applied = timeline.mark("weight 0 live in Traefik")
    back = load.wait_for_requests(600, traefik_applied)
    _report("after the abort", back)
    assert back.by_version == {"v2": back.requests}, "no v3 after the abort"
    assert back.failed == 0
    wait_for(
        lambda: rollouts.deployments("shop"),
        until=lambda d: d.get(v3) == 0 and d.get(v2) == 4,
        timeout=30,
        message="the aborted canary scaled to 0",
    )
    timeline.mark("v3 scaled to 0")
    late = load.window(operator_confirmed)
    print(
        f"\n  abort (confirmedWeight {aborted.get('confirmedWeight')}): "
        f"{late.by_version.get('v3', 0)} v3 answers sent after the operator "
        f"confirmed weight 0, {load.window(traefik_applied).by_version.get('v3', 0)} after "
        f"Traefik applied it ({(traefik_applied - operator_confirmed) * 1000:.0f} ms later)"
    )
    assert load.window(traefik_applied).failed == 0, "the canary's scale-down lost requests"
    return load.stop()
