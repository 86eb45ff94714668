"""Reading what Traefik does with a rollout's traffic: its live weights and backends.

Shared by the tests that send real requests through the local cluster's Gateway API
implementation (test_traefik.py, test_install.py).
"""

from __future__ import annotations

import http.client
import json
import socket

from devenv import traefik
from devenv.waiting import wait_for

from .conftest import Cluster


def pod_ips(kube: Cluster, namespace: str, revision: str) -> list[str]:
    pods = kube.core.list_namespaced_pod(
        namespace, label_selector=f"coalmine.dev/revision={revision}"
    ).items
    return sorted(str(p.status.pod_ip) for p in pods if p.status and p.status.pod_ip)


def wait_weights(namespace: str, stable: int, canary: int, name: str = "shop") -> None:
    """Until Traefik's running balancer holds these weights for rollout ``name``'s Services."""
    wanted = {f"{name}-stable": stable, f"{name}-canary": canary}
    wait_for(
        lambda: traefik.live_weights(namespace, tuple(wanted)),
        until=lambda w: w == wanted,
        timeout=20,
        interval=0.05,
        message=f"Traefik to balance {wanted}",
    )


def wait_servers(kube: Cluster, namespace: str, service: str, revision: str) -> list[str]:
    """Until Traefik balances ``service`` over exactly the (ready) pod IPs of ``revision``."""

    def expected() -> list[str]:
        # Sorted as URLs, as Traefik's are: "10.244.0.11:" sorts before "10.244.0.1:".
        return sorted(f"http://{ip}:8080" for ip in pod_ips(kube, namespace, revision))

    return wait_for(
        lambda: (traefik.live_servers(namespace, service), expected()),
        until=lambda pair: pair[0] == pair[1] and bool(pair[0]),
        timeout=30,
        message=f"Traefik to send {service} to the pod IPs of revision {revision}",
    )[0]


def wait_listening(urls: list[str]) -> None:
    """Until every backend accepts connections: Ready may come a moment before (test_traefik.py)."""

    def refused() -> list[str]:
        closed = []
        for url in urls:
            ip, _, port = url.removeprefix("http://").rpartition(":")
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex((ip, int(port))) != 0:
                    closed.append(url)
        return closed

    wait_for(refused, until=lambda closed: not closed, timeout=20, message="backends listening")


def one_request(host: str) -> tuple[int, str]:
    """One GET through Traefik: the status, and the version that answered."""
    connection = http.client.HTTPConnection("127.0.0.1", traefik.WEB_PORT, timeout=2)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    version = json.loads(body).get("version", "") if response.status == 200 else ""
    return response.status, str(version)
