"""`make demo`, shortened: v2 is promoted and v3 (20% errors) is aborted by the analysis, with
the traffic split the load generator saw through Traefik matching each weight."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv import demo
from devenv.operator import OperatorProcess


@pytest.fixture
def demo_owns_the_cluster(operator: OperatorProcess) -> Iterator[None]:
    """The demo runs its own operator: the session's steps aside meanwhile."""
    operator.stop()
    yield
    demo._stop_previous_operator()
    operator.start()


@pytest.mark.usefixtures("demo_owns_the_cluster")
def test_the_demo_scenario() -> None:
    v2, v3 = demo.run(short=True)
    assert v2.outcome == "Promoted"
    assert v3.outcome == "Aborted (AnalysisFailed)"
    for weight, share, requests in v2.splits:
        assert requests >= 100
        assert abs(share - weight) <= 5, (weight, share)
