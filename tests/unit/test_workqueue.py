"""The work queue's guarantees: a clock the test controls, and real threads where they matter."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_duplicate_adds_collapse() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert queue.get(timeout=0) == "a"
    assert queue.get(timeout=0) == "b"
    assert queue.get(timeout=0) is None


def test_a_key_is_never_handed_to_two_workers_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")  # changed while being processed
    assert queue.get(timeout=0) is None, "held back until the first worker is done"
    queue.done("a")
    assert queue.get(timeout=0) == "a", "then processed again, once"
    queue.done("a")
    assert queue.get(timeout=0) is None


def test_add_after_keeps_the_earliest_time() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 30)
    queue.add_after("a", 5)
    queue.add_after("a", 60)
    assert queue.delayed() == 1
    clock.now += 4.9
    assert queue.get(timeout=0) is None
    clock.now += 0.2
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    clock.now += 100
    assert queue.get(timeout=0) is None, "the later bookings were superseded"


def test_an_add_before_the_delay_processes_now_and_the_delay_still_fires() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    clock.now += 10
    assert queue.get(timeout=0) == "a"


def test_retry_backs_off_exponentially_to_a_cap_and_forget_resets() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=4)
    assert [queue.retry("a") for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert queue.retry("b") == 0.5, "backoff is per key"
    queue.forget("a")
    assert queue.retry("a") == 0.5


def test_a_waiting_worker_wakes_for_a_delayed_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=5)))
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    queue.add_after("a", 0.2)
    worker.join()
    assert got == ["a"]
    assert 0.15 < time.monotonic() - started < 2


def test_shutdown_releases_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    workers = [threading.Thread(target=lambda: got.append(queue.get())) for _ in range(3)]
    for worker in workers:
        worker.start()
    queue.shutdown()
    for worker in workers:
        worker.join(timeout=5)
    assert got == [None, None, None]
    queue.add("a")
    assert queue.get(timeout=0) is None


def test_the_wait_of_each_key_is_reported_from_its_first_add() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    waits: list[float] = []
    queue.waited = waits.append
    queue.add("a")
    clock.now += 3
    queue.add("a")
    clock.now += 1
    assert queue.get(timeout=0) == "a"
    assert waits == [4]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["add", "get", "done"]))))
def test_random_use_never_hands_out_a_key_twice_at_once_nor_loses_one(
    operations: list[tuple[str, str]],
) -> None:
    queue: WorkQueue[str] = WorkQueue()
    held: set[str] = set()
    wanted: set[str] = set()
    for key, operation in operations:
        if operation == "add":
            queue.add(key)
            wanted.add(key)
        elif operation == "get":
            got = queue.get(timeout=0)
            if got is not None:
                assert got not in held
                held.add(got)
                wanted.discard(got)
        elif key in held:
            queue.done(key)
            held.discard(key)
    for key in sorted(held):
        queue.done(key)
    drained = set()
    while (got := queue.get(timeout=0)) is not None:
        assert got not in drained
        drained.add(got)
        queue.done(got)
    assert wanted <= drained, "every key added after its last hand-out is processed again"


def test_discard_forgets_a_gone_keys_backoff_and_booked_retry() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.retry("a")
    queue.retry("a")
    queue.discard("a")
    assert queue.failures("a") == 0
    clock.now += 1000
    assert queue.get(timeout=0) is None, "the booked retry of a gone object does not run"
    assert queue.retry("a") == queue.base_delay, "a new object of that name starts afresh"
