"""`kubectl coalmine` as a user runs it: a separate process, against the real cluster and operator.

Every command runs as `python -m coalmine.cli` with the cluster's kubeconfig, exactly what the
`kubectl-coalmine` console script does; the test process is inside the cluster's network
namespace already, and its subprocesses inherit it. What the CLI claims is then checked on the
cluster itself: the annotation it wrote, the phase the operator reached, the template it put back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from coalmine.kube import Obj
from devenv import paths
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import Rollouts, manifest, template

CLI = (sys.executable, "-m", "coalmine.cli")


def cli_env(kubeconfig: Path | str) -> dict[str, str]:
    source = os.pathsep.join([str(paths.REPO_ROOT / "operator"), str(paths.REPO_ROOT / "tools")])
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": source}


def cli(
    *args: str, kubeconfig: Path | str = paths.KUBECONFIG, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=cli_env(kubeconfig),
        cwd=paths.REPO_ROOT,
        timeout=timeout,
        check=False,
    )


@contextmanager
def background(*args: str, output: Path) -> Iterator[subprocess.Popen[str]]:
    """The CLI running on its own, its stdout in `output` to read while it runs."""
    with output.open("w") as out:
        process = subprocess.Popen(
            [*CLI, *args],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            # SIGABRT then prints every thread's stack: what a CLI that does not end waits on.
            env={**cli_env(paths.KUBECONFIG), "PYTHONFAULTHANDLER": "1"},
            cwd=paths.REPO_ROOT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            if process.stderr is not None:
                process.stderr.close()


def ended(process: subprocess.Popen[str], timeout: float) -> int:
    """The exit code of ``process`` within ``timeout``; else its threads' stacks as the failure."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        process.wait(10)
        stacks = process.stderr.read() if process.stderr is not None else ""
        raise AssertionError(f"still running after {timeout} s:\n{stacks}") from None


def columns(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def paused_canary(rollouts: Rollouts) -> tuple[str, str]:
    """shop: v1 stable, v2 held at the last step, an indefinite pause; (stable, canary)."""
    rollouts.create(manifest("shop", "v1"))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    rollouts.set_template("shop", "v2")
    canary = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)["canaryRevision"]
    return str(stable), str(canary)


def annotations_of(rollouts: Rollouts) -> dict[str, str]:
    obj: Obj = rollouts.get("shop")
    return dict(obj["metadata"].get("annotations") or {})


@pytest.mark.usefixtures("operator")
def test_list_and_get_show_the_rollout(namespace: str, rollouts: Rollouts) -> None:
    stable, canary = paused_canary(rollouts)

    listed = cli("list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    rows = columns(listed.stdout)
    assert rows[0] == ["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    assert rows[1][:6] == ["shop", "Paused", "3/4", "50", stable, canary]

    everywhere = cli("list", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert [namespace, "shop", "Paused"] in [row[:3] for row in columns(everywhere.stdout)]

    shown = cli("get", "shop", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    lines = [" ".join(line.split()) for line in shown.stdout.splitlines()]
    assert lines[0] == f"CanaryRollout {namespace}/shop"
    assert "Phase: Paused" in lines
    assert "Step: 3/4 (stage Steps)" in lines
    assert "Weight: desired 50%, confirmed 50%" in lines
    assert f"Stable: {stable} 2/2 pods ready" in lines
    assert f"Canary: {canary} 2/2 pods ready" in lines
    assert "app: coalmine.dev/demo-app:v2" in lines
    assert any(line.startswith("Paused True") for line in lines), "the pause is worth a look"

    empty = cli("list", "-n", "kube-public")
    assert empty.returncode == 0
    assert empty.stderr == "No canaryrollouts found in namespace kube-public.\n"


@pytest.mark.usefixtures("operator")
def test_promote_releases_an_indefinite_pause(namespace: str, rollouts: Rollouts) -> None:
    _, canary = paused_canary(rollouts)

    promoted = cli("promote", "shop", "-n", namespace, "--wait", "--timeout", "60s")
    assert promoted.returncode == 0, promoted.stderr
    token = re.search(r"promote requested, token ([0-9a-f]{32})", promoted.stdout)
    assert token, promoted.stdout
    assert "coalmine.dev/promote" in promoted.stdout
    assert "handled:" in promoted.stdout
    assert annotations_of(rollouts)["coalmine.dev/promote"] == token.group(1)
    assert rollouts.status("shop")["controls"]["promote"] == token.group(1)
    assert rollouts.get("shop")["metadata"]["generation"] == 2, "the spec was not touched"

    rollouts.wait_phase("shop", "Healthy", stableRevision=canary)


@pytest.mark.usefixtures("operator")
def test_abort_retry_and_the_exit_codes_of_status(namespace: str, rollouts: Rollouts) -> None:
    _, canary = paused_canary(rollouts)

    waited = cli("status", "shop", "-n", namespace, "--timeout", "2s")
    assert waited.returncode == 2, "held at an indefinite pause: the wait times out"
    assert "Paused" in waited.stdout
    assert waited.stderr.startswith("error: timed out after 2s")

    aborted = cli("abort", "shop", "-n", namespace)
    assert aborted.returncode == 0, aborted.stderr
    assert "abort requested, token" in aborted.stdout
    degraded = rollouts.wait_phase("shop", "Degraded")
    assert degraded["abortReason"] == "AbortedByUser"

    failed = cli("status", "shop", "-n", namespace, "--timeout", "30s")
    assert failed.returncode == 1
    assert "error: canaryrollout shop failed: phase Degraded" in failed.stderr

    retried = cli("retry", "shop", "-n", namespace)
    assert retried.returncode == 0, retried.stderr
    again = rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
    assert again["canaryRevision"] == canary
    assert "Retried" in rollouts.reasons("shop")

    pointless = cli("retry", "shop", "-n", namespace)
    assert pointless.returncode == 0
    assert "note: the rollout is not aborted" in pointless.stderr


@pytest.mark.usefixtures("operator")
def test_pause_resume_and_restart(namespace: str, rollouts: Rollouts) -> None:
    stable, _ = paused_canary(rollouts)
    paused = cli("pause", "shop", "-n", namespace, "--wait")
    assert paused.returncode == 0, paused.stderr
    assert "pause requested, token" in paused.stdout
    assert "paused by user" in paused.stdout, "--wait prints where it then stands"
    assert rollouts.status("shop")["pausedByUser"] is True
    again = cli("pause", "shop", "-n", namespace)
    assert "note: the rollout is paused already" in again.stderr
    promote = cli("promote", "shop", "-n", namespace)
    assert "note: the rollout is paused: resume it first" in promote.stderr
    resumed = cli("resume", "shop", "-n", namespace, "--wait")
    assert resumed.returncode == 0, resumed.stderr
    assert "pausedByUser" not in rollouts.status("shop")
    restarted = cli("restart", "shop", "-n", namespace, "--wait")
    assert restarted.returncode == 0, restarted.stderr
    assert rollouts.status("shop")["restart"]["revision"] == stable


@pytest.mark.usefixtures("operator")
def test_status_follows_the_rollout_until_promote_full_completes_it(
    namespace: str, rollouts: Rollouts, tmp_path: Path
) -> None:
    _, canary = paused_canary(rollouts)
    output = tmp_path / "status.out"
    with background("status", "shop", "-n", namespace, "--timeout", "90s", output=output) as run:
        wait_for(
            output.read_text,
            until=lambda text: "Paused" in text,
            timeout=30,
            message="the first line",
        )
        promoted = cli("promote", "shop", "--full", "-n", namespace)
        assert promoted.returncode == 0, promoted.stderr
        assert "promote-full requested" in promoted.stdout
        assert run.wait(90) == 0
    lines = output.read_text().splitlines()
    assert len(lines) >= 3, "a line per change: paused, promoting, complete"
    assert "Paused" in lines[0]
    assert lines[-1].endswith(f"rollout complete: revision {canary} is stable")
    assert "PromotedFull" in rollouts.reasons("shop")


@pytest.fixture
def interruptible() -> Iterator[None]:
    """SIGINT heard by the CLIs started meanwhile. A shell starts a background job with SIGINT
    ignored, and a child inherits that: run as `make test &`, the CLI never saw its Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("operator", "interruptible")
def test_get_watch_redraws_as_the_rollout_progresses(
    namespace: str, rollouts: Rollouts, tmp_path: Path
) -> None:
    rollouts.create(manifest("shop", "v1"))
    rollouts.wait_phase("shop", "Healthy")
    output = tmp_path / "watch.out"
    header = "watching canaryrollout shop"
    with background("get", "shop", "-n", namespace, "--watch", output=output) as run:
        wait_for(output.read_text, until=lambda text: header in text, timeout=30, message="frame")
        rollouts.set_template("shop", "v2")
        rollouts.wait_phase("shop", "Paused", currentStepIndex=3)
        wait_for(
            output.read_text,
            until=lambda text: "Step:        3/4" in text,
            timeout=30,
            message="a frame of the paused canary",
        )
        assert run.poll() is None, "it keeps watching"
        run.send_signal(signal.SIGINT)
        assert ended(run, 10) == 0, "Ctrl-C ends it cleanly"
        assert run.stderr is not None
        assert "Traceback" not in run.stderr.read()
    frames = output.read_text().split(header)[1:]
    assert len(frames) >= 2
    assert "Phase:       Healthy" in frames[0]
    assert "Canary:      none" in frames[0]
    assert any("Phase:       Paused" in frame for frame in frames[1:])
    assert "\x1b[" not in output.read_text(), "not a terminal: frames appended, no escapes"


@pytest.mark.usefixtures("operator")
def test_undo_goes_back_to_the_previous_revision_fast(namespace: str, rollouts: Rollouts) -> None:
    stable, canary = paused_canary(rollouts)
    promoted = cli("promote", "shop", "--full", "-n", namespace, "--wait")
    assert promoted.returncode == 0, promoted.stderr
    rollouts.wait_phase("shop", "Healthy", stableRevision=canary)
    steps_before = rollouts.reasons("shop").count("StepCompleted")

    unknown = cli("undo", "shop", "-n", namespace, "--to-revision", "ffffffffff")
    assert unknown.returncode == 1
    assert "revision ffffffffff is not kept" in unknown.stderr

    undone = cli("undo", "shop", "-n", namespace)
    assert undone.returncode == 0, undone.stderr
    assert "Argo CD" in undone.stderr
    assert f"from revision {canary} to revision {stable}" in undone.stdout
    assert rollouts.get("shop")["spec"]["template"] == template("v1")

    rollouts.wait_phase("shop", "Healthy", stableRevision=stable, timeout=30)
    reasons = rollouts.reasons("shop")
    assert "RollingBack" in reasons
    assert reasons.count("StepCompleted") == steps_before, "a fast rollback skips the steps"


@pytest.mark.usefixtures("kube")
def test_a_missing_rollout_is_a_clear_error(namespace: str) -> None:
    for command in (
        ["get", "nope"],
        ["get", "nope", "--watch"],
        ["promote", "nope"],
        ["abort", "nope"],
        ["status", "nope"],
        ["undo", "nope"],
    ):
        result = cli(*command, "-n", namespace)
        assert result.returncode == 1, command
        assert result.stderr == f"error: canaryrollout nope not found in namespace {namespace}\n"


def test_an_unreachable_cluster_is_a_clear_error(kube: Cluster, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: gone, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: me, user: {token: t}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: me, namespace: shop}}]\n"
        "current-context: gone\n"
    )
    for command in (["list"], ["get", "shop"], ["status", "shop", "--timeout", "5s"]):
        result = cli(*command, kubeconfig=config, timeout=60)
        assert result.returncode == 1, command
        assert result.stderr == (
            "error: cannot reach the Kubernetes API at https://127.0.0.1:1: Connection refused\n"
        )


@pytest.mark.usefixtures("operator")
def test_kubectl_finds_it_as_a_plugin(namespace: str, rollouts: Rollouts, tmp_path: Path) -> None:
    # What the kubectl-coalmine console script does, as a shim on PATH: kubectl runs any
    # kubectl-<name> executable it finds there for `kubectl <name>`, passing the arguments on.
    shim = tmp_path / "kubectl-coalmine"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m coalmine.cli "$@"\n')
    shim.chmod(0o755)
    rollouts.create(manifest("shop", "v1"))
    stable = rollouts.wait_phase("shop", "Healthy")["stableRevision"]
    env = cli_env(paths.KUBECONFIG)
    env["PATH"] = f"{tmp_path}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [str(paths.binary("kubectl")), "coalmine", "list", "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        cwd=paths.REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert columns(result.stdout)[1][:5] == ["shop", "Healthy", "-", "0", stable]
