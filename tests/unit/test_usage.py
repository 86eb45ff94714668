"""`coalmine-operator --help` (and the image's `IMAGE --help`) lists every setting."""

from __future__ import annotations

import subprocess
import sys

from coalmine.settings import Settings
from devenv import paths


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(paths.REPO_ROOT / "operator")}
    return subprocess.run(
        [sys.executable, "-m", "coalmine", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_the_console_script_answers_help_and_refuses_other_arguments() -> None:
    helped = _run("--help")
    assert helped.returncode == 0, helped.stderr
    for name in Settings.model_fields:
        assert f"COALMINE_{name.upper()}" in helped.stdout
    wrong = _run("--bogus")
    assert wrong.returncode == 2
    assert "COALMINE_STANDALONE" in wrong.stderr
