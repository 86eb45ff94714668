"""A keyed work queue, the way client-go's controllers use one.

Watch events and timers only put keys here; a fixed pool of workers takes them out. The queue
guarantees what the reconciler relies on:

- a key is processed by one worker at a time: a key added while it is being processed is kept
  aside and handed out again once the worker is done;
- duplicate adds collapse: a key waiting in the queue is there once, however often it was added;
- ``add_after`` replaces sleeping: the earliest requested time wins, and no thread, task or timer
  waits per key (idle workers wait on one condition until the next key is due);
- ``retry`` re-adds a failed key with exponential backoff, per key, up to a cap; ``forget``
  resets it after a success.

Pure Python and threads, no I/O, so it is tested directly.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys to reconcile, each handed to one worker at a time."""

    def __init__(
        self,
        *,
        base_delay: float = 0.25,
        max_delay: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        self._order = itertools.count()
        self._shut = False
        self.waited: Callable[[float], None] | None = None
        """Called with how long each key waited from its add to a worker taking it."""

    # --- adding ---------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Process ``key`` as soon as a worker is free (once, however often it is added)."""
        with self._cond:
            if self._add(key):
                self._cond.notify()

    def _add(self, key: K) -> bool:
        if self._shut or key in self._dirty:
            return False
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return False  # handed out again by done()
        self._queue.append(key)
        return True

    def add_after(self, key: K, seconds: float) -> None:
        """Process ``key`` in ``seconds`` (or earlier, if it is added meanwhile)."""
        if seconds <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shut:
                return
            due = self._clock() + seconds
            if self._due.get(key, float("inf")) <= due:
                return  # an earlier time is already booked
            self._due[key] = due
            heapq.heappush(self._delayed, (due, next(self._order), key))
            self._cond.notify()  # a waiting worker may now have to wake sooner

    def retry(self, key: K) -> float:
        """Add ``key`` again after its backoff, which doubles with each failure in a row."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self.max_delay, self.base_delay * float(2**failures))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded (or is gone): its next failure starts the backoff afresh."""
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def discard(self, key: K) -> None:
        """Drop every trace of a key whose object is gone (a queued add still runs once)."""
        with self._cond:
            self._failures.pop(key, None)
            self._due.pop(key, None)

    # --- taking ---------------------------------------------------------------------------------

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self._add(key)

    def get(self, timeout: float | None = None) -> K | None:
        """The next key, marked as being processed; None once shut down (or on ``timeout``)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                self._promote_due(now)
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    added = self._added_at.pop(key, now)
                    if self.waited is not None:
                        self.waited(now - added)
                    return key
                if self._shut:
                    return None
                waits = [t - now for t in (deadline,) if t is not None]
                if self._delayed:
                    waits.append(self._delayed[0][0] - now)
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(max(0.0, min(waits)) if waits else None)

    def done(self, key: K) -> None:
        """The worker finished ``key``; if it was added meanwhile, it is queued again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        """Hand out no more keys; workers waiting in ``get`` return None."""
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    # --- looking --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys waiting for a worker now (not the delayed ones)."""
        with self._cond:
            self._promote_due(self._clock())
            return len(self._queue)

    def delayed(self) -> int:
        """Keys booked for later."""
        with self._cond:
            return len(self._due)

    def processing(self) -> int:
        with self._cond:
            return len(self._processing)
