"""Benchmarks: figures measured against the real local cluster, as JSON in bench/results/."""

from __future__ import annotations

import json
from typing import Any

from devenv import paths

RESULTS = paths.REPO_ROOT / "bench" / "results"


def write_result(name: str, result: dict[str, Any]) -> None:
    """Write ``bench/results/<name>.json`` and show it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"bench: wrote {out.relative_to(paths.REPO_ROOT)}")
