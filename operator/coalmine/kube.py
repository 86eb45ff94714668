"""The one door to the Kubernetes API.

Every other module speaks plain dicts (the objects as the API serves them) through this small
facade, so the kubernetes client's types and errors stay here, and the rest of the operator can
be read, and tested, without it. It also counts the requests it makes by verb: the benchmarks
report API writes per rollout step from these counters.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine import metrics

PatchType = Literal["merge", "json", "strategic"]

_CONTENT_TYPES: Mapping[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


# Re-exported while callers outside the operator move to coalmine.resources.
from coalmine.resources import (  # noqa: E402
    CANARY_ROLLOUTS as CANARY_ROLLOUTS,
)
from coalmine.resources import (  # noqa: E402
    CLUSTER_KOPF_PEERINGS as CLUSTER_KOPF_PEERINGS,
)
from coalmine.resources import DEPLOYMENTS as DEPLOYMENTS  # noqa: E402
from coalmine.resources import ENDPOINT_SLICES as ENDPOINT_SLICES  # noqa: E402
from coalmine.resources import EVENTS as EVENTS  # noqa: E402
from coalmine.resources import HTTP_ROUTES as HTTP_ROUTES  # noqa: E402
from coalmine.resources import INGRESSES as INGRESSES  # noqa: E402
from coalmine.resources import KOPF_PEERINGS as KOPF_PEERINGS  # noqa: E402
from coalmine.resources import SERVICES as SERVICES  # noqa: E402
from coalmine.resources import TRAFFIC_SPLITS as TRAFFIC_SPLITS  # noqa: E402
from coalmine.resources import VIRTUAL_SERVICES as VIRTUAL_SERVICES  # noqa: E402
from coalmine.resources import Obj as Obj  # noqa: E402
from coalmine.resources import Resource as Resource  # noqa: E402


class KubeError(RuntimeError):
    """An API request failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(KubeError):
    pass


class ConflictError(KubeError):
    """409: the object exists already, or its resourceVersion moved on."""


class InvalidError(KubeError):
    """422: the API server rejected the object; ``message`` names the field."""


class ForbiddenError(KubeError):
    pass


def _error(exc: ApiException) -> KubeError:
    status = int(exc.status or 0)
    message = str(exc.reason)
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message", message))
    except (TypeError, ValueError):
        pass
    kind: type[KubeError] = {
        404: NotFoundError,
        409: ConflictError,
        422: InvalidError,
        403: ForbiddenError,
    }.get(status, KubeError)
    return kind(status, str(exc.reason), message)


class Kube:
    """A thin, typed facade over the REST API. Thread-safe like the client beneath it."""

    def __init__(self, api: client.ApiClient, field_manager: str = "coalmine") -> None:
        self.api = api
        self.field_manager = field_manager
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, connections: int = 64) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (or $KUBECONFIG).

        ``connections`` sizes the HTTP pool: every rollout's daemon thread may hold one.
        """
        configuration = client.Configuration()
        loaded = False
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
                loaded = True
            except config.ConfigException:
                pass
        if not loaded:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = connections
        return cls(client.ApiClient(configuration))

    # --- counters ---------------------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def _count(self, verb: str) -> None:
        with self._lock:
            self._requests[verb] += 1

    # --- raw request ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Obj:
        verb = method.lower()
        self._count(verb)
        started = time.monotonic()
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*serialized, _request_timeout=timeout)
            response.read()
        except ApiException as exc:
            raise _error(exc) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # the server was not reached
            raise KubeError(0, "Unreachable", str(exc)) from exc
        finally:
            metrics.API_REQUESTS.labels(verb).inc()
            metrics.API_LATENCY.labels(verb).observe(time.monotonic() - started)
        if response.status >= 400:
            raise _error(ApiException(http_resp=response))
        data = response.data
        if not data:
            return {}
        parsed: Obj = json.loads(data)
        return parsed

    # --- verbs ------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.request("GET", resource.path(namespace, name))
        except NotFoundError:
            return None

    def list(
        self, resource: Resource, namespace: str | None, *, label_selector: str | None = None
    ) -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = self.request("GET", resource.path(namespace), query=query).get(
            "items", []
        )
        return items

    def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        return self.request(
            "POST",
            resource.path(namespace),
            body=body,
            query={"fieldManager": self.field_manager},
        )

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: object,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        return self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type=_CONTENT_TYPES[patch_type],
            query={"fieldManager": self.field_manager},
        )

    def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        try:
            self.request(
                "DELETE",
                resource.path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except NotFoundError:
            return False
        return True

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        name: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
    ) -> Iterator[tuple[str, Obj]]:
        """Stream the watch events (type, object) of a resource as the API server sends them.

        ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK. Without ``resource_version`` the server
        first sends an ADDED event for every existing object; with one, only what changed after
        it. The stream ends when the server closes it, ``timeout_seconds`` later: the caller
        watches again from the last resourceVersion it saw. An ERROR event raises, as the
        KubeError of its status (410 Gone: that resourceVersion is too old, list again).
        Closing the generator early closes the connection.
        """
        query = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if name is not None:
            query["fieldSelector"] = f"metadata.name={name}"
        if label_selector:
            query["labelSelector"] = label_selector
        if resource_version:
            query["resourceVersion"] = resource_version
        self._count("watch")
        # Counted, but not timed: a watch lasts as long as the server keeps it open, and its
        # duration would only blur the latency histogram of the real requests.
        metrics.API_REQUESTS.labels("watch").inc()
        serialized = self.api.param_serialize(
            method="GET",
            resource_path=f"{resource.path(namespace)}?{urlencode(query)}",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            # The read timeout outlasts the server's own, so a silent stream ends on the
            # server's terms; a dead connection still ends on ours.
            response = self.api.call_api(*serialized, _request_timeout=(30, timeout_seconds + 30))
        except ApiException as exc:
            raise _error(exc) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", str(exc)) from exc
        stream = response.response
        try:
            if response.status >= 400:
                response.read()
                raise _error(ApiException(http_resp=response))
            pending = b""
            # The body is one JSON event per line, in chunks that need not end on a line.
            for chunk in stream.stream(amt=None, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj: Obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        # The object is a metav1.Status: the same error a request would get.
                        failure = ApiException(
                            status=int(obj.get("code") or 0), reason=str(obj.get("reason"))
                        )
                        failure.body = json.dumps(obj)
                        raise _error(failure)
                    yield str(event.get("type")), obj
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", str(exc)) from exc
        finally:
            # Never back into the pool: the stream may be cut mid-event.
            stream.close()

    def emit_event(
        self, regarding: Obj, *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Record a core/v1 Event about an object (what `kubectl describe` shows)."""
        meta = regarding["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "coalmine"},
            "reportingComponent": "coalmine.dev/operator",
            "reportingInstance": "coalmine",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.create(EVENTS, meta["namespace"], event)
