"""The demo workload that coalmine rolls out in the local cluster.

KWOK only simulates pods, so nothing would answer on a canary's pod IP. This
module is the process the pod runner starts in place of the
``coalmine.dev/demo-app`` container: a tiny HTTP server whose error rate and
latency come from the pod template's env, so a test can make a canary
"good" or "bad" by editing the image's env and have Prometheus see it.

Run it as ``python -m devenv.demoapp --ip IP --port PORT --version V --pod NAME
--namespace NS``. Behaviour knobs, all optional:

``DEMO_ERROR_RATE``
    fraction 0..1 of requests answered with 500.
``DEMO_LATENCY_MS``
    latency added to every counted request.
``DEMO_LATENCY_JITTER_MS``
    extra latency drawn uniformly from 0..J on each request.
"""

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# From 1 ms to 10 s so both a healthy app (a few ms) and an injected slow canary
# (hundreds of ms to seconds) land in distinct buckets for histogram_quantile.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# How often serve_forever checks for shutdown; bounds how long SIGTERM takes.
_POLL_INTERVAL_S = 0.1


class ConfigError(ValueError):
    """An env knob has a value the app cannot use."""


@dataclass(frozen=True)
class Behaviour:
    """The injected faults, read once at start like a real app reads its env."""

    error_rate: Fraction
    latency_s: float
    jitter_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Behaviour":
        return cls(
            error_rate=_parse_rate(env.get("DEMO_ERROR_RATE", "")),
            latency_s=_parse_ms(env, "DEMO_LATENCY_MS") / 1000.0,
            jitter_s=_parse_ms(env, "DEMO_LATENCY_JITTER_MS") / 1000.0,
        )

    def delay_s(self) -> float:
        if self.jitter_s <= 0:
            return self.latency_s
        return self.latency_s + random.uniform(0.0, self.jitter_s)


def _parse_rate(text: str) -> Fraction:
    if not text.strip():
        return Fraction(0)
    try:
        # Fraction keeps "0.1" exact, so the injected ratio is exact too.
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"DEMO_ERROR_RATE={text!r} is not a number") from exc
    if not 0 <= rate <= 1:
        raise ConfigError(f"DEMO_ERROR_RATE={text!r} is outside 0..1")
    return rate


def _parse_ms(env: Mapping[str, str], name: str) -> float:
    text = env.get(name, "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={text!r} is not a number") from exc
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{name}={text!r} must be a finite number >= 0")
    return value


class ErrorInjector:
    """Decides which requests fail so that exactly ``rate`` of them do.

    Spreading failures evenly, rather than drawing them at random, keeps the
    observed error ratio on target even over the small request counts a test
    sends, so canary analysis thresholds do not flake.
    """

    def __init__(self, rate: Fraction) -> None:
        self._rate = rate
        self._served = 0
        self._lock = threading.Lock()

    def should_fail(self) -> bool:
        if self._rate == 0:
            return False
        if self._rate == 1:
            return True
        num, den = self._rate.numerator, self._rate.denominator
        with self._lock:
            before = self._served
            self._served += 1
        return (before + 1) * num // den > before * num // den


class DemoApp:
    """Identity, behaviour and metrics shared by all request threads."""

    def __init__(self, version: str, pod: str, namespace: str, behaviour: Behaviour) -> None:
        self.version = version
        self.pod = pod
        self.namespace = namespace
        self.behaviour = behaviour
        self.errors = ErrorInjector(behaviour.error_rate)
        # A private registry keeps the exposition down to the app's own series.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "demo_http_requests",
            "HTTP requests served by the demo app.",
            ["code", "method", "version"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "demo_http_request_duration_seconds",
            "Time to serve a demo app request, injected latency included.",
            ["version"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # Series that exist from the first scrape let rate() see the very first
        # error; a series born on its first increment loses that increment.
        for code in ("200", "500"):
            self.requests.labels(code=code, method="GET", version=version)
        self.duration.labels(version=version)

    def identity(self) -> dict[str, str]:
        return {"version": self.version, "pod": self.pod, "namespace": self.namespace}


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: DemoApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, DemoHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A load generator hanging up mid-response is routine, not a bug.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class DemoHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 with an explicit Content-Length on every answer lets load
    # generators keep connections alive, as they would against a real app.
    protocol_version = "HTTP/1.1"
    server_version = "coalmine-demoapp"
    # Idle keep-alive connections must not pin a thread forever.
    timeout = 60
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK, adding ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        # Drain the body so the connection stays usable for the next request.
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        self._dispatch()

    def log_message(self, format: str, *args: object) -> None:
        # One line per request would drown the pod log under load.
        return

    def _dispatch(self) -> None:
        app = cast(DemoServer, self.server).app
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok", "text/plain; charset=utf-8")
        elif path == "/metrics":
            self._send(200, generate_latest(app.registry), CONTENT_TYPE_LATEST)
        else:
            self._serve_app(app)

    def _serve_app(self, app: DemoApp) -> None:
        started = time.perf_counter()
        delay = app.behaviour.delay_s()
        if delay > 0:
            time.sleep(delay)
        body: dict[str, str] = app.identity()
        code = 200
        if app.errors.should_fail():
            code = 500
            body["error"] = "injected"
        # Counted before the answer leaves: a client that reads /metrics right after its
        # answer must see its request there.
        app.requests.labels(code=str(code), method=self.command, version=app.version).inc()
        app.duration.labels(version=app.version).observe(time.perf_counter() - started)
        self._send(code, json.dumps(body).encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1..65535")
    return port


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="devenv.demoapp", description="Serve the coalmine demo app on one pod IP."
    )
    parser.add_argument("--ip", required=True, help="address to bind, normally the pod IP")
    parser.add_argument("--port", required=True, type=_port, help="TCP port to listen on")
    parser.add_argument("--version", required=True, help="version this instance reports")
    parser.add_argument("--pod", required=True, help="pod name this instance stands in for")
    parser.add_argument("--namespace", required=True, help="namespace of that pod")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        behaviour = Behaviour.from_env(os.environ)
    except ConfigError as exc:
        print(f"demoapp: {exc}", file=sys.stderr, flush=True)
        return 2
    # *_created series only double the exposition; nothing here queries them.
    # (prometheus_client leaves this function unannotated.)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    app = DemoApp(args.version, args.pod, args.namespace, behaviour)
    try:
        server = DemoServer((args.ip, args.port), app)
    except OSError as exc:
        print(
            f"demoapp: cannot listen on {args.ip}:{args.port}: {exc}", file=sys.stderr, flush=True
        )
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, which runs on this very
        # (main) thread, so it has to be called from another one.
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"demoapp: {args.namespace}/{args.pod} version {args.version} listening on "
        f"{args.ip}:{args.port} (error_rate={float(behaviour.error_rate):g} "
        f"latency_ms={behaviour.latency_s * 1000:g} "
        f"jitter_ms={behaviour.jitter_s * 1000:g})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=_POLL_INTERVAL_S)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
