"""Which router serves which ``spec.trafficRouting`` block: one row per provider.

A row names the block's key, the implementation and the model of its configuration. The spec's
``trafficRouting`` field, the CRD's schema for it and the router contract test are all derived
from these rows, so adding a router is its file and its row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from coalmine.routers.base import RoutingConfig, TrafficRouter
from coalmine.routers.gateway_api import GatewayAPIRouter, GatewayAPIRouting
from coalmine.routers.istio import IstioRouter, IstioRouting
from coalmine.routers.nginx import NginxRouter, NginxRouting
from coalmine.routers.replica_ratio import ReplicaRatioRouter, ReplicaRatioRouting
from coalmine.routers.smi import SMIRouter, SMIRouting


@dataclass(frozen=True)
class RouterEntry:
    """One provider: its implementation and the model of its ``trafficRouting`` block."""

    router: TrafficRouter
    config: type[RoutingConfig]


DEFAULT_ROUTER: Final = ReplicaRatioRouting.key
"""The router of a rollout whose spec has no trafficRouting: no mesh, the ratio of replicas."""

ROUTERS: Mapping[str, RouterEntry] = {
    entry.config.key: entry
    for entry in (
        RouterEntry(ReplicaRatioRouter(), ReplicaRatioRouting),
        RouterEntry(GatewayAPIRouter(), GatewayAPIRouting),
        RouterEntry(NginxRouter(), NginxRouting),
        RouterEntry(IstioRouter(), IstioRouting),
        RouterEntry(SMIRouter(), SMIRouting),
    )
}
