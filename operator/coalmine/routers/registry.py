"""Which router serves which ``spec.trafficRouting`` block: one line per provider."""

from __future__ import annotations

from collections.abc import Mapping

from coalmine.routers.base import TrafficRouter
from coalmine.routers.gateway_api import GatewayAPIRouter
from coalmine.routers.istio import IstioRouter
from coalmine.routers.nginx import NginxRouter
from coalmine.routers.replica_ratio import ReplicaRatioRouter
from coalmine.routers.smi import SMIRouter

ROUTERS: Mapping[str, TrafficRouter] = {
    "replicaRatio": ReplicaRatioRouter(),
    "gatewayAPI": GatewayAPIRouter(),
    "nginx": NginxRouter(),
    "istio": IstioRouter(),
    "smi": SMIRouter(),
}
