"""The scratchpad of one decision: the actions collected so far and the memory being rewritten."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from coalmine.api.vocabulary import Phase, Stage
from coalmine.machine.types import (
    WAIT,
    Action,
    CreateRevision,
    Decision,
    EmitEvent,
    Memory,
    Observed,
    Plan,
    Problem,
    ScaleRevision,
)


class Builder:
    """Collects actions and the new memory while one decision is made."""

    def __init__(self, plan: Plan, memory: Memory, observed: Observed, now: datetime) -> None:
        self.plan = plan
        self.start = memory
        """The memory the decision started from (what the status says now)."""
        self.memory = memory
        self.observed = observed
        self.now = now
        self.actions: list[Action] = []
        self.requeue: float | None = None
        self.problem: Problem | None = None

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.actions.append(EmitEvent(reason, message, warning))

    def wait(self, seconds: float = WAIT) -> None:
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    # --- observation ----------------------------------------------------------------------------

    def available(self, revision: str | None) -> int:
        """Pods of ``revision`` that are ready, and have been for minReadySeconds: the only ones
        that may take traffic or count toward a step."""
        if revision is None:
            return 0
        observed = self.observed.revisions.get(revision)
        return min(observed.ready, observed.available) if observed else 0

    def replicas(self, revision: str | None) -> int | None:
        if revision is None:
            return None
        observed = self.observed.revisions.get(revision)
        return observed.replicas if observed else None

    def start_step(self, index: int, phase: Phase | None = None) -> None:
        """Step ``index`` starts now: its timers from zero, with no time held by the pause
        control (a hold under way goes on, counted from now)."""
        paused_at = self.now if self.memory.paused_at is not None else None
        self.memory = replace(
            self.memory,
            step=index,
            step_started=self.now,
            held_seconds=0.0,
            paused_at=paused_at,
            phase=phase or self.memory.phase,
        )

    def step_elapsed(self) -> float:
        """Seconds the current step has run, leaving out the time the pause control held it."""
        started = self.memory.step_started or self.now
        held = self.memory.held_seconds
        if self.memory.paused_at is not None:
            held += max(0.0, (self.now - self.memory.paused_at).total_seconds())
        return max(0.0, (self.now - started).total_seconds() - held)

    def serving(self, revision: str, *, canary: bool) -> int:
        """Pods of ``revision`` that can take traffic: ready, and ready behind the Service."""
        endpoints = self.observed.canary_endpoints if canary else self.observed.stable_endpoints
        return min(self.available(revision), endpoints.get(revision, 0))

    # --- weights ----------------------------------------------------------------------------------

    def record_weight(self, weight: int) -> None:
        """Remember the weight this step asks for and the weight the observation confirms."""
        self.memory = replace(self.memory, desired_weight=weight)
        if self.observed.weight is not None:
            self.memory = replace(self.memory, confirmed_weight=self.observed.weight)

    def weight_confirmed(self, weight: int) -> bool:
        """True when the read-back shows ``weight``; otherwise look again after a while."""
        self.record_weight(weight)
        if self.observed.weight == weight:
            return True
        self.wait()
        return False

    # --- actions on revisions -------------------------------------------------------------------

    def scale(self, revision: str, replicas: int) -> None:
        if revision not in self.observed.revisions:
            if revision != self.plan.revision:
                # Only the spec's template can be created; an older revision's is not at hand.
                self.problem = Problem(
                    "RevisionGone",
                    f"the Deployment of revision {revision} was deleted, and its template is no "
                    "longer the spec's, so it cannot be made again: set spec.template back to "
                    "it, or roll forward to a new template",
                )
                self.event(self.problem.reason, self.problem.message, warning=True)
                self.wait()
                return
            self.act(CreateRevision(revision, replicas))
        elif self.observed.revisions[revision].replicas != replicas:
            self.act(ScaleRevision(revision, replicas))

    # --- memory ---------------------------------------------------------------------------------

    def fresh_canary(
        self,
        canary: str | None,
        *,
        message: str,
        step: int = 0,
        rollback: bool = False,
        phase: Phase = Phase.PROGRESSING,
    ) -> None:
        """A canary starting (or none): its steps from ``step``, no abort, nothing half-done."""
        self.memory = replace(
            self.memory,
            canary=canary,
            step=step,
            step_started=self.now,
            stage=Stage.STEPS,
            rollback=rollback,
            aborted=False,
            abort_reason=None,
            abort_message=None,
            phase=phase,
            message=message,
            # A pause holds the canary it was asked for; the next one starts unheld.
            paused_at=None,
            held_seconds=0.0,
        )

    def decision(self, done_deleting: bool = False) -> Decision:
        return Decision(
            tuple(self.actions), self.memory, self.requeue, done_deleting, problem=self.problem
        )
