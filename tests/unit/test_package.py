"""The plugin as users install plugins: the wheel, the sdist, and krew's launcher.

`make dist` (which `make test` runs) builds the wheel and sdist with ``python -m build`` and puts
the wheels they depend on, at the pinned versions, in ``dist/wheelhouse``. Here krew's launcher
(``deploy/krew/kubectl-coalmine``) makes its clean virtual environment and installs coalmine
into it the way it would from PyPI, from those files only (no network: tests may run inside the
local cluster's network namespace), and the plugin then answers as ``kubectl coalmine``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from coalmine import __version__
from devenv import krew, paths

DIST = paths.REPO_ROOT / "dist"
WHEEL = DIST / f"coalmine-{__version__}-py3-none-any.whl"
SDIST = DIST / f"coalmine-{__version__}.tar.gz"

needs_dist = pytest.mark.skipif(
    not (WHEEL.exists() and (DIST / "wheelhouse").is_dir()),
    reason="no dist/: run `make dist` (make test does)",
)


def test_the_manifest_names_the_archive_made_here() -> None:
    digest = hashlib.sha256(krew.archive_bytes()).hexdigest()
    assert krew.manifest_digests() == [digest], "run `make dist` and copy its sha256"
    launcher = krew.LAUNCHER.read_text()
    assert f"VERSION={__version__}\n" in launcher, "the launcher installs this version"


@needs_dist
def test_the_sdist_holds_the_package() -> None:
    with tarfile.open(SDIST) as sdist:
        names = set(sdist.getnames())
    root = f"coalmine-{__version__}"
    for name in ("pyproject.toml", "README.md", "operator/coalmine/cli/commands.py"):
        assert f"{root}/{name}" in names


@needs_dist
def test_krew_launcher_installs_the_wheel_into_a_clean_venv(tmp_path: Path) -> None:
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "PYTHON": sys.executable,
        # What the launcher's pip would fetch from PyPI, from dist/ instead.
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": f"{DIST} {DIST / 'wheelhouse'}",
    }
    # As krew does: the plugin's bin linked onto PATH under its name.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl-coalmine").symlink_to(krew.LAUNCHER)

    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl-coalmine", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    first = plugin("--help")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("usage: kubectl coalmine")
    assert "installing coalmine" in first.stderr
    venv = tmp_path / "data" / "coalmine" / f"kubectl-coalmine-{__version__}"
    assert (venv / "bin" / "coalmine-operator").exists(), "the package's other script too"
    second = plugin("list", "--help")
    assert second.returncode == 0, second.stderr
    assert "installing" not in second.stderr, "installed once"

    kubectl = paths.binary("kubectl")
    if kubectl.exists():
        listed = subprocess.run(
            [str(kubectl), "plugin", "list", "--name-only"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert "kubectl-coalmine" in listed.stdout, listed.stderr
