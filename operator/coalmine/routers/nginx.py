"""ingress-nginx: a canary Ingress beside the user's Ingress, weighted by an annotation.

ingress-nginx splits traffic between two Ingresses for the same host and path when one of them
carries ``nginx.ingress.kubernetes.io/canary: "true"``: that one receives ``canary-weight``
percent of the requests. The user's Ingress (routing to the stable Service) stays exactly as the
user (or their GitOps repository) wrote it; coalmine creates and owns a clone named
``<ingress>-canary`` whose backends send to the canary Service instead, and the weight lives in
the clone's annotation.

The clone keeps only the paths (and default backend) that send to the stable Service: a canary
Ingress is merged into the main one path by path, so a path to any other Service would gain
nothing but a second, identical upstream. Every ``ensure`` and ``set_weight`` re-derives the clone
from the user's Ingress, so edits to its hosts, paths and TLS reach the canary on the next
reconcile.

A clone that exists but is not coalmine's (no ``managed-by`` label, or labelled for another
rollout) is never touched: two writers of one canary Ingress would fight over the weight.

Finalizing with ``restore_stable=False`` leaves the clone in place on purpose: its
ownerReference names the CanaryRollout, so the garbage collector deletes it together with the
rollout, and until then it keeps sending whatever share it was sending.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import Field, StrictStr

from coalmine import resources as r
from coalmine.api.limits import DNS1123_SUBDOMAIN_PATTERN, NAME_MAX_LENGTH
from coalmine.resources import Obj
from coalmine.routers.base import (
    RouterError,
    RoutingConfig,
    Target,
    belongs_to,
    claimed_object,
    converge_owned,
    our_object,
    pointer,
    split,
)

if TYPE_CHECKING:
    from coalmine.kube import Kube

CANARY_ANNOTATION = "nginx.ingress.kubernetes.io/canary"
WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
# The class annotation that predates spec.ingressClassName; ingress-nginx still honours it, and
# the canary must be picked up by the same controller as the Ingress it shadows.
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CANARY_SUFFIX = "-canary"

# --- the canary Ingress, derived from the user's ---------------------------------------------


class NginxRouting(RoutingConfig):
    """Split traffic with a canary Ingress beside an ingress-nginx Ingress."""

    ingress: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the Ingress that routes to the Service; coalmine adds a canary Ingress beside it."""

    key = "nginx"
    names = (r.INGRESSES, "ingress")


def ingress_name(target: Target) -> str:
    return target.routing(NginxRouting).named()


def canary_name(target: Target) -> str:
    name = ingress_name(target) + CANARY_SUFFIX
    if len(name) > NAME_MAX_LENGTH:
        raise RouterError(
            target.field(),
            f"the canary Ingress {name!r} would be longer than {NAME_MAX_LENGTH} characters",
        )
    return name


def _to_canary(backend: Obj | None, target: Target) -> Obj | None:
    """The backend sending to the canary Service instead, or None unless it sent to the stable."""
    service = (backend or {}).get("service") or {}
    if backend is None or service.get("name") != target.stable_service:
        return None
    return {**backend, "service": {**service, "name": target.canary_service}}


def canary_spec(ingress: Obj, target: Target) -> Obj:
    """The spec of the canary Ingress: the user's, narrowed to the stable backends, retargeted."""
    spec: Obj = copy.deepcopy(ingress.get("spec") or {})
    out: Obj = {}
    if spec.get("ingressClassName") is not None:
        out["ingressClassName"] = spec["ingressClassName"]
    default = _to_canary(spec.get("defaultBackend"), target)
    if default is not None:
        out["defaultBackend"] = default
    rules = []
    for rule in spec.get("rules") or []:
        http = rule.get("http") or {}
        paths = []
        for path in http.get("paths") or []:
            backend = _to_canary(path.get("backend"), target)
            if backend is not None:
                paths.append({**path, "backend": backend})
        if paths:
            rules.append({**rule, "http": {**http, "paths": paths}})
    if not rules and default is None:
        raise RouterError(
            target.field(),
            f"Ingress {ingress['metadata']['name']} has no backend that sends to Service "
            f"{target.stable_service}",
        )
    if rules:
        out["rules"] = rules
    if spec.get("tls"):
        out["tls"] = spec["tls"]
    return out


def _rules(spec: Obj) -> set[tuple[str, str]]:
    """The (host, path) pairs an Ingress spec routes ("" for any host; "*" for the default)."""
    found = {("", "*")} if spec.get("defaultBackend") else set()
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            found.add((str(rule.get("host") or ""), str(path.get("path") or "/")))
    return found


def rival_canary(ingresses: list[Obj], spec: Obj, target: Target) -> Obj | None:
    """Another canary Ingress on one of the rules ours would cover: ingress-nginx takes only
    one canary per rule, so ours would be ignored or would displace it."""
    wanted = _rules(spec)
    for other in ingresses:
        annotations = other["metadata"].get("annotations") or {}
        if annotations.get(CANARY_ANNOTATION) != "true" or belongs_to(other, target):
            continue
        if _rules(other.get("spec") or {}) & wanted:
            return other
    return None


def canary_ingress(ingress: Obj, target: Target, weight: int) -> Obj:
    """The whole canary Ingress coalmine wants beside ``ingress``, sending ``weight`` percent."""
    annotations = {CANARY_ANNOTATION: "true", WEIGHT_ANNOTATION: str(split(weight)[1])}
    legacy_class = (ingress["metadata"].get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if legacy_class is not None:
        annotations[LEGACY_CLASS_ANNOTATION] = legacy_class
    return {
        "apiVersion": r.INGRESSES.api_version,
        "kind": r.INGRESSES.kind,
        "metadata": {**target.owned_metadata(canary_name(target)), "annotations": annotations},
        "spec": canary_spec(ingress, target),
    }


def annotated_weight(ingress: Obj) -> int | None:
    """The canary weight a canary Ingress carries; None unless it is a well-formed canary."""
    annotations = ingress.get("metadata", {}).get("annotations") or {}
    if annotations.get(CANARY_ANNOTATION) != "true":
        return None  # without it ingress-nginx treats the clone as a second main Ingress
    try:
        weight = int(str(annotations.get(WEIGHT_ANNOTATION)))
    except ValueError:
        return None
    return weight if 0 <= weight <= 100 else None


# --- the router --------------------------------------------------------------------------------


class NginxRouter:
    def _user_ingress(self, kube: Kube, target: Target) -> Obj:
        name = ingress_name(target)
        ingress = kube.get(r.INGRESSES, target.namespace, name)
        if ingress is None:
            raise RouterError(target.field(), f"Ingress {target.namespace}/{name} does not exist")
        if (ingress["metadata"].get("annotations") or {}).get(CANARY_ANNOTATION) == "true":
            raise RouterError(
                target.field(), f"Ingress {name} is itself a canary Ingress; name the main one"
            )
        return ingress

    def _sync(self, kube: Kube, target: Target, weight: int | None) -> None:
        """Create or update the canary Ingress; ``weight`` None keeps the weight it has."""
        ingress = self._user_ingress(kube, target)
        current = claimed_object(kube, r.INGRESSES, target, canary_name(target))
        rival = rival_canary(
            kube.list(r.INGRESSES, target.namespace), canary_spec(ingress, target), target
        )
        if rival is not None:
            raise RouterError(
                target.field(),
                f"Ingress {rival['metadata']['name']} is already the canary of a rule of Ingress "
                f"{ingress['metadata']['name']}, and ingress-nginx takes one canary per rule",
            )
        if weight is None:
            weight = 0 if current is None else annotated_weight(current) or 0
        converge_owned(kube, r.INGRESSES, target, current, canary_ingress(ingress, target, weight))

    def ensure(self, kube: Kube, target: Target) -> None:
        self._sync(kube, target, None)

    def set_weight(self, kube: Kube, target: Target, weight: int) -> None:
        # One write: the weight and, when the user's Ingress changed, the clone's rules with it.
        self._sync(kube, target, weight)

    def read_weight(self, kube: Kube, target: Target) -> int | None:
        current = our_object(kube, r.INGRESSES, target, canary_name(target))
        return None if current is None else annotated_weight(current)

    def finalize(self, kube: Kube, target: Target, *, restore_stable: bool) -> None:
        if not restore_stable:
            return  # the ownerReference lets the garbage collector remove it with the rollout
        name = canary_name(target)
        current = our_object(kube, r.INGRESSES, target, name)
        if current is None:
            return
        if annotated_weight(current) not in (None, 0):
            # Weight 0 first, so the canary stops taking requests even if ingress-nginx is slow
            # to notice the deletion; the uid test keeps the write off a recreated namesake.
            kube.patch(
                r.INGRESSES,
                target.namespace,
                name,
                [
                    {"op": "test", "path": "/metadata/uid", "value": current["metadata"]["uid"]},
                    {
                        "op": "add",
                        "path": pointer("metadata", "annotations", WEIGHT_ANNOTATION),
                        "value": "0",
                    },
                ],
                patch_type="json",
            )
        kube.delete(r.INGRESSES, target.namespace, name)
