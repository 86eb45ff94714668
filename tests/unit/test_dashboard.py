"""The Grafana dashboard only uses metric names the operator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import coalmine.metrics  # noqa: F401 - registers the operator's metrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "coalmine-dashboard.json"
DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"


SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


def exported() -> set[str]:
    """Every series name the operator's metric families can produce."""
    families = {c.name for c in REGISTRY.collect() if c.name.startswith("coalmine_")}
    return {family + suffix for family in families for suffix in SUFFIXES}


def test_every_metric_in_the_dashboard_is_exported() -> None:
    text = DASHBOARD.read_text()
    used = set(re.findall(r"coalmine_[a-z_]+", text))
    assert used
    assert used <= exported(), used - exported()


def test_every_exported_metric_is_documented() -> None:
    docs = DOCS.read_text()
    families = {c.name for c in REGISTRY.collect() if c.name.startswith("coalmine_")}
    for family in families:
        documented = family in docs or f"{family}_total" in docs
        assert documented, f"{family} is not in docs/metrics.md"


def test_the_dashboard_is_valid_json_with_panels() -> None:
    assert json.loads(DASHBOARD.read_text())["panels"]
