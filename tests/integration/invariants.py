"""The safety invariants of issue 9, checked from the API on what a fault-injection run left.

A `Watcher` follows one namespace's CanaryRollouts, HTTPRoutes, EndpointSlices and Pods from
watch streams while a run goes on, and keeps every version it sees. All those objects live in
the cluster's one etcd, so their resourceVersions order them all: `Watcher.violations` replays
the changes in that order and checks, at every single change, what traffic the canary could get
against what the rollout's status said at that moment. Nothing is sampled only at the end, and
nothing relies on the operator's own view.

Checked at every change:
- a weighted router (Gateway API) gives the canary a weight above 0 only while the canary
  Service has a ready endpoint;
- the canary's weight (the router's number, or for the replica ratio its share of the ready
  endpoints behind the rollout's Service) never exceeds the highest ``setWeight`` of the steps
  the status says the canary has reached; 100 only once every step is done.

Checked after the run, from the events and the objects left (`step_numbers`,
`duplicated_events`, `orphans`): every step completed exactly once and in order, no transition
announced twice, nothing left of a deleted rollout.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from coalmine import resources as r
from coalmine.kube import Informer, Kube, trim_to_metadata
from coalmine.labels import REVISION_LABEL, ROLLOUT_LABEL
from coalmine.resources import Obj

PROMOTING = ("FullWeight", "SwitchStable", "ReturnToStable")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

TRANSITIONS = frozenset(
    {
        "RevisionCreated",
        "StepCompleted",
        "Paused",
        "Promoted",
        "PromotedFull",
        "Aborted",
        "ProgressDeadlineExceeded",
        "Superseded",
        "RolledBack",
        "RollingBack",
        "Retried",
        "StepsChanged",
    }
)
"""Event reasons that announce a transition: each may appear once per transition. Measurement
events (MetricError, AnalysisFailed, ...) report a measurement each, and may repeat."""

_STEP = re.compile(r"^step (\d+)/(\d+) completed")


def _version(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("resourceVersion") or 0)


@dataclass(frozen=True, order=True)
class Change:
    version: int
    kind: str
    event: str = field(compare=False)
    obj: Obj = field(compare=False, repr=False)


# --- what the status allows ----------------------------------------------------------------------


def allowed_weight(rollout: Obj) -> int:
    """The highest canary weight the rollout's status allows right now.

    0 without a canary; the highest setWeight among the steps up to the current one while the
    canary walks its steps (or is being aborted); 100 once every step is done (promotion).
    """
    status = rollout.get("status") or {}
    if not status.get("canaryRevision"):
        return 0
    steps = (rollout.get("spec") or {}).get("steps") or []
    stage = status.get("stage") or "Steps"
    index = int(status.get("currentStepIndex") or 0)
    if stage in PROMOTING or (index >= len(steps) and stage == "Steps"):
        return 100
    weights = [int(s["setWeight"]) for s in steps[: index + 1] if "setWeight" in s]
    return max(weights, default=0)


def _router(rollout: Obj) -> str:
    routing = (rollout.get("spec") or {}).get("trafficRouting") or {}
    return next(iter(routing), "replicaRatio")


def _service(rollout: Obj) -> str:
    return str(((rollout.get("spec") or {}).get("service") or {}).get("name") or "")


def route_weight(route: Obj | None, canary_service: str) -> int | None:
    """The canary backend's weight in the first rule of an HTTPRoute (None: not in it)."""
    rules = ((route or {}).get("spec") or {}).get("rules") or []
    for ref in (rules[0].get("backendRefs") or []) if rules else []:
        if ref.get("name") == canary_service:
            return int(ref.get("weight", 1))
    return None


def ready_pods(slices: Iterable[Obj], service: str) -> list[str]:
    """Names of the pods behind ``service``'s ready endpoints (EndpointSlices, as kube-proxy)."""
    names = []
    for endpoint_slice in slices:
        if (endpoint_slice["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            ref = endpoint.get("targetRef") or {}
            names.append(str(ref.get("name") or endpoint.get("addresses", ["?"])[0]))
    return names


# --- the watcher ---------------------------------------------------------------------------------


class Watcher:
    """Every version of a namespace's rollouts, routes, EndpointSlices and pods, from watches."""

    KINDS = (r.CANARY_ROLLOUTS, r.HTTP_ROUTES, r.ENDPOINT_SLICES, r.PODS)

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.namespace = namespace
        self.changes: list[Change] = []
        self._lock = threading.Lock()
        self.informers = []
        for resource in self.KINDS:
            informer = Informer(
                kube,
                resource,
                namespace=namespace,
                transform=trim_to_metadata if resource == r.PODS else _keep,
                required=resource != r.HTTP_ROUTES,
            )
            informer.handlers.append(self._recorder(informer))
            self.informers.append(informer)

    def _recorder(self, informer: Informer) -> Callable[[str, Obj, Obj | None], None]:
        kind = informer.resource.plural

        def record(event: str, obj: Obj, before: Obj | None) -> None:
            version = _version(obj)
            if event == "DELETED" and obj is before:
                # Learnt from a fresh list after a broken watch: it went before that list.
                version = int(informer.version or version)
            with self._lock:
                self.changes.append(Change(version, kind, event, obj))

        return record

    def __enter__(self) -> Watcher:
        for informer in self.informers:
            informer.start()
        for informer in self.informers:
            informer.synced.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        for informer in self.informers:
            informer.stop()

    def history(self) -> list[Change]:
        with self._lock:
            return sorted(self.changes)

    def violations(self, *, limit: int = 20) -> list[str]:
        """Every moment the canary could get more traffic than its status allowed."""
        return replay(self.history())[:limit]


def _keep(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)
    return obj


def replay(changes: Iterable[Change]) -> list[str]:
    """Apply the changes in resourceVersion order; check the weight invariants after each."""
    state: dict[str, dict[str, Obj]] = {kind.plural: {} for kind in Watcher.KINDS}
    revisions: dict[str, str] = {}  # pod -> revision, kept after the pod goes
    found: list[str] = []
    seen: set[tuple[str, str]] = set()
    for change in changes:
        name = str(change.obj["metadata"].get("name"))
        objects = state[change.kind]
        if change.event == "DELETED":
            objects.pop(name, None)
        else:
            objects[name] = change.obj
        if change.kind == r.PODS.plural:
            revision = (change.obj["metadata"].get("labels") or {}).get(REVISION_LABEL)
            if revision:
                revisions[name] = revision
            continue
        for rollout in state[r.CANARY_ROLLOUTS.plural].values():
            for problem in _check(rollout, state, revisions):
                # One line per distinct problem: a state that lasts is reported once.
                key = (str(rollout["metadata"]["name"]), problem)
                if key not in seen:
                    seen.add(key)
                    found.append(f"rv {change.version} ({change.kind} {name}): {problem}")
    return found


def _check(rollout: Obj, state: dict[str, dict[str, Obj]], revisions: dict[str, str]) -> list[str]:
    name = rollout["metadata"]["name"]
    status = rollout.get("status") or {}
    service = _service(rollout)
    allowed = allowed_weight(rollout)
    slices = state[r.ENDPOINT_SLICES.plural].values()
    where = (
        f"{name} (phase {status.get('phase')}, step {status.get('currentStepIndex')}, "
        f"stage {status.get('stage')}, allowed {allowed}%)"
    )
    if _router(rollout) == "gatewayAPI":
        route_name = rollout["spec"]["trafficRouting"]["gatewayAPI"]["httpRoute"]
        weight = route_weight(state[r.HTTP_ROUTES.plural].get(route_name), f"{service}-canary")
        if not weight:
            return []
        problems = []
        if not ready_pods(slices, f"{service}-canary"):
            problems.append(f"{where}: weight {weight}% on a canary with no ready endpoint")
        if weight > allowed:
            problems.append(f"{where}: route weight {weight}% above the step's")
        return problems
    if _router(rollout) != "replicaRatio":
        return []
    canary = status.get("canaryRevision")
    if not canary:
        return []
    pods = ready_pods(slices, service)
    serving = sum(1 for pod in pods if revisions.get(pod) == canary)
    if serving * 100 > allowed * len(pods):
        return [f"{where}: {serving} of {len(pods)} ready endpoints are the canary's"]
    return []


def observed_generations_go_back(changes: Iterable[Change]) -> list[str]:
    """Statuses computed from an older spec than one the operator had already acted on.

    A reconcile may finish on the object it started from while the spec changes under it (the
    next one catches up), but once a status says it observed generation g, no later status may
    say less: that would be a decision taken on a stale cache.
    """
    highest: dict[str, int] = {}
    found = []
    for change in changes:
        if change.kind != r.CANARY_ROLLOUTS.plural or change.event == "DELETED":
            continue
        uid = str(change.obj["metadata"].get("uid"))
        observed = (change.obj.get("status") or {}).get("observedGeneration")
        if observed is None:
            continue
        if observed < highest.get(uid, 0):
            name = change.obj["metadata"]["name"]
            found.append(
                f"rv {change.version}: {name} observed generation {observed} after {highest[uid]}"
            )
        highest[uid] = max(highest.get(uid, 0), int(observed))
    return found


# --- after the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    time: str
    name: str


def rollout_events(kube: Kube, namespace: str, uid: str) -> list[Event]:
    """The operator's events about one rollout (by uid), in the order they were recorded."""
    items = kube.request("GET", r.EVENTS_V1.path(namespace)).get("items") or []
    events = [
        Event(
            reason=str(e.get("reason") or ""),
            message=str(e.get("note") or ""),
            time=str(e.get("eventTime") or ""),
            name=str(e["metadata"]["name"]),
        )
        for e in items
        if (e.get("regarding") or {}).get("uid") == uid
    ]
    return sorted(events, key=lambda e: (e.time, e.name))


def step_numbers(events: Iterable[Event]) -> list[int]:
    """The step numbers of the StepCompleted events, in their order."""
    numbers = []
    for event in events:
        match = _STEP.match(event.message) if event.reason == "StepCompleted" else None
        if match:
            numbers.append(int(match.group(1)))
    return numbers


def duplicated_events(events: Iterable[Event]) -> list[str]:
    """Transitions announced more than once (same reason and message)."""
    counts = Counter((e.reason, e.message) for e in events if e.reason in TRANSITIONS)
    return [f"{reason} x{n}: {message}" for (reason, message), n in counts.items() if n > 1]


def orphans(kube: Kube, namespace: str, name: str, route: str | None = None) -> list[str]:
    """What is left of a deleted rollout: its Deployments, Services, a canary weight."""
    selector = f"{ROLLOUT_LABEL}={name}"
    left = [
        f"{resource.kind} {obj['metadata']['name']}"
        for resource in (r.DEPLOYMENTS, r.SERVICES)
        for obj in kube.request(
            "GET", resource.path(namespace), query={"labelSelector": selector}
        ).get("items")
        or []
        if not obj["metadata"].get("deletionTimestamp")
    ]
    if route is not None:
        weight = route_weight(kube.fetch(r.HTTP_ROUTES, namespace, route), f"{name}-canary")
        if weight:
            left.append(f"HTTPRoute {route} still gives {name}-canary {weight}%")
    return left


def summary(values: Iterable[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "none"
    middle = ordered[len(ordered) // 2]
    return f"p50 {middle:.1f} s, max {ordered[-1]:.1f} s over {len(ordered)}"


__all__ = [
    "Change",
    "Event",
    "Watcher",
    "allowed_weight",
    "duplicated_events",
    "observed_generations_go_back",
    "orphans",
    "replay",
    "rollout_events",
    "step_numbers",
    "summary",
]
