"""The demo app as the pod runner starts it: a real process answering real HTTP.

Canary analysis in the integration tests trusts these numbers (error ratio,
latency, metric names), so they are checked here against a live process.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
STARTUP_TIMEOUT_S = 10.0
VERSION = "1.2.3"
POD = "demo-7d9f-abcde"
NAMESPACE = "shop"


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


StartDemo = Callable[..., DemoProcess]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(demo: DemoProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if demo.process.poll() is not None:
            pytest.fail(f"demo app exited with {demo.process.returncode} during startup")
        try:
            if requests.get(f"{demo.url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail(f"demo app not healthy within {STARTUP_TIMEOUT_S} s")


def demo_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "devenv.demoapp",
        *("--ip", "127.0.0.1", "--port", str(port), "--version", VERSION),
        *("--pod", POD, "--namespace", NAMESPACE),
    ]


@pytest.fixture
def start_demo() -> Iterator[StartDemo]:
    started: list[DemoProcess] = []

    def start(**env: str) -> DemoProcess:
        port = _free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")} | env
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TOOLS_DIR), os.environ.get("PYTHONPATH", "")) if p
        )
        process = subprocess.Popen(
            demo_command(port),
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        demo = DemoProcess(process, port)
        started.append(demo)
        _wait_healthy(demo)
        return demo

    yield start
    for demo in started:
        if demo.process.poll() is None:
            demo.process.kill()
        demo.process.wait(timeout=5)
        if demo.process.stderr is not None:
            demo.process.stderr.close()


def _request_counts(demo: DemoProcess) -> dict[tuple[str, str, str], float]:
    """demo_http_requests_total by (code, method, version)."""
    text = requests.get(f"{demo.url}/metrics", timeout=5).text
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "demo_http_requests_total":
                labels = sample.labels
                counts[(labels["code"], labels["method"], labels["version"])] = sample.value
    return counts


def test_root_reports_identity(start_demo: StartDemo) -> None:
    demo = start_demo()

    response = requests.get(f"{demo.url}/", timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"version": VERSION, "pod": POD, "namespace": NAMESPACE}
    assert requests.get(f"{demo.url}/any/other/path?x=1", timeout=5).json()["pod"] == POD


@pytest.mark.parametrize(
    ("rate", "expected_codes"),
    [
        ("0", [200] * 6),
        ("1", [500] * 6),
        # Failures are spread evenly, so the ratio is exact even over a few requests.
        ("0.5", [200, 500] * 3),
        ("0.25", [200, 200, 200, 500] * 2),
    ],
)
def test_error_rate(start_demo: StartDemo, rate: str, expected_codes: list[int]) -> None:
    demo = start_demo(DEMO_ERROR_RATE=rate)

    responses = [requests.get(f"{demo.url}/", timeout=5) for _ in expected_codes]

    assert [r.status_code for r in responses] == expected_codes
    for response in responses:
        body = response.json()
        assert body["version"] == VERSION
        assert ("error" in body) == (response.status_code == 500)
        if response.status_code == 500:
            assert body["error"] == "injected"


def test_healthz_ignores_error_rate_and_is_not_counted(start_demo: StartDemo) -> None:
    demo = start_demo(DEMO_ERROR_RATE="1")

    for _ in range(3):
        response = requests.get(f"{demo.url}/healthz", timeout=5)
        assert (response.status_code, response.text) == (200, "ok")

    assert sum(_request_counts(demo).values()) == 0


def test_metrics_count_requests_by_code_method_and_version(start_demo: StartDemo) -> None:
    demo = start_demo(DEMO_ERROR_RATE="0.5")
    for _ in range(4):
        requests.get(f"{demo.url}/", timeout=5)

    first = _request_counts(demo)
    for _ in range(6):
        requests.get(f"{demo.url}/", timeout=5)
    requests.post(f"{demo.url}/", data=b"payload", timeout=5)
    second = _request_counts(demo)

    assert first[("200", "GET", VERSION)] == 2
    assert first[("500", "GET", VERSION)] == 2
    assert second[("200", "GET", VERSION)] == 5
    assert second[("500", "GET", VERSION)] == 5
    assert sum(v for (_, method, _), v in second.items() if method == "POST") == 1


def test_error_series_exist_before_the_first_error(start_demo: StartDemo) -> None:
    demo = start_demo()

    assert _request_counts(demo)[("500", "GET", VERSION)] == 0


def test_metrics_expose_the_duration_histogram(start_demo: StartDemo) -> None:
    demo = start_demo()
    requests.get(f"{demo.url}/", timeout=5)

    text = requests.get(f"{demo.url}/metrics", timeout=5).text

    families = {family.name: family for family in text_string_to_metric_families(text)}
    histogram = families["demo_http_request_duration_seconds"]
    assert histogram.type == "histogram"
    bounds = {
        sample.labels["le"]
        for sample in histogram.samples
        if sample.name.endswith("_bucket") and sample.labels["version"] == VERSION
    }
    for bound in ("0.005", "0.01", "0.1", "1.0", "10.0", "+Inf"):
        assert bound in bounds


def test_latency_is_injected(start_demo: StartDemo) -> None:
    demo = start_demo(DEMO_LATENCY_MS="200")

    started = time.monotonic()
    response = requests.get(f"{demo.url}/", timeout=5)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.2
    text = requests.get(f"{demo.url}/metrics", timeout=5).text
    assert 'demo_http_request_duration_seconds_bucket{le="0.1",version="1.2.3"} 0.0' in text
    # Only the lower bound is certain: a loaded machine may add any delay on top.
    assert 'demo_http_request_duration_seconds_count{version="1.2.3"} 1.0' in text


def test_keep_alive_serves_several_requests_on_one_connection(start_demo: StartDemo) -> None:
    demo = start_demo()
    connection = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=5)
    try:
        connection.connect()
        sock = connection.sock
        for path in ("/", "/healthz", "/metrics", "/"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert not response.will_close
        assert connection.sock is sock
    finally:
        connection.close()


def test_sigterm_exits_cleanly_and_promptly(start_demo: StartDemo) -> None:
    demo = start_demo()

    started = time.monotonic()
    demo.process.send_signal(signal.SIGTERM)
    returncode = demo.process.wait(timeout=5)

    assert returncode == 0
    assert time.monotonic() - started < 2


def test_startup_logs_one_line(start_demo: StartDemo) -> None:
    demo = start_demo()
    demo.process.send_signal(signal.SIGTERM)
    demo.process.wait(timeout=5)

    assert demo.process.stderr is not None
    lines = demo.process.stderr.read().decode().splitlines()

    assert len(lines) == 1
    assert f"{NAMESPACE}/{POD}" in lines[0]
    assert VERSION in lines[0]


@pytest.mark.parametrize(
    "env",
    [
        {"DEMO_ERROR_RATE": "1.5"},
        {"DEMO_ERROR_RATE": "lots"},
        {"DEMO_LATENCY_MS": "-1"},
        {"DEMO_LATENCY_JITTER_MS": "nan"},
    ],
)
def test_bad_settings_fail_fast(env: dict[str, str]) -> None:
    result = subprocess.run(
        demo_command(_free_port()),
        env=os.environ | {"PYTHONPATH": str(TOOLS_DIR)} | env,
        capture_output=True,
        timeout=10,
        check=False,
    )

    assert result.returncode == 2
    assert next(iter(env)) in result.stderr.decode()


def test_json_body_has_content_length(start_demo: StartDemo) -> None:
    demo = start_demo()

    response = requests.get(f"{demo.url}/", timeout=5)

    assert int(response.headers["Content-Length"]) == len(response.content)
    assert json.loads(response.content)["namespace"] == NAMESPACE
