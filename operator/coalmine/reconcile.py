"""Observe, decide, act: one reconcile of one CanaryRollout.

Each pass reads the world from the watch-fed caches (Deployments, Services, EndpointSlices, the
router's objects), asks the pure state machine what to do, does it, and remembers the new
status. Every action is an "ensure" that is harmless to repeat, so the operator may crash
between any two API calls: the next reconcile observes what did happen and carries on.

Writes are ordered so that a crash between any two of them is harmless:
- an intent is recorded before the actions it announces: a new canary revision, an abort and a
  control token handled are written to the status before anything is created, routed or
  scaled for them, so a restart can never mistake a half-made canary for a kept revision, or
  act on a token twice; likewise a new step (or promotion stage) is written before the weight
  or the pods it gives the canary, so no canary ever has more traffic than its status says it
  reached, even if the process dies right after;
- otherwise the status is written once, at the end of the reconcile, with everything it
  learnt;
- events are emitted before the status write that records their transition, under a name
  derived from that transition (the rollout, the status the API server had when it was
  decided, the reason, its place among the events since): a reconcile replayed after a crash
  starts from that status, decides the same transitions again, and the API server refuses
  the second event of each name. Each transition is announced exactly once.

A reconcile runs a few passes in a row while the machine says "look again now" (after a weight
change, whose read-back comes from the answer to the write), so a gate opening reaches a
confirmed weight in one call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from coalmine import machine as m
from coalmine import metrics
from coalmine import resources as r
from coalmine import translate as s
from coalmine import workloads as w
from coalmine.analysis import runner as analyses
from coalmine.api.errors import SpecError
from coalmine.api.resource import CanaryRollout
from coalmine.api.status import AnalysisRunStatus, CanaryRolloutStatus
from coalmine.api.template import images_of
from coalmine.api.vocabulary import ImagePolicy
from coalmine.kube import UNREADABLE, ConflictError, InvalidError, Kube, KubeError
from coalmine.resources import Obj
from coalmine.routers.base import (
    RouterError,
    Target,
    TrafficRouter,
    ready_endpoints,
    ready_revisions,
)
from coalmine.routers.registry import ROUTERS

log = logging.getLogger("coalmine.reconcile")

MAX_PASSES = 8
RESYNC_SECONDS = 300.0
"""Look again at least this often, events or not: the safety net of a level-triggered loop.
Changes arrive as watch events and timers are booked explicitly, so this is rarely what wakes a
rollout."""
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Result:
    requeue_after: float
    finalized: bool = False
    writes: int = 0


class _Pass:
    """One observe-decide-act pass, with what it needs at hand."""

    def __init__(self, kube: Kube, obj: Obj, rollout: CanaryRollout, deleting: bool) -> None:
        self.kube = kube
        self.obj = obj
        self.rollout = rollout
        self.deleting = deleting
        spec = rollout.spec
        meta = rollout.metadata
        self.workload = w.Rollout(
            namespace=meta.namespace or "default",
            name=meta.name,
            uid=meta.uid or "",
            service=spec.service.name,
            port=spec.service.port,
            target_port=spec.service.resolved_target_port,
        )
        self.router: TrafficRouter = ROUTERS[spec.router].router
        self.target = Target(
            namespace=self.workload.namespace,
            rollout=meta.name,
            owner=self.workload.owner,
            root_service=self.workload.service,
            stable_service=self.workload.stable_service,
            canary_service=self.workload.canary_service,
            port=spec.service.port,
            stable_revision=rollout.status.stable_revision,
            canary_revision=rollout.status.canary_revision,
            config=spec.routing,
            field_path="spec.trafficRouting",
        )
        self.writes = 0
        self.adopted: w.Adopted | None = None
        """The Deployment adopted (spec.workloadRef), as read this reconcile."""
        self.services: dict[str, Obj | None] = {}
        self.router_ensured = False
        self.written = rollout.status
        """The status as the API server has it; ``rollout.status`` may be ahead of it."""
        self.events: list[tuple[str, m.EmitEvent]] = []
        """Events to emit, each with the name that makes it unique to its transition."""
        self.pass_events: list[tuple[m.EmitEvent, str]] = []
        """This pass's events, each with what tells it apart beyond its transition."""
        self.named: Counter[tuple[str, str]] = Counter()
        """Events named since the status was last written, by (reason, detail)."""

    def adopt(self) -> None:
        """With spec.workloadRef: read the Deployment and take its pod template as the spec's.

        Raises AdoptionError or OwnershipError (Ready=False). While deleting, a Deployment that
        is gone, or not this rollout's, is simply not touched.
        """
        spec = self.rollout.spec
        ref = spec.workload_ref
        if ref is None:
            return
        try:
            self.adopted = w.read_adopted(
                self.kube,
                self.workload,
                ref.name,
                require_digest=spec.image_policy == ImagePolicy.REQUIRE_DIGEST,
                label=not self.deleting,
            )
        except (w.AdoptionError, w.OwnershipError):
            if self.deleting:
                return
            raise
        self.rollout = self.rollout.model_copy(
            update={"spec": spec.with_template(self.adopted.template)}
        )

    def check_routing_unshared(self) -> None:
        """Refuse a routing object that an older rollout already routes through.

        Two rollouts weighting backends of one route would each set weights that the other's
        share depends on: the older one keeps it, the newcomer gets an OwnershipConflict (read
        from the cache, nothing written to the route).
        """
        routing = self.rollout.spec.routing
        mine = routing.references(self.workload.namespace)
        if self.deleting or not mine:
            return
        resource, where, name = mine[0]
        # A route in another namespace may be named from any namespace its grant allows.
        scope = where if where == self.workload.namespace else None
        for other in self.kube.list(r.CANARY_ROLLOUTS, scope):
            meta = other.get("metadata") or {}
            if meta.get("deletionTimestamp") or not _older(other, self.obj):
                continue
            block = ((other.get("spec") or {}).get("trafficRouting") or {}).get(routing.key)
            if not isinstance(block, dict) or name not in block.values():
                continue
            try:
                theirs = type(routing).model_validate(block)
            except ValueError:
                continue  # an invalid spec routes nothing; its own status says so
            if mine[0] in theirs.references(str(meta.get("namespace"))):
                raise w.OwnershipError(
                    resource.kind,
                    f"{where}/{name}",
                    f"spec.trafficRouting.{routing.key}",
                    f"{meta.get('namespace')}/{meta.get('name')}",
                )

    def analysis_problem(self) -> SpecError | None:
        """Templates, CEL and queries are checked before any traffic moves."""
        rollout = self.rollout
        if self.deleting or rollout.spec.template is None or not analyses.has_analysis(rollout):
            return None
        if rollout.spec.revision == rollout.status.stable_revision:
            return None
        try:
            analyses.validate(self.kube, rollout)
        except SpecError as error:
            return error
        return None

    def observe(self) -> tuple[m.Observed, str | None]:
        wl = self.workload
        router_error = None
        weight: int | None = None
        try:
            # Once per reconcile: ensure writes nothing when all is in place, but it reads.
            if not (self.deleting or self.router_ensured) and self.rollout.status.stable_revision:
                self.router.ensure(self.kube, self.target)
                self.router_ensured = True
            weight = self.router.read_weight(self.kube, self.target)
        except RouterError as error:
            router_error = str(error)
            self.router_ensured = False
        self.services = {
            name: self.kube.get(r.SERVICES, wl.namespace, name)
            for name in (wl.service, wl.stable_service, wl.canary_service)
        }
        for live in self.services.values():
            # Before anything is done: a Service another rollout manages is never shared.
            w.check_owner(live, wl, w.SERVICE_FIELD)
        observed = m.Observed(
            revisions=w.observe_revisions(self.kube, wl),
            weight=weight,
            stable_service=w.selected_revision(self.services[wl.stable_service]),
            canary_service=w.selected_revision(self.services[wl.canary_service]),
            stable_endpoints=ready_revisions(self.kube, wl.namespace, wl.stable_service),
            canary_endpoints=ready_revisions(self.kube, wl.namespace, wl.canary_service),
            router_error=router_error,
            controls=s.controls_on(self.rollout.metadata.annotations),
            adopted=self.adopted.observed if self.adopted is not None else None,
        )
        return observed, router_error

    def act(self, action: m.Action, router_error: str | None) -> None:
        wl, kube = self.workload, self.kube
        match action:
            case m.CreateRevision(revision, replicas):
                # The machine creates only the spec's own revision (an older one's template is
                # not at hand); the spec it was decided from is this pass's (an adopted
                # Deployment's template put in by `adopt`).
                spec = self.rollout.spec
                assert spec.template is not None
                w.create_revision(
                    kube,
                    wl,
                    revision,
                    spec.template,
                    replicas,
                    min_ready_seconds=spec.min_ready_seconds,
                )
                self._warn_about_tags()
            case m.ScaleRevision(revision, replicas):
                w.scale_revision(kube, wl, revision, replicas)
            case m.RestoreRevision(revision):
                w.restore_revision(kube, wl, revision)
            case m.RestartRevision(revision, stamp):
                w.restart_revision(kube, wl, revision, stamp)
            case m.DeleteRevision(revision):
                w.delete_revision(kube, wl, revision)
            case m.SelectRevisions(stable, canary, adopted):
                pods = self.adopted.selector if adopted and self.adopted is not None else None
                self.writes += w.ensure_services(
                    kube, wl, stable, canary, observed=self.services, adopted=pods
                )
                self.target = replace(self.target, stable_revision=stable, canary_revision=canary)
                if not self.deleting and not self.router_ensured:
                    self._ensure_router(router_error)
                return
            case m.ScaleAdopted() | m.ReleaseAdopted():
                self._act_on_adopted(action)
            case m.SetWeight(weight):
                if router_error is None:
                    self.router.set_weight(kube, self.target, weight)
            case m.FinalizeRouting(restore_stable):
                self.router.finalize(kube, self.target, restore_stable=restore_stable)
            case m.EmitEvent():
                self.pass_events.append((action, ""))
                return
        self.writes += 1

    def _act_on_adopted(self, action: m.ScaleAdopted | m.ReleaseAdopted) -> None:
        if self.adopted is None:
            return  # gone meanwhile: nothing of it to change
        if isinstance(action, m.ScaleAdopted):
            w.scale_adopted(self.kube, self.workload, self.adopted.name, action.replicas)
        else:
            w.release_adopted(self.kube, self.workload, self.adopted.name)

    def _ensure_router(self, router_error: str | None) -> None:
        if router_error is None:
            # A failure is observed on the next pass, and reported in the status there.
            with contextlib.suppress(RouterError):
                self.router.ensure(self.kube, self.target)
                self.router_ensured = True

    def _warn_about_tags(self) -> None:
        if self.rollout.spec.image_policy != ImagePolicy.WARN:
            return
        for image in images_of(self.rollout.spec.template or {}):
            if "@sha256:" not in image:
                warning = m.EmitEvent(
                    "ImageNotPinned",
                    f"image {image} is not pinned by digest: a tag can move under a revision",
                    warning=True,
                )
                self.pass_events.append((warning, image))

    def advance(self, new: CanaryRolloutStatus) -> None:
        """Take ``new`` as the rollout's status from now on (written by `flush`)."""
        self.rollout = self.rollout.model_copy(update={"status": new})
        self.target = replace(
            self.target,
            stable_revision=new.stable_revision,
            canary_revision=new.canary_revision,
        )

    def flush(self) -> bool:
        """Write the status, if it differs from what the API server has."""
        new = self.rollout.status
        old = self.written.to_dict()
        body = new.to_dict()
        if body == old:
            return False
        patch = {"status": body}
        # Fields that disappeared must be removed explicitly in a merge patch.
        for key in old:
            if key not in body:
                patch["status"][key] = None
        self.obj = self.kube.patch(
            r.CANARY_ROLLOUTS,
            self.workload.namespace,
            self.workload.name,
            patch,
            subresource="status",
        )
        self.writes += 1
        self.written = new
        self.named.clear()  # later events are named after this status
        return True

    def name_events(self, memory: m.Memory | None = None) -> None:
        """Give the events of this pass names derived from the transition that caused them.

        By default a name says where the transition was decided from: the status the API server
        has (where a process restarted after a crash starts again, whatever this one decided in
        passes it never wrote), the generation, and the event's place among the events of its
        reason since that status. A replay decides the same transitions in the same order, so
        it names them alike and the API server refuses the ones already recorded, even when it
        reaches them in fewer passes (the weight it had asked for is already there) or at
        another time. ``memory`` names them after that memory instead (a problem reported on
        every retry: one event for as long as it lasts).
        """
        basis_memory = s.memory_from(self.written) if memory is None else memory
        basis = (
            self.workload.uid,
            self.rollout.metadata.generation,
            basis_memory.canary,
            basis_memory.stable,
            basis_memory.step,
            basis_memory.step_started.isoformat() if basis_memory.step_started else "",
            basis_memory.stage.value,
            basis_memory.phase.value,
            sorted(basis_memory.handled.values()),
        )
        for event, detail in self.pass_events:
            ordinal = self.named[(event.reason, detail)]
            self.named[(event.reason, detail)] += 1
            digest = hashlib.sha256(
                json.dumps([*basis, event.reason, detail, ordinal], default=str).encode()
            ).hexdigest()[:20]
            self.events.append((f"{self.workload.name}.{digest}", event))
        self.pass_events = []

    def block(self, reason: str, message: str, now: datetime) -> None:
        """Record what stops the rollout (Ready=False) and announce it once."""
        generation = self.rollout.metadata.generation
        self.advance(s.problem_status(self.rollout.status, reason, message, generation, now))
        self.pass_events.append((m.EmitEvent(reason, message, warning=True), message))
        self.name_events(s.memory_from(self.rollout.status))

    def emit_events(self) -> None:
        """Announce the transitions decided so far, before the status that records them."""
        events, self.events = self.events, []
        for name, event in events:
            try:
                self.kube.emit_event(
                    self.obj,
                    reason=event.reason,
                    message=event.message,
                    warning=event.warning,
                    name=name,
                )
                self.writes += 1
            except ConflictError:
                pass  # announced before a crash: this is the replay of that transition
            except KubeError as error:
                log.warning("could not record event %s: %s", event.reason, error)


def _intent(status: CanaryRolloutStatus) -> tuple[object, ...]:
    """What must be on record before the actions that follow from it (see the module doc)."""
    return (
        status.canary_revision,
        status.stable_revision,
        status.abort_reason,
        status.controls,
    )


TRAFFIC_ACTIONS = (m.SetWeight, m.ScaleRevision, m.CreateRevision)
"""Actions that can give a canary more traffic: a weight, or pods (the replica ratio)."""


def _position(status: CanaryRolloutStatus) -> tuple[object, ...]:
    """Where the canary stands: the step it walks, or the stage of its promotion."""
    return (status.current_step_index, status.stage)


class RolloutBlocked(Exception):  # noqa: N818 - a state, reported, not an accident
    """The rollout cannot go on until someone changes something; its status says why (Ready=False).

    The controller retries it with a growing delay, without a traceback in the log.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _problem(error: Exception) -> tuple[str, str]:
    """The Ready=False reason and message for a failure, naming the field or object."""
    match error:
        case w.OwnershipError():
            return "OwnershipConflict", str(error)
        case w.AdoptionError():
            return error.reason, str(error)
        case RouterError():
            return "RouterError", str(error)
        case InvalidError():
            # The API server refused one of our writes; its message names the field.
            return "APIRejected", f"the API server refused a write: {error.message}"
        case _:
            return "InternalError", f"{type(error).__name__}: {error}"


def reconcile(
    kube: Kube,
    obj: Obj,
    now: Callable[[], datetime],
    *,
    deleting: bool = False,
    runner: analyses.Runner | None = None,
) -> Result:
    """Converge one CanaryRollout a little.

    Raises KubeError on API trouble, and RolloutBlocked once a problem only a person can mend is
    in the status: both are retried later, with backoff.
    """
    rollout = _readable(kube, obj, now, deleting)
    if isinstance(rollout, Result):
        return rollout
    current = _Pass(kube, obj, rollout, deleting)
    try:
        current.adopt()
        current.check_routing_unshared()
        invalid = current.analysis_problem()
        if invalid is not None:
            return _invalid(kube, obj, invalid, now())
        result = _converge(current, now, deleting, runner)
    except KubeError as error:
        if not isinstance(error, InvalidError):
            raise  # the API server is busy, away or refusing us: retried, nothing to record
        current.block(*_problem(error), now())
        raise RolloutBlocked(*_problem(error)) from error
    except Exception as error:
        reason, message = _problem(error)
        if reason == "InternalError":
            log.exception("reconcile failed on a bug; reporting it and retrying")
        current.block(reason, message, now())
        raise RolloutBlocked(reason, message) from error
    finally:
        # Best effort even when an action failed: the status holds decisions and observations
        # (never that an action succeeded); the events go first, named by their transition.
        current.emit_events()
        current.flush()
    return replace(result, writes=current.writes)


def _readable(
    kube: Kube, obj: Obj, now: Callable[[], datetime], deleting: bool
) -> CanaryRollout | Result:
    """The rollout to act on, or what to do with an object nothing can be decided for."""
    unreadable = obj.get(UNREADABLE)
    if unreadable:
        if deleting:
            return Result(0, finalized=True)  # nothing of it could ever be acted on
        _blocked(kube, obj, "Unreadable", f"the object {unreadable}: nothing of it is used", now())
        return Result(RESYNC_SECONDS)
    try:
        rollout = CanaryRollout.from_object(obj)
    except SpecError as error:
        if deleting:
            return Result(0, finalized=True)  # nothing was ever routed for an invalid spec
        return _invalid(kube, obj, error, now())
    if deleting and rollout.status.stable_revision is None:
        # Nothing was ever decided for it (refused from the start, say by an OwnershipConflict):
        # a stable revision is on record before anything is created or routed, so there is
        # nothing to put back, and a check that refused it must not hold its finalizer forever.
        return Result(0, finalized=True)
    return rollout


def _older(obj: Obj, than: Obj) -> bool:
    """Whether ``obj`` came before ``than``: a rollout that already has a stable revision (it
    has acted) before one that has none; then by creation time, which counts whole seconds, and
    by name within the same second."""

    def age(o: Obj) -> tuple[bool, str, str, str]:
        meta = o.get("metadata") or {}
        return (
            not (o.get("status") or {}).get("stableRevision"),
            str(meta.get("creationTimestamp") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
        )

    return age(obj) < age(than)


def _converge(
    current: _Pass,
    now: Callable[[], datetime],
    deleting: bool,
    runner: analyses.Runner | None,
) -> Result:
    requeue = RESYNC_SECONDS
    for _ in range(MAX_PASSES):
        observed, router_error = current.observe()
        at = now()
        progress = (
            runner.progress(current.rollout, at)
            if runner is not None and not deleting
            else analyses.Progress()
        )
        observed = replace(
            observed, step_analysis=progress.step, background_analysis=progress.background
        )
        plan = s.plan_from(current.rollout, deleting=deleting)
        memory = s.memory_from(current.rollout.status)
        decision = m.decide(plan, memory, observed, at)
        for reason, message, warning in progress.events:
            # Each measurement is news of its own: its time tells it apart.
            measured = m.EmitEvent(reason, message, warning)
            current.pass_events.append((measured, at.isoformat()))
        for action in decision.actions:
            if isinstance(action, m.EmitEvent):
                current.act(action, router_error)
        if decision.done_deleting:
            current.name_events()
            for action in decision.mutating:
                current.act(action, router_error)
            metrics.forget_rollout(current.workload.namespace, current.workload.name)
            return Result(0, finalized=True)
        _record_metrics(current, memory, decision, at)
        new = s.status_from(
            current.rollout,
            decision,
            at,
            router_error=router_error,
            stable_ready=ready_endpoints(
                current.kube, current.workload.namespace, current.workload.stable_service
            ),
            replicas=sum(revision.replicas for revision in observed.revisions.values()),
        )
        new.analysis = _runs(current.rollout, decision.memory, progress)
        intent = _intent(new) != _intent(current.written)
        if _position(new) != _position(current.written) and any(
            isinstance(a, TRAFFIC_ACTIONS) for a in decision.actions
        ):
            # What a step gives the canary (a weight, pods) is given only once the status
            # says the canary reached that step: never more traffic than the status admits.
            intent = True
        current.advance(new)
        current.name_events()
        if intent:
            current.emit_events()
            current.flush()
        for action in decision.mutating:
            current.act(action, router_error)
        current.name_events()  # what the actions had to say (an image not pinned)
        requeue = RESYNC_SECONDS if decision.requeue_after is None else decision.requeue_after
        if progress.next_due is not None:
            requeue = min(requeue, max(0.05, (progress.next_due - at).total_seconds()))
        if router_error is not None:
            requeue = min(requeue, RETRY_SECONDS)
        weight_changed = any(isinstance(a, m.SetWeight) for a in decision.actions)
        if requeue > 0 and not weight_changed:
            break
    return Result(max(requeue, 0.0))


def _runs(
    rollout: CanaryRollout, memory: m.Memory, progress: analyses.Progress
) -> list[AnalysisRunStatus] | None:
    """The analysis runs to keep in the status: this canary's, the newest first, at most 2."""
    if memory.canary is None:
        return None
    runs = {r.name: r for r in rollout.status.analysis or [] if r.revision == memory.canary}
    runs.update({r.name: r for r in progress.runs})
    kept = sorted(runs.values(), key=lambda r: r.started_at, reverse=True)[:2]
    return kept or None


FINISHED = ("Promoted", "Aborted", "Superseded", "RolledBack")


def _record_metrics(current: _Pass, before: m.Memory, decision: m.Decision, at: datetime) -> None:
    after = decision.memory
    wl = current.workload
    metrics.observe_rollout(wl.namespace, wl.name, after.phase.value, after.confirmed_weight)
    reasons = [a.reason for a in decision.actions if isinstance(a, m.EmitEvent)]
    if "StepCompleted" in reasons and before.step_started is not None:
        steps = current.rollout.spec.steps
        kind = steps[before.step].action.value if before.step < len(steps) else "promotion"
        metrics.STEP_DURATION.labels(kind).observe((at - before.step_started).total_seconds())
    started = next(
        (h.started_at for h in current.rollout.status.history if h.revision == before.canary),
        None,
    )
    for reason in reasons:
        if reason in FINISHED and started is not None:
            metrics.ROLLOUT_DURATION.labels(reason).observe((at - started).total_seconds())


def _invalid(kube: Kube, obj: Obj, error: SpecError, now: datetime) -> Result:
    """An invalid spec: say so in a condition and an event, change nothing else."""
    meta = obj.get("metadata", {})
    old = _status_of(obj)
    new = s.invalid_status(old, error.field, error.reason, meta.get("generation"), now)
    _record_problem(kube, obj, old, new, reason="InvalidSpec", message=str(error))
    return Result(RESYNC_SECONDS)


def _blocked(kube: Kube, obj: Obj, reason: str, message: str, now: datetime) -> None:
    """A rollout that cannot be parsed at all: Ready=False and one event, nothing else."""
    old = _status_of(obj)
    new = s.problem_status(old, reason, message, obj["metadata"].get("generation"), now)
    _record_problem(kube, obj, old, new, reason=reason, message=message)


def _status_of(obj: Obj) -> CanaryRolloutStatus:
    try:
        return CanaryRolloutStatus.from_object(obj)
    except SpecError:
        return CanaryRolloutStatus()


def _record_problem(
    kube: Kube,
    obj: Obj,
    old: CanaryRolloutStatus,
    new: CanaryRolloutStatus,
    *,
    reason: str,
    message: str,
) -> None:
    if new.to_dict() == old.to_dict():
        return  # said already: no write, no event
    meta = obj["metadata"]
    # Named by what it says, so a replay after a crash between the two writes adds nothing.
    digest = hashlib.sha256(
        json.dumps([meta.get("uid"), meta.get("generation"), reason, message]).encode()
    ).hexdigest()[:20]
    with contextlib.suppress(ConflictError):
        kube.emit_event(
            obj, reason=reason, message=message, warning=True, name=f"{meta['name']}.{digest}"
        )
    kube.patch(
        r.CANARY_ROLLOUTS,
        meta.get("namespace"),
        meta["name"],
        {"status": new.to_dict()},
        subresource="status",
    )
