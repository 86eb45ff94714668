"""`make demo`: coalmine end to end, with real requests through a real gateway.

It starts everything on a fresh machine (the cluster, Prometheus, Traefik, the operator), puts
the demo app v1 behind Traefik with steady load, then rolls out v2 (healthy: promoted) and v3
(20% errors: aborted by the background analysis), showing progress live, and ends with a
summary: per version, the outcome, the time taken and the traffic split the load generator
observed at each weight. The cluster and the operator keep running afterwards; `make
demo-down` stops them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coalmine import kube as k
from coalmine.kube import Kube
from devenv import cluster, paths, traefik
from devenv.loadgen import LoadGenerator
from devenv.manifests import (
    canary_rollout,
    demo_template,
    error_rate_metric,
    http_route,
    min_sample,
)
from devenv.namespaces import recreate_namespace
from devenv.operator import OperatorProcess, install_crds
from devenv.waiting import wait_for

NAMESPACE = "demo"
NAME = "shop"
OPERATOR_PID = cluster.PID_DIR / "demo-operator.pid"


def error_rate() -> dict[str, Any]:
    return error_rate_metric(initialDelay="10s", inconclusiveLimit=100, minSample=min_sample(20))


def rollout(pause: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"pause": {"duration": pause}},
        {"setWeight": 50},
        {"pause": {"duration": pause}},
    ]
    return canary_rollout(
        NAME,
        demo_template("v1", app=NAME),
        steps=steps,
        router="gatewayAPI",
        analysis={"metrics": [error_rate()]},
        scaleDownDelaySeconds=5,
    )


@dataclass
class Outcome:
    version: str
    outcome: str = "?"
    seconds: float = 0.0
    splits: list[tuple[int, float, int]] = field(default_factory=list)
    """(configured weight, observed share of the new version in %, requests)."""
    failed: int = 0


def _status(kube: Kube) -> dict[str, Any]:
    return dict((kube.get(k.CANARY_ROLLOUTS, NAMESPACE, NAME) or {}).get("status") or {})


def roll_out(kube: Kube, load: LoadGenerator, version: str, **env: str) -> Outcome:
    """Apply a new version and follow it live until promoted or aborted."""
    result = Outcome(version)
    started = time.monotonic()
    before = _status(kube).get("stableRevision")
    kube.patch(
        k.CANARY_ROLLOUTS,
        NAMESPACE,
        NAME,
        {"spec": {"template": demo_template(version, app=NAME, **env)}},
    )
    print(f"\n== rolling out {version} {' '.join(f'{k}={v}' for k, v in env.items())}".rstrip())
    window_start, window_weight, last_line = load.now(), 0, ""
    failed_before = load.counters().failed
    while time.monotonic() - started < 300:
        status = _status(kube)
        weight = int(status.get("confirmedWeight") or 0)
        line = (
            f"{status.get('phase', '?'):<11} step {status.get('stepDisplay') or '-':<4} "
            f"weight {weight:>3}%  {status.get('message', '')}"
        )
        if line != last_line:
            print(f"  {time.monotonic() - started:6.1f}s  {line}"[:150], flush=True)
            last_line = line
        if weight != window_weight:
            _close_window(load, result, version, window_start, window_weight)
            window_start, window_weight = load.now(), weight
        phase = status.get("phase")
        if phase == "Healthy" and status.get("stableRevision") not in (None, before):
            result.outcome = "Promoted"
            break
        if phase in ("Degraded", "Failed"):
            result.outcome = f"Aborted ({status.get('abortReason', phase)})"
            break
        time.sleep(0.5)
    _close_window(load, result, version, window_start, window_weight)
    result.seconds = time.monotonic() - started
    result.failed = load.counters().failed - failed_before
    return result


def _close_window(
    load: LoadGenerator, result: Outcome, version: str, since: float, weight: int
) -> None:
    if weight in (0, 100):
        return  # not a step: the stable alone, or the moment of promotion
    window = load.window(since)
    if window.versioned >= 50:
        result.splits.append((weight, 100 * window.share(version), window.versioned))


def summary(outcomes: list[Outcome]) -> str:
    rows = [
        f"{'version':<8} {'outcome':<34} {'time':>7}  {'failed':>6}  split observed (weight: share)"
    ]
    for o in outcomes:
        splits = ", ".join(f"{w}%: {share:.1f}% of {n}" for w, share, n in o.splits) or "-"
        rows.append(f"{o.version:<8} {o.outcome:<34} {o.seconds:6.1f}s  {o.failed:>6}  {splits}")
    return "\n".join(rows)


def _stop_previous_operator() -> None:
    """Stop the demo's operator and wait until it is gone (its metrics port frees with it)."""
    try:
        pid = int(OPERATOR_PID.read_text())
    except (OSError, ValueError):
        return
    # Only ours: after a reboot the pid may be someone else's.
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"coalmine" in cmdline.read_bytes():
        cluster.stop_pid(pid, "demo operator")
    OPERATOR_PID.unlink(missing_ok=True)


def setup(pause: str) -> tuple[Kube, OperatorProcess]:
    cluster.up(quiet=True)
    install_crds()
    traefik.ensure_traefik()
    kube = Kube.connect(str(paths.KUBECONFIG))
    _stop_previous_operator()
    operator = OperatorProcess({"COALMINE_METRICS_PORT": str(paths.OPERATOR_METRICS_PORT)})
    OPERATOR_PID.parent.mkdir(parents=True, exist_ok=True)
    OPERATOR_PID.write_text(str(operator.pid))
    # With the operator running, so the previous demo's rollout finalizer can complete.
    recreate_namespace(kube.api, NAMESPACE)
    traefik.apply(traefik.gateway_manifest(NAMESPACE))
    traefik.wait_gateway_programmed(NAMESPACE)
    kube.create(k.HTTP_ROUTES, NAMESPACE, http_route(NAME))
    kube.create(k.CANARY_ROLLOUTS, NAMESPACE, rollout(pause))
    wait_for(
        lambda: _status(kube),
        until=lambda s: s.get("phase") == "Healthy",
        timeout=90,
        message="demo app v1 to be Healthy",
    )
    return kube, operator


def run(*, short: bool = False) -> list[Outcome]:
    """The whole scenario; returns the outcome per version (tests use the short form)."""
    # Pauses long enough for the analysis: a new pod's error rate needs two scrapes in its
    # rate window before Prometheus can say anything about it.
    kube, _ = setup("20s" if short else "30s")
    print(f"demo app v1 is stable behind Traefik at {traefik.WEB_URL}")
    with LoadGenerator(traefik.WEB_URL, rate=100, duration=900) as load:
        wait_for(
            lambda: load.counters().completed - load.counters().failed,
            until=lambda n: n >= 50,
            message="traffic through Traefik",
        )
        outcomes = [
            roll_out(kube, load, "v2"),
            roll_out(kube, load, "v3", DEMO_ERROR_RATE="0.2"),
        ]
    print("\n" + summary(outcomes))
    return outcomes


def down() -> None:
    _stop_previous_operator()
    traefik.stop_traefik()
    cluster.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "down"])
    parser.add_argument("--short", action="store_true", help="short pauses (tests)")
    args = parser.parse_args(argv)
    if args.command == "down":
        down()
        return 0
    outcomes = run(short=args.short)
    print(
        f"""
The cluster, Prometheus, Traefik and the operator keep running. Explore:
  make shell                                   # then: kubectl get crol -n {NAMESPACE}
  .venv/bin/kubectl-coalmine get {NAME} -n {NAMESPACE} --watch   (inside `make shell`)
  curl {traefik.WEB_URL}/                      # inside `make shell`: answered by the stable version
  Prometheus {paths.PROMETHEUS_URL} (inside the namespace)
  make demo-down                               # stop everything
"""
    )
    ok = outcomes[0].outcome == "Promoted" and outcomes[1].outcome.startswith("Aborted")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
