"""Where the local environment keeps its binaries, state and addresses: one place, documented."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("COALMINE_TOOLS_DIR", REPO_ROOT / ".tools"))
BIN_DIR = TOOLS_DIR / "bin"
SHARE_DIR = TOOLS_DIR / "share"
STATE_DIR = Path(os.environ.get("COALMINE_CLUSTER_DIR", REPO_ROOT / ".cluster"))

#: The kubeconfig of the local cluster's administrator. Fixed so that scripts and people find it.
KUBECONFIG = STATE_DIR / "kubeconfig"
#: A shell snippet (``KUBECONFIG=...``, ``PROMETHEUS_URL=...``) for people and scripts.
ENV_FILE = STATE_DIR / "env"

#: Name of the network namespace (``/run/netns/<name>``) that holds the whole stack.
NETNS = os.environ.get("COALMINE_NETNS", "coalmine")
#: Made local inside the namespace, so any process there can bind any pod IP.
POD_CIDR = "10.244.0.0/16"
#: The API server's advertised address: not loopback (Kubernetes refuses loopback endpoints).
ADVERTISE_ADDRESS = "10.243.0.1"
SERVICE_CIDR = "10.96.0.0/16"

API_SERVER_PORT = 6443
API_SERVER_URL = f"https://127.0.0.1:{API_SERVER_PORT}"
ETCD_CLIENT_URL = "http://127.0.0.1:2379"
PROMETHEUS_URL = "http://127.0.0.1:9090"
#: The simulated nodes' address, where KWOK serves what kubelets serve (/metrics/resource, logs):
#: the same local, non-loopback address as the API server's, as on a one-machine cluster.
NODE_ADDRESS = ADVERTISE_ADDRESS
KWOK_PORT = 10247
#: metrics-server, behind the API server as the aggregated API metrics.k8s.io.
METRICS_SERVER_PORT = 4443
#: Where an operator run by tests, the demo or a developer serves /metrics (scraped).
OPERATOR_METRICS_PORT = 9100

#: Names and pod CIDRs of the simulated nodes.
NODE_COUNT = 3


def binary(name: str) -> Path:
    return BIN_DIR / name
