"""Figures for the local cluster: how long the tools take to build, how fast a warm cluster
starts, and how much memory its control plane holds.

Written to ``bench/results/cluster.json``. Each start is a full ``down`` then ``up`` through the
same command a developer runs, so the figure includes namespace setup, certificates, every
component's health check, node registration and the Gateway API CRDs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import write_result
from devenv import cluster, netns, paths

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def _run(*argv: str, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def cold_build() -> dict[str, Any]:
    """Build every tool with empty Go build and binary caches (the module cache stays warm:
    downloads measure the network, not us)."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            "GOCACHE": f"{scratch}/gocache",
            "COALMINE_TOOLS_DIR": f"{scratch}/tools",
            "XDG_CACHE_HOME": f"{scratch}/cache",
        }
        seconds = _run(str(paths.REPO_ROOT / "tools" / "build-tools.sh"), env=env)
        per_tool = {
            d.name.rsplit("-", 1)[0]: int((d / ".build-seconds").read_text())
            for d in Path(f"{scratch}/cache/coalmine/tools").iterdir()
            if (d / ".build-seconds").exists()
        }
    return {"seconds": round(seconds, 1), "per_tool_seconds": per_tool, "go_module_cache": "warm"}


def recorded_builds() -> dict[str, int]:
    """Build times recorded when the binaries in use were built (warm or cold, as it happened)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coalmine" / "tools"
    stamps = paths.TOOLS_DIR / "stamps"
    result: dict[str, int] = {}
    for stamp in sorted(stamps.glob("*")):
        seconds = cache / f"{stamp.name}-{stamp.read_text().strip()}" / ".build-seconds"
        if seconds.exists():
            result[stamp.name] = int(seconds.read_text())
    return result


def warm_starts(runs: int) -> list[float]:
    python = sys.executable
    times = []
    for _ in range(runs):
        _run(python, "-m", "devenv.cluster", "down")
        times.append(round(_run(python, "-m", "devenv.cluster", "up"), 2))
    return times


def control_plane_memory(settle: float) -> dict[str, float]:
    netns.enter()
    time.sleep(settle)  # let start-up caches and garbage settle before reading RSS
    rss = cluster.resident_memory()
    mib = {name: round(rss[name] / 2**20, 1) for name in CONTROL_PLANE if name in rss}
    mib["control_plane_total"] = round(sum(mib.values()), 1)
    for name in ("prometheus", "podrunner", "metrics-server"):
        if name in rss:
            mib[name] = round(rss[name] / 2**20, 1)
    return mib


def idle_cpu(seconds: float) -> dict[str, float]:
    """CPU use of each component while the cluster idles, in % of one core."""
    netns.enter()
    before = cluster.cpu_seconds()
    time.sleep(seconds)
    after = cluster.cpu_seconds()
    percent = {
        name: round(100 * (after[name] - before[name]) / seconds, 1)
        for name in after
        if name in before
    }
    percent["total"] = round(sum(percent.values()), 1)
    return percent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cold-build", action="store_true", help="rebuild the tools with empty caches"
    )
    parser.add_argument("--starts", type=int, default=3, help="warm starts to time")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds before reading memory")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measured")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "benchmark": "cluster",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "tools_build_recorded_seconds": recorded_builds(),
    }
    if args.cold_build:
        result["tools_cold_build"] = cold_build()
    starts = warm_starts(args.starts)
    result["warm_start_seconds"] = {
        "runs": starts,
        "median": statistics.median(starts),
        "max": max(starts),
        "goal": 30,
    }
    result["resident_memory_mib"] = control_plane_memory(args.settle)
    result["idle_cpu_percent_of_one_core"] = idle_cpu(args.idle)
    write_result("cluster", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
