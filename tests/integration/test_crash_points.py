"""Issue 9, item 11: a crash after every single write of a scenario, not only at random moments.

Each scenario runs once with ``COALMINE_WRITE_LOG`` to count its writes W (every POST, PUT,
PATCH and DELETE the operator makes), then again with ``COALMINE_FAILPOINT_WRITE=k``: the
operator kills itself (SIGKILL) right after its k-th write is answered, is started again without
the failpoint, and must finish the scenario as if nothing had happened. After each run the
invariants are checked from the API (tests/integration/invariants.py): the outcome, every step
completed exactly once and in order, no transition announced twice, no weight above the step's
or on a canary without ready endpoints at any moment, nothing left after deletion.

Scenarios, on the Gateway API router:
- ``promotion``: v1 becomes stable; v2 walks setWeight 25, a 1 s pause, setWeight 50, a pause
  until promoted (a promote token), the promotion; the old revision scales down; then the
  rollout is deleted (its finalizer).
- ``analysis-abort``: v2 serves 50% errors under traffic; its analysis (real Prometheus) aborts
  it; traffic goes back, the canary scales down; the rollout is deleted.

Which crash points: ``COALMINE_CRASH_POINTS=all`` (``make chaos``) runs every k from 1 to W.
``make test`` runs a sample (`sample`): for every kind of write the promotion makes (a status
update, an event, a route weight, a Service or Deployment created or changed, a finalizer...),
its first and its last occurrence; for the abort, which starts as the promotion does, the last
occurrence of each kind (the abort's own path: the status recording it, its events, the route
back to 0, the canary's scale-down, the finalizer). A crash's aftermath depends on what was
written last and on what the status said at that moment; the first and last of each kind meet
the status before and after the canary's walk, the two ends where a half-done action is most
likely to be mistaken for a done one. Every crash point was run (``make chaos``) before this
sample was chosen, with no violation that the sample would have missed. A sampled point is a
kind and an end (`Point`): the operator counts only the writes of that kind
(``COALMINE_FAILPOINT_WRITE="3 PATCH canaryrollouts/status"``), since an analysis updates its
status a varying number of times and moves every later write's number.
``COALMINE_CRASH_POINTS=3,17`` runs chosen points. Runs go four at a time
(``COALMINE_CRASH_PARALLEL``): each has its own namespace and an operator serving only it
(``COALMINE_NAMESPACE``), so one run's writes never count in another's.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coalmine.kube import Kube, write_kind
from devenv import paths
from devenv.manifests import error_rate_metric, min_sample, plain_template
from devenv.namespaces import delete_namespace, recreate_namespace
from devenv.operator import OperatorProcess
from devenv.traffic import ServiceTraffic
from devenv.waiting import wait_for

from .chaos import FAILPOINT, WRITE_LOG, Supervisor, writes
from .conftest import Cluster
from .invariants import Watcher, duplicated_events, orphans, rollout_events, step_numbers
from .rollouts import Rollouts, manifest, template, user_routing_object

pytestmark = [pytest.mark.usefixtures("quiet_session_operator"), pytest.mark.timeout(3600)]

NAME = "shop"


@dataclass
class Run:
    """One run of a scenario, with or without a crash."""

    failpoint: str | None
    crashed: bool = False
    seconds: float = 0.0
    writes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Scenario:
    """A fresh namespace, an operator serving only it, and a watch on everything that routes."""

    def __init__(self, kube: Cluster, failpoint: str | None, log: Path) -> None:
        self.kube = kube
        self.namespace = f"t-crash-{uuid.uuid4().hex[:8]}"
        self.rollouts = Rollouts(kube, self.namespace)
        self.log = log
        self.run = Run(failpoint)
        self.env = {"COALMINE_NAMESPACE": self.namespace, WRITE_LOG: str(log)}
        if failpoint is not None:
            self.env[FAILPOINT] = failpoint

    def execute(self, steps: Callable[[Scenario], list[int]]) -> Run:
        started = time.monotonic()
        recreate_namespace(self.kube.api, self.namespace, labels={"coalmine.dev/test": "crash"})
        self.log.unlink(missing_ok=True)
        operator = OperatorProcess(self.env)
        try:
            with (
                Watcher(Kube.connect(self.kube.kubeconfig), self.namespace) as watcher,
                Supervisor(operator) as supervisor,
            ):
                try:
                    expected = steps(self)
                except AssertionError as error:  # a wait that timed out: say so, clean up
                    self.run.problems.append(f"the scenario did not finish: {error}")
                    expected = []
                uid = self.uid
                self.rollouts.delete(NAME)
                wait_for(
                    self.rollouts.names,
                    until=lambda names: not names,
                    timeout=60,
                    message="the rollout finalized and deleted",
                )
            operator.stop()  # its last write is logged after the API server answered it
            self.run.writes = writes(self.log)
            # Killed after the very last write (the finalizer's release), it dies as the test
            # ends, before the supervisor sees it: the log says whether the failpoint fired.
            self.run.crashed = supervisor.crashes > 0 or fired(self.run.failpoint, self.run.writes)
            self.run.problems += watcher.violations()
            self.run.problems += written_after_release(self.run.writes)
            if expected:
                self._check_events(uid, expected)
            self._check_orphans()
        finally:
            operator.stop()
            delete_namespace(self.kube.api, self.namespace)
        self.run.seconds = time.monotonic() - started
        return self.run

    @property
    def uid(self) -> str:
        return str(self.rollouts.get(NAME)["metadata"]["uid"])

    def _check_events(self, uid: str, expected: list[int]) -> None:
        events = rollout_events(self.kube.raw, self.namespace, uid)
        steps = step_numbers(events)
        if steps != expected:
            self.run.problems.append(f"steps completed {steps}, expected {expected}")
        self.run.problems += [f"duplicated: {d}" for d in duplicated_events(events)]

    def _check_orphans(self) -> None:
        try:
            wait_for(
                lambda: orphans(self.kube.raw, self.namespace, NAME, NAME),
                until=lambda left: not left,
                timeout=30,
                message="nothing left of the deleted rollout",
            )
        except AssertionError as error:
            self.run.problems.append(str(error))


def written_after_release(lines: list[str]) -> list[str]:
    """Writes made after the rollout's finalizer was released, when it no longer exists.

    The finalizer is added and released by the only PATCHes of the rollout object itself (the
    status has its own subresource): nothing may follow the last of them.
    """
    released = [i for i, line in enumerate(lines) if line.endswith(f"/canaryrollouts/{NAME}")]
    if not released:
        return []
    return [
        f"written after the finalizer was released: {line}" for line in lines[released[-1] + 1 :]
    ]


# --- the scenarios -------------------------------------------------------------------------------

PROMOTION_STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "1s"}},
    {"setWeight": 50},
    {"pause": {}},
]


def promotion(s: Scenario) -> list[int]:
    user_routing_object(s.kube, s.namespace, "gatewayAPI", NAME)
    body = manifest(NAME, "v1", router="gatewayAPI", steps=PROMOTION_STEPS, replicas=2)
    body["spec"]["template"] = plain_template("v1")
    body["spec"]["scaleDownDelaySeconds"] = 1
    s.rollouts.create(body)
    stable = s.rollouts.wait_phase(NAME, "Healthy", timeout=60)["stableRevision"]
    s.rollouts.patch_spec(NAME, {"template": plain_template("v2")})
    canary = s.rollouts.wait_phase(NAME, "Paused", currentStepIndex=3, timeout=60)["canaryRevision"]
    s.rollouts.control(NAME, "promote")
    s.rollouts.wait_phase(NAME, "Healthy", stableRevision=canary, timeout=60)
    wait_for(
        lambda: s.rollouts.deployments(NAME),
        until=lambda d: d == {stable: 0, canary: 2},
        timeout=30,
        message="the old stable scaled to 0",
    )
    return [1, 2, 3, 4]


ABORT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    {
        "analysis": {
            "metrics": [
                # A new pod's first samples may come late on a busy machine: no data at first
                # is inconclusive, and tolerated a few times; one measured failure aborts.
                error_rate_metric(
                    initialDelay="10s", count=3, inconclusiveLimit=4, minSample=min_sample(10)
                )
            ]
        }
    },
]


def analysis_abort(s: Scenario) -> list[int]:
    user_routing_object(s.kube, s.namespace, "gatewayAPI", NAME)
    body = manifest(NAME, "v1", router="gatewayAPI", steps=ABORT_STEPS, replicas=2)
    body["spec"]["abortScaleDownDelaySeconds"] = 1
    s.rollouts.create(body)
    with ServiceTraffic(s.kube.raw, s.namespace, NAME, rate=10, limit=200):
        stable = s.rollouts.wait_phase(NAME, "Healthy", timeout=60)["stableRevision"]
        s.rollouts.patch_spec(NAME, {"template": template("v2", DEMO_ERROR_RATE="0.5")})
        aborted = s.rollouts.wait(
            NAME,
            lambda st: st.get("phase") == "Degraded" and st.get("confirmedWeight") == 0,
            "aborted, traffic back on stable",
            timeout=120,
        )
    if aborted.get("abortReason") != "AnalysisFailed":
        s.run.problems.append(f"aborted for {aborted.get('abortReason')}, not AnalysisFailed")
    canary = aborted["canaryRevision"]
    wait_for(
        lambda: s.rollouts.deployments(NAME),
        until=lambda d: d == {stable: 2, canary: 0},
        timeout=30,
        message="the aborted canary scaled to 0",
    )
    return [1]


SCENARIOS: dict[str, Callable[[Scenario], list[int]]] = {
    "promotion": promotion,
    "analysis-abort": analysis_abort,
}


# --- which crash points --------------------------------------------------------------------------


def line_kind(line: str) -> str:
    """The kind of write a write log line records (`coalmine.kube.write_kind`)."""
    _, verb, path = line.split(" ", 2)
    return write_kind(verb, path)


@dataclass(frozen=True)
class Point:
    """A sampled crash point: the first or the last write of a kind.

    The operator counts only the writes of that kind (``COALMINE_FAILPOINT_WRITE="n KIND"``):
    how many writes come before it varies between runs, as an analysis updates its status
    when its samples arrive. How many writes of the kind a run makes varies less, but it can:
    a run that ends before the last one it was told is run again, told the last one of its
    own complete write log.
    """

    kind: str
    last: bool

    def failpoint(self, lines: list[str]) -> str:
        made = sum(line_kind(line) == self.kind for line in lines)
        assert made, f"no {self.kind} in the write log"
        return f"{made if self.last else 1} {self.kind}"

    def __str__(self) -> str:
        return f"the {'last' if self.last else 'first'} {self.kind}"


def sample(lines: list[str], *, first: bool = True) -> list[Point]:
    """The last write of each kind, and with ``first`` the first one too (module docstring)."""
    firsts: dict[str, int] = {}
    lasts: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        kind = line_kind(line)
        firsts.setdefault(kind, number)
        lasts[kind] = number
    points = {number: Point(kind, last=True) for kind, number in lasts.items()}
    for kind, number in firsts.items() if first else ():
        points.setdefault(number, Point(kind, last=False))  # written once: its first is its last
    return [points[number] for number in sorted(points)]


def crash_points(scenario: str, lines: list[str]) -> list[int | Point]:
    chosen = os.environ.get("COALMINE_CRASH_POINTS", "").strip()
    if chosen == "all":
        return list(range(1, len(lines) + 1))
    if chosen:
        return [int(k) for k in chosen.split(",")]
    # The abort scenario starts as the promotion does (same kinds of writes, same places):
    # its own path is the end, the abort, the scale-down and the finalizer.
    return list(sample(lines, first=scenario == "promotion"))


ATTEMPTS = 3


def crash_run(
    kube: Cluster,
    tmp_path: Path,
    steps: Callable[[Scenario], list[int]],
    point: int | Point,
    counted: list[str],
) -> Run:
    """A run killed at ``point``; a last write that the run did not reach is tried again."""
    lines = counted
    for attempt in range(ATTEMPTS):
        failpoint = str(point) if isinstance(point, int) else point.failpoint(lines)
        log = tmp_path / f"writes-{uuid.uuid4().hex[:8]}.log"
        run = Scenario(kube, failpoint, log).execute(steps)
        if run.crashed or isinstance(point, int) or attempt == ATTEMPTS - 1:
            return run
        lines = run.writes  # a complete run: the failpoint never fired
    raise AssertionError("unreachable")


def first_process(lines: list[str]) -> list[str]:
    """The writes of the operator started first: its successor's count starts again at 1."""
    restarted = [i for i, line in enumerate(lines) if i and line.startswith("1 ")]
    return lines[: restarted[0]] if restarted else lines


def fired(failpoint: str | None, lines: list[str]) -> bool:
    """Whether the first operator made the writes its failpoint counts (then it killed itself)."""
    if failpoint is None:
        return False
    count, _, kind = failpoint.partition(" ")
    made = first_process(lines)
    return sum(not kind or line_kind(line) == kind for line in made) >= int(count)


def died_after(lines: list[str]) -> str | None:
    """The write a crashed operator made last."""
    made = first_process(lines)
    return made[-1] if made else None


def parallel_runs() -> int:
    """Runs at once: each has its own namespace and its own operator, so they do not interfere."""
    given = os.environ.get("COALMINE_CRASH_PARALLEL", "")
    return int(given) if given.isdigit() and int(given) > 0 else 4


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_item_11_a_crash_after_any_write_changes_nothing(
    kube: Cluster, tmp_path: Path, scenario: str
) -> None:
    steps = SCENARIOS[scenario]
    counted = Scenario(kube, None, tmp_path / "writes.log").execute(steps)
    total = len(counted.writes)
    points = crash_points(scenario, counted.writes)
    print(f"\n{scenario}: W = {total} writes without a crash ({counted.seconds:.0f} s)")
    print(f"  without a crash: {'; '.join(counted.problems) or 'ok'}")
    for line in counted.writes:
        print(f"  {line}")
    with ThreadPoolExecutor(parallel_runs()) as pool:
        runs = list(
            pool.map(lambda point: crash_run(kube, tmp_path, steps, point, counted.writes), points)
        )
    for point, run in zip(points, runs, strict=True):
        last = died_after(run.writes) if run.crashed else None
        landed = f"crashed after write {last}" if last else "no crash"
        if isinstance(point, Point) and last and line_kind(last) != point.kind:
            run.problems.append(f"the failpoint for {point} fired after {last}")
        verdict = "ok" if not run.problems else "; ".join(run.problems)
        print(
            f"  {point if isinstance(point, Point) else f'write {point}'}: {landed}, "
            f"{run.seconds:.0f} s: {verdict}"
        )
    violations = {run.failpoint: run.problems for run in [counted, *runs] if run.problems}
    missed = [run.failpoint for run in runs if not run.crashed]
    print(
        f"{scenario}: W = {total}; crash points run: {len(runs)} of {total} "
        f"({'all' if len(runs) >= total else 'sample'}); did not crash (fewer writes that "
        f"time): {missed or 'none'}; runs with violations: {len(violations)}"
    )
    print(f"  operator logs: {paths.STATE_DIR / 'logs'}/operator-*.log")
    assert len(missed) <= max(2, len(runs) // 10), f"the failpoint did not fire in runs {missed}"
    assert not violations, violations
