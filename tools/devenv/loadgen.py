"""The project's load generator: steady, bounded HTTP traffic that records what each answer says.

Canary tests must show that a weight written by the operator is the share of real requests a
version receives, and that moving weights and scaling revisions down loses no request. That
needs traffic that is steady (a fixed rate, so a time window holds a known number of requests),
bounded (it stops by itself after a duration and a request count, so a failing test cannot leave
it running), and attributable (every answer of the demo app names its ``version``).

Requests are paced by one shared schedule (request *i* is due at ``start + i / rate``) and sent
by a fixed pool of worker threads, each with its own keep-alive connections (``http.client``),
as browsers and services talk to a gateway. A worker that falls behind catches up by at most
``max_lag`` seconds of requests, so a stall never turns into an unbounded burst. Each answer is
recorded as a ``Sample`` (start time, latency, status, version, error); ``window`` and
``snapshot`` summarise any time range: the split per version, the failed requests (non-2xx or
no answer) and latency percentiles.

Two ways to aim: ``url`` (one address, a gateway such as Traefik, with an optional Host header),
or ``targets`` (endpoint ``(ip, port)`` pairs, taken round-robin or at random per request, as
kube-proxy spreads a Service's connections) for tests without a gateway.

CLI: ``python -m devenv.loadgen --url http://127.0.0.1:8000/ --host shop.example --rate 200
--duration 30 --json``. It enters the local cluster's network namespace first (``--netns ''``
to stay where it is), so pod IPs are never looked for outside it.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Hard ceilings: whatever a caller asks, a generator ends and its memory stays bounded.
MAX_DURATION_S = 3600.0
MAX_RATE = 10_000.0
MAX_WORKERS = 256
MAX_REQUESTS = 2_000_000
#: Bodies are read up to this size; the demo app answers about a hundred bytes.
MAX_BODY_BYTES = 64 * 1024
#: How often waiting helpers look at the counters.
_POLL_S = 0.05

Spread = Literal["round-robin", "random"]
Target = tuple[str, int]


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it."""

    started: float
    """``time.monotonic()`` when the request was sent (windows select on it)."""
    latency: float
    """Seconds from sending to the end of the body (a stale-connection retry included)."""
    status: int | None
    """HTTP status, or None when no answer came (refused, reset, timed out)."""
    version: str | None
    """The ``version`` field of a JSON answer (the demo app's version), when there is one."""
    target: str
    """``ip:port`` the request went to."""
    error: str | None = None
    """The exception's class name when no answer came."""
    retried: bool = False
    """Sent again on a fresh connection because a reused keep-alive one had been closed."""

    @property
    def failed(self) -> bool:
        return self.status is None or not 200 <= self.status < 300


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted ``values`` (0 for none)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass(frozen=True)
class Summary:
    """What a set of samples says: counts, the split per version, failures and latency."""

    requests: int
    ok: int
    failed: int
    seconds: float
    by_version: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    """Counts per HTTP status, and per ``error:<exception>`` for requests with no answer."""
    by_target: dict[str, int] = field(default_factory=dict)
    stale_retries: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    """p50, p90, p99 and max, in milliseconds."""

    @classmethod
    def of(cls, samples: Sequence[Sample], seconds: float) -> Summary:
        latencies = sorted(s.latency for s in samples)
        failed = sum(1 for s in samples if s.failed)
        return cls(
            requests=len(samples),
            ok=len(samples) - failed,
            failed=failed,
            seconds=seconds,
            by_version=dict(Counter(s.version for s in samples if s.version is not None)),
            by_status=dict(
                Counter(
                    str(s.status) if s.status is not None else f"error:{s.error}" for s in samples
                )
            ),
            by_target=dict(Counter(s.target for s in samples)),
            stale_retries=sum(1 for s in samples if s.retried),
            latency_ms={
                "p50": round(percentile(latencies, 50) * 1000, 3),
                "p90": round(percentile(latencies, 90) * 1000, 3),
                "p99": round(percentile(latencies, 99) * 1000, 3),
                "max": round((latencies[-1] if latencies else 0.0) * 1000, 3),
            },
        )

    @property
    def rate(self) -> float:
        """Requests per second over the window."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def versioned(self) -> int:
        """Answers that named a version: the denominator of ``share``."""
        return sum(self.by_version.values())

    def share(self, version: str) -> float:
        """Fraction (0..1) of the answers naming a version that named this one."""
        total = self.versioned
        return self.by_version.get(version, 0) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = round(self.rate, 2)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(frozen=True)
class Counters:
    """Live counts, cheap to read while the generator runs."""

    sent: int
    completed: int
    failed: int
    running: bool

    @property
    def in_flight(self) -> int:
        return self.sent - self.completed


def _parse_target(text: str) -> Target:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target {text!r} is not ip:port")
    return host.strip("[]"), int(port)


class LoadGenerator:
    """Paced GET requests from a pool of keep-alive workers; use as a context manager.

    Stops by itself after ``duration`` seconds or ``max_requests`` requests (by default
    ``rate * duration``), whichever comes first, or at ``stop()``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        targets: Sequence[Target] = (),
        host: str | None = None,
        path: str | None = None,
        rate: float = 200.0,
        duration: float = 30.0,
        max_requests: int | None = None,
        workers: int = 16,
        timeout: float = 2.0,
        spread: Spread = "round-robin",
        max_lag: float = 0.25,
        retry_stale: bool = True,
    ) -> None:
        if url is None and not targets:
            raise ValueError("give a url, targets, or both (targets then override its address)")
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] requests per second")
        if not 0 < duration <= MAX_DURATION_S:
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds")
        if not 0 < workers <= MAX_WORKERS:
            raise ValueError(f"workers must be in 1..{MAX_WORKERS}")
        if timeout <= 0 or max_lag < 0:
            raise ValueError("timeout must be positive and max_lag not negative")
        if spread not in ("round-robin", "random"):
            raise ValueError(f"spread must be round-robin or random, not {spread!r}")
        parsed = urllib.parse.urlsplit(url or "http://localhost/")
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"only http and https URLs are supported, not {url!r}")
        self.https = parsed.scheme == "https"
        default_port = 443 if self.https else 80
        self.targets: tuple[Target, ...] = tuple(targets) or (
            (parsed.hostname or "localhost", parsed.port or default_port),
        )
        self.host = host or (parsed.netloc if url else None)
        self.path = path or (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self.rate = float(rate)
        self.duration = float(duration)
        wanted = max_requests if max_requests is not None else math.ceil(rate * duration)
        self.max_requests = max(0, min(wanted, MAX_REQUESTS))
        self.workers = workers
        self.timeout = timeout
        self.spread: Spread = spread
        self.max_lag = max_lag
        self.retry_stale = retry_stale

        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._claimed = 0
        self._sent = 0
        self._failed = 0
        self._next_due = 0.0
        self._deadline = 0.0
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._round_robin = itertools.count()
        self._random = random.Random()

    # --- running ---------------------------------------------------------------------------

    def start(self) -> LoadGenerator:
        if self._threads:
            raise RuntimeError("a LoadGenerator runs once; make a new one")
        now = time.monotonic()
        self._started_at = self._next_due = now
        self._deadline = now + self.duration
        self._threads = [
            threading.Thread(target=self._work, name=f"loadgen-{i}", daemon=True)
            for i in range(self.workers)
        ]
        self._active = len(self._threads)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float | None = None) -> Summary:
        """Stop sending, wait for the requests in flight, and summarise the whole run."""
        self._stopping.set()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> Summary:
        """Wait until the generator ends by itself (or is stopped); summarise the whole run."""
        limit = self.duration + self.timeout * 2 + 5 if timeout is None else timeout
        deadline = time.monotonic() + limit
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            raise TimeoutError(f"load generator workers still running after {limit:.1f} s")
        return self.snapshot()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _claim(self) -> float | None:
        """The due time of the next request, or None when the run is over."""
        with self._lock:
            if self._stopping.is_set() or self._claimed >= self.max_requests:
                return None
            due = max(self._next_due, time.monotonic() - self.max_lag)
            if due >= self._deadline:
                return None
            self._next_due = due + 1 / self.rate
            self._claimed += 1
            return due

    def _pick(self) -> Target:
        if len(self.targets) == 1:
            return self.targets[0]
        if self.spread == "random":
            with self._lock:
                return self._random.choice(self.targets)
        return self.targets[next(self._round_robin) % len(self.targets)]

    def _work(self) -> None:
        connections: dict[Target, _Connection] = {}
        try:
            # Bounded: each pass claims one of max_requests slots or ends the loop.
            for _ in range(self.max_requests):
                due = self._claim()
                if due is None:
                    break
                delay = due - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    break
                with self._lock:
                    self._sent += 1
                target = self._pick()
                connection = connections.get(target)
                if connection is None:
                    connection = connections[target] = _Connection(target, self)
                self._record(connection.get())
        finally:
            for connection in connections.values():
                connection.close()
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._finished_at = time.monotonic()

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
            self._failed += sample.failed

    # --- reading ---------------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        """A mark on the clock that samples are stamped with, for ``window``."""
        return time.monotonic()

    def counters(self) -> Counters:
        with self._lock:
            return Counters(
                sent=self._sent,
                completed=len(self._samples),
                failed=self._failed,
                running=self._finished_at is None and bool(self._threads),
            )

    def samples(self, since: float | None = None, until: float | None = None) -> list[Sample]:
        """Completed samples sent in ``[since, until)``, in the order they completed."""
        low = -math.inf if since is None else since
        high = math.inf if until is None else until
        with self._lock:
            return [s for s in self._samples if low <= s.started < high]

    def window(self, since: float, until: float | None = None) -> Summary:
        """Summary of the requests sent from ``since`` to ``until`` (default: now)."""
        end = time.monotonic() if until is None else until
        if self._finished_at is not None:
            end = min(end, self._finished_at)
        return Summary.of(self.samples(since, until), max(0.0, end - since))

    def snapshot(self) -> Summary:
        """Summary of every request so far."""
        if self._started_at is None:
            return Summary.of([], 0.0)
        return self.window(self._started_at)

    def wait_for_requests(self, count: int, since: float, timeout: float = 30.0) -> Summary:
        """Wait until ``count`` requests sent since ``since`` have completed; their summary."""
        deadline = time.monotonic() + timeout
        # Bounded by the deadline; the generator ending early ends the wait too.
        while time.monotonic() < deadline:
            found = self.samples(since)
            if len(found) >= count:
                return Summary.of(found, max(0.0, time.monotonic() - since))
            if not self.running:
                break
            time.sleep(_POLL_S)
        done = len(self.samples(since))
        raise TimeoutError(
            f"{done} of {count} requests completed within {timeout:.1f} s "
            f"(generator {'running' if self.running else 'ended'}; {self.counters()})"
        )


class _Connection:
    """One worker's keep-alive connection to one target."""

    def __init__(self, target: Target, generator: LoadGenerator) -> None:
        self.target = target
        self.generator = generator
        self.label = f"{target[0]}:{target[1]}"
        self.conn: http.client.HTTPConnection | None = None
        self.served = 0
        """Requests answered on the current socket: a reused one may have been closed."""

    def _open(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = (
                http.client.HTTPSConnection if self.generator.https else http.client.HTTPConnection
            )
            self.conn = cls(self.target[0], self.target[1], timeout=self.generator.timeout)
            self.served = 0
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def _once(self) -> tuple[int, bytes]:
        conn = self._open()
        headers = {"User-Agent": "coalmine-loadgen", "Accept": "application/json"}
        if self.generator.host:
            headers["Host"] = self.generator.host
        conn.request("GET", self.generator.path, headers=headers)
        response = conn.getresponse()
        body = response.read(MAX_BODY_BYTES)
        if response.will_close or not response.isclosed():
            # The server ends the connection, or the body was larger than we read.
            self.close()
        else:
            self.served += 1
        return response.status, body

    def get(self) -> Sample:
        started = time.monotonic()
        retried = False
        try:
            try:
                status, body = self._once()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                reused = self.served > 0
                self.close()
                # A keep-alive connection the server closed while idle: like every HTTP client,
                # send the (idempotent) request once more on a fresh connection, and count it.
                if not (reused and self.generator.retry_stale):
                    raise
                retried = True
                status, body = self._once()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Sample(
                started=started,
                latency=time.monotonic() - started,
                status=None,
                version=None,
                target=self.label,
                error=type(exc).__name__,
                retried=retried,
            )
        return Sample(
            started=started,
            latency=time.monotonic() - started,
            status=status,
            version=_version(body),
            target=self.label,
            retried=retried,
        )


def _version(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


# --- command line ----------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="devenv.loadgen",
        description="Send steady, bounded HTTP load and summarise the answers per version.",
    )
    parser.add_argument("--url", help="where to send, e.g. http://127.0.0.1:8000/")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="an endpoint to spread requests over (repeat); overrides the URL's address",
    )
    parser.add_argument("--spread", choices=["round-robin", "random"], default="round-robin")
    parser.add_argument("--host", help="Host header (default: the URL's)")
    parser.add_argument("--path", help="request path (default: the URL's, or /)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run")
    parser.add_argument("--max-requests", type=int, help="stop after this many requests")
    parser.add_argument("--workers", type=int, default=16, help="worker threads (connections)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--netns",
        default=os.environ.get("COALMINE_NETNS", "coalmine"),
        help="network namespace to send from (default: the local cluster's; '' for here)",
    )
    args = parser.parse_args(argv)
    if not args.url and not args.target:
        parser.error("give --url, --target, or both")
    return args


def _enter_netns(name: str) -> None:
    from devenv import netns  # noqa: PLC0415 - only the CLI changes namespaces

    if netns.inside(name):
        return
    if not netns.exists(name):
        raise netns.NetnsError(
            f"no network namespace '{name}': start the cluster, or pass --netns '' to send "
            "from this namespace"
        )
    netns.enter(name)


def _print_human(summary: Summary) -> None:
    print(
        f"{summary.requests} requests in {summary.seconds:.1f} s ({summary.rate:.1f}/s): "
        f"{summary.ok} ok, {summary.failed} failed, {summary.stale_retries} stale retries"
    )
    for version, count in sorted(summary.by_version.items()):
        print(f"  version {version}: {count} ({summary.share(version):.1%})")
    for status, count in sorted(summary.by_status.items()):
        print(f"  status {status}: {count}")
    latency = summary.latency_ms
    print(
        f"  latency ms: p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  "
        f"p99 {latency['p99']:.1f}  max {latency['max']:.1f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        targets = [_parse_target(t) for t in args.target]
        if args.netns:
            _enter_netns(args.netns)  # before any thread starts: threads inherit it
        generator = LoadGenerator(
            args.url,
            targets=targets,
            host=args.host,
            path=args.path,
            rate=args.rate,
            duration=args.duration,
            max_requests=args.max_requests,
            workers=args.workers,
            timeout=args.timeout,
            spread=args.spread,
        )
    except (ValueError, RuntimeError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    generator.start()
    try:
        summary = generator.wait()
    except KeyboardInterrupt:
        summary = generator.stop()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    else:
        _print_human(summary)
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
