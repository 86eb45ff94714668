"""What the analysis runner writes to the status: measurements survive the reconciles after them.

The runner rebuilds each metric's status at every reconcile from a record it read back from the
status; a measurement read back has lost its judge (the p-value, the effect, the shift and its
interval live only in the status). These pin that the status keeps what was written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coalmine.analysis import limits, runner
from coalmine.analysis.evaluate import Observation, Sample, evaluate
from coalmine.analysis.spec import Metric

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
STABLE = [100.0 + (i * 7) % 13 for i in range(30)]
JUDGE = Metric.model_validate(
    {
        "name": "latency",
        "provider": {"prometheus": {"query": 'x{r="{{revision}}"}'}},
        "baseline": True,
        "critical": True,
        "judge": {"mannWhitney": {}},
    }
)


def judged(factor: float, at: datetime) -> limits.MetricRecord:
    canary = Sample([value * factor for value in STABLE])
    return limits.MetricRecord().add(evaluate(JUDGE, Observation(canary, Sample(STABLE)), at=at))


def test_the_judges_numbers_reach_the_status() -> None:
    status = runner._metric_status("latency", judged(1.5, AT), "Failed")
    (written,) = status.measurements
    assert written.p_value is not None
    assert written.p_value < 1e-6
    assert written.effect_size == 1.5
    assert written.shift is not None
    assert written.shift_low is not None
    assert written.shift_low < written.shift
    assert written.shift_high is None  # a judge of an increase: a half-line
    assert status.critical_failures == 1


def test_a_reconcile_without_a_measurement_keeps_the_judges_numbers() -> None:
    first = runner._metric_status("latency", judged(1.0, AT), "Running")
    again = runner._metric_status("latency", runner._record(first), "Running", first)
    assert again == first
    # And a new measurement appends to them, the older ones kept as written.
    later = judged(1.0, AT + timedelta(minutes=1)).recent[0]
    grown = runner._metric_status("latency", runner._record(first).add(later), "Running", first)
    assert grown.measurements[0] == first.measurements[0]
    assert grown.measurements[1].p_value is not None


def test_a_critical_failure_is_remembered_through_the_status() -> None:
    status = runner._metric_status("latency", judged(1.5, AT), "Failed")
    assert runner._record(status).critical_failures == 1
