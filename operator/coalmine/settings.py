"""The operator's settings: one typed class, read from ``COALMINE_*`` environment variables.

Documented in docs/install.md; the deploy/ manifests set them.
"""

from __future__ import annotations

import secrets
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _random_priority() -> int:
    # kopf pauses every operator of equal priority, so replicas must differ: random ones do.
    return 1 + secrets.randbelow(2**31 - 2)


class Settings(BaseSettings):
    """Every setting, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="COALMINE_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster credentials, else $KUBECONFIG or ~/.kube/config."""
    namespace: str | None = None
    """Watch only this namespace (the namespaced install, with a Role); unset: every namespace."""
    standalone: bool = True
    """Run without peering (one operator process). False: replicas elect one active operator."""
    peering_name: str = ""
    """Name of the (Cluster)KopfPeering object through which replicas see each other; default
    `coalmine`, or `coalmine-<shard>` for a shard, so each shard elects its own active replica."""
    peering_priority: int = Field(default_factory=_random_priority)
    """The active replica is the live one with the highest priority (random by default)."""
    peering_lifetime: int = 10
    """Seconds after its last heartbeat that a replica counts as dead: the takeover delay."""
    workers: int = Field(default=8, ge=1, le=256)
    """Worker threads reconciling rollouts: they bound concurrency, not the number of rollouts."""
    shard: str | None = Field(
        default=None, max_length=63, pattern="^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    )
    """Serve only CanaryRollouts labelled coalmine.dev/shard=<shard>; unset: the default shard,
    which serves the rollouts without that label."""
    max_backoff_seconds: float = Field(default=60.0, gt=0)
    """The longest wait before a failing rollout is reconciled again (the backoff doubles)."""
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

    @model_validator(mode="after")
    def _peering_per_shard(self) -> Self:
        if not self.peering_name:
            name = f"coalmine-{self.shard.lower()}" if self.shard else "coalmine"
            object.__setattr__(self, "peering_name", name)
        return self


def describe() -> str:
    """The settings as `coalmine-operator --help` prints them: variable, default, meaning."""
    lines = [
        "coalmine-operator: rolls out CanaryRollouts (coalmine.dev/v1alpha1) step by step.",
        "",
        "It takes no arguments; every setting is an environment variable:",
        "",
    ]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    for name, field in Settings.model_fields.items():
        default = "(random)" if field.default_factory is not None else repr(field.default)
        lines.append(f"  {prefix}{name.upper():<28} default {default}")
        for part in (field.description or "").split("\n"):
            lines.append(f"      {part.strip()}")
    lines += ["", "Documentation: docs/install.md (settings), docs/metrics.md (/metrics)."]
    return "\n".join(lines)
