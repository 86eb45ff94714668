"""The local environment fails with a message that names the missing piece."""

from __future__ import annotations

from pathlib import Path

import pytest

from devenv import cluster, netns, paths
from devenv.waiting import WaitTimeoutError, wait_for


def test_missing_binaries_are_named_with_the_command_that_builds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "BIN_DIR", tmp_path / "bin")
    with pytest.raises(cluster.ClusterError) as error:
        cluster.check_prerequisites()
    message = str(error.value)
    assert "kube-apiserver" in message
    assert "etcd" in message
    assert "make tools" in message


def test_missing_kwok_stages_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in cluster.BINARIES:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(paths, "BIN_DIR", bin_dir)
    monkeypatch.setattr(paths, "SHARE_DIR", tmp_path / "share")
    with pytest.raises(cluster.ClusterError, match="KWOK stage files"):
        cluster.check_prerequisites()


def test_creating_the_namespace_without_root_says_root_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(netns.NetnsError, match="needs root"):
        netns.ensure("coalmine-never-created")


def test_wait_for_reports_what_it_awaited_and_the_last_value() -> None:
    with pytest.raises(WaitTimeoutError) as error:
        wait_for(
            lambda: 41, until=lambda v: v == 42, timeout=0.3, interval=0.05, message="the answer"
        )
    assert "the answer" in str(error.value)
    assert "41" in str(error.value)


def test_wait_for_reports_the_last_exception_of_a_failing_probe() -> None:
    def probe() -> int:
        raise ConnectionRefusedError("apiserver down")

    with pytest.raises(WaitTimeoutError, match="apiserver down"):
        wait_for(probe, timeout=0.2, interval=0.05, message="the API server")


def test_wait_for_returns_the_first_value_that_satisfies() -> None:
    values = iter([1, 2, 3, 4])
    assert wait_for(lambda: next(values), until=lambda v: v >= 3, interval=0, message="3") == 3
