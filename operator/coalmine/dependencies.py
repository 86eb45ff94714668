"""Which rollouts a change concerns: the objects each CanaryRollout points at, indexed.

A watch event on an HTTPRoute, an Ingress, a VirtualService, a TrafficSplit, an AnalysisTemplate
or a ReferenceGrant must wake exactly the rollouts that use it. Objects coalmine owns carry the
rollout's label and need no index; the user's objects are found here, from what each rollout's
spec names. Pure: the references are read from the raw object, and the index is plain data.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from coalmine import resources as r
from coalmine.analysis.spec import AnalysisRef, BackgroundAnalysis
from coalmine.api.errors import SpecError
from coalmine.api.spec import TrafficRouting
from coalmine.routers.base import Reference

K = TypeVar("K", bound=Hashable)

ANY = "*"
"""A reference to every object of its kind in a namespace (ReferenceGrants)."""


def _analysis_refs(spec: Mapping[str, Any]) -> list[AnalysisRef]:
    refs: list[AnalysisRef] = []
    for index, step in enumerate(spec.get("steps") or []):
        if isinstance(step, Mapping) and isinstance(step.get("analysis"), Mapping):
            try:
                path = f"spec.steps[{index}].analysis"
                refs.append(AnalysisRef.from_object(step["analysis"], path=path))
            except SpecError:
                continue
    if isinstance(spec.get("analysis"), Mapping):
        with contextlib.suppress(SpecError):
            refs.append(BackgroundAnalysis.from_object(spec["analysis"], path="spec.analysis"))
    return refs


def references(obj: Mapping[str, Any]) -> frozenset[Reference]:
    """What a CanaryRollout object names, read leniently: an invalid part names nothing."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return frozenset()
    namespace = str(meta.get("namespace") or "")
    found: set[Reference] = set()
    routing = spec.get("trafficRouting")
    if isinstance(routing, Mapping):
        with contextlib.suppress(ValidationError, ValueError):
            found.update(TrafficRouting.model_validate(routing).config.references(namespace))
    for ref in _analysis_refs(spec):
        for template in ref.templates:
            if template.cluster_scope:
                found.add((r.CLUSTER_ANALYSIS_TEMPLATES, "", template.name))
            else:
                found.add((r.ANALYSIS_TEMPLATES, namespace, template.name))
    return frozenset(found)


class DependencyIndex(Generic[K]):
    """Reference -> the keys of the rollouts that make it. Thread-safe."""

    def __init__(self) -> None:
        self._by_ref: dict[Reference, set[K]] = {}
        self._by_key: dict[K, frozenset[Reference]] = {}
        self._lock = threading.Lock()

    def record(self, key: K, refs: Iterable[Reference]) -> None:
        """Record what ``key`` references now (replacing what it referenced before)."""
        new = frozenset(refs)
        with self._lock:
            old = self._by_key.get(key, frozenset())
            for ref in old - new:
                keys = self._by_ref.get(ref)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_ref[ref]
            for ref in new - old:
                self._by_ref.setdefault(ref, set()).add(key)
            if new:
                self._by_key[key] = new
            else:
                self._by_key.pop(key, None)

    def remove(self, key: K) -> None:
        self.record(key, ())

    def keys_for(self, resource: r.Resource, namespace: str, name: str) -> set[K]:
        """The keys of the rollouts that reference this object (or every object of its kind in
        its namespace)."""
        with self._lock:
            return set(self._by_ref.get((resource, namespace, name), ())) | set(
                self._by_ref.get((resource, namespace, ANY), ())
            )
