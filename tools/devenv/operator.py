"""Run the operator as a user would: its own process, its console script, the cluster's kubeconfig.

Integration tests, benchmarks and the demo start it through here, kill it, and start it again
(the restart test); its log goes to ``.cluster/logs/operator-<n>.log``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

from devenv import cluster, paths

CRDS = paths.REPO_ROOT / "crds"
_serial = itertools.count(1)


def install_crds() -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for crd in ("canaryrollouts", "analysistemplates", "clusteranalysistemplates"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.coalmine.dev", "--timeout=30s"
        )


class OperatorProcess:
    """One operator process; ``stop`` is graceful, ``kill`` is a crash."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        # Several operators may share the namespace's ports: metrics only where asked for, and
        # on loopback, never on every address: a port on 0.0.0.0 is that port on every pod IP
        # too, which the operator's pods (deploy/, on their pod IPs) and demo pods bind.
        self.env = {
            "COALMINE_METRICS_PORT": "0",
            "COALMINE_HEALTH_PORT": "0",
            "COALMINE_METRICS_ADDRESS": "127.0.0.1",
            "COALMINE_PROMETHEUS_ADDRESS": paths.PROMETHEUS_URL,
            **(env or {}),
        }
        self.start()

    def start(self) -> None:
        """Start a fresh process (after ``kill``, this is the restart of a crashed operator)."""
        self.log = cluster.LOG_DIR / f"operator-{os.getpid()}-{next(_serial)}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "coalmine"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "KUBECONFIG": str(paths.KUBECONFIG),
                    "PYTHONPATH": os.pathsep.join(
                        [str(paths.REPO_ROOT / "operator"), str(paths.REPO_ROOT / "tools")]
                    ),
                    **self.env,
                },
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
