"""Which replica acts: the peering object the replicas meet in, read from the cache.

kopf keeps each replica's record in a (Cluster)KopfPeering object alive (its keep-alives are
kopf's). The controller asks `outranked` before it reconciles: a live record with a higher
priority than ours means another replica is the active one. kopf pauses its own watches the
same way; checking here as well covers the moments in which two replicas started together
have not yet seen each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from coalmine import resources as r
from coalmine.kube import ConflictError, Kube
from coalmine.resources import Obj, Resource


def peering_resource(namespace: str | None) -> Resource:
    """The namespaced install meets in a KopfPeering, the cluster-wide one in a cluster one."""
    return r.KOPF_PEERINGS if namespace else r.CLUSTER_KOPF_PEERINGS


def ensure_peering(kube: Kube, name: str, namespace: str | None) -> None:
    """Create the peering object the replicas meet in, when it is absent.

    It cannot ship in deploy/ beside its CRD: one `kubectl apply` maps every object's kind before
    the CRD is established. Raises NotFoundError while the peering CRD is not established yet.
    """
    resource = peering_resource(namespace)
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace},
    }
    try:
        kube.create(resource, namespace, body)
    except ConflictError:
        return  # another replica made it first


def outranked(peering: Obj | None, priority: int, now: datetime) -> bool:
    """Whether a live replica with a higher priority than ``priority`` is in the peering object."""
    records: dict[str, Any] = (peering or {}).get("status") or {}
    for record in records.values():
        if not isinstance(record, dict) or "priority" not in record or "lastseen" not in record:
            continue
        try:
            seen = datetime.fromisoformat(str(record["lastseen"]))
            alive = (now - seen).total_seconds() <= float(record.get("lifetime", 60))
            higher = int(record["priority"]) > priority
        except (TypeError, ValueError):
            continue  # a record we cannot read is no reason to stop serving
        if alive and higher:
            return True
    return False
