"""A pure simulation of the cluster around the state machine, for its tests.

It applies the machine's actions to a tiny model of Deployments, Services and a router, makes
pods ready when asked, and produces what the operator would observe. No Kubernetes here: this
only drives ``decide`` through long, random histories and checks its safety rules at each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from coalmine import machine as m
from coalmine.api.vocabulary import Control, Phase, StepAction

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Deployment:
    replicas: int
    ready: int = 0
    created: datetime = EPOCH
    broken: bool = False  # its pods never become ready
    drifted: bool = False
    restarted: str | None = None  # the restart stamp of its pod template


@dataclass
class AdoptedDeployment:
    """The user's Deployment a rollout adopts (spec.workloadRef)."""

    replicas: int
    ready: int
    marked: int | None = None  # the adopted-replicas annotation
    selectable: bool = True
    released: bool = False


@dataclass
class World:
    plan: m.Plan
    memory: m.Memory = field(default_factory=m.Memory)
    now: datetime = EPOCH
    deployments: dict[str, Deployment] = field(default_factory=dict)
    weight: int | None = None  # what a weighted router holds
    stable_service: str | None = None
    canary_service: str | None = None
    controls: dict[Control, str] = field(default_factory=dict)
    events: list[m.EmitEvent] = field(default_factory=list)
    history: list[tuple[m.Observed, m.Decision]] = field(default_factory=list)
    broken_revisions: set[str] = field(default_factory=set)
    router_error: str | None = None  # the routing object is missing or not as documented
    step_analysis: m.AnalysisObserved | None = None
    background_analysis: m.AnalysisObserved | None = None
    adopted: AdoptedDeployment | None = None
    services_select_adopted: bool = False  # the stable Service selects the adopted pods too
    lagging_status: bool = False
    """A Deployment's status lags a change of its replicas until the controller manager observes
    it (pods_become_ready): meanwhile the operator reads 0 ready pods (unknown), while its
    endpoints still serve."""
    stale: set[str] = field(default_factory=set)

    def observe(self) -> m.Observed:
        revisions = {
            rev: m.RevisionObserved(
                d.replicas,
                0 if rev in self.stale else d.ready,
                0 if rev in self.stale else d.ready,
                d.created,
                d.drifted,
                restarted=d.restarted,
            )
            for rev, d in self.deployments.items()
        }
        stable_eps = self._endpoints(self.stable_service)
        canary_eps = self._endpoints(self.canary_service)
        if self.router_error is not None:
            weight = None
        elif self.plan.weighted:
            weight = self.weight
        else:
            canary_ready = sum(canary_eps.values()) if self.memory.canary else 0
            weight = m.ratio_weight(canary_ready, sum(stable_eps.values()))
        adopted = None
        if self.adopted is not None:
            a = self.adopted
            adopted = m.AdoptedObserved(
                a.replicas, a.ready, a.marked, a.selectable, labelled=not a.released
            )
        return m.Observed(
            revisions=revisions,
            weight=weight,
            # A Service selecting the adopted pods by their labels names no revision.
            stable_service=None if self.services_select_adopted else self.stable_service,
            adopted=adopted,
            canary_service=self.canary_service,
            stable_endpoints=stable_eps,
            canary_endpoints=canary_eps,
            controls=dict(self.controls),
            router_error=self.router_error,
            step_analysis=self.step_analysis,
            background_analysis=self.background_analysis,
        )

    def _endpoints(self, revision: str | None) -> dict[str, int]:
        if revision is None or revision not in self.deployments:
            return {}
        return {revision: self.deployments[revision].ready}

    def apply(self, action: m.Action) -> None:
        match action:
            case m.CreateRevision(revision, replicas):
                self.deployments[revision] = Deployment(
                    replicas, created=self.now, broken=revision in self.broken_revisions
                )
            case m.ScaleRevision(revision, replicas):
                if self.lagging_status and self.deployments[revision].replicas != replicas:
                    self.stale.add(revision)
                self.deployments[revision].replicas = replicas
                d = self.deployments[revision]
                d.ready = min(d.ready, replicas)
            case m.RestoreRevision(revision):
                self.deployments[revision].drifted = False
            case m.RestartRevision(revision, stamp):
                # maxUnavailable 0: the Deployment keeps its ready pods while it replaces them.
                self.deployments[revision].restarted = stamp
            case m.DeleteRevision(revision):
                del self.deployments[revision]
            case m.SelectRevisions(stable, canary, adopted):
                self.stable_service, self.canary_service = stable, canary
                self.services_select_adopted = adopted
            case m.ScaleAdopted(replicas):
                assert self.adopted is not None
                self.adopted.replicas = self.adopted.marked = replicas
                self.adopted.ready = min(self.adopted.ready, replicas)
            case m.ReleaseAdopted():
                assert self.adopted is not None
                self.adopted.released = True
            case m.SetWeight(weight):
                self.weight = weight
            case m.EmitEvent():
                self.events.append(action)
            case m.FinalizeRouting():
                pass

    def step(self) -> m.Decision:
        observed = self.observe()
        decision = m.decide(self.plan, self.memory, observed, self.now)
        self.history.append((observed, decision))
        for action in decision.actions:
            self.apply(action)
        self.memory = decision.memory
        return decision

    def pods_become_ready(self) -> None:
        self.stale.clear()
        for d in self.deployments.values():
            if not d.broken:
                d.ready = d.replicas
        if self.adopted is not None:
            self.adopted.ready = self.adopted.replicas

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def settle(self, rounds: int = 60, seconds: float = 1.0) -> None:
        """Decide, let pods become ready and time pass, until nothing more happens.

        Fails if the machine still acts after ``rounds``: a test never goes on from a world
        that has not settled, believing it has.
        """
        if not self.run(rounds, seconds):
            raise AssertionError(f"not settled after {rounds} rounds: {self.memory}")

    def snapshot(self) -> object:
        """Everything a decision can change: equal before and after one means it changed nothing."""
        deployments = {r: replace(d) for r, d in sorted(self.deployments.items())}
        adopted = replace(self.adopted) if self.adopted is not None else None
        return (
            self.memory,
            deployments,
            self.weight,
            self.stable_service,
            self.canary_service,
            adopted,
            self.services_select_adopted,
        )

    def run(self, rounds: int, seconds: float = 1.0) -> bool:
        """Up to ``rounds`` decisions with time passing; True once nothing more happens: a
        decision left everything as it was, and books no later look."""
        for _ in range(rounds):
            before = self.snapshot()
            decision = self.step()
            self.pods_become_ready()
            if self.snapshot() == before and decision.requeue_after is None:
                return True
            self.advance(min(seconds, decision.requeue_after or seconds))
        return False

    def set_template(self, revision: str) -> None:
        self.plan = replace(self.plan, revision=revision)

    def scale(self, replicas: int) -> None:
        """spec.replicas changed: `kubectl scale`, or a HorizontalPodAutoscaler."""
        self.plan = replace(self.plan, replicas=replicas)

    def control(self, name: str, token: str) -> None:
        self.controls[Control(name)] = token

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def plan(revision: str = "rev1", *, weighted: bool = True, **overrides: object) -> m.Plan:
    steps = (
        m.Step(StepAction.SET_WEIGHT, weight=20),
        m.Step(StepAction.PAUSE, pause_seconds=30),
        m.Step(StepAction.SET_WEIGHT, weight=50),
        m.Step(StepAction.PAUSE),
    )
    base = m.Plan(revision=revision, replicas=4, steps=steps, weighted=weighted)
    return replace(base, **overrides)  # type: ignore[arg-type]


def started(weighted: bool = True, **overrides: object) -> World:
    """A world whose first revision is stable and fully routed."""
    world = World(plan("rev1", weighted=weighted, **overrides))
    world.settle()
    assert world.memory.phase == Phase.HEALTHY
    return world
