"""Traffic for analysis tests: requests spread over a Service's ready endpoints, as kube-proxy
would spread them, at a steady bounded rate, from a background thread."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections import Counter

from coalmine import kube as k
from coalmine.kube import Kube


class ServiceTraffic:
    """Sends ``rate`` requests a second to the ready endpoints of a Service until stopped.

    Bounded: it stops by itself after ``limit`` seconds whatever happens.
    """

    def __init__(
        self, kube: Kube, namespace: str, service: str, *, rate: float = 40, limit: float = 300
    ) -> None:
        self.kube, self.namespace, self.service = kube, namespace, service
        self.rate, self.limit = rate, limit
        self.codes: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ServiceTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _endpoints(self) -> list[str]:
        slices = self.kube.list(
            k.ENDPOINT_SLICES,
            self.namespace,
            label_selector=f"kubernetes.io/service-name={self.service}",
        )
        return sorted(
            address
            for endpoint_slice in slices
            for endpoint in endpoint_slice.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready") is not False
            for address in endpoint.get("addresses") or []
        )

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        refreshed, ips = 0.0, []
        cycle: itertools.cycle[str] | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if time.monotonic() - refreshed > 1.0:
                refreshed = time.monotonic()
                try:
                    ips = self._endpoints()
                except k.KubeError:
                    ips = []
                cycle = itertools.cycle(ips) if ips else None
            if cycle is not None:
                self.codes[self._get(next(cycle))] += 1
            self._stop.wait(1 / self.rate)

    @staticmethod
    def _get(ip: str) -> int:
        connection = http.client.HTTPConnection(ip, 8080, timeout=2)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            return response.status
        except OSError:
            return 0
        finally:
            connection.close()
