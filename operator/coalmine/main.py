"""The process: kopf runs it, the controller does the work. The only module that knows kopf.

kopf starts and stops the operator (its startup and cleanup activities), handles signals, and
keeps this replica's record in the peering object alive so that replicas elect one active
operator. The rollouts themselves are served by `coalmine.controller`: informers, a keyed work
queue and a fixed pool of workers, never a handler, thread or task per rollout. kopf watches no
CanaryRollout itself: its per-event machinery would parse every object (and a deeply nested one
stops its watch for the whole cluster), while the controller's informers report one such object
on that object and carry on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import kopf
import prometheus_client

from coalmine import health, logs, peering
from coalmine.analysis.prometheus import Prometheus
from coalmine.analysis.runner import Runner
from coalmine.controller import Controller
from coalmine.kube import Kube, NotFoundError
from coalmine.settings import Settings, describe

log = logging.getLogger("coalmine")


def now() -> datetime:
    return datetime.now(UTC)


class _Process:
    """What one operator process holds: read once, so the peering priority stays the same."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.kube = Kube.connect(self.settings.kubeconfig, connections=self.settings.workers + 16)
        runner = Runner(self.kube, Prometheus(), self.settings.prometheus_address)
        self.controller = Controller(self.kube, self.settings, now, runner)


_PROCESS: list[_Process] = []


def _process() -> _Process:
    if not _PROCESS:
        _PROCESS.append(_Process())
    return _PROCESS[0]


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    process = _process()
    config = process.settings
    # kopf's own per-handler events would drown ours (which have specific reasons).
    settings.posting.level = logging.WARNING
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.peering.name = config.peering_name
    settings.peering.priority = config.peering_priority
    settings.peering.lifetime = config.peering_lifetime
    # With only a Role (the namespaced install) kopf may not list namespaces or CRDs.
    settings.scanning.disabled = config.namespace is not None
    if not config.standalone:
        try:
            peering.ensure_peering(process.kube, config.peering_name, config.namespace)
        except NotFoundError as error:
            # A first install: the peering CRD is not established yet. Soon will be.
            raise kopf.TemporaryError(f"peering CRD not ready: {error.message}", delay=2) from error
    process.controller.start()


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    if _PROCESS:
        _PROCESS[0].controller.stop()


def cli(argv: Sequence[str] | None = None) -> None:
    """``coalmine-operator``: run the operator (every namespace, or COALMINE_NAMESPACE)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments:
        print(describe(), file=sys.stdout if arguments[0] in ("-h", "--help") else sys.stderr)
        sys.exit(0 if arguments[0] in ("-h", "--help") else 2)
    process = _process()
    settings = process.settings
    logs.configure(settings.log_format, settings.log_level)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_address)
    if settings.health_port:
        health.serve(
            settings.metrics_address,
            settings.health_port,
            live=process.controller.live,
            ready=process.controller.ready,
        )
    kopf.run(
        clusterwide=settings.namespace is None,
        namespaces=[settings.namespace] if settings.namespace else (),
        standalone=settings.standalone,
        priority=settings.peering_priority,
    )
