"""Benchmarks: figures measured against the real local cluster, as JSON in bench/results/."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config

from devenv import cluster, paths
from devenv.namespaces import recreate_namespace
from devenv.operator import OperatorProcess, install_crds

RESULTS = paths.REPO_ROOT / "bench" / "results"


def write_result(name: str, result: dict[str, Any]) -> None:
    """Write ``bench/results/<name>.json`` and show it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"bench: wrote {out.relative_to(paths.REPO_ROOT)}")


def start(
    namespace: str, operator_env: dict[str, str] | None = None
) -> tuple[client.ApiClient, OperatorProcess]:
    """The cluster up, the CRDs installed, the operator running, then ``namespace`` afresh.

    The operator starts first: a CanaryRollout an earlier run left in the namespace holds it
    until the operator releases its finalizer.
    """
    cluster.up(quiet=True)  # joins the cluster's network namespace before any thread starts
    install_crds()
    operator = OperatorProcess(operator_env)
    try:
        api = config.new_client_from_config(config_file=str(paths.KUBECONFIG))
        recreate_namespace(api, namespace)
    except BaseException:
        operator.stop()
        raise
    return api, operator
