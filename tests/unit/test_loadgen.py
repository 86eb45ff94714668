"""The load generator against real local HTTP servers: pacing, bounds, attribution, failures.

The Traefik canary test trusts these numbers (the split per version, the failed requests) to
judge the operator, so they are checked here against answers whose truth is known: servers on
127.0.0.1 that report a version, fail on purpose, or close idle connections.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

import pytest

from devenv import loadgen
from devenv.loadgen import LoadGenerator, Sample, Summary, percentile


@dataclass
class Behaviour:
    """What a test server answers; tests change it while load runs."""

    version: str
    fail_every: int = 0
    delay_s: float = 0.0
    close_after_response: bool = False
    served: int = 0
    connections: int = 0
    hosts: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that timed out hangs up mid-answer: expected in the timeout test.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, the body would wait for the
    # client's delayed ACK (about 40 ms) and every request would look slow.
    disable_nagle_algorithm = True
    timeout = 5

    def setup(self) -> None:
        super().setup()
        behaviour = cast(_Server, self.server).behaviour
        with behaviour.lock:
            behaviour.connections += 1

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        behaviour = cast(_Server, self.server).behaviour
        with behaviour.lock:
            behaviour.served += 1
            n = behaviour.served
            behaviour.hosts.add(self.headers.get("Host", ""))
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        code = 500 if behaviour.fail_every and n % behaviour.fail_every == 0 else 200
        body = json.dumps({"version": behaviour.version}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if behaviour.close_after_response:
            # Hang up without announcing it (no "Connection: close"), as a server does when it
            # drops an idle keep-alive connection: the client learns on its next request.
            self.close_connection = True


@dataclass
class Running:
    behaviour: Behaviour
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def target(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def _serve(behaviour: Behaviour) -> Iterator[Running]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.behaviour = behaviour
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Running(behaviour, int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def v1() -> Iterator[Running]:
    yield from _serve(Behaviour("v1"))


@pytest.fixture
def v2() -> Iterator[Running]:
    yield from _serve(Behaviour("v2"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting is refused


def test_paced_bounded_and_kept_alive(v1: Running) -> None:
    started = time.monotonic()
    summary = LoadGenerator(v1.url, rate=200, duration=0.5, workers=4).start().wait(timeout=5)
    elapsed = time.monotonic() - started
    assert 90 <= summary.requests <= 100, "rate * duration, never more"
    assert elapsed < 1.5
    assert summary.failed == 0
    assert summary.by_version == {"v1": summary.requests}
    assert summary.by_status == {"200": summary.requests}
    assert 150 <= summary.rate <= 230
    assert v1.behaviour.connections <= 4, "one keep-alive connection per worker"


def test_max_requests_caps_the_run(v1: Running) -> None:
    summary = LoadGenerator(v1.url, rate=500, duration=10, max_requests=25).start().wait(5)
    assert summary.requests == 25
    assert v1.behaviour.served == 25


def test_stop_ends_early_and_counters_are_live(v1: Running) -> None:
    generator = LoadGenerator(v1.url, rate=100, duration=30).start()
    time.sleep(0.3)
    live = generator.counters()
    assert live.running
    assert live.completed > 0
    summary = generator.stop(timeout=5)
    assert not generator.running
    assert not generator.counters().running
    assert 15 <= summary.requests <= 45
    assert generator.counters().in_flight == 0


def test_host_header_is_sent(v1: Running) -> None:
    LoadGenerator(v1.url, host="shop.example", rate=100, max_requests=5).start().wait(5)
    assert v1.behaviour.hosts == {"shop.example"}


def test_round_robin_targets_split_evenly(v1: Running, v2: Running) -> None:
    generator = LoadGenerator(targets=[v1.target, v2.target], rate=400, max_requests=200)
    summary = generator.start().wait(5)
    assert summary.by_version == {"v1": 100, "v2": 100}
    assert summary.share("v2") == 0.5
    assert set(summary.by_target) == {f"127.0.0.1:{v1.port}", f"127.0.0.1:{v2.port}"}


def test_random_targets_split_roughly(v1: Running, v2: Running) -> None:
    generator = LoadGenerator(
        targets=[v1.target, v2.target], spread="random", rate=1000, max_requests=400
    )
    summary = generator.start().wait(5)
    assert summary.requests == 400
    assert 0.35 <= summary.share("v2") <= 0.65


def test_non_2xx_and_connection_errors_count_as_failed(v1: Running) -> None:
    v1.behaviour.fail_every = 5
    refused = ("127.0.0.1", _closed_port())
    generator = LoadGenerator(targets=[v1.target, refused], rate=400, max_requests=100)
    summary = generator.start().wait(5)
    assert summary.requests == 100
    assert summary.by_status == {"200": 40, "500": 10, "error:ConnectionRefusedError": 50}
    assert summary.failed == 60
    assert summary.ok == 40
    assert summary.by_version == {"v1": 50}, "a 500 from the app still names its version"


def test_window_measures_each_phase(v1: Running) -> None:
    generator = LoadGenerator(v1.url, rate=200, duration=5).start()
    first = generator.now()
    generator.wait_for_requests(40, first, timeout=3)
    v1.behaviour.version = "v2"
    second = generator.now()
    generator.wait_for_requests(40, second, timeout=3)
    generator.stop(5)
    before, after = generator.window(first, second), generator.window(second)
    # Requests sent just before the switch may be answered just after it.
    assert before.share("v1") >= 0.9
    assert after.by_version == {"v2": after.requests}
    assert generator.snapshot().requests == len(generator.samples())


def test_wait_for_requests_times_out_with_a_clear_message(v1: Running) -> None:
    generator = LoadGenerator(v1.url, rate=10, duration=2).start()
    with pytest.raises(TimeoutError, match="of 1000 requests"):
        generator.wait_for_requests(1000, generator.now(), timeout=0.3)
    generator.stop(5)


def test_latency_percentiles(v1: Running) -> None:
    v1.behaviour.delay_s = 0.02
    summary = LoadGenerator(v1.url, rate=100, max_requests=20).start().wait(5)
    assert 20 <= summary.latency_ms["p50"] <= summary.latency_ms["p99"]
    assert summary.latency_ms["p99"] <= summary.latency_ms["max"] < 1000


def test_stale_keep_alive_connections_are_retried_once_and_counted(v1: Running) -> None:
    v1.behaviour.close_after_response = True
    summary = LoadGenerator(v1.url, rate=100, max_requests=20, workers=2).start().wait(5)
    assert summary.failed == 0
    assert summary.requests == 20
    assert summary.stale_retries > 0


def test_stale_connections_fail_without_retry(v1: Running) -> None:
    v1.behaviour.close_after_response = True
    generator = LoadGenerator(v1.url, rate=100, max_requests=20, workers=2, retry_stale=False)
    summary = generator.start().wait(5)
    assert summary.failed > 0
    assert summary.stale_retries == 0


def test_a_slow_server_times_out_as_a_failure(v1: Running) -> None:
    v1.behaviour.delay_s = 0.5
    summary = LoadGenerator(v1.url, rate=50, max_requests=2, timeout=0.1).start().wait(5)
    assert summary.by_status == {"error:TimeoutError": 2}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([], 50) == 0
    assert percentile([7.0], 1) == 7


def test_summary_of_nothing() -> None:
    empty = Summary.of([], 0.0)
    assert (empty.requests, empty.rate, empty.share("v1")) == (0, 0.0, 0.0)
    failed = Sample(started=0, latency=0.1, status=302, version=None, target="x:1")
    assert failed.failed


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({}, "give a url"),
        ({"url": "ftp://x/"}, "only http"),
        ({"url": "http://x/", "rate": 0}, "rate"),
        ({"url": "http://x/", "duration": 1e9}, "duration"),
        ({"url": "http://x/", "workers": 0}, "workers"),
        ({"url": "http://x/", "spread": "sideways"}, "spread"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        LoadGenerator(**kwargs)  # type: ignore[arg-type]


def test_cli_prints_a_json_summary(v1: Running) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = loadgen.main(
            ["--url", v1.url, "--rate", "200", "--max-requests", "30", "--json", "--netns", ""]
        )
    data = json.loads(out.getvalue())
    assert code == 0
    assert data["requests"] == 30
    assert data["by_version"] == {"v1": 30}
    assert data["failed"] == 0


def test_cli_exits_1_on_failures_and_2_on_bad_targets(v1: Running) -> None:
    v1.behaviour.fail_every = 2
    out = io.StringIO()
    with redirect_stdout(out):
        failing = loadgen.main(["--url", v1.url, "--max-requests", "4", "--netns", ""])
        bad = loadgen.main(["--target", "nonsense", "--netns", ""])
    assert failing == 1
    assert bad == 2
    assert "2 failed" in out.getvalue()
