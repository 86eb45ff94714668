"""Gateway API: the weights of the user's HTTPRoute backendRefs to the stable and canary Services.

The HTTPRoute belongs to the user (or to their GitOps repository). coalmine changes only the
``weight`` of the backendRefs that name the rollout's stable and canary Services, with a JSON
patch that first tests each backendRef is still where it was read, so a concurrent edit makes
the patch fail instead of landing on the wrong rule. Every rule that sends to the stable Service
must also list the canary Service (with weight 0): a missing canary backendRef is reported, not
added, because adding it would rewrite the user's route.

Read-back: the weights in the route, and, when a Gateway controller reports status, only once
every parent has accepted the route's current generation.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pydantic import Field, StrictStr

from coalmine import resources as r
from coalmine.api.limits import (
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_PATTERN,
    LABEL_MAX_LENGTH,
    NAME_MAX_LENGTH,
)
from coalmine.resources import CANARY_ROLLOUTS, Obj
from coalmine.routers.base import (
    Reference,
    RouterError,
    RoutingConfig,
    Target,
    percentage,
    split,
)

if TYPE_CHECKING:
    from coalmine.kube import Kube


class GatewayAPIRouting(RoutingConfig):
    """Split traffic with the backendRefs weights of a Gateway API HTTPRoute."""

    key = "gatewayAPI"

    http_route: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the HTTPRoute whose rules send traffic to the Service."""

    namespace: StrictStr | None = Field(
        default=None, max_length=LABEL_MAX_LENGTH, pattern=DNS1123_LABEL_PATTERN
    )
    """Namespace of the HTTPRoute; the rollout's namespace when omitted."""

    def references(self, namespace: str) -> list[Reference]:
        where = self.namespace or namespace
        found: list[Reference] = [(r.HTTP_ROUTES, where, self.http_route)]
        if where != namespace:
            found.append((r.REFERENCE_GRANTS, where, "*"))  # what allows the route to be used
        return found


def _route_name(target: Target) -> str:
    return target.routing(GatewayAPIRouting).http_route


def _route_namespace(target: Target) -> str:
    return target.routing(GatewayAPIRouting).namespace or target.namespace


def _is(ref: dict[str, Any], service: str, target: Target, route_namespace: str) -> bool:
    """Whether a backendRef names the rollout's Service: its name, in the rollout's namespace
    (a backendRef without a namespace means the route's own)."""
    return (
        ref.get("name") == service
        and ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
        and (ref.get("namespace") or route_namespace) == target.namespace
    )


def _refs(route: Obj, target: Target) -> list[tuple[int, int, int]]:
    """(rule, stable index, canary index) for every rule that routes to the stable Service."""
    found = []
    where = str(route["metadata"].get("namespace") or target.namespace)
    for index, rule in enumerate(route.get("spec", {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        stable = [i for i, ref in enumerate(refs) if _is(ref, target.stable_service, target, where)]
        canary = [i for i, ref in enumerate(refs) if _is(ref, target.canary_service, target, where)]
        if stable and canary:
            found.append((index, stable[0], canary[0]))
        elif stable:
            raise RouterError(
                f"HTTPRoute {route['metadata']['name']} spec.rules[{index}].backendRefs",
                f"routes to Service {target.stable_service} but not to "
                f"{target.canary_service}; list both (the canary with weight 0)",
            )
    return found


def granted(grants: list[Obj], target: Target, route_name: str) -> bool:
    """Whether a ReferenceGrant in the route's namespace lets this rollout's namespace use it.

    The Gateway API's own opt-in for references across namespaces, read as: from CanaryRollouts
    (group coalmine.dev) of the rollout's namespace, to HTTPRoutes (all, or this one by name).
    """
    for grant in grants:
        spec = grant.get("spec") or {}
        sources = [
            source
            for source in spec.get("from") or []
            if source.get("group") == CANARY_ROLLOUTS.group
            and source.get("kind") == CANARY_ROLLOUTS.kind
            and source.get("namespace") == target.namespace
        ]
        targets = [
            to
            for to in spec.get("to") or []
            if to.get("group") == r.HTTP_ROUTES.group
            and to.get("kind") == r.HTTP_ROUTES.kind
            and to.get("name") in (None, "", route_name)
        ]
        if sources and targets:
            return True
    return False


class GatewayAPIRouter:
    def _route(self, kube: Kube, target: Target) -> tuple[Obj, list[tuple[int, int, int]]]:
        name = _route_name(target)
        where = _route_namespace(target)
        if where != target.namespace and not granted(
            kube.list(r.REFERENCE_GRANTS, where), target, name
        ):
            raise RouterError(
                target.field("namespace"),
                f"HTTPRoute {where}/{name} is in another namespace, and no ReferenceGrant there "
                f"allows CanaryRollouts of namespace {target.namespace} to use it (from: group "
                f"{CANARY_ROLLOUTS.group}, kind {CANARY_ROLLOUTS.kind}, namespace "
                f"{target.namespace}; to: group {r.HTTP_ROUTES.group}, kind HTTPRoute)",
            )
        route = kube.get(r.HTTP_ROUTES, where, name)
        if route is None:
            raise RouterError(
                target.field("httpRoute"),
                f"HTTPRoute {_route_namespace(target)}/{name} does not exist",
            )
        refs = _refs(route, target)
        if not refs:
            raise RouterError(
                target.field("httpRoute"),
                f"HTTPRoute {name} has no rule with backendRefs to Services "
                f"{target.stable_service} and {target.canary_service}",
            )
        return route, refs

    def ensure(self, kube: Kube, target: Target) -> None:
        self._route(kube, target)

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        route, refs = self._route(kube, target)
        stable_weight, canary_weight = split(weight)
        patch: list[dict[str, Any]] = []
        for rule, stable, canary in refs:
            base = f"/spec/rules/{rule}/backendRefs"
            patch += [
                {"op": "test", "path": f"{base}/{stable}/name", "value": target.stable_service},
                {"op": "test", "path": f"{base}/{canary}/name", "value": target.canary_service},
                {"op": "add", "path": f"{base}/{stable}/weight", "value": stable_weight},
                {"op": "add", "path": f"{base}/{canary}/weight", "value": canary_weight},
            ]
        kube.patch(
            r.HTTP_ROUTES,
            _route_namespace(target),
            route["metadata"]["name"],
            patch,
            patch_type="json",
        )

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        route, refs = self._route(kube, target)
        weights = set()
        for rule, stable, canary in refs:
            backend_refs = route["spec"]["rules"][rule]["backendRefs"]
            weights.add(
                percentage(
                    int(backend_refs[stable].get("weight", 1)),
                    int(backend_refs[canary].get("weight", 1)),
                )
            )
        if len(weights) != 1:
            return None  # rules disagree: a write is half-way or someone edited one rule
        if not _accepted(route):
            return None
        return weights.pop()

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        if restore_stable:
            # A route that is gone or changed holds nothing of ours to restore.
            with contextlib.suppress(RouterError):
                self.set_weight(kube, target, 0)


def _accepted(route: Obj) -> bool:
    """True unless a controller reports status for an older generation of the route."""
    generation = route.get("metadata", {}).get("generation")
    for parent in (route.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition.get("type") == "Accepted":
                observed = condition.get("observedGeneration")
                if observed is not None and generation is not None and observed < generation:
                    return False
    return True
