"""The operator's settings: one typed class, read from ``COALMINE_*`` environment variables.

Documented in docs/install.md; the deploy/ manifests set them.
"""

from __future__ import annotations

import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _random_priority() -> int:
    # kopf pauses every operator of equal priority, so replicas must differ: random ones do.
    return 1 + secrets.randbelow(2**31 - 2)


class Settings(BaseSettings):
    """Every setting, with its default."""

    model_config = SettingsConfigDict(env_prefix="COALMINE_", extra="ignore", frozen=True)

    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster credentials, else $KUBECONFIG or ~/.kube/config."""
    namespace: str | None = None
    """Watch only this namespace (the namespaced install, with a Role); unset: every namespace."""
    standalone: bool = True
    """Run without peering (one operator process). False: replicas elect one active operator."""
    peering_name: str = "coalmine"
    """Name of the (Cluster)KopfPeering object through which replicas see each other."""
    peering_priority: int = Field(default_factory=_random_priority)
    """The active replica is the live one with the highest priority (random by default)."""
    peering_lifetime: int = 10
    """Seconds after its last heartbeat that a replica counts as dead: the takeover delay."""
    workers: int = 64
    """Threads for handlers: one daemon per CanaryRollout holds one while it waits."""
    metrics_port: int = 9100
    """Port of the ``/metrics`` endpoint; 0 turns it off."""
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a pod serves its metrics to the cluster
    """Address the metrics endpoint binds."""
    health_port: int = 8080
    """Port of the liveness endpoint ``/healthz``; 0 turns it off."""
    prometheus_address: str = "http://prometheus.monitoring.svc:9090"
    """Prometheus that analysis metrics ask when they name no address of their own."""
    log_format: str = "json"
    """``json`` (one object per line, with the rollout's namespace and name) or ``text``."""
    log_level: str = "INFO"
