"""The Prometheus provider against a stand-in for Prometheus's HTTP API on 127.0.0.1.

The stand-in answers /api/v1/query and /api/v1/query_range with the JSON Prometheus sends (the
shapes were copied from the local cluster's Prometheus: vectors, scalars, strings, matrices,
errors), so these tests pin the mapping from every kind of answer, and every way of not
answering, to a Sample or a ProviderError. They take a few seconds: the only wait is the timeout
test, bounded by a tiny timeout.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coalmine.analysis.evaluate import ProviderError, Sample
from coalmine.analysis.prometheus import CLIENT_GRACE_SECONDS, ErrorKind, Prometheus

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
T = 1795828527.839  # a sample timestamp, as Prometheus writes it


@dataclass(frozen=True)
class Reply:
    """What the stand-in answers to one query."""

    status: int = 200
    body: str | bytes | dict[str, Any] = ""
    delay: float = 0.0
    """Seconds to wait before answering (cut short when the test ends)."""


def vector(*values: str) -> dict[str, Any]:
    result = [
        {"metric": {"pod": f"p{index}"}, "value": [T, value]} for index, value in enumerate(values)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def matrix(*series: list[str]) -> dict[str, Any]:
    result = [
        {"metric": {"pod": f"p{index}"}, "values": [[T + n, v] for n, v in enumerate(points)]}
        for index, points in enumerate(series)
    ]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def scalar(value: str, kind: str = "scalar") -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": [T, value]}}


def error(status: int, error_type: str, message: str) -> Reply:
    return Reply(status, {"status": "error", "errorType": error_type, "error": message})


@dataclass
class FakePrometheus:
    """Replies by query text; records every request's path and parameters."""

    address: str
    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        fake.requests.append((url.path, params))
        if url.path not in ("/api/v1/query", "/api/v1/query_range"):
            self._send(Reply(404, "404 page not found\n"))
            return
        reply = fake.replies.get(params.get("query", ""))
        if reply is None:
            reply = error(400, "bad_data", f"no reply set for {params.get('query')!r}")
        if reply.delay:
            fake.release.wait(reply.delay)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        body = reply.body
        if isinstance(body, dict):
            payload = json.dumps(body).encode()
            content_type = "application/json"
        else:
            payload = body.encode() if isinstance(body, str) else body
            content_type = "text/plain; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = FakePrometheus(address=f"http://127.0.0.1:{self.server_address[1]}")

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout tests) breaks the pipe: expected here


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests honours proxy variables; a proxy set on a developer's machine must not sit
    # between the provider and the stand-in.
    for name in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    server = _Server()
    # A short poll interval: shutdown() waits up to one interval, and this runs per test.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.fake
    server.fake.release.set()  # end any delayed reply now
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    provider = Prometheus()
    yield provider
    provider.close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def instant(provider: Prometheus, fake: FakePrometheus, reply: Reply) -> Sample | ProviderError:
    fake.replies["q"] = reply
    return provider.instant("q", address=fake.address, timeout=2.0)


def message(result: Sample | ProviderError) -> str:
    assert isinstance(result, ProviderError), result
    return result.message


# --- instant queries: values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(vector("0.25"), (0.25,), id="one series"),
        pytest.param(vector("1", "2", "3e-3"), (1.0, 2.0, 0.003), id="three series"),
        pytest.param(vector(), (), id="empty vector"),
        pytest.param(scalar("42"), (42.0,), id="scalar"),
        pytest.param(vector("-Inf"), (-math.inf,), id="-Inf"),
        pytest.param(vector("+Inf"), (math.inf,), id="+Inf"),
        pytest.param(scalar("+Inf"), (math.inf,), id="scalar +Inf"),
    ],
)
def test_instant_answers_become_one_value_per_series(
    prometheus: Prometheus, fake: FakePrometheus, body: dict[str, Any], expected: tuple[float, ...]
) -> None:
    assert instant(prometheus, fake, Reply(body=body)) == Sample(expected)


def test_nan_is_a_float_nan(prometheus: Prometheus, fake: FakePrometheus) -> None:
    result = instant(prometheus, fake, Reply(body=vector("NaN", "1")))
    assert isinstance(result, Sample)
    assert math.isnan(result.values[0])
    assert result.values[1] == 1.0


def test_the_query_and_prometheus_timeout_are_sent(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    query = 'sum(rate(x{code=~"5..", a="b c&d"}[1m])) / 2 + 1'
    fake.replies[query] = Reply(body=vector("1"))
    assert prometheus.instant(query, address=fake.address, timeout=2.5) == Sample([1.0])
    assert fake.requests == [("/api/v1/query", {"query": query, "timeout": "2.5"})]


def test_a_trailing_slash_in_the_address_is_ignored(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    fake.replies["q"] = Reply(body=vector("1"))
    assert prometheus.instant("q", address=fake.address + "/", timeout=1) == Sample([1.0])
    assert fake.requests[0][0] == "/api/v1/query"


# --- instant queries: answers that are not a number ------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(scalar("abc", "string"), "'abc', which is not a number", id="string"),
        pytest.param(matrix(["1", "2"]), "returned a range vector", id="matrix"),
        pytest.param(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {}, "histogram": [T, {"count": "3", "sum": "1"}]}],
                },
            },
            "native histograms",
            id="native histogram",
        ),
    ],
)
def test_answers_that_are_not_numbers_are_query_errors(
    prometheus: Prometheus, fake: FakePrometheus, body: dict[str, Any], expected: str
) -> None:
    assert expected in message(instant(prometheus, fake, Reply(body=body)))
    assert prometheus.stats().errors_by_kind[ErrorKind.QUERY] == 1


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(body="<html>Grafana</html>"), id="HTML with 200"),
        pytest.param(Reply(body={"hello": "world"}), id="JSON that is not the API"),
        pytest.param(
            Reply(body={"status": "success", "data": {"result": [{"metric": {}}]}}),
            id="series without value",
        ),
        pytest.param(
            Reply(
                body={"status": "success", "data": {"result": [{"metric": {}, "value": [T, 1]}]}}
            ),
            id="value not a string",
        ),
    ],
)
def test_answers_that_are_not_the_prometheus_api_are_response_errors(
    prometheus: Prometheus, fake: FakePrometheus, reply: Reply
) -> None:
    text = message(instant(prometheus, fake, reply))
    assert "Prometheus" in text
    assert prometheus.stats().errors_by_kind[ErrorKind.RESPONSE] == 1


# --- HTTP errors ----------------------------------------------------------------------------


def test_a_bad_query_names_prometheus_parse_error(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    reply = error(
        400, "bad_data", 'invalid parameter "query": 1:16: parse error: unclosed left parenthesis'
    )
    assert message(instant(prometheus, fake, reply)) == (
        "Prometheus rejected the query (HTTP 400, bad_data): "
        'invalid parameter "query": 1:16: parse error: unclosed left parenthesis'
    )
    assert prometheus.stats().errors_by_kind[ErrorKind.QUERY] == 1


def test_an_execution_error_is_a_query_error(prometheus: Prometheus, fake: FakePrometheus) -> None:
    reply = error(422, "execution", "found duplicate series for the match group")
    text = message(instant(prometheus, fake, reply))
    assert text == (
        "Prometheus rejected the query (HTTP 422, execution): "
        "found duplicate series for the match group"
    )


def test_prometheus_own_timeout_is_a_timeout(prometheus: Prometheus, fake: FakePrometheus) -> None:
    reply = error(503, "timeout", "query timed out in expression evaluation")
    text = message(instant(prometheus, fake, reply))
    assert "gave up on the query after the timeout of 2s" in text
    assert "query timed out in expression evaluation" in text
    assert prometheus.stats().errors_by_kind[ErrorKind.TIMEOUT] == 1


def test_a_server_error_is_reported_once_without_retries(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    text = message(instant(prometheus, fake, Reply(500, "upstream exploded\n\n  badly")))
    assert text == f"{fake.address} answered HTTP 500: upstream exploded badly"
    # prometheus-api-client would retry a 500 three times with backoff; one request only.
    assert len(fake.requests) == 1
    assert prometheus.stats().errors_by_kind[ErrorKind.HTTP] == 1


def test_a_json_error_with_another_status_keeps_its_text(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    text = message(instant(prometheus, fake, error(503, "unavailable", "too many queries")))
    assert text == (
        f"Prometheus at {fake.address} answered HTTP 503 (unavailable): too many queries"
    )


def test_an_empty_error_body_still_gives_the_status(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    assert message(instant(prometheus, fake, Reply(502, b""))) == (
        f"{fake.address} answered HTTP 502"
    )


def test_a_long_error_is_clipped(prometheus: Prometheus, fake: FakePrometheus) -> None:
    text = message(instant(prometheus, fake, error(400, "bad_data", "x" * 5000)))
    assert len(text) < 400
    assert text.endswith("…")


def test_a_wrong_path_prefix_is_an_http_error(prometheus: Prometheus, fake: FakePrometheus) -> None:
    result = prometheus.instant("q", address=fake.address + "/prometheus", timeout=1)
    assert "answered HTTP 404: 404 page not found" in message(result)


# --- no answer --------------------------------------------------------------------------------


def test_a_slow_answer_is_a_timeout(prometheus: Prometheus, fake: FakePrometheus) -> None:
    fake.replies["slow"] = Reply(body=vector("1"), delay=30)
    started = time.monotonic()
    result = prometheus.instant("slow", address=fake.address, timeout=0.2)
    elapsed = time.monotonic() - started
    assert message(result) == f"no answer from Prometheus at {fake.address} within 0.2s"
    assert elapsed < 0.2 + CLIENT_GRACE_SECONDS + 1.0
    assert prometheus.stats().errors_by_kind[ErrorKind.TIMEOUT] == 1


def test_connection_refused_is_fast_and_says_so(prometheus: Prometheus) -> None:
    address = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = prometheus.instant("up", address=address, timeout=5)
    assert message(result) == f"cannot reach Prometheus at {address}: Connection refused"
    assert time.monotonic() - started < 2
    assert prometheus.stats().errors_by_kind[ErrorKind.CONNECTION] == 1


# --- range queries ----------------------------------------------------------------------------


def test_a_range_query_pools_every_point_of_every_series(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    fake.replies["r"] = Reply(body=matrix(["1", "2", "NaN"], ["4", "+Inf"]))
    result = prometheus.range(
        "r",
        address=fake.address,
        timeout=3,
        start=NOW - timedelta(minutes=5),
        end=NOW,
        step_seconds=15,
    )
    assert isinstance(result, Sample)
    assert len(result.values) == 5
    assert [v for v in result.values if not math.isnan(v)] == [1.0, 2.0, 4.0, math.inf]
    path, params = fake.requests[0]
    assert path == "/api/v1/query_range"
    assert params == {
        "query": "r",
        "start": str(round((NOW - timedelta(minutes=5)).timestamp())),
        "end": str(round(NOW.timestamp())),
        "step": "15.0",
        "timeout": "3.0",
    }


def test_an_empty_range_is_an_empty_sample(prometheus: Prometheus, fake: FakePrometheus) -> None:
    fake.replies["r"] = Reply(body=matrix())
    result = prometheus.range(
        "r", address=fake.address, timeout=1, start=NOW, end=NOW, step_seconds=1
    )
    assert result == Sample([])


def test_range_errors_are_mapped_like_instant_ones(
    prometheus: Prometheus, fake: FakePrometheus
) -> None:
    fake.replies["r"] = error(
        400,
        "bad_data",
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
        "query resolution (?step=XX)",
    )
    result = prometheus.range(
        "r",
        address=fake.address,
        timeout=1,
        start=NOW - timedelta(days=1),
        end=NOW,
        step_seconds=0.5,
    )
    assert "exceeded maximum resolution" in message(result)


@pytest.mark.parametrize(
    ("start", "end", "step", "problem"),
    [
        pytest.param(NOW, NOW, 0.0, "step_seconds", id="zero step"),
        pytest.param(NOW, NOW, math.nan, "step_seconds", id="NaN step"),
        pytest.param(datetime(2026, 1, 1), NOW, 1.0, "timezone-aware", id="naive start"),
    ],
)
def test_a_malformed_range_is_a_programming_error(
    prometheus: Prometheus, start: datetime, end: datetime, step: float, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        prometheus.range(
            "r", address="http://127.0.0.1:1", timeout=1, start=start, end=end, step_seconds=step
        )


def test_a_window_ending_before_it_starts_is_an_error(prometheus: Prometheus) -> None:
    # Nothing is sent: the address has no server, and the answer is still a clean error.
    result = prometheus.range(
        "r",
        address="http://127.0.0.1:1",
        timeout=1,
        start=NOW,
        end=NOW - timedelta(seconds=1),
        step_seconds=1,
    )
    assert "ends (2026-11-28T11:59:59+00:00) before it starts" in message(result)
    assert prometheus.stats().errors_by_kind[ErrorKind.QUERY] == 1


@pytest.mark.parametrize("timeout", [0.0, -1.0, math.inf, math.nan])
def test_a_timeout_must_be_positive_and_finite(prometheus: Prometheus, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        prometheus.instant("up", address="http://127.0.0.1:1", timeout=timeout)


# --- online and counters ----------------------------------------------------------------------


def test_online_asks_the_query_api(prometheus: Prometheus, fake: FakePrometheus) -> None:
    assert not prometheus.online(fake.address, timeout=1)  # the stand-in has no reply yet
    fake.replies["vector(1)"] = Reply(body=vector("1"))
    assert prometheus.online(fake.address, timeout=1)
    assert not prometheus.online(f"http://127.0.0.1:{closed_port()}", timeout=1)
    assert prometheus.stats().queries == 0, "probes are not queries"


def test_calls_and_errors_are_counted_by_kind(prometheus: Prometheus, fake: FakePrometheus) -> None:
    fake.replies.update(
        {
            "good": Reply(body=vector("1")),
            "bad": error(400, "bad_data", "parse error"),
            "empty": Reply(body=vector()),
        }
    )
    for query in ("good", "bad", "empty", "bad"):
        prometheus.instant(query, address=fake.address, timeout=1)
    prometheus.instant("up", address=f"http://127.0.0.1:{closed_port()}", timeout=1)
    stats = prometheus.stats()
    assert stats.queries == 5
    assert stats.errors == 3
    assert dict(stats.errors_by_kind) == {
        ErrorKind.CONNECTION: 1,
        ErrorKind.TIMEOUT: 0,
        ErrorKind.QUERY: 2,
        ErrorKind.HTTP: 0,
        ErrorKind.RESPONSE: 0,
    }


def test_the_provider_is_shared_by_threads(prometheus: Prometheus, fake: FakePrometheus) -> None:
    fake.replies["q"] = Reply(body=vector("1"))
    results: list[Sample | ProviderError] = []

    def work() -> None:
        for _ in range(10):
            results.append(prometheus.instant("q", address=fake.address, timeout=2))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == [Sample([1.0])] * 40
    assert prometheus.stats().queries == 40


def test_clients_are_bounded_and_close_is_not_final(fake: FakePrometheus) -> None:
    provider = Prometheus(max_clients=1)
    fake.replies["q"] = Reply(body=vector("1"))
    other = f"http://127.0.0.1:{closed_port()}"
    for address in (fake.address, other, fake.address):
        provider.instant("q", address=address, timeout=1)
    provider.close()
    assert provider.instant("q", address=fake.address, timeout=1) == Sample([1.0])
    provider.close()
    with pytest.raises(ValueError, match="max_clients"):
        Prometheus(max_clients=0)
