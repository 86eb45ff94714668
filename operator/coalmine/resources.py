"""The resource types coalmine reads and writes, and where their objects live in the API.

Pure data: the facade in `coalmine.kube` does the requests, the informers keep these kinds in
memory, and routers and workloads name the kinds they touch from here, without importing the
client. Objects are plain dicts (`Obj`), as the API serves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

Obj = dict[str, Any]
"""An object as the API serves it: plain JSON types."""


@dataclass(frozen=True)
class Resource:
    """A resource type: where its objects live in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    cache: str = ""
    """Which of several watch-fed caches of the kind serves reads of it ("": the only one, or
    the main one): two caches of one kind differ by their label selector, not their path."""

    @property
    def cache_name(self) -> str:
        """The cache's name in logs and metrics: the plural, and the cache when there are two."""
        return f"{self.plural}-{self.cache}" if self.cache else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name)}"
        if sub is not None:
            base += f"/{sub}"
        return base


CANARY_ROLLOUTS = Resource("coalmine.dev", "v1alpha1", "canaryrollouts", "CanaryRollout")
ANALYSIS_TEMPLATES = Resource("coalmine.dev", "v1alpha1", "analysistemplates", "AnalysisTemplate")
CLUSTER_ANALYSIS_TEMPLATES = Resource(
    "coalmine.dev", "v1alpha1", "clusteranalysistemplates", "ClusterAnalysisTemplate", False
)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
ADOPTED_DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", cache="adopted")
"""The users' Deployments that CanaryRollouts adopt (spec.workloadRef), labelled
coalmine.dev/adopted-by: a cache of their own, beside the one of the Deployments coalmine owns."""
SERVICES = Resource("", "v1", "services", "Service")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
EVENTS_V1 = Resource("events.k8s.io", "v1", "events", "Event")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
INGRESSES = Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
REFERENCE_GRANTS = Resource(
    "gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant"
)
VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
TRAFFIC_SPLITS = Resource("split.smi-spec.io", "v1alpha4", "trafficsplits", "TrafficSplit")
CLUSTER_KOPF_PEERINGS = Resource(
    "kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False
)
KOPF_PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings", "KopfPeering")
