"""Following objects as they change: the live view, and waiting until the operator has acted.

Waiting is watching: one `coalmine.kube.Informer` per kind lists once and then follows a watch,
so a CI job sees every change as it happens and costs the API server one open stream, not a
request a second. The informer runs in its own thread and posts what it sees on a queue; the
main thread reads the queue, so it stays free to receive Ctrl-C, and events arriving together
are handled once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from coalmine import resources as r
from coalmine.cli import view
from coalmine.cli.session import EXIT_FAILED, EXIT_OK, CliError, Session
from coalmine.kube import CacheNotReadyError, Informer, Kube
from coalmine.labels import rollout_selector
from coalmine.resources import Obj, Resource

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def clock() -> str:
    return now().strftime("%H:%M:%S")


@dataclass(frozen=True)
class Update:
    """What an informer tells the main thread: the objects now, or why its watch failed."""

    source: str
    objects: dict[str, Obj] | None = None
    problem: str | None = None


class Followed:
    """One kind of object, followed into a queue of snapshots (name -> object)."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespace: str,
        updates: queue.Queue[Update],
        *,
        source: str,
        name: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.source = source
        self.namespace = namespace
        self.updates = updates
        self.informer = Informer(
            kube, resource, namespace=namespace, name=name, label_selector=label_selector
        )
        self.informer.handlers.append(lambda *_: self._post())
        self.informer.failed.append(lambda why: updates.put(Update(source, problem=why)))

    def _post(self) -> None:
        try:
            objects = self.informer.select(self.namespace)
        except CacheNotReadyError:
            return  # the watch is failing: `failed` says so, and the next list posts again
        self.updates.put(Update(self.source, objects={o["metadata"]["name"]: o for o in objects}))

    def start(self) -> None:
        self.informer.start()
        # The first snapshot, even an empty one (handlers hear only of objects that exist).
        threading.Thread(target=self._first, name=f"{self.source}-synced", daemon=True).start()

    def _first(self) -> None:
        if self.informer.synced.wait():
            self._post()

    def stop(self) -> None:
        self.informer.stop()


def follow_rollout(
    session: Session, name: str, deadline: float, check: Callable[[Obj], T | None]
) -> T | None:
    """Until ``check`` of the rollout returns something, or ``deadline`` (time.monotonic()).

    Raises CliError when the rollout is deleted meanwhile; warns when the watch fails (it is
    resumed with backoff by the informer).
    """
    updates: queue.Queue[Update] = queue.Queue()
    followed = Followed(
        session.kube, r.CANARY_ROLLOUTS, session.namespace, updates, source="rollout", name=name
    )
    followed.start()
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                update = updates.get(timeout=remaining)
            except queue.Empty:
                break
            if update.problem is not None:
                session.warn(f"warning: watching canaryrollout {name}: {update.problem}")
                continue
            rollout = (update.objects or {}).get(name)
            if rollout is None:
                raise CliError(f"canaryrollout {name} was deleted while waiting")
            result = check(rollout)
            if result is not None:
                return result
        return None
    finally:
        followed.stop()


class LiveView:
    """`get --watch`: redraw the view on every event of the rollout or of its Deployments."""

    CLEAR = "\x1b[H\x1b[2J"

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name
        self.updates: queue.Queue[Update] = queue.Queue()
        self.rollout: Obj | None = None
        self.deployments: list[Obj] | None = None

    def _batch(self) -> list[Update]:
        # Blocks until something happens; a signal (Ctrl-C) still interrupts the wait.
        batch = [self.updates.get()]
        while True:
            try:
                batch.append(self.updates.get_nowait())
            except queue.Empty:
                return batch

    def _draw(self, body: str) -> None:
        header = f"{clock()}  watching canaryrollout {self.name} (Ctrl-C to stop)"
        if self.session.out.isatty():
            self.session.out.write(f"{self.CLEAR}{header}\n\n{body}\n")
        else:
            self.session.out.write(f"{header}\n{body}\n\n")
        self.session.out.flush()

    def _take(self, update: Update) -> bool:
        """Note an update; False when the rollout is gone."""
        if update.problem is not None:
            self.session.warn(
                f"warning: watching {update.source} failed ({update.problem}); watching again"
            )
        elif update.source == "rollout" and update.objects is not None:
            self.rollout = update.objects.get(self.name)
            if self.rollout is None:
                self.session.warn(
                    f"canaryrollout {self.name} was deleted from namespace {self.session.namespace}"
                )
                return False
        elif update.objects is not None:
            self.deployments = list(update.objects.values())
        return True

    def run(self) -> int:
        session, namespace = self.session, self.session.namespace
        followed = [
            Followed(
                session.kube,
                r.CANARY_ROLLOUTS,
                namespace,
                self.updates,
                source="rollout",
                name=self.name,
            ),
            Followed(
                session.kube,
                r.DEPLOYMENTS,
                namespace,
                self.updates,
                source="deployments",
                label_selector=rollout_selector(self.name),
            ),
        ]
        for each in followed:
            each.start()
        shown = ""
        try:
            while True:
                for update in self._batch():
                    if not self._take(update):
                        return EXIT_FAILED
                # Draw only once both lists arrived: a first frame without the Deployments
                # would show pods missing that are not.
                if self.rollout is None or self.deployments is None:
                    continue
                body = view.rollout_view(self.rollout, self.deployments, now=now())
                if body != shown:
                    self._draw(body)
                    shown = body
        except KeyboardInterrupt:
            if session.out.isatty():
                session.out.write("\n")
            return EXIT_OK
        finally:
            for each in followed:
                each.stop()
