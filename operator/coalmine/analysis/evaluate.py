"""One measurement judged: the provider's raw answer in, an outcome out.

The provider (`analysis.prometheus`) only fetches; everything that decides is here, on plain
data, so each rule has a test: the provider hands over what each query returned as a `Sample`
(one value per series, or every point of a range query for a judge) or a `ProviderError`, and
`evaluate` returns a `Measurement` with one of four outcomes.

The rules, in the order they apply (the first that applies decides):

1. Error: a query failed (`ProviderError`), an input the metric needs is missing, or an instant
   query returned more than one series. A metric is one number; several series mean the query
   forgot to aggregate (`sum(...)`), and picking one, or summing them behind the user's back,
   would judge something nobody wrote. Errors are checked across all the metric's queries
   before anything else, so no policy can turn a failed query into a success.
2. No data: an empty vector, NaN, +Inf or -Inf (from either side of a baseline metric, or an
   all-NaN judge sample), or a minSample value below its minimum. The metric's noData policy
   decides: Inconclusive (default), Fail, or Pass; the message says which input had no data and
   which policy applied. NaN and ±Inf never reach a condition: PromQL produces them for
   0/0 (no traffic in a ratio) and x/0, which say "no data", not "a huge error rate". With
   `nanStrategy: replace` a NaN from the metric's own query is 0 instead (no traffic, no
   errors), before this rule; minSample's NaN, ±Inf and empty vectors stay no data.
3. The judgement: thresholdRange (Successful inside [min, max], bounds included, else Failed),
   the CEL conditions (truth table below), or the Mann-Whitney judge (pass, fail, inconclusive).

A Failed measurement of a `critical` metric is marked critical (the metric then fails at once,
see `analysis.limits`), whichever rule failed it, no data with `noData: Fail` included; a
judge's failure only when it reached the critical thresholds or its effect was undefined.

Truth table of the conditions (F = failureCondition, S = successCondition, `-` = not set, `!` =
evaluation error). F is evaluated first, and true means Failed whatever S would say: a failure
signal is acted on even when the success expression is broken. Otherwise any error is Error, so
an error never yields Successful:

    S      F      outcome
    true   -      Successful
    false  -      Failed
    -      true   Failed
    -      false  Successful
    any    true   Failed
    true   false  Successful
    false  false  Inconclusive
    !      false  Error
    any    !      Error
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Final

from coalmine.analysis.cel import (
    FAILURE_CONDITION,
    SUCCESS_CONDITION,
    ConditionError,
    ConditionEvalError,
    compile_condition,
    evaluate_condition,
)
from coalmine.analysis.judge import EffectMeasure, JudgeResult, Verdict, mann_whitney
from coalmine.analysis.spec import Judgement, Metric, NanStrategy, NoDataPolicy
from coalmine.api.types import DocumentedEnum

_NO_ARGS: Mapping[str, str] = MappingProxyType({})


class MeasurementOutcome(DocumentedEnum):
    """What one measurement of a metric says about the canary."""

    SUCCESSFUL = "Successful", "the canary met the metric's judgement."
    FAILED = "Failed", "the canary did not; counted against failureLimit."
    INCONCLUSIVE = (
        "Inconclusive",
        "neither (conditions both false, a judge with too few points, or no data with the "
        "default policy); counted against inconclusiveLimit.",
    )
    ERROR = (
        "Error",
        "the measurement itself failed (query error, several series, a condition that cannot "
        "be evaluated); retried next interval and counted against consecutiveErrorLimit.",
    )


@dataclass(frozen=True)
class Sample:
    """What one query returned: a value per series of an instant vector, or every point of a
    range query (judge metrics). An empty sequence is an empty vector."""

    values: Sequence[float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(float(value) for value in self.values))


@dataclass(frozen=True)
class ProviderError:
    """A query that did not answer: timeout, HTTP error, PromQL error; `message` says which."""

    message: str


QueryResult = Sample | ProviderError


@dataclass(frozen=True)
class Observation:
    """Everything the provider fetched for one measurement of one metric.

    `stable` is needed by baseline metrics, the min-sample results by metrics with minSample
    (the stable one for baseline metrics with minSample only).
    """

    canary: QueryResult
    stable: QueryResult | None = None
    canary_min_sample: QueryResult | None = None
    stable_min_sample: QueryResult | None = None


@dataclass(frozen=True)
class Measurement:
    """The outcome of one measurement, as recorded in the status."""

    outcome: MeasurementOutcome
    value: float | None
    """The canary's value; None without data. A judge's is what its effect measure compares:
    the mean of the canary's points for meanRatio, their median otherwise."""
    message: str
    at: datetime
    stable_value: float | None = None
    """The stable revision's value for baseline metrics (a judge: its mean or median)."""
    judge: JudgeResult | None = field(default=None, compare=False)
    """The judge's numbers (p-value, effect size, the shift's interval) for judge metrics."""
    critical: bool = False
    """A Failed measurement of a critical metric that aborts the canary at once, whatever
    failureLimit says."""


class _MeasurementError(Exception):
    """The measurement is an Error; the argument says why."""


class _NoDataError(Exception):
    """The measurement has no usable data; the argument says which input and why."""


def evaluate(
    metric: Metric,
    observation: Observation,
    *,
    at: datetime,
    args: Mapping[str, str] = _NO_ARGS,
) -> Measurement:
    """Judge one measurement of `metric` (see the module docstring for the rules)."""

    def outcome(
        kind: MeasurementOutcome,
        message: str,
        value: float | None = None,
        stable: float | None = None,
        judge: JudgeResult | None = None,
    ) -> Measurement:
        return Measurement(kind, value, message, at, stable_value=stable, judge=judge)

    try:
        inputs = _inputs(metric, observation)
    except _MeasurementError as error:
        return outcome(MeasurementOutcome.ERROR, str(error))
    try:
        for what, result in inputs.min_samples:
            _check_min_sample(metric, what, result)
        if metric.judgement is Judgement.JUDGE:
            return _judge(metric, inputs, at)
        nan = metric.nan_strategy
        canary = _single(inputs.canary, "canary", nan=nan)
        stable = _single(inputs.stable, "stable", nan=nan) if inputs.stable is not None else None
    except _NoDataError as no_data:
        return _no_data(metric, str(no_data), at)
    if metric.threshold_range is not None:
        bounds = metric.threshold_range
        if bounds.contains(canary):
            return outcome(
                MeasurementOutcome.SUCCESSFUL, f"{canary:g} is within {_range(metric)}", canary
            )
        return _critical(
            metric,
            outcome(MeasurementOutcome.FAILED, f"{canary:g} is outside {_range(metric)}", canary),
        )
    kind, message = _conditions(metric, canary, stable, args)
    return _critical(metric, outcome(kind, message, canary, stable))


def _critical(metric: Metric, measurement: Measurement) -> Measurement:
    # Every Failed measurement of a critical metric is critical, but a judge's: the judge says
    # whether its failure reached the critical thresholds.
    if not metric.critical or measurement.outcome is not MeasurementOutcome.FAILED:
        return measurement
    if measurement.judge is not None and not measurement.judge.critical:
        return measurement
    return replace(
        measurement, critical=True, message=f"{measurement.message}; critical: aborts at once"
    )


@dataclass(frozen=True)
class _Inputs:
    canary: Sample
    stable: Sample | None
    min_samples: tuple[tuple[str, Sample], ...]


def _inputs(metric: Metric, observation: Observation) -> _Inputs:
    # Every way a measurement can be an Error, over all inputs, before any no-data rule: with
    # noData: Pass, checking the canary's emptiness first would turn a failed stable query
    # into a success.
    def needed(result: QueryResult | None, what: str, series_limit: bool) -> Sample:
        if result is None:
            raise _MeasurementError(
                f"{what}: no result was fetched (the operator did not run the query)"
            )
        if isinstance(result, ProviderError):
            raise _MeasurementError(f"{what}: query failed: {result.message}")
        if series_limit and len(result.values) > 1:
            raise _MeasurementError(
                f"{what}: the query returned {len(result.values)} series; a metric must return "
                "exactly one (aggregate it, e.g. with sum() or max())"
            )
        return result

    single = metric.judgement is not Judgement.JUDGE
    canary = needed(observation.canary, "canary", single)
    stable = needed(observation.stable, "stable", single) if metric.baseline else None
    min_samples: list[tuple[str, Sample]] = []
    if metric.min_sample is not None:
        min_samples.append(
            ("canary minSample", needed(observation.canary_min_sample, "canary minSample", True))
        )
        if metric.baseline:
            min_samples.append(
                (
                    "stable minSample",
                    needed(observation.stable_min_sample, "stable minSample", True),
                )
            )
    return _Inputs(canary, stable, tuple(min_samples))


def _single(sample: Sample, what: str, *, nan: NanStrategy = NanStrategy.REMOVE) -> float:
    if not sample.values:
        raise _NoDataError(f"{what}: the query returned an empty vector")
    value = sample.values[0]
    if math.isnan(value) and nan is NanStrategy.REPLACE:
        return 0.0
    if math.isnan(value):
        raise _NoDataError(f"{what}: the query returned NaN")
    if math.isinf(value):
        raise _NoDataError(f"{what}: the query returned {value:+}")
    return value


def _check_min_sample(metric: Metric, what: str, sample: Sample) -> None:
    assert metric.min_sample is not None  # only called for metrics with minSample
    minimum = metric.min_sample.min
    value = _single(sample, what)
    if value < minimum:
        raise _NoDataError(f"{what}: {value:g} is below the minimum of {minimum:g}")


def _no_data(metric: Metric, reason: str, at: datetime) -> Measurement:
    kind = {
        NoDataPolicy.INCONCLUSIVE: MeasurementOutcome.INCONCLUSIVE,
        NoDataPolicy.FAIL: MeasurementOutcome.FAILED,
        NoDataPolicy.PASS: MeasurementOutcome.SUCCESSFUL,
    }[metric.no_data]
    return _critical(
        metric,
        Measurement(kind, None, f"no data ({reason}); noData: {metric.no_data} → {kind}", at),
    )


def _range(metric: Metric) -> str:
    assert metric.threshold_range is not None
    low, high = metric.threshold_range.min, metric.threshold_range.max
    return f"[{'-inf' if low is None else f'{low:g}'}, {'+inf' if high is None else f'{high:g}'}]"


def _values(metric: Metric, canary: float, stable: float | None) -> str:
    if metric.baseline and stable is not None:
        return f"canary={canary:g}, stable={stable:g}"
    return f"result={canary:g}"


# (successCondition, failureCondition) -> outcome; None is "not set". failureCondition is
# evaluated first and decides alone when true, so True for it needs no row per success value.
_TRUTH_TABLE: Final[Mapping[tuple[bool | None, bool | None], MeasurementOutcome]] = {
    (True, None): MeasurementOutcome.SUCCESSFUL,
    (False, None): MeasurementOutcome.FAILED,
    (None, False): MeasurementOutcome.SUCCESSFUL,
    (True, False): MeasurementOutcome.SUCCESSFUL,
    (False, False): MeasurementOutcome.INCONCLUSIVE,
}


def _conditions(
    metric: Metric, canary: float, stable: float | None, args: Mapping[str, str]
) -> tuple[MeasurementOutcome, str]:
    values = _values(metric, canary, stable)

    def run(name: str, text: str | None) -> bool | None:
        if text is None:
            return None
        condition = compile_condition(text, metric=metric.name, field=name)
        return evaluate_condition(condition, result=canary, stable=stable, args=args)

    try:
        failed = run(FAILURE_CONDITION, metric.failure_condition)
        if failed:
            return MeasurementOutcome.FAILED, f"failureCondition is true ({values})"
        succeeded = run(SUCCESS_CONDITION, metric.success_condition)
    except ConditionError as error:
        return MeasurementOutcome.ERROR, str(error)
    except ConditionEvalError as error:
        return MeasurementOutcome.ERROR, f"condition failed ({values}): {error}"
    said = [
        f"{name} is {str(value).lower()}"
        for name, value in ((SUCCESS_CONDITION, succeeded), (FAILURE_CONDITION, failed))
        if value is not None
    ]
    return _TRUTH_TABLE[succeeded, failed], f"{' and '.join(said)} ({values})"


def _points(sample: Sample, nan: NanStrategy) -> tuple[list[float], str]:
    # A judge's points after the NaN strategy, and what it did to them, for the message.
    points: list[float] = []
    replaced = dropped = 0
    for value in sample.values:
        if math.isnan(value) and nan is NanStrategy.REPLACE:
            points.append(0.0)
            replaced += 1
        elif math.isfinite(value):
            points.append(value)
        else:
            dropped += 1
    said = [f"{replaced} NaN replaced by 0"] if replaced else []
    said += [f"{dropped} NaN/Inf dropped"] if dropped else []
    return points, ", ".join(said)


def _judge(metric: Metric, inputs: _Inputs, at: datetime) -> Measurement:
    assert metric.judge is not None
    assert inputs.stable is not None
    canary, canary_note = _points(inputs.canary, metric.nan_strategy)
    stable, stable_note = _points(inputs.stable, metric.nan_strategy)
    for what, points, note in (("canary", canary, canary_note), ("stable", stable, stable_note)):
        if not points:
            raise _NoDataError(f"{what}: no finite points{f' ({note})' if note else ''}")
    test = metric.judge.mann_whitney
    result = mann_whitney(
        canary,
        stable,
        confidence=test.confidence,
        alternative=test.direction.alternative,
        min_points=test.min_points,
        measure=test.effect_size.measure,
        thresholds=test.effect_size.thresholds,
    )
    kind = {
        Verdict.PASS: MeasurementOutcome.SUCCESSFUL,
        Verdict.FAIL: MeasurementOutcome.FAILED,
        Verdict.INCONCLUSIVE: MeasurementOutcome.INCONCLUSIVE,
    }[result.verdict]
    notes = "; ".join(
        f"{what}: {note}"
        for what, note in (("canary", canary_note), ("stable", stable_note))
        if note
    )
    typical = (
        statistics.fmean
        if test.effect_size.measure is EffectMeasure.MEAN_RATIO
        else statistics.median
    )
    return _critical(
        metric,
        Measurement(
            kind,
            typical(canary),
            f"judge {result.verdict}: {result.message}{f' ({notes})' if notes else ''}",
            at,
            stable_value=typical(stable),
            judge=result,
        ),
    )
