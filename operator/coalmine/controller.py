"""The controller: watch-fed caches, a keyed work queue, and a fixed pool of workers.

Nothing here waits per rollout. One informer per kind keeps the objects the operator reads in
memory; its events only map a change to the keys of the rollouts it concerns (their own
objects by the rollout label, the user's routes and templates through `dependencies`) and add
those keys to the queue. ``COALMINE_WORKERS`` threads take keys out one at a time and reconcile
them; a reconcile that wants to look again later books its key with ``add_after``, and one that
fails is retried with a growing backoff. A change made while a rollout is being reconciled
queues it once more.

Flow: watch -> informer cache -> handler -> queue -> worker -> reconcile (observe from the
cache, decide, act, write status) -> the answers of its writes go back into the cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

from coalmine import logs, metrics
from coalmine import resources as r
from coalmine.analysis.runner import Runner
from coalmine.dependencies import DependencyIndex, references
from coalmine.kube import (
    CacheNotReadyError,
    ForbiddenError,
    Informer,
    Kube,
    KubeError,
    trim_to_metadata,
)
from coalmine.labels import (
    ADOPTED_BY_LABEL,
    FINALIZER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROLLOUT_LABEL,
    SERVICE_NAME_LABEL,
    SHARD_LABEL,
)
from coalmine.peering import outranked, peering_resource
from coalmine.reconcile import RolloutBlocked, reconcile
from coalmine.resources import Obj, Resource
from coalmine.settings import Settings
from coalmine.workqueue import WorkQueue

log = logging.getLogger("coalmine.controller")

Key = tuple[str, str]
"""A rollout: (namespace, name)."""

TICK: Final[Key] = ("", "")
"""Not a rollout: the key that makes a worker look at the peering object once a second."""
PEERING_GRACE_SECONDS = 3.0
"""After start, replicas wait this long before acting: each must see the others' keep-alives."""
FORBIDDEN_STREAK = 3
"""Reconciles refused (403) in a row after which the operator reports itself not ready."""


def _owned_selector() -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def shard_selector(shard: str | None) -> str:
    """The CanaryRollouts a shard serves: those labelled with it, or the unlabelled ones."""
    return f"{SHARD_LABEL}={shard}" if shard else f"!{SHARD_LABEL}"


class Controller:
    """Serves every CanaryRollout of its shard with a fixed number of worker threads."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        now: Callable[[], datetime],
        runner: Runner | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.now = now
        self.runner = runner
        self.queue: WorkQueue[Key] = WorkQueue(max_delay=settings.max_backoff_seconds)
        self.queue.waited = metrics.WORKQUEUE_WAIT.observe
        self.index: DependencyIndex[Key] = DependencyIndex()
        self.rollouts = self._informer(
            r.CANARY_ROLLOUTS, label_selector=shard_selector(settings.shard)
        )
        self.rollouts.handlers.append(self._rollout_changed)
        self.core = [self.rollouts]
        for resource in (r.DEPLOYMENTS, r.SERVICES, r.ENDPOINT_SLICES):
            informer = self._informer(resource, label_selector=_owned_selector())
            informer.handlers.append(self._owned_changed)
            self.core.append(informer)
        # The users' Deployments that rollouts adopt (spec.workloadRef) are not coalmine's, so
        # not in the cache above: they carry the adopted-by label from first sight on, and a
        # cache of their own follows exactly those (a change of template starts a canary).
        adopted = self._informer(r.ADOPTED_DEPLOYMENTS, label_selector=ADOPTED_BY_LABEL)
        adopted.handlers.append(self._adopted_changed)
        self.core.append(adopted)
        # Pods only for their revision label: endpoints are counted by it (their names may not
        # hold it). Kept to their metadata; only a pod coming or going wakes its rollout.
        pods = self._informer(r.PODS, label_selector=ROLLOUT_LABEL, transform=trim_to_metadata)
        pods.handlers.append(self._pod_changed)
        self.core.append(pods)
        self.others: list[Informer] = []
        for resource in (r.HTTP_ROUTES, r.INGRESSES, r.VIRTUAL_SERVICES, r.TRAFFIC_SPLITS):
            self._referenced(resource, required=False, owned_too=True)
        self._referenced(r.REFERENCE_GRANTS, required=False)
        self._referenced(r.ANALYSIS_TEMPLATES, required=True)
        if settings.namespace is None:
            self._referenced(r.CLUSTER_ANALYSIS_TEMPLATES, required=True)
        self.peering: Informer | None = None
        if not settings.standalone:
            self.peering = self._informer(
                peering_resource(settings.namespace), name=settings.peering_name
            )
            self.peering.handlers.append(lambda *_: self.queue.add(TICK))
            self.core.append(self.peering)
        self._workers: list[threading.Thread] = []
        self._active = settings.standalone
        self._started = time.monotonic()
        self._recent: deque[str] = deque(maxlen=FORBIDDEN_STREAK)
        self._stopping = threading.Event()
        metrics.ACTIVE.set(1 if self._active else 0)
        metrics.WORKQUEUE_DEPTH.set_function(lambda: len(self.queue))
        for informer in self.informers:
            # After an outage every rollout is looked at again at once, not after its backoff.
            informer.recovered.append(self.requeue_all)

    def _informer(self, resource: Resource, **options: object) -> Informer:
        informer = Informer(
            self.kube,
            resource,
            namespace=self.settings.namespace,
            # What a reconcile reads by: the objects of one rollout, the slices of one Service.
            index_labels=(ROLLOUT_LABEL, SERVICE_NAME_LABEL),
            **options,  # type: ignore[arg-type]
        )
        self.kube.attach(informer)
        return informer

    def _referenced(self, resource: Resource, *, required: bool, owned_too: bool = False) -> None:
        informer = self._informer(resource, required=required)

        def changed(_: str, obj: Obj, before: Obj | None) -> None:
            meta = obj.get("metadata") or {}
            namespace = str(meta.get("namespace") or "")
            keys = self.index.keys_for(resource, namespace, str(meta.get("name") or ""))
            if owned_too:
                owner = (meta.get("labels") or {}).get(ROLLOUT_LABEL)
                if owner and (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
                    keys.add((namespace, str(owner)))
            for key in keys:
                self.queue.add(key)

        informer.handlers.append(changed)
        self.others.append(informer)

    # --- events -> keys -------------------------------------------------------------------------

    def _rollout_changed(self, event: str, obj: Obj, before: Obj | None) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event == "DELETED":
            self.index.remove(key)
            self.queue.discard(key)
            metrics.forget_rollout(*key)
            return
        self.index.record(key, references(obj))
        self.queue.add(key)

    def _pod_changed(self, event: str, obj: Obj, before: Obj | None) -> None:
        if before is None or event == "DELETED":
            self._owned_changed(event, obj, before)

    def _adopted_changed(self, event: str, obj: Obj, before: Obj | None) -> None:
        self._wake_by_label(obj, ADOPTED_BY_LABEL)

    def _owned_changed(self, event: str, obj: Obj, before: Obj | None) -> None:
        self._wake_by_label(obj, ROLLOUT_LABEL)

    def _wake_by_label(self, obj: Obj, label: str) -> None:
        """Queue the rollout that ``obj``'s ``label`` names, in ``obj``'s namespace."""
        meta = obj.get("metadata") or {}
        rollout = (meta.get("labels") or {}).get(label)
        if rollout:
            self.queue.add((str(meta.get("namespace") or ""), str(rollout)))

    # --- running --------------------------------------------------------------------------------

    @property
    def informers(self) -> list[Informer]:
        return [*self.core, *self.others]

    def start(self) -> None:
        """Start the informers, then the workers (which wait for the caches to sync)."""
        for informer in self.informers:
            informer.start()
        for number in range(self.settings.workers):
            worker = threading.Thread(target=self._work, name=f"worker-{number}", daemon=True)
            worker.start()
            self._workers.append(worker)
        if not self.settings.standalone:
            self.queue.add_after(TICK, PEERING_GRACE_SECONDS)
        log.info(
            "serving CanaryRollouts (%s) with %d workers",
            shard_selector(self.settings.shard),
            self.settings.workers,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Take no more keys; let the reconciles under way finish (up to ``timeout``)."""
        self._stopping.set()
        self.queue.shutdown()
        for informer in self.informers:
            informer.stop()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        for informer in self.core:
            while not informer.synced.wait(1.0):
                if self._stopping.is_set():
                    return
        while (key := self.queue.get()) is not None:
            try:
                if key == TICK:
                    self._look_at_peering()
                elif self._active:
                    self._process(key)
                # A standby drops its keys: all are queued again when it becomes active.
            finally:
                self.queue.done(key)

    # --- peering --------------------------------------------------------------------------------

    def _look_at_peering(self) -> None:
        active = False
        if time.monotonic() - self._started >= PEERING_GRACE_SECONDS and self.peering is not None:
            try:
                peering = self.peering.get(self.settings.namespace, self.settings.peering_name)
            except CacheNotReadyError:
                peering = None
            # No peering object yet: nobody can know who else is there, so nobody acts.
            active = peering is not None and not outranked(
                peering, self.settings.peering_priority, self.now()
            )
        if active != self._active:
            self._active = active
            metrics.ACTIVE.set(1 if active else 0)
            if active:
                log.info("this replica is active: reconciling every rollout")
                self.requeue_all()
            else:
                log.info("another replica is active: standing by")
        if not self._stopping.is_set():
            self.queue.add_after(TICK, 1.0)

    def requeue_all(self) -> None:
        for obj in self._all_rollouts():
            meta = obj["metadata"]
            self.queue.add((str(meta.get("namespace") or ""), str(meta["name"])))

    def _all_rollouts(self) -> Iterable[Obj]:
        try:
            return self.rollouts.select()
        except CacheNotReadyError:
            return []  # the informer's own listing queues them all

    # --- one key --------------------------------------------------------------------------------

    def _process(self, key: Key) -> None:
        namespace, name = key
        started = time.monotonic()
        with logs.working_on(f"{namespace}/{name}"):
            try:
                obj = self.kube.get(r.CANARY_ROLLOUTS, namespace, name)
                if obj is None:
                    self.queue.discard(key)
                    return
                delay = self._reconcile(obj)
            except RolloutBlocked as blocked:
                # Its status says why (Ready=False); someone must change something.
                metrics.RECONCILE_ERRORS.labels("blocked").inc()
                log.info("rollout blocked, retrying later: %s", blocked)
                self.queue.retry(key)
                self._recent.append("blocked")
            except CacheNotReadyError as error:
                # Waiting for a cache is no failure of the rollout; just look again soon.
                log.debug("waiting for a cache: %s", error.message)
                self.queue.retry(key)
                self._recent.append("cache")
            except ForbiddenError as error:
                metrics.RECONCILE_ERRORS.labels("forbidden").inc()
                log.warning("reconcile refused by the API server, retrying: %s", error)
                self.queue.retry(key)
                self._recent.append(f"forbidden: {error.message}")
            except KubeError as error:
                metrics.RECONCILE_ERRORS.labels("api").inc()
                log.warning("reconcile failed, retrying: %s", error)
                self.queue.retry(key)
                self._recent.append("api")
            except Exception:
                metrics.RECONCILE_ERRORS.labels("crash").inc()
                log.exception("reconcile crashed, retrying")
                self.queue.retry(key)
                self._recent.append("crash")
            else:
                self.queue.forget(key)
                if delay is not None:
                    self.queue.add_after(key, delay)
                self._recent.append("ok")
            finally:
                metrics.RECONCILES.inc()
                metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _reconcile(self, obj: Obj) -> float | None:
        """Reconcile one rollout, holding and releasing its finalizer; the next look, if any."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if FINALIZER not in finalizers:
                return None
            result = reconcile(self.kube, obj, self.now, deleting=True)
            if not result.finalized:
                return max(result.requeue_after, 1.0)
            # Re-read: the reconcile may have written the status, and the patch below is
            # conditional on the resourceVersion it holds (the cache has the answer).
            obj = self.kube.get(r.CANARY_ROLLOUTS, meta.get("namespace"), meta["name"]) or obj
            self._set_finalizers(
                obj, [f for f in obj["metadata"].get("finalizers") or [] if f != FINALIZER]
            )
            metrics.forget_rollout(meta.get("namespace") or "", meta["name"])
            return None
        if FINALIZER not in finalizers:
            answer = self._set_finalizers(obj, [*finalizers, FINALIZER])
            # Go on from the cache, which took the answer in as it takes every object: an
            # unreadable one (nested too deep) is a stub there, the raw answer is not.
            obj = self.kube.get(r.CANARY_ROLLOUTS, meta.get("namespace"), meta["name"]) or answer
        return reconcile(self.kube, obj, self.now, runner=self.runner).requeue_after

    def _set_finalizers(self, obj: Obj, finalizers: list[str]) -> Obj:
        meta = obj["metadata"]
        # The resourceVersion makes it optimistic: a finalizer someone else added meanwhile is
        # never dropped (the patch fails with a conflict and is retried from the new object).
        return self.kube.patch(
            r.CANARY_ROLLOUTS,
            meta.get("namespace"),
            meta["name"],
            {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}},
        )

    # --- probes ---------------------------------------------------------------------------------

    def live(self) -> tuple[bool, str]:
        dead = [i.resource.cache_name for i in self.informers if not i.alive()]
        dead += [w.name for w in self._workers if not w.is_alive()]
        if dead:
            return False, f"threads stopped: {', '.join(dead)}"
        return True, "informers and workers running"

    def ready(self) -> tuple[bool, str]:
        for informer in self.core:
            if not informer.synced.is_set():
                return False, f"{informer.resource.cache_name} not listed yet: {informer.problem}"
            if not informer.healthy:
                return (
                    False,
                    f"the watch of {informer.resource.cache_name} is broken: {informer.problem}",
                )
        refused = [outcome for outcome in self._recent if outcome.startswith("forbidden")]
        if len(refused) == FORBIDDEN_STREAK:
            return False, f"the last {FORBIDDEN_STREAK} reconciles were refused: {refused[-1]}"
        role = "active" if self._active else "standby"
        return True, f"{role}; {len(self.rollouts)} rollouts; {len(self.queue)} queued"
