"""The protocol every traffic router implements, and what it is told about a rollout.

A router knows how to put a canary weight into one kind of routing object and how to read it
back. It never decides anything: the state machine asks for a weight, and only the read-back
counts as confirmation. Routers touch the user's objects only where the protocol says (the
weights of the stable and canary backends) and own whatever they create.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic.alias_generators import to_camel

from coalmine import resources as r
from coalmine.api.types import SpecModel
from coalmine.labels import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    SERVICE_NAME_LABEL,
    owned_labels,
)
from coalmine.resources import Obj, Resource

if TYPE_CHECKING:
    from coalmine.kube import Kube

JsonPatch = list[dict[str, Any]]
Reference = tuple[Resource, str, str]


class RoutingConfig(SpecModel):
    """A router's block of ``spec.trafficRouting``: each router declares its own, typed."""

    weighted: ClassVar[bool] = True
    """True when the weight lives in a routing object; False when replica counts realise it."""

    key: ClassVar[str]
    """The block's name in ``spec.trafficRouting`` (the registry is keyed by it)."""
    names: ClassVar[tuple[Resource, str] | None] = None
    """The kind of object this configuration names, and the field that names it (in the
    rollout's namespace)."""

    def named(self) -> str:
        """The name of the object this configuration names."""
        assert self.names is not None
        return str(getattr(self, self.names[1]))

    def references(self, namespace: str) -> list[Reference]:
        """The objects this configuration points at, as (kind, namespace, name): a change to one
        of them concerns the rollout. ``name`` "*" stands for every object of the namespace."""
        if self.names is None:
            return []
        return [(self.names[0], namespace, self.named())]


class RouterError(RuntimeError):
    """The routing objects are missing or not as documented; ``field`` names the spec field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


C = TypeVar("C", bound=RoutingConfig)


@dataclass(frozen=True)
class Target:
    """One rollout as a router sees it."""

    namespace: str
    rollout: str
    owner: Obj
    """An ownerReference to the CanaryRollout, for objects the router creates."""
    root_service: str
    stable_service: str
    canary_service: str
    port: int
    config: RoutingConfig
    """The provider's block of ``spec.trafficRouting``, validated by its own model."""
    stable_revision: str | None = None
    canary_revision: str | None = None
    field_path: str = "spec.trafficRouting"

    def routing(self, model: type[C]) -> C:
        """The router's configuration as its own model (each router asks for its own)."""
        assert isinstance(self.config, model), f"{type(self.config).__name__} is not {model}"
        return self.config

    def field(self, name: str | None = None) -> str:
        """The spec field path of ``name`` in the router's block (default: the one naming its
        object), as errors name it: ``spec.trafficRouting.nginx.ingress``."""
        names = self.config.names
        field = name or (to_camel(names[1]) if names else "")
        return f"{self.field_path}.{self.config.key}.{field}"

    def owned_metadata(self, name: str) -> Obj:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": owned_labels(self.rollout),
            "ownerReferences": [self.owner],
        }


class TrafficRouter(Protocol):
    """Puts a canary weight into routing objects and reads it back."""

    def ensure(self, kube: Kube, target: Target) -> None:
        """Create what the router owns; check the user's objects. Raises RouterError."""

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        """Route ``weight`` percent to the canary and the rest to the stable revision."""

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        """The canary weight the routing objects hold now; None while it cannot be known."""

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        """The rollout is going away: send everything to stable (when asked) and let go."""


def owned_by_us(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("labels", {}).get(MANAGED_BY_LABEL) == MANAGED_BY)


def split(weight: int) -> tuple[int, int]:
    """(stable, canary) weights for a canary percentage."""
    weight = max(0, min(100, weight))
    return 100 - weight, weight


def percentage(stable: int, canary: int) -> int | None:
    total = stable + canary
    return None if total <= 0 else round(100 * canary / total)


def pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901) to ``parts``: label keys such as ``a.io/b`` need escaping."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def belongs_to(obj: Obj, target: Target) -> bool:
    """True when coalmine created ``obj`` for this rollout."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return owned_by_us(obj) and labels.get(ROLLOUT_LABEL) == target.rollout


def owned_patch(current: Obj, desired: Obj) -> JsonPatch:
    """A JSON patch that brings an object coalmine owns to ``desired``; empty when in sync.

    ``spec`` and ``ownerReferences`` are coalmine's alone and are replaced whole. Of the labels
    and annotations only coalmine's keys are set, so what other tools add survives. The first op
    tests the uid: a patch computed for an object that was deleted and recreated meanwhile fails
    instead of landing on the newcomer.
    """
    meta = current.get("metadata") or {}
    wanted = desired["metadata"]
    ops: JsonPatch = []
    for key in ("labels", "annotations"):
        entries: dict[str, str] = wanted.get(key) or {}
        have = meta.get(key)
        if have is None:
            if entries:
                ops.append({"op": "add", "path": pointer("metadata", key), "value": entries})
            continue
        ops += [
            {"op": "add", "path": pointer("metadata", key, name), "value": value}
            for name, value in entries.items()
            if have.get(name) != value
        ]
    if meta.get("ownerReferences") != wanted.get("ownerReferences"):
        ops.append(
            {"op": "add", "path": "/metadata/ownerReferences", "value": wanted["ownerReferences"]}
        )
    if current.get("spec") != desired["spec"]:
        ops.append({"op": "add", "path": "/spec", "value": desired["spec"]})
    if ops:
        ops.insert(0, {"op": "test", "path": "/metadata/uid", "value": meta.get("uid")})
    return ops


def our_object(kube: Kube, resource: Resource, target: Target, name: str) -> Obj | None:
    """The object ``name`` when coalmine made it for this rollout; None otherwise."""
    current = kube.get(resource, target.namespace, name)
    if current is None or not belongs_to(current, target):
        return None
    return current


def claimed_object(kube: Kube, resource: Resource, target: Target, name: str) -> Obj | None:
    """The object ``name`` coalmine made for this rollout, None when there is none yet.

    A namesake that someone else made is refused: coalmine never takes over an object it
    did not create, since patching it would overwrite what its owner set.
    """
    current = kube.get(resource, target.namespace, name)
    if current is not None and not belongs_to(current, target):
        raise RouterError(
            target.field(),
            f"{resource.kind} {target.namespace}/{name} exists and is not managed by coalmine "
            f"for rollout {target.rollout}; rename or delete it",
        )
    return current


def converge_owned(
    kube: Kube, resource: Resource, target: Target, current: Obj | None, desired: Obj
) -> None:
    """Create ``desired``, or patch ``current`` (from ``claimed_object``) to it when they differ."""
    if current is None:
        kube.create(resource, target.namespace, desired)
        return
    patch = owned_patch(current, desired)
    if patch:
        kube.patch(
            resource, target.namespace, desired["metadata"]["name"], patch, patch_type="json"
        )


def ready_endpoints(kube: Kube, namespace: str, service: str) -> int:
    """Ready endpoints of a Service, whoever's pods they are (an adopted Deployment's too)."""
    return sum(1 for _ in _ready(kube, namespace, service))


def ready_revisions(kube: Kube, namespace: str, service: str) -> dict[str, int]:
    """Ready endpoints of a Service, counted by the revision label of the pod behind each.

    By labels, never by pod names: a long rollout name cuts the revision out of its pods' names.
    An endpoint whose pod is not in view yet is not counted (its arrival wakes the rollout).
    """
    revisions: dict[str, str] = {}
    for endpoint in _ready(kube, namespace, service):
        ref = endpoint.get("targetRef") or {}
        if ref.get("kind") != "Pod" or not ref.get("name"):
            continue
        pod = kube.get(r.PODS, namespace, str(ref["name"]))
        if pod is None or (ref.get("uid") and pod["metadata"].get("uid") != ref["uid"]):
            continue  # not in view yet, or a namesake of the pod the endpoint means
        revision = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL)
        if revision:
            revisions[str(ref["name"])] = str(revision)
    counts: dict[str, int] = {}
    for revision in revisions.values():
        counts[revision] = counts.get(revision, 0) + 1
    return counts


def _ready(kube: Kube, namespace: str, service: str) -> Iterator[Obj]:
    """The endpoints of a Service's EndpointSlices not known to be unready (no condition: ready,
    as the API documents it)."""
    slices = kube.list(
        r.ENDPOINT_SLICES, namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
    )
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                yield endpoint
