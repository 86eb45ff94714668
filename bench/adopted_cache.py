"""What caching the Deployments that CanaryRollouts adopt costs, against caching them all.

An adopted Deployment (spec.workloadRef) is the user's: it does not carry the label of what
coalmine owns, so the cache of owned Deployments does not hold it. coalmine labels it
``coalmine.dev/adopted-by`` at first sight and keeps a second informer on that label. The other
way would be one informer on every Deployment the operator can see. This measures both against
the real API server: a namespace of ``--deployments`` plain Deployments (0 replicas, a template
of realistic size), ``--adopted`` of them labelled, and the Python heap each informer holds once
synced (tracemalloc), the way the operator's own informers keep objects (trimmed).

Written to ``bench/results/adopted-cache.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from typing import Any

from kubernetes import config

from bench import write_result
from coalmine import resources as r
from coalmine.kube import Informer, Kube, wait_synced
from coalmine.labels import ADOPTED_BY_LABEL
from devenv import cluster, paths
from devenv.namespaces import delete_namespace, recreate_namespace

NAMESPACE = "bench-adopted-cache"


def deployment(index: int, adopted: bool) -> dict[str, Any]:
    """A plain Deployment, its template the size of a small real service's (about 1.5 KB)."""
    name = f"app-{index:04d}"
    labels = {"app": name, "team": "shop", "tier": "backend"}
    container = {
        "name": "app",
        "image": f"registry.example.com/shop/{name}:1.{index}",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}-{name}"} for i in range(8)],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
    }
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if adopted:
        metadata["labels"][ADOPTED_BY_LABEL] = name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def heap_of(kube: Kube, resource: r.Resource, selector: str | None) -> tuple[int, int]:
    """(bytes, objects) an informer of ``resource`` holds once synced."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    informer = Informer(kube, resource, namespace=NAMESPACE, label_selector=selector)
    informer.start()
    if not wait_synced([informer], 300):
        raise RuntimeError(f"the informer of {resource.cache_name} did not sync")
    gc.collect()
    after = tracemalloc.take_snapshot()
    informer.stop()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return held, len(informer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--adopted", type=int, default=20)
    args = parser.parse_args()
    cluster.up(quiet=True)  # joins the cluster's network namespace before any thread starts
    api = config.new_client_from_config(config_file=str(paths.KUBECONFIG))
    kube = Kube(api)
    recreate_namespace(api, NAMESPACE)
    started = time.monotonic()
    every = max(1, args.deployments // max(1, args.adopted))
    try:
        for index in range(args.deployments):
            kube.create(r.DEPLOYMENTS, NAMESPACE, deployment(index, index % every == 0))
        created = time.monotonic() - started
        # What a first informer pays once (the connection pool, lazy imports, the first shared
        # strings) goes to one that holds nothing, not to the first measured.
        heap_of(kube, r.ADOPTED_DEPLOYMENTS, f"{ADOPTED_BY_LABEL}=nobody")
        adopted_bytes, adopted_count = heap_of(kube, r.ADOPTED_DEPLOYMENTS, ADOPTED_BY_LABEL)
        all_bytes, all_count = heap_of(kube, r.DEPLOYMENTS, None)
    finally:
        delete_namespace(api, NAMESPACE)
    result = {
        "benchmark": "adopted-cache",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "deployments": args.deployments,
        "create_seconds": round(created, 1),
        "adopted_informer": {
            "objects": adopted_count,
            "heap_kib": round(adopted_bytes / 1024, 1),
        },
        "every_deployment_informer": {
            "objects": all_count,
            "heap_kib": round(all_bytes / 1024, 1),
            "per_deployment_kib": round(all_bytes / 1024 / max(1, all_count), 2),
        },
    }
    write_result("adopted-cache", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
