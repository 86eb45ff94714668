"""What the fault-injection tests do to the operator: kill it at random, or let it die at a write.

`Killer` sends SIGKILL to the operator every few seconds (a seeded schedule) and starts it again
a moment later, as a crash-looping pod would be. `Supervisor` restarts an operator that died by
itself (the write failpoint, ``COALMINE_FAILPOINT_WRITE``) without the failpoint, so the run
goes on. Both only ever touch the `OperatorProcess` they are given.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from coalmine.kube import Kube
from coalmine.resources import Resource
from devenv.operator import OperatorProcess

FAILPOINT = "COALMINE_FAILPOINT_WRITE"
WRITE_LOG = "COALMINE_WRITE_LOG"


class Killer:
    """SIGKILLs the operator every ``low``-``high`` seconds (seeded), restarting it after up to
    ``restart_within`` seconds; `paused` holds the kills while a test measures something."""

    def __init__(
        self,
        operator: OperatorProcess,
        rng: random.Random,
        *,
        low: float = 2.0,
        high: float = 8.0,
        restart_within: float = 1.0,
    ) -> None:
        self.operator = operator
        self.rng = rng
        self.low, self.high, self.restart_within = low, high, restart_within
        self.kills = 0
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._running.set()
        self._thread.join(15)
        with self._lock:
            if not self.operator.alive():
                self.operator.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No kill in this block; the operator runs (started if a kill just took it down)."""
        self._running.clear()
        with self._lock:
            if not self.operator.alive():
                self.operator.start()
        try:
            yield
        finally:
            self._running.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stop.wait(self.rng.uniform(self.low, self.high)):
                return
            self._running.wait()
            if self._stop.is_set():
                return
            with self._lock:
                if not self._running.is_set():
                    continue
                self.operator.kill()
                self.kills += 1
                time.sleep(self.rng.uniform(0, self.restart_within))
                self.operator.start()


class Supervisor:
    """Starts the operator again, without the failpoint, whenever it dies by itself (its writes
    go on being logged, numbered from 1 again)."""

    def __init__(self, operator: OperatorProcess, *, poll: float = 0.05) -> None:
        self.operator = operator
        self.poll = poll
        self.crashes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            if not self.operator.alive():
                self.crashes += 1
                self.operator.env.pop(FAILPOINT, None)
                self.operator.start()


def quiet_namespaces(kube: Kube, timeout: float = 90.0) -> list[str]:
    """Wait (best effort) until no namespace is being deleted; the ones still going, if any.

    Kill the API server while a namespace is being deleted and the namespace controller may
    finish it without the custom resources its discovery had not caught up with: they stay in
    etcd without their namespace, and later operators serve them forever. Fault tests wait for
    deletions under way before they take the API server down.
    """
    namespaces = Resource("", "v1", "namespaces", "Namespace", False)

    def terminating() -> list[str]:
        return [
            n["metadata"]["name"]
            for n in kube.request("GET", namespaces.path(None)).get("items") or []
            if (n.get("status") or {}).get("phase") == "Terminating"
        ]

    deadline = time.monotonic() + timeout
    while (left := terminating()) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def writes(log: Path) -> list[str]:
    """The writes a failpoint log recorded, one "n VERB path" line each."""
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line.strip()]
