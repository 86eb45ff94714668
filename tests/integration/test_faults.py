"""Issue 9, items 8-10: many rollouts under random kills, an API server restart, Prometheus down.

One seeded campaign (COALMINE_FAULT_SEED replays one; the seed is printed) runs once for the
module; each test below checks one promise on what it recorded:

- 16 CanaryRollouts at once, half on the replica ratio and half on the Gateway API: healthy
  canaries that must be promoted through every step; canaries with 50% errors that the analysis
  (real Prometheus scraping the demo app under traffic) must abort; canaries whose pods never
  get ready, aborted at the progress deadline; healthy analysed canaries that are in the middle
  of their analysis when Prometheus goes down.
- The operator is killed (SIGKILL) every 2-8 s and restarted within a second, from creation to
  deletion. The kills stop only while an outage is observed (the API server's, Prometheus').
- The API server is killed and restarted while the healthy canaries wait at a pause; as soon as
  it answers, each of them is promoted, and the time until its status records the promotion is
  measured (issue 9, item 8: that took 35 s to 2 minutes).
- Prometheus is stopped in the middle of an analysis: the analysis must pause the rollout
  (never promote it), then resume and promote once Prometheus is back.

The invariants are checked from the API (tests/integration/invariants.py): routes, EndpointSlices
and pods are followed from watches during the whole run, and every change is checked against the
status of that moment.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from coalmine.kube import Kube, KubeError
from devenv import faults, paths
from devenv.manifests import error_rate_metric, min_sample, plain_template
from devenv.namespaces import delete_namespace, recreate_namespace
from devenv.operator import OperatorProcess
from devenv.traffic import ServiceTraffic
from devenv.waiting import wait_for

from .chaos import Killer, quiet_namespaces
from .conftest import Cluster
from .invariants import (
    Watcher,
    duplicated_events,
    orphans,
    rollout_events,
    step_numbers,
    summary,
)
from .rollouts import Rollouts, manifest, template, user_routing_object

ROUTERS = ("replicaRatio", "gatewayAPI")
MIN_KILLS = 10
"""The operator is SIGKILLed at least this often in a campaign, every 2-8 s."""

HEALTHY_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {"duration": "2s"}},
    {"setWeight": 50},
    {"pause": {}},  # where the API server goes down; promoted as soon as it is back
    {"setWeight": 80},
    {"pause": {"duration": "1s"}},
]
PAUSED_AT = 3


def _analysis(metric: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"setWeight": 50}, {"analysis": {"metrics": [metric]}}]


# A new pod's first samples may come late on a busy machine: no data at first is inconclusive,
# tolerated a few times; one measured failure aborts.
BAD_STEPS = _analysis(
    error_rate_metric(initialDelay="10s", count=3, inconclusiveLimit=4, minSample=min_sample(10))
)
OUTAGE_STEPS = _analysis(
    error_rate_metric(
        initialDelay="10s",
        count=8,
        consecutiveErrorLimit=2,
        inconclusiveLimit=6,
        minSample=min_sample(10),
    )
)


@dataclass(frozen=True)
class Case:
    """One rollout of the campaign and what must become of it."""

    kind: str  # healthy | bad-analysis | never-ready | prometheus-outage
    router: str
    number: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{'rr' if self.router == 'replicaRatio' else 'gw'}-{self.number}"

    @property
    def promoted(self) -> bool:
        return self.kind in ("healthy", "prometheus-outage")

    @property
    def abort_reason(self) -> str | None:
        return {"bad-analysis": "AnalysisFailed", "never-ready": "ProgressDeadlineExceeded"}.get(
            self.kind
        )

    @property
    def steps(self) -> list[dict[str, Any]]:
        if self.kind == "healthy":
            return HEALTHY_STEPS
        if self.kind == "prometheus-outage":
            return OUTAGE_STEPS
        return BAD_STEPS

    @property
    def completed_steps(self) -> list[int]:
        """The StepCompleted numbers its events must show, in order."""
        done = {"healthy": 6, "prometheus-outage": 2, "bad-analysis": 1, "never-ready": 0}
        return list(range(1, done[self.kind] + 1))

    @property
    def demo(self) -> bool:
        """Real demo-app processes (analysis, crashing pods); the others cost no process."""
        return self.kind != "healthy"

    def body(self, version: str) -> dict[str, Any]:
        replicas = 3 if self.router == "replicaRatio" and self.kind == "healthy" else 2
        # Only the never-ready canaries may run into their deadline: after an API server
        # restart the controller manager may take a minute to make new pods.
        extra: dict[str, Any] = {"progressDeadlineSeconds": 300}
        if self.kind == "never-ready":
            extra["progressDeadlineSeconds"] = 20
        body = manifest(
            self.name, version, router=self.router, steps=self.steps, replicas=replicas, **extra
        )
        body["spec"]["template"] = self.template(version)
        return body

    def template(self, version: str) -> dict[str, Any]:
        if not self.demo:
            return plain_template(version, app=self.name)
        if version == "v1":
            return template(version, app=self.name)
        env = {
            "bad-analysis": {"DEMO_ERROR_RATE": "0.5"},
            "never-ready": {"DEMO_ERROR_RATE": "not-a-rate"},  # never listens: never Ready
        }.get(self.kind, {})
        return template(version, app=self.name, **env)


CASES = [
    Case(kind, router, number)
    for router in ROUTERS
    for kind, count in (
        ("healthy", 5),
        ("bad-analysis", 1),
        ("never-ready", 1),
        ("prometheus-outage", 1),
    )
    for number in range(1, count + 1)
]


@dataclass
class Report:
    """What the campaign did and saw: the figures the tests check and print."""

    seed: int
    rollouts: int = 0
    kills: int = 0
    outages: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    orphans: dict[str, list[str]] = field(default_factory=dict)
    recovery: dict[str, float] = field(default_factory=dict)
    """Per rollout: seconds from a promote token sent right after the API server came back to
    its status recording the step completed."""
    api_down_seconds: float = 0.0
    promoted_while_prometheus_down: list[str] = field(default_factory=list)
    paused_on_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        total_duplicates = sum(len(d) for d in self.duplicated.values())
        outcomes: dict[str, int] = {}
        for outcome in self.outcomes.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return [
            f"fault campaign, seed {self.seed} (COALMINE_FAULT_SEED={self.seed} replays it), "
            f"{self.seconds:.0f} s",
            f"  rollouts {self.rollouts} on {', '.join(ROUTERS)}; operator SIGKILLs {self.kills}",
            f"  outages: {'; '.join(self.outages)}",
            f"  timeline: {'; '.join(self.phases)}",
            f"  outcomes: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}",
            f"  moved again after the API server came back: {summary(self.recovery.values())}",
            f"  paused on metric errors while Prometheus was down: {self.paused_on_errors}",
            f"  duplicated events: {total_duplicates}; weight violations: "
            f"{len(self.violations)}; orphans: {sum(len(o) for o in self.orphans.values())}",
            *(f"  problem: {name}: {p}" for name, ps in self.problems.items() for p in ps),
            *(f"  duplicated: {name}: {d}" for name, ds in self.duplicated.items() for d in ds),
            *(f"  violation: {v}" for v in self.violations),
            *(f"  orphan: {name}: {o}" for name, os_ in self.orphans.items() for o in os_),
        ]


class Campaign:
    def __init__(self, kube: Cluster, namespace: str, operator: OperatorProcess, seed: int) -> None:
        self.kube = kube
        self.namespace = namespace
        self.operator = operator
        self.rollouts = Rollouts(kube, namespace)
        self.report = Report(seed=seed, rollouts=len(CASES))
        self.rng = random.Random(seed)
        self.uids: dict[str, str] = {}
        self.stable: dict[str, str] = {}
        self.started = time.monotonic()

    # --- reading ---------------------------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        items = self.kube.raw.request(
            "GET", f"/apis/coalmine.dev/v1alpha1/namespaces/{self.namespace}/canaryrollouts"
        ).get("items")
        return {o["metadata"]["name"]: dict(o.get("status") or {}) for o in items or []}

    def wait_all(self, cases: list[Case], until: Any, message: str, timeout: float) -> bool:
        """Wait until ``until(status)`` holds for every case; False (and a problem recorded for
        each late rollout, with its status message) when the time runs out."""
        names = {c.name for c in cases}
        late: list[str] = sorted(names)
        deadline = time.monotonic() + timeout
        while late and time.monotonic() < deadline:
            try:
                statuses = self.statuses()
                late = sorted(n for n in names if not until(statuses.get(n) or {}))
            except KubeError:
                pass  # the API server is away: not yet
            if late:
                time.sleep(0.5)
        for name in late:
            status = self.statuses().get(name) or {}
            self.report.problems.setdefault(name, []).append(
                f"not {message} after {timeout:.0f} s: {status.get('phase')}: "
                f"{status.get('message')}"
            )
        return not late

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> Report:
        self.started = started = time.monotonic()
        kube = self.kube
        with Watcher(Kube.connect(kube.kubeconfig), self.namespace) as watcher:
            with Killer(self.operator, self.rng) as killer:
                for case in CASES:
                    if case.router == "gatewayAPI":
                        user_routing_object(kube, self.namespace, case.router, case.name)
                    self.rollouts.create(case.body("v1"))
                self.mark("16 rollouts created")
                healthy = self.wait_all(CASES, _healthy, "Healthy at v1", timeout=150)
                assert healthy, self.report.problems
                for name, status in self.statuses().items():
                    self.stable[name] = status["stableRevision"]
                for case in CASES:
                    self.uids[case.name] = self.rollouts.get(case.name)["metadata"]["uid"]
                traffic = [
                    ServiceTraffic(kube.raw, self.namespace, c.name, rate=10, limit=400)
                    for c in CASES
                    if c.kind in ("bad-analysis", "prometheus-outage")
                ]
                for sender in traffic:
                    sender.__enter__()
                try:
                    self.mark("v2 for all")
                    for case in CASES:
                        self.rollouts.patch_spec(case.name, {"template": case.template("v2")})
                    # Judged before Prometheus goes away: its outage is for the other analyses.
                    self.wait_all(
                        [c for c in CASES if c.kind == "bad-analysis"],
                        _aborted,
                        "aborted by its analysis",
                        timeout=120,
                    )
                    self._prometheus_outage(killer)
                    self._api_server_outage(killer)
                    self._finish()
                    # On a quiet machine the rollouts may settle before the operator was killed
                    # MIN_KILLS times: the settled ones take the rest, and must not change under
                    # them (the watcher checks every change).
                    self.mark("settled")
                    wait_for(
                        lambda: killer.kills,
                        until=lambda kills: kills >= MIN_KILLS,
                        timeout=MIN_KILLS * 10,
                        interval=1,
                        message=f"{MIN_KILLS} kills of the operator",
                    )
                finally:
                    for sender in traffic:
                        sender.__exit__()
                self._delete()
                self.report.kills = killer.kills
            self._check_orphans()
        self.report.violations = watcher.violations(limit=50)
        self._check_events()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _prometheus_outage(self, killer: Killer) -> None:
        cases = [c for c in CASES if c.kind == "prometheus-outage"]
        self.wait_all(
            cases,
            lambda s: _run_of(s).get("metrics", [{}])[0].get("successful", 0) >= 1,
            "a first successful measurement of each analysis",
            timeout=150,
        )
        # No kill meanwhile: a measurement counts once its status is written, and the point
        # here is what the analysis does without Prometheus, not how often it is interrupted.
        with killer.paused():
            self.mark("Prometheus stopped")
            faults.stop(faults.PROMETHEUS)
            down = time.monotonic()
            try:
                paused: set[str] = set()
                until = time.monotonic() + 90
                while time.monotonic() < until and len(paused) < len(cases):
                    statuses = self._statuses_or_none()
                    for case in cases:
                        status = statuses.get(case.name) or {}
                        if status.get("stableRevision") not in (None, self.stable[case.name]):
                            self.report.promoted_while_prometheus_down.append(case.name)
                        verdict = _run_of(status).get("verdict")
                        if status.get("phase") == "Paused" and verdict == "Error":
                            paused.add(case.name)
                    time.sleep(0.5)
                self.report.paused_on_errors = sorted(paused)
            finally:
                faults.start(faults.PROMETHEUS)
            self.report.outages.append(f"Prometheus down {time.monotonic() - down:.0f} s")

    def _statuses_or_none(self) -> dict[str, dict[str, Any]]:
        try:
            return self.statuses()
        except KubeError:
            return {}

    def mark(self, what: str) -> None:
        """Note when a phase of the campaign began, for the report."""
        self.report.phases.append(f"{what} at {time.monotonic() - self.started:.0f} s")

    def _api_server_outage(self, killer: Killer) -> None:
        cases = [c for c in CASES if c.kind == "healthy"]
        self.wait_all(
            cases,
            lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == PAUSED_AT,
            "every healthy canary at its pause",
            timeout=150,
        )
        with killer.paused():
            quiet_namespaces(self.kube.raw)
            self.mark("API server outage")
            time.sleep(3)  # the operator (perhaps just restarted) has its caches again
            self.report.api_down_seconds = faults.restart(faults.API_SERVER, down_for=5)
            self.report.outages.append(
                f"kube-apiserver killed, back after {self.report.api_down_seconds:.1f} s"
            )
            wait_for(faults.problems, until=lambda p: not p, timeout=60, message="API server")
            sent = {}
            for case in cases:
                self.rollouts.control(case.name, "promote")
                sent[case.name] = time.monotonic()
            pending = set(sent)
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                statuses = self.statuses()
                for name in sorted(pending):
                    if (statuses.get(name) or {}).get("currentStepIndex", 0) > PAUSED_AT:
                        self.report.recovery[name] = time.monotonic() - sent[name]
                        pending.discard(name)
                time.sleep(0.1)
            for name in pending:
                self.report.problems.setdefault(name, []).append(
                    "never moved again after the API server came back"
                )

    def _finish(self) -> None:
        self.mark("waiting for the outcomes")

        def final(case: Case) -> Any:
            def done(status: dict[str, Any]) -> bool:
                if case.promoted:
                    return (
                        status.get("phase") == "Healthy"
                        and status.get("stableRevision") != self.stable[case.name]
                    )
                return status.get("phase") == "Degraded" and status.get("confirmedWeight") == 0

            return done

        deadline = time.monotonic() + 180
        for case in CASES:
            self.wait_all(
                [case], final(case), f"{case.name} to end", max(5, deadline - time.monotonic())
            )
        for name, status in self.statuses().items():
            case = next(c for c in CASES if c.name == name)
            outcome = status.get("phase", "?")
            if status.get("abortReason"):
                outcome += f"/{status['abortReason']}"
            self.report.outcomes[name] = outcome
            expected = "Healthy" if case.promoted else f"Degraded/{case.abort_reason}"
            if outcome != expected:
                self.report.problems.setdefault(name, []).append(
                    f"ended {outcome}, expected {expected}: {status.get('message')}"
                )

    def _delete(self) -> None:
        self.mark("deleting")
        for case in CASES:
            self.rollouts.delete(case.name)
        wait_for(
            self.rollouts.names,
            until=lambda names: not names,
            timeout=120,
            message="every rollout finalized and deleted",
        )

    def _check_orphans(self) -> None:
        def left() -> dict[str, list[str]]:
            found = {}
            for case in CASES:
                route = case.name if case.router == "gatewayAPI" else None
                remains = orphans(self.kube.raw, self.namespace, case.name, route)
                if remains:
                    found[case.name] = remains
            return found

        try:
            wait_for(left, until=lambda found: not found, timeout=60, message="no orphans")
        except AssertionError:
            self.report.orphans = left()

    def _check_events(self) -> None:
        for case in CASES:
            events = rollout_events(self.kube.raw, self.namespace, self.uids[case.name])
            steps = step_numbers(events)
            self.report.steps[case.name] = steps
            if steps != case.completed_steps:
                self.report.problems.setdefault(case.name, []).append(
                    f"steps completed {steps}, expected {case.completed_steps}"
                )
            duplicates = duplicated_events(events)
            if duplicates:
                self.report.duplicated[case.name] = duplicates


def _healthy(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Healthy"


def _aborted(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Degraded" and status.get("confirmedWeight") == 0


def _run_of(status: dict[str, Any]) -> dict[str, Any]:
    return dict((status.get("analysis") or [{}])[0])


def fault_seed() -> int:
    given = os.environ.get("COALMINE_FAULT_SEED", "")
    return int(given) if given.isdigit() else random.randrange(2**32)


@pytest.fixture(scope="module")
def campaign(kube: Cluster, operator: OperatorProcess) -> Report:
    """The campaign, once for the module, with its own operator (the session's stands by)."""
    namespace = f"t-faults-{uuid.uuid4().hex[:6]}"
    recreate_namespace(kube.api, namespace, labels={"coalmine.dev/test": "faults"})
    seed = fault_seed()
    print(f"\nfault campaign seed {seed} (COALMINE_FAULT_SEED={seed} replays it)")
    operator.stop()
    own = OperatorProcess()
    try:
        report = Campaign(kube, namespace, own, seed).run()
    finally:
        own.stop()
        faults.recover()
        operator.start()
        delete_namespace(kube.api, namespace)
    print("\n" + "\n".join(report.lines()))
    print(f"  operator logs: {paths.STATE_DIR / 'logs'}/operator-*.log")
    return report


pytestmark = [pytest.mark.timeout(900), pytest.mark.disruptive]


def test_item_10_every_rollout_ends_as_expected_through_every_step(campaign: Report) -> None:
    """Healthy canaries promoted through every step, bad ones aborted (analysis, deadline),
    whatever the kills; every step completed exactly once and in order."""
    assert campaign.kills >= MIN_KILLS, "the campaign must actually kill the operator"
    assert not campaign.problems, campaign.problems


def test_item_10_no_canary_ever_got_more_traffic_than_its_step(campaign: Report) -> None:
    """Checked at every change of a route, EndpointSlice, pod or status, from watches."""
    assert not campaign.violations, "\n".join(campaign.violations)


def test_item_10_nothing_is_left_of_deleted_rollouts(campaign: Report) -> None:
    assert not campaign.orphans, campaign.orphans


def test_item_9_no_event_is_duplicated_by_crashes(campaign: Report) -> None:
    assert not campaign.duplicated, campaign.duplicated


def test_item_8_every_rollout_moves_again_seconds_after_an_api_server_outage(
    campaign: Report,
) -> None:
    """Recovery took 60 s to 2 minutes (kopf restarting a daemon). The figure is printed; the
    bound here only says "not minutes"."""
    healthy = [c.name for c in CASES if c.kind == "healthy"]
    assert sorted(campaign.recovery) == sorted(healthy)
    assert max(campaign.recovery.values()) < 30, campaign.recovery


def test_item_10_prometheus_down_pauses_the_analysis_never_promotes_then_resumes(
    campaign: Report,
) -> None:
    outage = sorted(c.name for c in CASES if c.kind == "prometheus-outage")
    assert campaign.paused_on_errors == outage
    assert not campaign.promoted_while_prometheus_down
    assert all(campaign.outcomes[name] == "Healthy" for name in outage)
