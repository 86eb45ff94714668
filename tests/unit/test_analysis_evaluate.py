"""One measurement judged: the truth table, the no-data table and the error rules, as tables.

docs/analysis.md publishes the same tables; a change to a rule shows up here first.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.analysis.evaluate import (
    Measurement,
    MeasurementOutcome,
    Observation,
    ProviderError,
    QueryResult,
    Sample,
    evaluate,
)
from coalmine.analysis.judge import Verdict
from coalmine.analysis.spec import Metric

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
QUERY = 'sum(rate(x{coalmine_revision="{{revision}}"}[{{interval}}]))'
ERROR = "int(result) / 0 > 1"  # valid, but fails at every evaluation

S = MeasurementOutcome.SUCCESSFUL
F = MeasurementOutcome.FAILED
I = MeasurementOutcome.INCONCLUSIVE  # noqa: E741 - one letter per outcome keeps the tables readable
E = MeasurementOutcome.ERROR


def metric(**fields: Any) -> Metric:
    base: dict[str, Any] = {"name": "error-rate", "provider": {"prometheus": {"query": QUERY}}}
    return Metric.model_validate({**base, **{k: v for k, v in fields.items() if v is not None}})


def judge_metric(**judge: Any) -> Metric:
    return metric(baseline=True, judge={"mannWhitney": {"minPoints": 5, **judge}})


def one(value: float) -> Sample:
    return Sample([value])


def measure(m: Metric, observation: Observation, **args: str) -> Measurement:
    return evaluate(m, observation, at=AT, args=args)


# --- the truth table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "expected"),
    [
        ("true", None, S),
        ("false", None, F),
        (ERROR, None, E),
        (None, "true", F),
        (None, "false", S),
        (None, ERROR, E),
        ("true", "true", F),
        ("false", "true", F),
        (ERROR, "true", F),  # a failure signal is acted on even beside a broken success
        ("true", "false", S),
        ("false", "false", I),
        (ERROR, "false", E),
        ("true", ERROR, E),
        ("false", ERROR, E),
        (ERROR, ERROR, E),
    ],
)
def test_the_truth_table(
    success: str | None, failure: str | None, expected: MeasurementOutcome
) -> None:
    result = measure(
        metric(successCondition=success, failureCondition=failure), Observation(one(0.5))
    )
    assert result.outcome is expected
    assert result.value == 0.5
    assert result.at == AT
    if expected is E:
        assert "condition failed (result=0.5)" in result.message


def test_the_messages_say_which_condition_decided() -> None:
    both = metric(successCondition="result < 0.1", failureCondition="result > 0.2")
    cases = {
        0.05: "successCondition is true and failureCondition is false (result=0.05)",
        0.15: "successCondition is false and failureCondition is false (result=0.15)",
        0.25: "failureCondition is true (result=0.25)",
    }
    for value, message in cases.items():
        assert measure(both, Observation(one(value))).message == message


def test_conditions_see_the_arguments() -> None:
    m = metric(successCondition="result < double(args.limit)")
    assert measure(m, Observation(one(0.5)), limit="1.0").outcome is S
    assert measure(m, Observation(one(0.5)), limit="0.1").outcome is F


def test_baseline_conditions_see_both_sides() -> None:
    m = metric(baseline=True, successCondition="canary <= stable * 1.1")
    good = measure(m, Observation(one(1.05), stable=one(1.0)))
    assert (good.outcome, good.value, good.stable_value) == (S, 1.05, 1.0)
    assert "canary=1.05, stable=1" in good.message
    assert measure(m, Observation(one(1.2), stable=one(1.0))).outcome is F


# --- thresholdRange -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "value", "expected"),
    [
        ({"min": 0.0, "max": 1.0}, 0.5, S),
        ({"min": 0.0, "max": 1.0}, 0.0, S),
        ({"min": 0.0, "max": 1.0}, 1.0, S),
        ({"min": 0.0, "max": 1.0}, 1.0000001, F),
        ({"min": 0.0, "max": 1.0}, -0.1, F),
        ({"max": 0.05}, -1e300, S),
        ({"min": 100}, 99.0, F),
    ],
)
def test_threshold_range_includes_its_bounds(
    bounds: dict[str, float], value: float, expected: MeasurementOutcome
) -> None:
    result = measure(metric(thresholdRange=bounds), Observation(one(value)))
    assert result.outcome is expected
    assert ("is within" if expected is S else "is outside") in result.message


# --- no data ------------------------------------------------------------------------------

ENOUGH = one(100.0)
NO_DATA_INPUTS = {
    "empty": (
        Observation(Sample([]), canary_min_sample=ENOUGH),
        "canary: the query returned an empty vector",
    ),
    "nan": (Observation(one(math.nan), canary_min_sample=ENOUGH), "canary: the query returned NaN"),
    "+inf": (
        Observation(one(math.inf), canary_min_sample=ENOUGH),
        "canary: the query returned +inf",
    ),
    "-inf": (
        Observation(one(-math.inf), canary_min_sample=ENOUGH),
        "canary: the query returned -inf",
    ),
    "min-sample-low": (
        Observation(one(0.5), canary_min_sample=one(3.0)),
        "canary minSample: 3 is below the minimum of 10",
    ),
    "min-sample-empty": (
        Observation(one(0.5), canary_min_sample=Sample([])),
        "canary minSample: the query returned an empty vector",
    ),
    "min-sample-nan": (
        Observation(one(0.5), canary_min_sample=one(math.nan)),
        "canary minSample: the query returned NaN",
    ),
}


@pytest.mark.parametrize("case", list(NO_DATA_INPUTS))
@pytest.mark.parametrize(
    ("policy", "expected"),
    [(None, I), ("Inconclusive", I), ("Fail", F), ("Pass", S)],
)
def test_the_no_data_table(case: str, policy: str | None, expected: MeasurementOutcome) -> None:
    observation, reason = NO_DATA_INPUTS[case]
    m = metric(
        successCondition="result < 1.0",
        noData=policy,
        minSample={"query": "sum(n)", "min": 10},
    )
    result = measure(m, observation)
    assert result.outcome is expected
    assert result.value is None
    assert result.message == f"no data ({reason}); noData: {policy or 'Inconclusive'} → {expected}"


def test_enough_samples_is_data() -> None:
    m = metric(successCondition="result < 1.0", minSample={"query": "sum(n)", "min": 10})
    assert measure(m, Observation(one(0.5), canary_min_sample=one(10.0))).outcome is S


def test_no_data_on_the_stable_side_is_no_data() -> None:
    m = metric(baseline=True, successCondition="canary <= stable", noData="Fail")
    result = measure(m, Observation(one(1.0), stable=one(math.nan)))
    assert result.outcome is F
    assert "stable: the query returned NaN" in result.message


def test_a_baseline_min_sample_is_checked_on_both_sides() -> None:
    m = metric(
        baseline=True,
        successCondition="canary <= stable",
        minSample={"query": "sum(n)", "min": 10},
    )
    result = measure(
        m,
        Observation(one(1.0), stable=one(1.0), canary_min_sample=one(50), stable_min_sample=one(2)),
    )
    assert result.outcome is I
    assert "stable minSample: 2 is below the minimum of 10" in result.message


def test_a_zero_value_is_data_not_no_data() -> None:
    assert measure(metric(successCondition="result == 0.0"), Observation(one(0.0))).outcome is S


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "observation", "message"),
    [
        ({}, Observation(ProviderError("timeout after 10s")), "canary: query failed: timeout"),
        (
            {},
            Observation(Sample([0.1, 0.2, 0.3])),
            "canary: the query returned 3 series; a metric must return exactly one",
        ),
        ({"baseline": True}, Observation(one(1.0)), "stable: no result was fetched"),
        (
            {"baseline": True},
            Observation(one(1.0), stable=ProviderError("HTTP 503")),
            "stable: query failed: HTTP 503",
        ),
        (
            {"minSample": {"query": "n", "min": 1}},
            Observation(one(1.0)),
            "canary minSample: no result was fetched",
        ),
        (
            {"minSample": {"query": "n", "min": 1}},
            Observation(one(1.0), canary_min_sample=Sample([5.0, 6.0])),
            "canary minSample: the query returned 2 series",
        ),
        # An error anywhere beats no data anywhere: with noData Pass, a broken stable query
        # must not become a success because the canary side happened to be empty.
        (
            {"baseline": True, "noData": "Pass"},
            Observation(Sample([]), stable=ProviderError("HTTP 500")),
            "stable: query failed",
        ),
    ],
)
def test_errors(fields: dict[str, Any], observation: Observation, message: str) -> None:
    condition = "canary <= stable" if fields.get("baseline") else "result < 1.0"
    result = measure(metric(successCondition=condition, **fields), observation)
    assert result.outcome is E
    assert message in result.message
    assert result.value is None


def test_an_unvalidated_broken_condition_is_an_error_not_a_crash() -> None:
    m = metric(successCondition="true").model_copy(update={"success_condition": "result <"})
    result = measure(m, Observation(one(1.0)))
    assert result.outcome is E
    assert "does not parse" in result.message


QUERY_RESULTS: st.SearchStrategy[QueryResult] = st.one_of(
    st.builds(ProviderError, st.text(max_size=10)),
    st.builds(Sample, st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3)),
)


@given(
    st.sampled_from(["Inconclusive", "Fail", "Pass"]),
    st.data(),
    st.sampled_from(["true", "false"]),
)
def test_an_error_never_yields_successful(policy: str, data: st.DataObject, success: str) -> None:
    m = metric(
        baseline=True,
        successCondition=success,
        noData=policy,
        minSample={"query": "n", "min": 1},
    )
    fields = ["canary", "stable", "canary_min_sample", "stable_min_sample"]
    values = {name: data.draw(QUERY_RESULTS, label=name) for name in fields}
    result = measure(m, Observation(**values))
    if any(isinstance(value, ProviderError) for value in values.values()):
        assert result.outcome is E
    if result.outcome is S:
        assert all(isinstance(value, Sample) for value in values.values())


# --- the judge ----------------------------------------------------------------------------

STABLE = [100.0 + (i * 7) % 13 for i in range(30)]


def test_the_judge_fails_a_worse_canary() -> None:
    canary = Sample([value * 1.5 for value in STABLE])
    result = measure(judge_metric(), Observation(canary, stable=Sample(STABLE)))
    assert result.outcome is F
    assert result.judge is not None
    assert result.judge.verdict is Verdict.FAIL
    assert result.judge.p_value < 1e-6
    assert result.stable_value is not None
    assert result.value == pytest.approx(1.5 * result.stable_value)
    assert result.message.startswith("judge fail: ")


def test_the_judge_passes_a_similar_canary() -> None:
    result = measure(judge_metric(), Observation(Sample(STABLE[::-1]), stable=Sample(STABLE)))
    assert result.outcome is S
    assert result.judge is not None
    assert result.judge.p_value > 0.05


def test_the_judge_is_inconclusive_below_min_points() -> None:
    result = measure(judge_metric(minPoints=50), Observation(Sample(STABLE), stable=Sample(STABLE)))
    assert result.outcome is I


def test_the_judge_drops_non_finite_points_and_says_so() -> None:
    canary = Sample([*(value * 1.5 for value in STABLE), math.nan, math.inf])
    result = measure(judge_metric(), Observation(canary, stable=Sample([*STABLE, -math.inf])))
    assert result.outcome is F
    assert result.judge is not None
    assert (result.judge.n_canary, result.judge.n_stable) == (30, 30)
    assert result.message.endswith("(canary: 2 NaN/Inf dropped; stable: 1 NaN/Inf dropped)")


# Per-interval error ratios: 0/0 (no request in the interval) is NaN.
QUIET_CANARY = [math.nan] * 10 + [0.0] * 14 + [0.02, 0.05, 0.01, 0.04, 0.03, 0.02]
QUIET_STABLE = [math.nan] * 10 + [0.0] * 19 + [0.01]


def test_replace_counts_a_nan_point_as_0() -> None:
    removed = measure(
        judge_metric(), Observation(Sample(QUIET_CANARY), stable=Sample(QUIET_STABLE))
    )
    replaced = measure(
        metric(baseline=True, nanStrategy="replace", judge={"mannWhitney": {"minPoints": 5}}),
        Observation(Sample(QUIET_CANARY), stable=Sample(QUIET_STABLE)),
    )
    assert removed.judge is not None
    assert replaced.judge is not None
    assert (removed.judge.n_canary, replaced.judge.n_canary) == (20, 30)
    assert "(canary: 10 NaN replaced by 0; stable: 10 NaN replaced by 0)" in replaced.message
    # Both fail: the canary errs in 6 intervals, the stable in 1; the means are the canary's
    # and the stable's error ratios over the points (NaN as 0 lowers both).
    assert (removed.outcome, replaced.outcome) == (F, F)
    assert replaced.value == pytest.approx(0.17 / 30)
    assert replaced.stable_value == pytest.approx(0.01 / 30)
    assert replaced.judge.effect_size == pytest.approx(17.0)


def test_replace_makes_a_nan_value_0_for_a_condition() -> None:
    m = metric(successCondition="result < 0.01", nanStrategy="replace")
    result = measure(m, Observation(one(math.nan)))
    assert (result.outcome, result.value) == (S, 0.0)
    assert result.message == "successCondition is true (result=0)"


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        (Observation(one(math.inf), canary_min_sample=ENOUGH), "canary: the query returned +inf"),
        (Observation(Sample([]), canary_min_sample=ENOUGH), "canary: the query returned an empty"),
        (
            Observation(one(math.nan), canary_min_sample=one(math.nan)),
            "canary minSample: the query returned NaN",
        ),
    ],
)
def test_replace_leaves_inf_empty_and_min_sample_to_the_no_data_policy(
    observation: Observation, reason: str
) -> None:
    m = metric(
        successCondition="result < 0.01",
        nanStrategy="replace",
        minSample={"query": "n", "min": 1},
        noData="Fail",
    )
    result = measure(m, observation)
    assert result.outcome is F
    assert reason in result.message


def test_replace_keeps_an_infinite_judge_point_out() -> None:
    m = metric(baseline=True, nanStrategy="replace", judge={"mannWhitney": {"minPoints": 5}})
    result = measure(m, Observation(Sample([math.inf] * 3), stable=Sample(STABLE)))
    assert result.outcome is I
    assert "canary: no finite points (3 NaN/Inf dropped)" in result.message


# --- critical metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "observation", "outcome", "critical"),
    [
        pytest.param({}, Observation(one(0.5)), F, True, id="failed-condition"),
        pytest.param({}, Observation(one(0.001)), S, False, id="successful"),
        pytest.param(
            {"thresholdRange": {"max": 0.01}, "successCondition": None},
            Observation(one(0.5)),
            F,
            True,
            id="failed-range",
        ),
        pytest.param({"noData": "Fail"}, Observation(Sample([])), F, True, id="no-data-fail"),
        pytest.param(
            {"noData": "Inconclusive"}, Observation(Sample([])), I, False, id="no-data-inconclusive"
        ),
        pytest.param({}, Observation(ProviderError("down")), E, False, id="error"),
    ],
)
def test_every_failure_of_a_critical_metric_is_critical(
    fields: dict[str, Any], observation: Observation, outcome: MeasurementOutcome, critical: bool
) -> None:
    fields = {"successCondition": "result < 0.01", **fields}
    result = measure(metric(critical=True, **fields), observation)
    assert (result.outcome, result.critical) == (outcome, critical)
    assert result.message.endswith("; critical: aborts at once") is critical
    plain = measure(metric(**fields), observation)
    assert (plain.outcome, plain.critical) == (outcome, False)


def test_a_critical_judge_failure_needs_the_critical_threshold() -> None:
    effect = {"allowedIncrease": 1.1, "criticalIncrease": 1.4}
    m = metric(
        baseline=True,
        critical=True,
        failureLimit=1,
        count=3,
        judge={"mannWhitney": {"minPoints": 5, "effectSize": effect}},
    )
    worse = measure(m, Observation(Sample([v * 1.2 for v in STABLE]), stable=Sample(STABLE)))
    assert (worse.outcome, worse.critical) == (F, False)
    much_worse = measure(m, Observation(Sample([v * 1.5 for v in STABLE]), stable=Sample(STABLE)))
    assert (much_worse.outcome, much_worse.critical) == (F, True)
    assert "critical: aborts at once" in much_worse.message


@pytest.mark.parametrize(
    ("canary", "stable", "reason"),
    [
        ([], STABLE, "canary: no finite points"),
        (STABLE, [math.nan, math.nan], "stable: no finite points (2 NaN/Inf dropped)"),
    ],
)
@pytest.mark.parametrize(("policy", "expected"), [("Inconclusive", I), ("Fail", F), ("Pass", S)])
def test_a_judge_without_points_follows_the_no_data_policy(
    canary: list[float],
    stable: list[float],
    reason: str,
    policy: str,
    expected: MeasurementOutcome,
) -> None:
    m = metric(baseline=True, noData=policy, judge={"mannWhitney": {}})
    result = measure(m, Observation(Sample(canary), stable=Sample(stable)))
    assert result.outcome is expected
    assert reason in result.message


def test_a_provider_error_beats_the_judge() -> None:
    result = measure(judge_metric(), Observation(Sample(STABLE), stable=ProviderError("down")))
    assert result.outcome is E
