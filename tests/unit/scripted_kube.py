"""One scripted stand-in for the API behind ``coalmine.kube.Kube``, for unit tests of pure logic.

It answers requests from canned objects (by path) or from a queue of listings, and watches from
a queue of event streams, so the informer and the CLI's follow loop reach every branch on
purpose. Two special events stand for failures: ``GONE`` (410, the version is too old) and
``CUT`` (the connection drops). When the script runs out, the watch stays quiet, as an open
watch on an idle cluster does, and ``done`` is set. Every integration test runs the same code
against the real API server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

from coalmine.kube import Kube, KubeError, NotFoundError
from coalmine.resources import Obj, Resource

Stream = list[tuple[str, Obj]]


class ScriptedKube(Kube):
    """The facade with canned answers: objects by path, queued listings, scripted watches."""

    def __init__(
        self,
        streams: list[Stream],
        *,
        objects: Mapping[str, Obj] | None = None,
        listings: list[Obj] | None = None,
    ) -> None:
        super().__init__(cast(Any, None))
        self.objects = dict(objects or {})
        self.listings = listings
        self.streams = streams
        self.watched: list[str | None] = []
        self.done = threading.Event()

    def request(self, method: str, path: str, **_: Any) -> Obj:
        self._count(method.lower())
        if path in self.objects:
            return self.objects[path]
        if self.listings:
            return self.listings.pop(0)
        if self.listings is not None:
            # A script of listings that ran out stands for an API server that went away.
            raise KubeError(0, "Unreachable", "scripted: no more listings")
        raise NotFoundError(404, "NotFound", f"{path} not found")

    def watch(
        self, resource: Resource, namespace: str | None, **options: Any
    ) -> Iterator[tuple[str, Obj]]:
        self._count("watch")
        self.watched.append(options.get("resource_version"))
        if not self.streams:
            self.done.set()
            time.sleep(0.05)
            return
        for event in self.streams.pop(0):
            if event[0] == "GONE":
                raise KubeError(410, "Expired", "too old resource version")
            if event[0] == "CUT":
                raise KubeError(0, "Unreachable", "connection reset")
            yield event
