"""The one door to the Kubernetes API, and the watch-fed caches the operator reads from.

Every other module speaks plain dicts (the objects as the API serves them) through this small
facade, so the kubernetes client's types and errors stay here, and the rest of the operator can
be read, and tested, without it.

Reads come from memory. An `Informer` per kind lists its objects once, then follows a watch from
the list's resourceVersion, re-listing on ``410 Gone``; `Kube.get` and `Kube.list` answer from
the informers attached to the facade, and raise `CacheNotReadyError` while an informer is not
synced or its watch is broken, so a reconcile waits instead of acting on stale data. Writes go
to the API server, and the object it answers with goes into the cache at once (read your own
writes): the next pass never acts on an older object than the one it wrote.

It also counts requests by verb (the benchmarks report reads and writes per step from these
counters), and carries the crash failpoint of the fault-injection tests: with
``COALMINE_FAILPOINT_WRITE=k`` the process kills itself right after its k-th write is answered,
and with ``COALMINE_FAILPOINT_WRITE="k PATCH httproutes"`` after its k-th write of that kind.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine import metrics

# Re-exported while callers outside the operator (tests, tools, benchmarks) move to
# coalmine.resources, where the kinds are defined.
from coalmine.resources import CANARY_ROLLOUTS as CANARY_ROLLOUTS
from coalmine.resources import CLUSTER_KOPF_PEERINGS as CLUSTER_KOPF_PEERINGS
from coalmine.resources import DEPLOYMENTS as DEPLOYMENTS
from coalmine.resources import ENDPOINT_SLICES as ENDPOINT_SLICES
from coalmine.resources import EVENTS as EVENTS
from coalmine.resources import EVENTS_V1
from coalmine.resources import HTTP_ROUTES as HTTP_ROUTES
from coalmine.resources import INGRESSES as INGRESSES
from coalmine.resources import KOPF_PEERINGS as KOPF_PEERINGS
from coalmine.resources import SERVICES as SERVICES
from coalmine.resources import TRAFFIC_SPLITS as TRAFFIC_SPLITS
from coalmine.resources import VIRTUAL_SERVICES as VIRTUAL_SERVICES
from coalmine.resources import Obj as Obj
from coalmine.resources import Resource as Resource

log = logging.getLogger("coalmine.kube")

PatchType = Literal["merge", "json", "strategic"]

_CONTENT_TYPES: Mapping[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
_WRITES = frozenset({"post", "put", "patch", "delete"})

MAX_OBJECT_DEPTH = 64
"""Objects nested deeper than this are kept only by their metadata and reported as unreadable.

The API server accepts far deeper JSON than Python's decoder or any reasonable pod template;
one such object must not stop the operator for every other object (issue 9, item 7)."""
UNREADABLE = "coalmine.dev/unreadable"
"""Key set on the stub kept for an object that could not be used, with the reason."""


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


class CacheNotReadyError(KubeError):
    """The informer for a kind is not synced, or its watch is broken: nothing to act on yet."""

    def __init__(self, resource: Resource, why: str) -> None:
        super().__init__(0, "CacheNotReadyError", f"{resource.cache_name}: {why}")
        self.resource = resource


def _error(exc: ApiException) -> KubeError:
    status = int(exc.status or 0)
    message = str(exc.reason)
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message", message))
    except (TypeError, ValueError, RecursionError):
        pass
    kind: type[KubeError] = {
        404: NotFoundError,
        409: ConflictError,
        422: InvalidError,
        403: ForbiddenError,
    }.get(status, KubeError)
    return kind(status, str(exc.reason), message)


# --- decoding that survives hostile objects ------------------------------------------------------

_DEEP_DECODE = threading.Lock()
_DEEP_STACK_BYTES = 256 * 1024 * 1024
_DEEP_RECURSION_LIMIT = 50_000


def loads(data: bytes | str) -> Any:
    """``json.loads``, also for JSON nested deeper than Python's recursion limit.

    The API server accepts objects nested thousands of levels deep; Python's decoder raises
    RecursionError at about a thousand. Such a document is decoded again in a thread of its own
    with a large stack and a raised limit, so one hostile object reaches `trim`, which keeps
    only its metadata, instead of killing a watch for every object of its kind.
    """
    try:
        return json.loads(data)
    except RecursionError:
        pass
    result: list[Any] = []
    failure: list[BaseException] = []

    def decode() -> None:
        try:
            result.append(json.loads(data))
        except BaseException as error:
            failure.append(error)

    with _DEEP_DECODE:
        limit = sys.getrecursionlimit()
        size = threading.stack_size(_DEEP_STACK_BYTES)
        try:
            sys.setrecursionlimit(_DEEP_RECURSION_LIMIT)
            worker = threading.Thread(target=decode, name="deep-json")
            worker.start()
            worker.join()
        finally:
            threading.stack_size(size)
            sys.setrecursionlimit(limit)
    if failure:
        raise ValueError(f"undecodable JSON: {failure[0]}") from failure[0]
    return result[0]


def depth(value: object) -> int:
    """How deeply a JSON value nests (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_OBJECT_DEPTH:
            return deepest  # deep enough to refuse; no need to walk the rest
        stack.extend((child, level + 1) for child in children)
    return deepest


_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
)
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def trim(obj: Obj) -> Obj:
    """What the caches keep of an object: no managedFields, no last-applied copy of it.

    An object nested deeper than MAX_OBJECT_DEPTH is replaced by a stub with its metadata and an
    UNREADABLE reason, so the operator can report it on the object and carry on with others.
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    if depth(obj) > MAX_OBJECT_DEPTH:
        kept = {
            key: meta[key]
            for key in _KEPT_METADATA
            if key in meta and depth(meta[key]) <= 2  # labels, annotations: flat maps
        }
        stub = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "metadata": kept,
            UNREADABLE: f"nests more than {MAX_OBJECT_DEPTH} levels deep",
        }
        status = obj.get("status")
        if isinstance(status, dict) and depth(status) <= MAX_OBJECT_DEPTH:
            stub["status"] = status  # the operator's memory stays readable
        return stub
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(_LAST_APPLIED, None)
    return obj


_SHARED_STRING_MAX = 64


def share_strings(value: Any) -> Any:
    """``value`` with its keys and short strings interned: one copy of each in the process.

    Thousands of cached objects repeat the same keys ("metadata", "readyReplicas") and values
    (label values, "True", condition types), each decoded into its own string; sharing them
    halves what the caches hold (measured on 2,000 rollouts: 153 MB of objects to 75 MB).
    """
    if isinstance(value, dict):
        return {sys.intern(key): share_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [share_strings(item) for item in value]
    if isinstance(value, str) and len(value) <= _SHARED_STRING_MAX:
        return sys.intern(value)
    return value


def trim_to_metadata(obj: Obj) -> Obj:
    """Only who an object is: for kinds read only to learn their labels (pods behind endpoints)."""
    meta = obj.get("metadata") or {}
    kept = {
        key: meta[key]
        for key in ("name", "namespace", "uid", "resourceVersion", "labels")
        if key in meta
    }
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept}


def _gone(obj: Obj) -> bool:
    """Deleted as of this version: being deleted, nothing left to hold it (no finalizer, no
    grace period, which pods have). The API server answers the write that releases the last
    finalizer with the object at its last version and deletes it; no newer version follows, so
    that answer must take the object out of the cache, not be ignored as "not newer"."""
    meta = obj.get("metadata") or {}
    return (
        bool(meta.get("deletionTimestamp"))
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


def _version(obj: Obj) -> int | None:
    # resourceVersions are opaque by contract but etcd revisions in practice; a value that is
    # not a number is never compared (the newer write simply wins).
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


# --- the failpoint -------------------------------------------------------------------------------


def write_kind(verb: str, path: str) -> str:
    """What a write wrote, without namespace or name: "PATCH canaryrollouts/status".

    /api/v1/[namespaces/<ns>/]<plural>[/<name>[/<sub>]], or the same under /apis/<group>/<version>.
    """
    parts = path.split("?", 1)[0].strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    if len(parts) > 2 and parts[0] == "namespaces":  # a namespaced object, not a Namespace
        parts = parts[2:]
    return " ".join([verb.upper(), "/".join([parts[0], *parts[2:]])])


class _Failpoint:
    """Counts writes; logs them to COALMINE_WRITE_LOG; dies after COALMINE_FAILPOINT_WRITE of them.

    The fault-injection tests run a scenario once to count its writes W, then again W times,
    killed after write 1, 2, ... W: every point where a crash can land, not a random sample.
    A target with a kind ("3 PATCH canaryrollouts/status") counts only the writes of that kind:
    how many writes come before a given one varies from run to run (an analysis updates its
    status as its samples arrive), the order of writes of one kind much less.
    """

    def __init__(self) -> None:
        count, _, kind = os.environ.get("COALMINE_FAILPOINT_WRITE", "").strip().partition(" ")
        self.crash_after = int(count) if count.isdigit() else None
        self.kind = kind.strip() or None
        self.log_path = os.environ.get("COALMINE_WRITE_LOG") or None
        self.count = 0
        self.counted = 0
        self.lock = threading.Lock()

    def written(self, verb: str, path: str) -> None:
        with self.lock:
            self.count += 1
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as out:
                    out.write(f"{self.count} {verb.upper()} {path}\n")
            if self.kind is None or write_kind(verb, path) == self.kind:
                self.counted += 1
            if self.crash_after is not None and self.counted >= self.crash_after:
                # As sudden as kill -9: no cleanup, no flushing, no finalizers.
                os.kill(os.getpid(), signal.SIGKILL)


_FAILPOINT = _Failpoint()


# --- the facade ----------------------------------------------------------------------------------


class Kube:
    """A thin, typed facade over the REST API. Thread-safe like the client beneath it.

    Reads of a kind with an attached `Informer` come from its cache; other reads go to the API.
    """

    def __init__(self, api: client.ApiClient, field_manager: str = "coalmine") -> None:
        self.api = api
        self.field_manager = field_manager
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._informers: dict[Resource, Informer] = {}

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, connections: int = 16) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (or $KUBECONFIG).

        ``connections`` sizes the HTTP pool: one per worker, plus the informers' watches.
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

    # --- caches ---------------------------------------------------------------------------------

    def attach(self, informer: Informer) -> None:
        """Serve reads of the informer's kind from it from now on."""
        self._informers[informer.resource] = informer

    def informer(self, resource: Resource) -> Informer | None:
        return self._informers.get(resource)

    def _remember(self, resource: Resource, obj: Obj) -> None:
        informer = self._informers.get(resource)
        if informer is not None and obj.get("metadata"):
            informer.apply(obj)

    # --- counters -------------------------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def _count(self, verb: str) -> None:
        with self._lock:
            self._requests[verb] += 1

    # --- raw request ----------------------------------------------------------------------------

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
        full_path = f"{path}?{urlencode(query)}" if query else path
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=full_path,
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
        if verb in _WRITES:
            _FAILPOINT.written(verb, path)
        data = response.data
        if not data:
            return {}
        parsed: Obj = loads(data)
        return parsed

    # --- verbs ----------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        """The object, from the cache when the kind has an informer, else from the API."""
        informer = self._informers.get(resource)
        if informer is not None:
            return informer.get(namespace, name)
        return self.fetch(resource, namespace, name)

    def fetch(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        """The object as the API server has it now, bypassing any cache."""
        try:
            return self.request("GET", resource.path(namespace, name))
        except NotFoundError:
            return None

    def list(
        self, resource: Resource, namespace: str | None, *, label_selector: str | None = None
    ) -> list[Obj]:
        informer = self._informers.get(resource)
        if informer is not None:
            return informer.select(namespace, label_selector)
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = self.request("GET", resource.path(namespace), query=query).get(
            "items", []
        )
        return items

    def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        created = self.request(
            "POST",
            resource.path(namespace),
            body=body,
            query={"fieldManager": self.field_manager},
        )
        self._remember(resource, created)
        return created

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
        patched = self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type=_CONTENT_TYPES[patch_type],
            query={"fieldManager": self.field_manager},
        )
        if subresource in (None, "status"):  # a scale subresource answers with a Scale
            self._remember(resource, patched)
        return patched

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
        bookmarks: bool = False,
        quiet_seconds: float | None = None,
    ) -> Iterator[tuple[str, Obj]]:
        """Stream the watch events (type, object) of a resource as the API server sends them.

        ``quiet_seconds``: with bookmarks, which the API server sends about once a minute on an
        idle watch, a stream silent for longer is taken for a dead connection and simply ends
        (the caller resumes from its last version); without it, the read timeout is the
        server's own timeout plus 30 s.

        ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK. Without ``resource_version`` the server
        first sends an ADDED event for every existing object; with one, only what changed after
        it. The stream ends when the server closes it, ``timeout_seconds`` later: the caller
        watches again from the last resourceVersion it saw. An ERROR event raises, as the
        KubeError of its status (410 Gone: that resourceVersion is too old, list again).
        Closing the generator early closes the connection. Most callers want an `Informer`.
        """
        query = _watch_query(name, label_selector, resource_version, timeout_seconds, bookmarks)
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
        read_timeout = quiet_seconds if quiet_seconds is not None else timeout_seconds + 30
        try:
            response = self.api.call_api(*serialized, _request_timeout=(30, read_timeout))
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
                    event = loads(line)
                    obj: Obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        # The object is a metav1.Status: the same error a request would get.
                        failure = ApiException(
                            status=int(obj.get("code") or 0), reason=str(obj.get("reason"))
                        )
                        failure.body = json.dumps(obj)
                        raise _error(failure)
                    yield str(event.get("type")), obj
        except urllib3.exceptions.ReadTimeoutError:
            if quiet_seconds is None:
                raise KubeError(0, "Unreachable", "the watch went silent") from None
            return  # silent past the bookmarks' pace: a dead connection; resume from the version
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", str(exc)) from exc
        finally:
            # Never back into the pool: the stream may be cut mid-event.
            stream.close()

    def emit_event(
        self,
        regarding: Obj,
        *,
        reason: str,
        message: str,
        warning: bool = False,
        action: str = "Reconcile",
        name: str | None = None,
    ) -> None:
        """Record an events.k8s.io/v1 Event about an object (what `kubectl describe` shows).

        eventTime has microseconds, so two events of one second still list in their order. A
        ``name`` makes the event unique: recording it twice fails with ConflictError.
        """
        meta = regarding["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": EVENTS_V1.api_version,
            "kind": "Event",
            # events.k8s.io checks the generated name as a whole: it cannot end in ".". A name
            # given by the caller is what makes a replayed event a refused duplicate.
            "metadata": {
                "name": name or f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "eventTime": now,
            "reportingController": "coalmine.dev/operator",
            "reportingInstance": os.environ.get("HOSTNAME") or "coalmine",
            "action": action,
            "reason": reason,
            "note": message[:1024],
            "type": "Warning" if warning else "Normal",
            "regarding": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        self.request(
            "POST",
            EVENTS_V1.path(meta["namespace"]),
            body=event,
            query={"fieldManager": self.field_manager},
        )


def _watch_query(
    name: str | None,
    label_selector: str | None,
    resource_version: str | None,
    timeout_seconds: int,
    bookmarks: bool,
) -> dict[str, str]:
    query = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
    if name is not None:
        query["fieldSelector"] = f"metadata.name={name}"
    if label_selector:
        query["labelSelector"] = label_selector
    if resource_version:
        query["resourceVersion"] = resource_version
    if bookmarks:
        query["allowWatchBookmarks"] = "true"
    return query


# --- informers -----------------------------------------------------------------------------------

Handler = Callable[[str, Obj, Obj | None], None]
"""Called with (event type, the object as now cached, the object before) for each change."""

_RELIST_BACKOFF = (0.2, 0.5, 1.0, 2.0, 3.0)
"""Seconds before listing again after a failure (plus up to half as much jitter). Capped low:
every rollout waits for the caches, so once the API server is back they must be fresh within
seconds (issue 9, item 8); a dozen informers asking every 3 s cost a down API server nothing."""
_ABSENT_RECHECK_SECONDS = 300.0
"""A kind that is not installed (a mesh's CRD) is looked for again this often."""
_WATCH_SECONDS = 1800
"""How long the API server keeps one watch open: long, so an idle operator costs almost no
requests; bookmarks (about one a minute) show the connection is alive meanwhile."""
_QUIET_SECONDS = 150.0
"""No bookmark nor event for this long: the connection is taken for dead and resumed."""
_PAGE_SIZE = 500


def _selector_terms(selector: str | None) -> list[tuple[str, str, str | None]]:
    """An equality-based label selector as (key, op, value); op is =, != or exists/!exists."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in (selector or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.split("=", 1)
            terms.append((key.strip(), "=", value.strip().lstrip("=")))
        elif term.startswith("!"):
            terms.append((term[1:].strip(), "!exists", None))
        else:
            terms.append((term, "exists", None))
    return terms


def matches(labels: Mapping[str, str], selector: str | None) -> bool:
    """Whether labels satisfy an equality-based selector, as the API server would judge it."""
    return _satisfies(labels, _selector_terms(selector))


def _satisfies(labels: Mapping[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    for key, op, value in terms:
        present = key in labels
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and present and labels.get(key) == value:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


StoreKey = tuple[str, str]


class IndexedStore:
    """The objects of an informer, with indexes so that a read costs what it returns.

    A reconcile reads the few objects of one rollout: by namespace and by the value of an
    indexed label (the rollout label, a Service's name on its EndpointSlices). Scanning every
    cached object instead would make each reconcile cost as much as the cluster is large.
    """

    def __init__(self, index_labels: tuple[str, ...]) -> None:
        self.index_labels = index_labels
        self.objects: dict[StoreKey, Obj] = {}
        self._by_namespace: dict[str, dict[StoreKey, Obj]] = {}
        self._by_label: dict[tuple[str, str], dict[StoreKey, Obj]] = {}

    def __len__(self) -> int:
        return len(self.objects)

    def get(self, key: StoreKey) -> Obj | None:
        return self.objects.get(key)

    def put(self, key: StoreKey, obj: Obj) -> None:
        self.drop(key)
        self.objects[key] = obj
        self._by_namespace.setdefault(key[0], {})[key] = obj
        for bucket in self._label_buckets(obj):
            self._by_label.setdefault(bucket, {})[key] = obj

    def drop(self, key: StoreKey) -> None:
        before = self.objects.pop(key, None)
        if before is None:
            return
        _discard(self._by_namespace, key[0], key)
        for bucket in self._label_buckets(before):
            _discard(self._by_label, bucket, key)

    def select(self, namespace: str | None, selector: str | None) -> list[Obj]:
        terms = _selector_terms(selector)
        indexed = [
            (key, str(value)) for key, op, value in terms if op == "=" and key in self.index_labels
        ]
        candidates: Iterable[Obj]
        if indexed:
            candidates = self._by_label.get(indexed[0], {}).values()
        elif namespace is not None:
            candidates = self._by_namespace.get(namespace, {}).values()
        else:
            candidates = self.objects.values()
        return [
            obj
            for obj in candidates
            if (namespace is None or obj["metadata"].get("namespace") == namespace)
            and _satisfies(obj["metadata"].get("labels") or {}, terms)
        ]

    def _label_buckets(self, obj: Obj) -> list[tuple[str, str]]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return [(key, labels[key]) for key in self.index_labels if key in labels]


def _discard(index: dict[Any, dict[StoreKey, Obj]], bucket: Any, key: StoreKey) -> None:
    entries = index.get(bucket)
    if entries is not None:
        entries.pop(key, None)
        if not entries:
            del index[bucket]


class Informer:
    """Keeps every object of one kind (in a namespace, matching selectors) in memory.

    List, then watch from the list's resourceVersion with bookmarks; a watch that ends is resumed
    from the last version seen, ``410 Gone`` re-lists (and reports what changed meanwhile), any
    other failure marks the cache unhealthy (a log line and the `coalmine_informer_healthy`
    metric) until the next successful list or watch, with backoff. One thread per informer, never
    per object; handlers run in it and must only note what changed (enqueue keys).
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        name: str | None = None,
        transform: Callable[[Obj], Obj] = trim,
        required: bool = True,
        watch_seconds: int = _WATCH_SECONDS,
        index_labels: tuple[str, ...] = (),
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace if resource.namespaced else None
        self.label_selector = label_selector
        self.name = name
        """Follow this one object only (a field selector on its name)."""
        self.transform = transform
        self.required = required
        """An optional kind (a mesh's CRD) may be absent from the cluster without harm."""
        self.watch_seconds = watch_seconds
        self.handlers: list[Handler] = []
        self.recovered: list[Callable[[], None]] = []
        """Called when a broken watch works again: what waited on this cache may go on now."""
        self.failed: list[Callable[[str], None]] = []
        """Called with the reason each time the list or the watch fails (and is retried)."""
        self._store = IndexedStore(index_labels)
        """Reads by an equality on one of ``index_labels`` cost only what they return."""
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.healthy = False
        self._was_healthy = False
        self.absent = False
        self.problem: str | None = "not listed yet"
        self.version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gauge = metrics.INFORMER_HEALTHY.labels(resource.cache_name)
        self._objects = metrics.INFORMER_OBJECTS.labels(resource.cache_name)
        self._gauge.set(0)

    # --- reading --------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.absent:
            return  # nothing of a kind that is not installed: an empty cache is the truth
        if not self.synced.is_set() or not self.healthy:
            raise CacheNotReadyError(self.resource, self.problem or "not synced")

    def get(self, namespace: str | None, name: str) -> Obj | None:
        self._check()
        key = (namespace or "" if self.resource.namespaced else "", name)
        with self._lock:
            return self._store.get(key)

    def select(self, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        self._check()
        with self._lock:
            return self._store.select(namespace, label_selector)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    # --- writing ----------------------------------------------------------------------------------

    def _key(self, obj: Obj) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "") if self.resource.namespaced else ""
        return namespace, str(meta.get("name") or "")

    def _admits(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.name is not None and meta.get("name") != self.name:
            return False
        return matches(meta.get("labels") or {}, self.label_selector)

    def apply(self, obj: Obj, event: str = "MODIFIED") -> None:
        """Take an object as the API server answered it, unless the cache already has it or newer.

        Used for the watch's events and for the answers to our own writes (read your writes).
        """
        obj = share_strings(self.transform(obj))
        key = self._key(obj)
        if _gone(obj):
            event = "DELETED"
        with self._lock:
            before = self._store.get(key)
            if event == "DELETED":
                if before is None:
                    return
                self._store.drop(key)
                self._objects.set(len(self._store))
            else:
                new, old = _version(obj), _version(before) if before is not None else None
                if before is not None and new is not None and old is not None and new <= old:
                    return  # already known (our own write came back), or older than known
                if not self._admits(obj):
                    if before is None:
                        return
                    self._store.drop(key)  # it no longer matches the selectors: it leaves
                    event = "DELETED"
                else:
                    self._store.put(key, obj)
                self._objects.set(len(self._store))
        self._notify(event, obj, before)

    def _notify(self, event: str, obj: Obj, before: Obj | None) -> None:
        for handler in self.handlers:
            try:
                handler(event, obj, before)
            except Exception:
                log.exception("informer %s: a handler failed", self.resource.cache_name)

    def _replace(self, objects: list[Obj]) -> list[tuple[str, Obj, Obj | None]]:
        """A fresh list: the store becomes it; returns the differences, for the handlers."""
        store = IndexedStore(self._store.index_labels)
        for obj in objects:
            store.put(self._key(obj), obj)
        fresh = store.objects
        with self._lock:
            old = self._store.objects
            self._store = store
            self._objects.set(len(fresh))
        changes: list[tuple[str, Obj, Obj | None]] = []
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                changes.append(("ADDED", obj, None))
            elif _version(before) != _version(obj) or _version(obj) is None:
                changes.append(("MODIFIED", obj, before))
        changes += [("DELETED", before, before) for key, before in old.items() if key not in fresh]
        return changes

    # --- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{self.resource.cache_name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._list()
                failures = 0
                while not self._stop.is_set():
                    self._watch()
            except CacheNotReadyError:
                continue  # 410 Gone: list again at once
            except NotFoundError as error:
                if self.required:
                    self._broken(f"the {self.resource.kind} API is not served: {error.message}")
                else:
                    self._mark_absent()
                self._stop.wait(_ABSENT_RECHECK_SECONDS)
            except KubeError as error:
                delay = _RELIST_BACKOFF[min(failures, len(_RELIST_BACKOFF) - 1)]
                failures += 1
                self._broken(f"{error} (retrying in {delay:.1f} s)")
                self._stop.wait(delay * (1 + random.random() / 2))  # noqa: S311 - jitter
            except Exception as error:
                log.exception("informer %s crashed; restarting it", self.resource.cache_name)
                self._broken(f"crashed: {error}")
                self._stop.wait(1.0)

    def _query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        if self.name is not None:
            query["fieldSelector"] = f"metadata.name={self.name}"
        return query

    def _list(self) -> None:
        objects: list[Obj] = []
        query = {**self._query(), "limit": str(_PAGE_SIZE)}
        while True:
            page = self.kube.request("GET", self.resource.path(self.namespace), query=query)
            kind = self.resource.kind
            api_version = self.resource.api_version
            for item in page.get("items") or []:
                # Items of a list carry no kind; handlers and events want the full object.
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                objects.append(share_strings(self.transform(item)))
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            query["continue"] = str(metadata["continue"])
        self.version = str((page.get("metadata") or {}).get("resourceVersion") or "") or None
        changes = self._replace(objects)
        # Synced and healthy before the handlers hear of it: they may read the cache at once.
        self.synced.set()
        self._healthy()
        for event, obj, before in changes:
            self._notify(event, obj, before)

    def _watch(self) -> None:
        timeout = int(self.watch_seconds * (0.8 + random.random() * 0.4))  # noqa: S311
        try:
            for event, obj in self.kube.watch(
                self.resource,
                self.namespace,
                name=self.name,
                label_selector=self.label_selector,
                resource_version=self.version,
                timeout_seconds=timeout,
                bookmarks=True,
                quiet_seconds=_QUIET_SECONDS,
            ):
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if event == "BOOKMARK":
                    self.version = str(version) if version else self.version
                    continue
                self.apply(obj, event)
                if version:
                    self.version = str(version)
                if self._stop.is_set():
                    return
        except KubeError as error:
            if error.status == 410:
                log.info(
                    "informer %s: resourceVersion too old; re-listing", self.resource.cache_name
                )
                metrics.INFORMER_RESTARTS.labels(self.resource.cache_name, "gone").inc()
                raise CacheNotReadyError(self.resource, "re-listing after 410 Gone") from error
            raise
        self._healthy()

    def _healthy(self) -> None:
        recovered = not self.healthy and self._was_healthy
        self._was_healthy = True
        if not self.healthy:
            if self.problem and self.problem != "not listed yet":
                log.info("informer %s: healthy again", self.resource.cache_name)
            self.healthy = True
        self.absent = False
        self.problem = None
        self._gauge.set(1)
        if recovered:
            for callback in self.recovered:
                callback()

    def _broken(self, why: str) -> None:
        if self.healthy or self.problem != why:
            log.warning("informer %s: %s", self.resource.cache_name, why)
        self.healthy = False
        self.problem = why
        self._gauge.set(0)
        metrics.INFORMER_RESTARTS.labels(self.resource.cache_name, "error").inc()
        for callback in self.failed:
            callback(why)

    def _mark_absent(self) -> None:
        if not self.absent:
            log.info("informer %s: the kind is not installed; looking again later", self.resource)
        for event, obj, before in self._replace([]):
            self._notify(event, obj, before)
        self.absent = True
        self.healthy = True
        self.problem = None
        self.synced.set()
        self._gauge.set(1)


def wait_synced(informers: Iterable[Informer], timeout: float) -> bool:
    """Whether every informer synced within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in informers)
