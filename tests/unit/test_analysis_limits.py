"""Measurements folded into verdicts: the limit tables, the schedule, and the safety properties.

The properties are the promises the operator relies on: Failed never goes away, an Error is never
followed by a promotion, and more failures never make a verdict better.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.analysis.evaluate import Measurement, MeasurementOutcome
from coalmine.analysis.limits import (
    MetricRecord,
    analysis_verdict,
    metric_verdict,
    next_measurement_at,
    verdict,
)
from coalmine.analysis.spec import Metric
from coalmine.api.limits import MEASUREMENTS_LIMIT
from coalmine.api.vocabulary import AnalysisVerdict

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OUTCOMES = {
    "S": MeasurementOutcome.SUCCESSFUL,
    "F": MeasurementOutcome.FAILED,
    "C": MeasurementOutcome.FAILED,  # a critical failure
    "I": MeasurementOutcome.INCONCLUSIVE,
    "E": MeasurementOutcome.ERROR,
}
RUNNING = AnalysisVerdict.RUNNING
SUCCESSFUL = AnalysisVerdict.SUCCESSFUL
FAILED = AnalysisVerdict.FAILED
INCONCLUSIVE = AnalysisVerdict.INCONCLUSIVE
ERROR = AnalysisVerdict.ERROR


def measurements(letters: str, *, every: timedelta = timedelta(seconds=30)) -> list[Measurement]:
    return [
        Measurement(OUTCOMES[letter], None, letter, T0 + index * every, critical=letter == "C")
        for index, letter in enumerate(letters)
    ]


def record(letters: str) -> MetricRecord:
    return MetricRecord.of(measurements(letters))


def metric(**fields: Any) -> Metric:
    base: dict[str, Any] = {
        "name": "error-rate",
        "provider": {"prometheus": {"query": "up"}},
        "successCondition": "result < 1.0",
    }
    return Metric.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("letters", "limits", "expected"),
    [
        ("", {"count": 3}, RUNNING),
        ("SS", {"count": 3}, RUNNING),
        ("SSS", {"count": 3}, SUCCESSFUL),
        ("SSSSSSSSSS", {"count": None}, RUNNING),
        ("F", {"count": 3}, FAILED),
        ("F", {"count": 3, "failure_limit": 1}, RUNNING),
        ("SFS", {"count": 3, "failure_limit": 1}, SUCCESSFUL),
        ("FF", {"count": 3, "failure_limit": 1}, FAILED),
        ("C", {"count": 3, "failure_limit": 1}, FAILED),  # critical: whatever failureLimit says
        ("SSC", {"count": 3, "failure_limit": 5}, FAILED),
        ("FSS", {"count": 3, "failure_limit": 1}, SUCCESSFUL),
        ("CEEEE", {"count": 3}, FAILED),
        ("I", {"count": 3}, INCONCLUSIVE),
        ("SIS", {"count": 3, "inconclusive_limit": 1}, SUCCESSFUL),
        ("SII", {"count": 3, "inconclusive_limit": 1}, INCONCLUSIVE),
        ("EEE", {"count": 3}, RUNNING),  # an Error does not count towards count
        ("EEEE", {"count": 3}, ERROR),
        ("EE", {"count": 3, "consecutive_error_limit": 2}, ERROR),
        ("EEESEEESEEES", {"count": 3}, SUCCESSFUL),  # never 4 in a row
        ("EEESEEE", {"count": None}, RUNNING),
        ("EEEES", {"count": 1}, SUCCESSFUL),  # the outage ended and the metric passed
        ("EEEEF", {"count": 5}, FAILED),  # precedence: Failed, then Error...
        ("IEEEE", {"count": 5}, ERROR),  # ...then Inconclusive
        ("SSSF", {"count": 3}, FAILED),
    ],
)
def test_the_limits(letters: str, limits: dict[str, Any], expected: AnalysisVerdict) -> None:
    assert verdict(record(letters), **limits) is expected


def test_a_critical_judge_metric_counts_its_smaller_failures_against_failure_limit() -> None:
    m = Metric.model_validate(
        {
            "name": "latency",
            "provider": {"prometheus": {"query": 'x{r="{{revision}}"}'}},
            "baseline": True,
            "critical": True,
            "count": 4,
            "failureLimit": 1,
            "judge": {
                "mannWhitney": {"effectSize": {"allowedIncrease": 1.1, "criticalIncrease": 2}}
            },
        }
    )
    assert metric_verdict(m, measurements("SF")) is RUNNING
    assert metric_verdict(m, measurements("SFSS")) is SUCCESSFUL
    assert metric_verdict(m, measurements("SC")) is FAILED
    assert metric_verdict(m, measurements("FF")) is FAILED


def test_metric_verdict_reads_the_limits_from_the_metric() -> None:
    m = metric(count=3, failureLimit=1, inconclusiveLimit=1, consecutiveErrorLimit=2)
    assert metric_verdict(m, measurements("FIS")) is SUCCESSFUL
    assert metric_verdict(m, record("FIS")) is SUCCESSFUL
    assert metric_verdict(m, measurements("SEE")) is ERROR
    assert metric_verdict(m, measurements("FF")) is FAILED


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], RUNNING),
        ([SUCCESSFUL], SUCCESSFUL),
        ([SUCCESSFUL, SUCCESSFUL], SUCCESSFUL),
        ([SUCCESSFUL, RUNNING], RUNNING),
        ([SUCCESSFUL, INCONCLUSIVE, RUNNING], INCONCLUSIVE),
        ([INCONCLUSIVE, ERROR], ERROR),
        ([ERROR, FAILED, INCONCLUSIVE], FAILED),
        ([RUNNING, FAILED], FAILED),
    ],
)
def test_an_analysis_is_as_bad_as_its_worst_metric(
    verdicts: list[AnalysisVerdict], expected: AnalysisVerdict
) -> None:
    assert analysis_verdict(verdicts) is expected


def test_the_record_counts_everything_and_keeps_the_latest() -> None:
    letters = "SSFIEESSSSSSSCE"
    kept = record(letters)
    assert (kept.successful, kept.failed, kept.inconclusive, kept.errors) == (9, 2, 1, 3)
    assert kept.critical_failures == 1
    assert (kept.measured, kept.judged) == (15, 12)
    assert (kept.consecutive_errors, kept.longest_error_run) == (1, 2)
    assert [m.message for m in kept.recent] == list(letters[-MEASUREMENTS_LIMIT:])
    assert kept.last_at == T0 + 14 * timedelta(seconds=30)
    assert len(MetricRecord.of(measurements(letters), keep=3).recent) == 3
    with pytest.raises(ValueError, match="at least"):
        MetricRecord().add(measurements("S")[0], keep=0)


# --- the schedule -------------------------------------------------------------------------


def test_the_first_measurement_waits_for_the_initial_delay() -> None:
    m = metric(initialDelay="2m", interval="1m", count=3)
    assert next_measurement_at(m, T0, []) == T0 + timedelta(minutes=2)


def test_each_next_measurement_is_an_interval_after_the_last() -> None:
    m = metric(initialDelay="2m", interval="1m", count=5)
    taken = measurements("SE", every=timedelta(seconds=75))
    assert next_measurement_at(m, T0, taken) == taken[-1].at + timedelta(minutes=1)
    assert next_measurement_at(m, T0, MetricRecord.of(taken)) == taken[-1].at + timedelta(minutes=1)


def test_no_measurement_is_due_once_the_verdict_is_final() -> None:
    assert next_measurement_at(metric(count=2), T0, measurements("SS")) is None
    assert next_measurement_at(metric(count=5), T0, measurements("F")) is None
    assert next_measurement_at(metric(), T0, measurements("EEEE")) is not None, "Error retries"
    assert next_measurement_at(metric(), T0, measurements("SSSSSSSS")) is not None


# --- properties ---------------------------------------------------------------------------

letters = st.text(alphabet="SFCIE", max_size=30)
limits = st.fixed_dictionaries(
    {
        "count": st.one_of(st.none(), st.integers(1, 10)),
        "failure_limit": st.integers(0, 3),
        "inconclusive_limit": st.integers(0, 3),
        "consecutive_error_limit": st.integers(1, 4),
    }
)
SEVERITY = {SUCCESSFUL: 1, INCONCLUSIVE: 2, ERROR: 3, FAILED: 4}


def verdicts_along(sequence: str, limit: dict[str, Any]) -> list[AnalysisVerdict]:
    folded, found = MetricRecord(), [verdict(MetricRecord(), **limit)]
    for measurement in measurements(sequence):
        folded = folded.add(measurement)
        found.append(verdict(folded, **limit))
    return found


@given(letters, limits)
def test_failed_is_sticky(sequence: str, limit: dict[str, Any]) -> None:
    along = verdicts_along(sequence, limit)
    if FAILED in along:
        assert all(v is FAILED for v in along[along.index(FAILED) :])


@given(letters, limits)
def test_an_error_never_turns_into_successful(sequence: str, limit: dict[str, Any]) -> None:
    along = verdicts_along(sequence, limit)
    # An Error measurement never completes a metric: success needs real measurements.
    for before, after, letter in zip(along, along[1:], sequence, strict=False):
        if letter == "E" and after is SUCCESSFUL:
            assert before is SUCCESSFUL


@given(letters, limits)
def test_a_final_verdict_only_gets_worse(sequence: str, limit: dict[str, Any]) -> None:
    done = [v for v in verdicts_along(sequence, limit) if v.done]
    assert [SEVERITY[v] for v in done] == sorted(SEVERITY[v] for v in done)


@given(letters, limits)
def test_error_lifts_when_measurements_work_again(sequence: str, limit: dict[str, Any]) -> None:
    along = verdicts_along(sequence + "S", limit)
    assert along[-1] is not ERROR


@given(letters, limits, st.data())
def test_more_failures_never_make_a_verdict_better(
    sequence: str, limit: dict[str, Any], data: st.DataObject
) -> None:
    # Successful turned Failed. (Inconclusive turned Failed may move a measurement from a spent
    # budget to one with room: the limits are separate on purpose.)
    successes = [index for index, letter in enumerate(sequence) if letter == "S"]
    if not successes:
        return
    index = data.draw(st.sampled_from(successes))
    for failure in "FC":
        worse = sequence[:index] + failure + sequence[index + 1 :]
        before, after = verdict(record(sequence), **limit), verdict(record(worse), **limit)
        assert after in (before, FAILED)


@given(letters, limits)
def test_failed_exactly_when_failures_exceed_the_limit(
    sequence: str, limit: dict[str, Any]
) -> None:
    is_failed = verdict(record(sequence), **limit) is FAILED
    failures = sequence.count("F") + sequence.count("C")
    assert is_failed == ("C" in sequence or failures > limit["failure_limit"])


@given(letters, st.integers(1, 12))
def test_the_history_is_bounded_and_the_counters_are_not(sequence: str, keep: int) -> None:
    kept = MetricRecord.of(measurements(sequence), keep=keep)
    assert [m.message for m in kept.recent] == list(sequence[-keep:] if sequence else "")
    assert kept.measured == len(sequence)
    assert verdict(kept, count=3) is verdict(record(sequence), count=3)


@given(st.lists(st.sampled_from(list(AnalysisVerdict)), max_size=6), st.randoms())
def test_the_analysis_verdict_ignores_the_order_of_metrics(
    verdicts: list[AnalysisVerdict], random: Any
) -> None:
    shuffled = list(verdicts)
    random.shuffle(shuffled)
    result = analysis_verdict(verdicts)
    assert analysis_verdict(shuffled) is result
    assert (result is SUCCESSFUL) == (bool(verdicts) and set(verdicts) == {SUCCESSFUL})
