"""Waiting for a condition with a timeout and a failure message that says what was awaited.

Tests against a real cluster wait for eventually-consistent state. Every wait here is bounded,
and on timeout it reports both the awaited condition and the last value seen, so a red test
says what went wrong without a rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """The awaited condition did not hold in time (an AssertionError, so pytest reports it)."""


def wait_for(
    probe: Callable[[], T],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str,
) -> T:
    """Call ``probe`` until ``until(value)`` holds; return that value or fail after ``timeout``.

    Exceptions from ``probe`` count as "not yet" and are reported if the time runs out.
    """
    deadline = time.monotonic() + timeout
    last: object = "<never evaluated>"
    while True:
        try:
            value = probe()
            if until(value):
                return value
            last = value
        except Exception as exc:  # a failing probe is one more "not yet"
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f} s waiting for {message}; last seen: {last!r}"
            )
        time.sleep(interval)
