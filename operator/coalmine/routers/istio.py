"""Istio: the weights of the stable and canary destinations in named routes of a VirtualService.

The VirtualService belongs to the user (or to their GitOps repository). The rollout names the
HTTP routes (``spec.http[].name``) that carry its traffic; in each of them coalmine changes only
the ``weight`` of the two destinations whose host is the stable or the canary Service, with a
JSON patch that first tests every route name and destination host it relies on, so a concurrent
edit makes the patch fail instead of landing on the wrong destination. Routes that are not
named, and every other field, are never touched.

A named route must send to exactly those two destinations. Istio requires the weights of a
route to add up to 100, so a third destination would leave coalmine no weights to set that both
add up and read back as the asked percentage; it is reported, not worked around, as is a missing
stable or canary destination (adding one would rewrite the user's route).

A host names a Service by its short name (relative to the VirtualService's namespace, which is
the rollout's), ``<svc>.<ns>``, ``<svc>.<ns>.svc`` or ``<svc>.<ns>.svc.cluster.local``; clusters
with another DNS domain must use one of the shorter forms.

Read-back: the percentage in the named routes, None while they disagree.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, StrictStr

from coalmine import resources as r
from coalmine.api.limits import DNS1123_SUBDOMAIN_PATTERN, MAX_ISTIO_ROUTES, NAME_MAX_LENGTH
from coalmine.resources import Obj
from coalmine.routers.base import (
    RouterError,
    RoutingConfig,
    Target,
    percentage,
    split,
)

if TYPE_CHECKING:
    from coalmine.kube import Kube

CLUSTER_DOMAIN = "cluster.local"


def host_names(service: str, namespace: str) -> frozenset[str]:
    """Every spelling of a Service's host that a VirtualService in ``namespace`` may use."""
    return frozenset(
        (
            service,
            f"{service}.{namespace}",
            f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}",
        )
    )


def host_matches(host: object, service: str, namespace: str) -> bool:
    """True when ``host`` names ``service`` in ``namespace`` (ignoring case and a root dot)."""
    if not isinstance(host, str):
        return False
    return host.lower().removesuffix(".") in host_names(service, namespace)


@dataclass(frozen=True)
class RouteRef:
    """Where one named route keeps the stable and canary destinations, as last read."""

    index: int
    name: str
    stable: int
    canary: int
    stable_host: str
    canary_host: str


class IstioRouting(RoutingConfig):
    """Split traffic with the route weights of an Istio VirtualService."""

    virtual_service: StrictStr = Field(
        max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN
    )
    """Name of the VirtualService, in the rollout's namespace."""

    routes: tuple[Annotated[StrictStr, Field(min_length=1, max_length=NAME_MAX_LENGTH)], ...] = (
        Field(min_length=1, max_length=MAX_ISTIO_ROUTES)
    )
    """Names of the HTTP routes in the VirtualService whose weights coalmine sets."""

    key = "istio"
    names = (r.VIRTUAL_SERVICES, "virtual_service")


def virtual_service_name(target: Target) -> str:
    return target.routing(IstioRouting).virtual_service


def route_names(target: Target) -> list[str]:
    return list(target.routing(IstioRouting).routes)


def find_routes(virtual_service: Obj, target: Target) -> list[RouteRef]:
    """The stable and canary destinations of every named route; RouterError when one is amiss."""
    vs_name = virtual_service["metadata"]["name"]
    http = (virtual_service.get("spec") or {}).get("http") or []
    refs: list[RouteRef] = []
    for position, name in enumerate(route_names(target)):
        field = target.field(f"routes[{position}]")
        indexes = [i for i, route in enumerate(http) if route.get("name") == name]
        if not indexes:
            raise RouterError(field, f"VirtualService {vs_name} has no HTTP route named {name!r}")
        for index in indexes:
            refs.append(
                _destinations(http[index], index, name, target, field=field, vs_name=vs_name)
            )
    # A route named twice in the rollout is still one route to set.
    return list(dict.fromkeys(refs))


def _destinations(
    route: Obj, index: int, name: str, target: Target, *, field: str, vs_name: str
) -> RouteRef:
    where = f"VirtualService {vs_name} route {name!r} (spec.http[{index}])"
    stable: list[int] = []
    canary: list[int] = []
    for i, destination in enumerate(route.get("route") or []):
        host = (destination.get("destination") or {}).get("host")
        if host_matches(host, target.stable_service, target.namespace):
            stable.append(i)
        elif host_matches(host, target.canary_service, target.namespace):
            canary.append(i)
        else:
            raise RouterError(
                field,
                f"{where} also sends to {host!r}; it must send only to Services "
                f"{target.stable_service} and {target.canary_service}",
            )
    for service, found in ((target.stable_service, stable), (target.canary_service, canary)):
        if len(found) != 1:
            raise RouterError(
                field,
                f"{where} must list Service {service} as a destination exactly once "
                f"(found {len(found)}); list both the stable and the canary Service",
            )
    destinations = route["route"]
    return RouteRef(
        index=index,
        name=name,
        stable=stable[0],
        canary=canary[0],
        stable_host=destinations[stable[0]]["destination"]["host"],
        canary_host=destinations[canary[0]]["destination"]["host"],
    )


def weight_patch(refs: list[RouteRef], weight: int) -> list[dict[str, Any]]:
    """The JSON patch setting ``weight`` in every route, guarded by what it was computed from."""
    stable_weight, canary_weight = split(weight)
    patch: list[dict[str, Any]] = []
    for ref in refs:
        base = f"/spec/http/{ref.index}"
        stable = f"{base}/route/{ref.stable}"
        canary = f"{base}/route/{ref.canary}"
        patch += [
            {"op": "test", "path": f"{base}/name", "value": ref.name},
            {"op": "test", "path": f"{stable}/destination/host", "value": ref.stable_host},
            {"op": "test", "path": f"{canary}/destination/host", "value": ref.canary_host},
            {"op": "add", "path": f"{stable}/weight", "value": stable_weight},
            {"op": "add", "path": f"{canary}/weight", "value": canary_weight},
        ]
    return patch


def _weight(destination: Obj) -> int | None:
    value = destination.get("weight", 0)  # Istio reads an unset weight as 0
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def routed_weight(virtual_service: Obj, refs: list[RouteRef]) -> int | None:
    """The canary percentage every route agrees on; None when they disagree or hold none."""
    weights: set[int | None] = set()
    for ref in refs:
        destinations = virtual_service["spec"]["http"][ref.index]["route"]
        stable, canary = _weight(destinations[ref.stable]), _weight(destinations[ref.canary])
        weights.add(None if stable is None or canary is None else percentage(stable, canary))
    if len(weights) != 1:
        return None  # a write is half-way, or someone edited one route
    return weights.pop()


def holds(virtual_service: Obj, refs: list[RouteRef], weight: int) -> bool:
    """True when every route already carries exactly the weights ``weight`` asks for."""
    wanted = split(weight)
    for ref in refs:
        destinations = virtual_service["spec"]["http"][ref.index]["route"]
        if (_weight(destinations[ref.stable]), _weight(destinations[ref.canary])) != wanted:
            return False
    return True


class IstioRouter:
    def _virtual_service(self, kube: Kube, target: Target) -> tuple[Obj, list[RouteRef]]:
        name = virtual_service_name(target)
        virtual_service = kube.get(r.VIRTUAL_SERVICES, target.namespace, name)
        if virtual_service is None:
            raise RouterError(
                target.field("virtualService"),
                f"VirtualService {target.namespace}/{name} does not exist",
            )
        return virtual_service, find_routes(virtual_service, target)

    def ensure(self, kube: Kube, target: Target) -> None:
        self._virtual_service(kube, target)

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        virtual_service, refs = self._virtual_service(kube, target)
        if holds(virtual_service, refs, weight):
            return  # already there: no write, no new generation for the mesh to push
        kube.patch(
            r.VIRTUAL_SERVICES,
            target.namespace,
            virtual_service["metadata"]["name"],
            weight_patch(refs, weight),
            patch_type="json",
        )

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        virtual_service, refs = self._virtual_service(kube, target)
        return routed_weight(virtual_service, refs)

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        if restore_stable:
            # A VirtualService that is gone or changed holds nothing of ours to restore.
            with contextlib.suppress(RouterError):
                self.set_weight(kube, target, 0)
