"""The real API server rejects invalid CanaryRollouts, naming the field: the CRD's schema and CEL
rules at work, before the operator ever sees the object."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devenv import paths

INVALID = sorted((paths.REPO_ROOT / "tests" / "manifests" / "invalid").glob("*.yaml"))


def expectation(manifest: Path) -> str:
    first = manifest.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{manifest.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_at_least_fifteen_invalid_manifests() -> None:
    assert len(INVALID) >= 15


@pytest.mark.usefixtures("operator")  # installs the CRD
@pytest.mark.parametrize("manifest", INVALID, ids=[m.stem for m in INVALID])
def test_the_api_server_rejects_it_naming_the_field(manifest: Path, namespace: str) -> None:
    result = subprocess.run(
        [
            str(paths.binary("kubectl")),
            f"--kubeconfig={paths.KUBECONFIG}",
            "create",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0, f"{manifest.name} was accepted"
    assert expectation(manifest) in result.stderr, result.stderr
