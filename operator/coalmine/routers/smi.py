"""SMI: a TrafficSplit (split.smi-spec.io/v1alpha4) that coalmine creates and owns.

The TrafficSplit tells the mesh to send requests for the root Service to the stable and canary
Services in proportion to their backend weights. Unlike an HTTPRoute or a VirtualService it
holds nothing but the split, so coalmine owns it outright: it is created with weight 0, its
whole spec is coalmine's (edits to it are overwritten on the next ensure or set_weight), and it
is deleted when the rollout goes away. An existing TrafficSplit of that name that coalmine did
not create for this rollout is refused, never adopted.

Read-back: the backends' weights, and None unless they are exactly the stable and the canary
Service, so a split someone rewrote is never mistaken for one that holds the asked weight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, StrictStr

from coalmine import resources as r
from coalmine.api.limits import DNS1123_SUBDOMAIN_PATTERN, NAME_MAX_LENGTH
from coalmine.resources import Obj
from coalmine.routers.base import (
    RoutingConfig,
    Target,
    claimed_object,
    converge_owned,
    our_object,
    percentage,
    split,
)

if TYPE_CHECKING:
    from coalmine.kube import Kube


class SMIRouting(RoutingConfig):
    """Split traffic with an SMI TrafficSplit."""

    traffic_split: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the TrafficSplit coalmine creates and owns, in the rollout's namespace."""

    key = "smi"
    names = (r.TRAFFIC_SPLITS, "traffic_split")


def split_name(target: Target) -> str:
    return target.routing(SMIRouting).named()


def backends(target: Target, weight: int) -> list[Obj]:
    stable_weight, canary_weight = split(weight)
    return [
        {"service": target.stable_service, "weight": stable_weight},
        {"service": target.canary_service, "weight": canary_weight},
    ]


def traffic_split(target: Target, weight: int) -> Obj:
    """The whole TrafficSplit coalmine wants, sending ``weight`` percent to the canary."""
    return {
        "apiVersion": r.TRAFFIC_SPLITS.api_version,
        "kind": r.TRAFFIC_SPLITS.kind,
        "metadata": target.owned_metadata(split_name(target)),
        "spec": {"service": target.root_service, "backends": backends(target, weight)},
    }


def split_weight(traffic_split: Obj, target: Target) -> int | None:
    """The canary percentage of a TrafficSplit; None unless its backends are the expected two."""
    weights: dict[str, int] = {}
    for backend in (traffic_split.get("spec") or {}).get("backends") or []:
        service, weight = backend.get("service"), backend.get("weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            return None
        if service in weights:
            return None
        weights[service] = weight
    if set(weights) != {target.stable_service, target.canary_service}:
        return None
    return percentage(weights[target.stable_service], weights[target.canary_service])


class SMIRouter:
    def _sync(self, kube: Kube, target: Target, weight: int | None) -> None:
        """Create or update the TrafficSplit; ``weight`` None keeps the weight it has."""
        current = claimed_object(kube, r.TRAFFIC_SPLITS, target, split_name(target))
        if weight is None:
            # A split whose weight cannot be read is reset to all-stable, the safe side.
            weight = 0 if current is None else split_weight(current, target) or 0
        converge_owned(kube, r.TRAFFIC_SPLITS, target, current, traffic_split(target, weight))

    def ensure(self, kube: Kube, target: Target) -> None:
        self._sync(kube, target, None)

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        self._sync(kube, target, weight)

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        current = our_object(kube, r.TRAFFIC_SPLITS, target, split_name(target))
        return None if current is None else split_weight(current, target)

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        if not restore_stable:
            return  # the ownerReference lets the garbage collector remove it with the rollout
        if our_object(kube, r.TRAFFIC_SPLITS, target, split_name(target)) is None:
            return
        # All traffic to stable first, so the mesh stops sending to the canary even before it
        # notices the deletion (and a mesh that then falls back to the root Service loses none).
        self.set_weight(kube, target, 0)
        kube.delete(r.TRAFFIC_SPLITS, target.namespace, split_name(target))
