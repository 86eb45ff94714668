"""Traefik as the local cluster's Gateway API implementation: real traffic for the Gateway router.

The Gateway API router only edits the weights of an HTTPRoute; whether those weights actually
move requests needs a real gateway. Traefik runs here as one more detached process inside the
cluster's network namespace, like the components in ``devenv.cluster`` (pid file, log file,
health probe), but it is optional: tests that need it call ``ensure_traefik()``, which reuses a
healthy Traefik started with the same flags and starts a fresh one otherwise.

How Traefik reaches the API server from outside the cluster: its Gateway provider builds its
Kubernetes client from, in order, the in-cluster ServiceAccount (when ``KUBERNETES_SERVICE_HOST``
is set), the file named by ``KUBECONFIG``, or ``--providers.kubernetesgateway.endpoint`` with a
bearer token and a CA file. Our API server authenticates the administrator by client
certificate, which only the kubeconfig path carries, so Traefik gets ``KUBECONFIG`` pointing at
``.cluster/kubeconfig`` (and an empty ``KUBERNETES_SERVICE_HOST``, so that an inherited value can
never send it down the in-cluster path).

Traefik resolves each backendRef to the ready endpoints of the Service's EndpointSlices, that is
to pod IPs (``10.244.x.y``), and balances between the backendRefs of a rule by their weights
with a deterministic weighted round robin. ``live_weights`` reads that balancer back from
Traefik's API, which is how a test knows a weight change is in force rather than merely written.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from devenv import cluster, netns, paths, pki

#: The Gateway API controller name Traefik implements; a GatewayClass must name it.
CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_CLASS = "traefik"
#: Gateway listeners attach to the Traefik entrypoint whose address ends in the listener's port,
#: so a Gateway for this Traefik must listen on WEB_PORT.
WEB_PORT = 8000
WEB_ADDRESS = f"127.0.0.1:{WEB_PORT}"
WEB_URL = f"http://{WEB_ADDRESS}"
#: Traefik's own endpoints (ping and the read-only API), apart from the traffic it routes.
INTERNAL_PORT = 8081
INTERNAL_URL = f"http://127.0.0.1:{INTERNAL_PORT}"
#: Traefik's Prometheus metrics, on an entrypoint of their own for a static scrape job.
METRICS_PORT = 8082
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"
PORTS = (WEB_PORT, INTERNAL_PORT, METRICS_PORT)
#: Requests Traefik answered with a 3xx, 4xx or 5xx, one JSON object a line.
ACCESS_LOG = cluster.LOG_DIR / "traefik-access.log"
#: The Gateway provider's name, the suffix Traefik gives everything it built from Gateway API.
PROVIDER = "kubernetesgateway"
#: How long Traefik waits for in-flight requests when stopped; the default (10 s) only slows
#: down ``stop_traefik`` and ``make cluster-down``.
GRACE_TIMEOUT = "2s"
#: Minimum time between two configurations Traefik applies. Its default (2 s) would make every
#: weight change wait up to 2 s after the route's status already says it is accepted.
PROVIDERS_THROTTLE = "200ms"


class TraefikError(RuntimeError):
    """Traefik cannot be started or queried; the message says why and where its log is."""


def argv(_: pki.Pki | None = None) -> list[str]:
    """Traefik's command line: every setting is a flag, so the pid's cmdline tells them all."""
    entrypoints = {"web": WEB_PORT, "traefik": INTERNAL_PORT, "metrics": METRICS_PORT}
    flags = [str(paths.binary("traefik"))]
    for name, port in entrypoints.items():
        flags += [
            f"--entryPoints.{name}.address=127.0.0.1:{port}",
            f"--entryPoints.{name}.transport.lifeCycle.graceTimeOut={GRACE_TIMEOUT}",
        ]
    return [
        *flags,
        "--providers.kubernetesGateway=true",
        # Shown as the Gateway's address in its status, which is where Traefik listens.
        "--providers.kubernetesGateway.statusAddress.ip=127.0.0.1",
        f"--providers.providersThrottleDuration={PROVIDERS_THROTTLE}",
        "--ping=true",
        "--ping.entryPoint=traefik",
        # Read-only API without the dashboard: tests read the live balancer weights from it.
        "--api=true",
        "--api.insecure=true",
        "--api.dashboard=false",
        "--metrics.prometheus=true",
        "--metrics.prometheus.entryPoint=metrics",
        "--metrics.prometheus.addServicesLabels=true",
        "--metrics.prometheus.addRoutersLabels=true",
        # Finer than the default (0.1, 0.3, 1.2, 5 s): the demo app answers in milliseconds.
        "--metrics.prometheus.buckets=0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5",
        # Never phone home: nothing in the namespace may try to reach the outside network.
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=INFO",
        "--log.noColor=true",
        # Failed requests only (a test sends tens of thousands of good ones), with the backend
        # each went to: what explains a 502 after the fact.
        "--accessLog=true",
        f"--accessLog.filePath={ACCESS_LOG}",
        "--accessLog.format=json",
        "--accessLog.filters.statusCodes=300-599",
        "--accessLog.fields.headers.defaultMode=drop",
    ]


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our Traefik
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _probe(_: pki.Pki) -> bool:
    answer = _http_get(f"{INTERNAL_URL}/ping")
    return answer is not None and answer[0] == 200 and answer[1].strip() == b"OK"


COMPONENT = cluster.Component(
    "traefik",
    argv,
    _probe,
    30,
    env={"KUBECONFIG": str(paths.KUBECONFIG), "KUBERNETES_SERVICE_HOST": ""},
)


def gateway_class_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def gateway_manifest(
    namespace: str, name: str = "gw", hostname: str | None = None
) -> dict[str, Any]:
    """A Gateway of class ``traefik`` with one HTTP listener ``http`` on ``WEB_PORT``.

    Without ``hostname`` the listener takes every host. Traefik merges the routes of all its
    Gateways into one router table, so concurrent tests each give their Gateway a hostname of
    their own (the routes inherit it) and send that Host header.
    """
    listener: dict[str, Any] = {
        "name": "http",
        "protocol": "HTTP",
        "port": WEB_PORT,
        "allowedRoutes": {"namespaces": {"from": "Same"}},
    }
    if hostname:
        listener["hostname"] = hostname
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [listener]},
    }


def apply(manifest: dict[str, Any]) -> None:
    """Server-side apply of one object, as its own field manager (idempotent)."""
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=devenv-traefik",
        "-f",
        "-",
        stdin=json.dumps(manifest),
    )


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _get(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    where = ["-n", namespace] if namespace else []
    text = cluster.kubectl("get", kind, name, *where, "-o", "json", check=False)
    return dict(json.loads(text)) if text.strip() else {}


def _is_true(obj: dict[str, Any], condition: str) -> bool:
    found = _conditions(obj).get(condition) or {}
    generation = obj.get("metadata", {}).get("generation")
    return found.get("status") == "True" and found.get("observedGeneration") == generation


def _wait(what: str, check: Callable[[], object], timeout: float, interval: float = 0.2) -> None:
    # Bounded by the deadline; the last answer goes into the error message.
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(interval)
    raise TraefikError(
        f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}; "
        f"last lines of {COMPONENT.log_file}:\n{cluster._tail(COMPONENT.log_file)}"
    )


def wait_gateway_programmed(namespace: str, name: str = "gw", timeout: float = 30.0) -> None:
    """Wait until Traefik has accepted and programmed the Gateway (its listener is live)."""

    def programmed() -> bool | dict[str, Any]:
        gateway = _get("gateway", name, namespace)
        if _is_true(gateway, "Accepted") and _is_true(gateway, "Programmed"):
            return True
        return _conditions(gateway)

    _wait(f"Gateway {namespace}/{name} to be programmed by Traefik", programmed, timeout)


@dataclass(frozen=True)
class TraefikInfo:
    pid: int
    reused: bool
    seconds: float


def _running_argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _check_ports_free() -> None:
    busy = []
    for port in PORTS:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(str(port))
    if busy:
        raise TraefikError(
            f"ports {', '.join(busy)} are in use inside network namespace '{paths.NETNS}' by "
            "a process this checkout did not start as Traefik"
        )


def ensure_traefik(timeout: float = 30.0) -> TraefikInfo:
    """Apply the GatewayClass and start Traefik, or reuse a healthy one with the same flags.

    Idempotent: a second call returns at once with ``reused=True``. Enters the cluster's
    network namespace first (a no-op for tests, which are inside already), so Traefik can
    never listen, or reach pod IPs, anywhere else.
    """
    started = time.monotonic()
    netns.enter()
    if not os.access(paths.binary("traefik"), os.X_OK):
        raise TraefikError(
            f"missing {paths.binary('traefik')}: run `tools/build-tools.sh traefik` to build it"
        )
    apply(gateway_class_manifest())
    p = pki.Pki(paths.STATE_DIR / "pki")
    pid = COMPONENT.pid()
    reused = pid is not None and _running_argv(pid) == argv() and _probe(p)
    if not reused:
        # Stale, unhealthy, or started with other flags (an older checkout): start afresh.
        stop_traefik()
        _check_ports_free()
        cluster._start(COMPONENT, p)

    def class_accepted() -> bool | dict[str, Any]:
        gateway_class = _get("gatewayclass", GATEWAY_CLASS)
        return True if _is_true(gateway_class, "Accepted") else _conditions(gateway_class)

    _wait(f"GatewayClass {GATEWAY_CLASS} to be accepted by Traefik", class_accepted, timeout)
    pid = COMPONENT.pid()
    if pid is None:
        raise TraefikError(
            f"Traefik exited; last lines of {COMPONENT.log_file}:\n"
            f"{cluster._tail(COMPONENT.log_file)}"
        )
    return TraefikInfo(pid=pid, reused=reused, seconds=time.monotonic() - started)


def stop_traefik() -> None:
    """Stop Traefik if it runs (SIGTERM, then SIGKILL after a grace period). Idempotent."""
    pid = COMPONENT.pid()
    if pid is not None:
        cluster.stop_pid(pid, COMPONENT.name)
    COMPONENT.pid_file.unlink(missing_ok=True)


def service_name(namespace: str, service: str, port: int) -> str:
    """The name Traefik gives the load balancer of one Service port named in a backendRef."""
    return f"{namespace}-{service}-http-{port}"


def _api(path: str) -> Any:
    answer = _http_get(f"{INTERNAL_URL}/api{path}")
    if answer is None or answer[0] != 200:
        raise TraefikError(f"Traefik API {path} answered {answer[0] if answer else 'nothing'}")
    return json.loads(answer[1])


def live_weights(namespace: str, services: Sequence[str], port: int = 80) -> dict[str, int] | None:
    """The weights Traefik applies right now to the backendRefs naming ``services``.

    Read from the running configuration (``/api/http/services``), so it changes only once
    Traefik has rebuilt its handlers, after the route's status was written. None when no
    weighted service of the Gateway provider balances exactly these Services.
    """
    wanted = {service_name(namespace, s, port): s for s in services}
    for service in _api("/http/services?per_page=1000"):
        children = (service.get("weighted") or {}).get("services") or []
        if service.get("provider") != PROVIDER or not children:
            continue
        weights = {str(c["name"]).removesuffix(f"@{PROVIDER}"): int(c["weight"]) for c in children}
        if set(weights) == set(wanted):
            return {wanted[name]: weight for name, weight in weights.items()}
    return None


def live_servers(namespace: str, service: str, port: int = 80) -> list[str]:
    """The server URLs Traefik balances for one Service port (its ready endpoints' pod IPs)."""
    name = service_name(namespace, service, port)
    try:
        found = _api(f"/http/services/{name}@{PROVIDER}")
    except TraefikError:
        return []
    servers = (found.get("loadBalancer") or {}).get("servers") or []
    return sorted(str(s["url"]) for s in servers)


@dataclass(frozen=True)
class FailedRequest:
    """One line of Traefik's access log (which holds only 3xx, 4xx and 5xx answers)."""

    at: float
    """When Traefik received the request, in seconds since the epoch."""
    status: int
    """What the client got."""
    origin_status: int
    """What the backend answered; 0 when Traefik got no answer from it."""
    service: str
    address: str
    """The backend's ``ip:port``: for a Gateway API backend, a pod's."""
    origin_ms: float
    """Time spent on the backend: close to 0 for a refused connection."""
    router: str


def failed_requests(namespace: str | None = None, since: float = 0.0) -> list[FailedRequest]:
    """Traefik's failed answers since ``since`` (epoch seconds), for one namespace's routes."""
    try:
        lines = ACCESS_LOG.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(str(entry["StartUTC"])).timestamp()
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short while Traefik writes it
        router = str(entry.get("RouterName", ""))
        # Gateway routers are named httproute-<namespace>-<route>-gw-<namespace>-<gateway>-...
        if at < since or (namespace is not None and f"-{namespace}-" not in router):
            continue
        found.append(
            FailedRequest(
                at=at,
                status=int(entry.get("DownstreamStatus", 0)),
                origin_status=int(entry.get("OriginStatus", 0)),
                service=str(entry.get("ServiceName", "")),
                address=str(entry.get("ServiceAddr", "")),
                origin_ms=int(entry.get("OriginDuration", 0)) / 1e6,
                router=router,
            )
        )
    return found


def main(argv_: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv_ is None else argv_)
    command = args[0] if args else "up"
    if command not in ("up", "down", "status"):
        print(
            f"usage: python -m devenv.traefik [up|down|status] (got {command!r})", file=sys.stderr
        )
        return 2
    if not netns.exists():
        print(f"traefik: no network namespace '{paths.NETNS}': start the cluster", file=sys.stderr)
        return 1
    try:
        netns.enter()
        if command == "up":
            info = ensure_traefik()
            how = "reused" if info.reused else f"started in {info.seconds:.1f} s"
            print(
                f"traefik: {how} (pid {info.pid}); GatewayClass {GATEWAY_CLASS}; Gateways listen "
                f"on port {WEB_PORT} ({WEB_URL}); API and /ping {INTERNAL_URL}; metrics "
                f"{METRICS_URL}; log {COMPONENT.log_file}"
            )
        elif command == "down":
            stop_traefik()
            print("traefik: stopped")
        else:
            healthy = COMPONENT.pid() is not None and _probe(pki.Pki(paths.STATE_DIR / "pki"))
            print(f"traefik: {'healthy' if healthy else 'not running'}")
            return 0 if healthy else 1
    except (TraefikError, cluster.ClusterError, netns.NetnsError) as exc:
        print(f"traefik: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
