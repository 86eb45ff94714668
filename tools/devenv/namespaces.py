"""A fresh namespace for a test, a benchmark or the demo: the one way to (re)create one.

Deleting a namespace that holds CanaryRollouts waits for their finalizer, which only a running
operator releases: start the operator first (the demo and the benchmarks do), or the deletion
waits for it until the timeout, and the message says so.
"""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devenv.waiting import wait_for

NOT_FOUND = 404
CONFLICT = 409


def _exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            return False
        raise
    return True


def recreate_namespace(
    api: client.ApiClient,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> None:
    """Delete namespace ``name`` if it exists, wait until it is gone, create it afresh, and wait
    for its default ServiceAccount (the API server refuses pods until the controller manager
    has made it)."""
    core = client.CoreV1Api(api)
    delete_namespace(api, name, wait=timeout)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        # Long: after the API server restarts, the controller manager may lag a minute or more.
        timeout=timeout,
        message=f"the default ServiceAccount of namespace {name}",
    )


def delete_namespace(api: client.ApiClient, name: str, *, wait: float | None = None) -> None:
    """Delete a namespace in the background; nothing when it is gone already. With ``wait``,
    wait that many seconds at most until it is gone."""
    core = client.CoreV1Api(api)
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            return
        if exc.status != CONFLICT:  # 409: being deleted already (a namespace says so)
            raise
    if wait is not None:
        wait_for(
            lambda: _exists(core, name),
            until=lambda exists: not exists,
            timeout=wait,
            interval=0.5,
            message=(
                f"namespace {name} to go (a CanaryRollout in it keeps it until a running "
                "operator releases its finalizer)"
            ),
        )
