"""The operator's settings: one typed class, read from ``COALMINE_*`` environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every documented setting, with its default. Unknown ``COALMINE_*`` variables are errors."""

    model_config = SettingsConfigDict(env_prefix="COALMINE_", extra="ignore", frozen=True)

    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster credentials, else $KUBECONFIG or ~/.kube/config."""
    standalone: bool = True
    """Run without kopf peering (one operator process); the HA setup turns peering on."""
    workers: int = 64
    """Threads for handlers: one daemon per CanaryRollout holds one while it waits."""
    metrics_port: int = 9100
    """Port of the ``/metrics`` endpoint; 0 turns it off."""
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a pod serves its metrics to the cluster
    """Address the metrics endpoint binds."""
