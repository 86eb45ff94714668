"""From measurements to verdicts: when a metric, and an analysis, has said enough.

Each measurement is one outcome; what the rollout does depends on how they add up against the
metric's limits. The rules, in precedence order (the first that holds is the verdict):

1. Failed: a critical failure (a Failed measurement of a `critical` metric that the judgement
   marked critical; see `analysis.evaluate`), whatever failureLimit says, or more Failed
   measurements than failureLimit. The canary is aborted at once.
2. Error: the latest consecutiveErrorLimit measurements were all Errors (Prometheus down, a
   query timing out). The rollout pauses; an analysis in Error never promotes. The metric is
   still measured at its interval, and once a measurement works again the Error lifts and the
   analysis resumes where it stood: an outage of the metric source is not evidence against the
   canary, and must not need a person to clear once it is over.
3. Inconclusive: more Inconclusive measurements than inconclusiveLimit. The rollout pauses.
4. Successful: `count` measurements judged (Successful, Failed or Inconclusive; an Error is a
   measurement that did not happen, retried at the next interval, and never counts towards
   success) and none of the above.
5. Running: otherwise; a metric without count runs until the rollout ends.

Every counter only grows, so Successful, Inconclusive and Failed are final, and later
measurements could only make them worse; the operator stops measuring a metric once it has one
of them. Error is the one verdict that is not final. An Error measurement never counts towards
success, so nothing turns an Error into Successful without count real measurements.

The counters are kept in a `MetricRecord` together with the last few measurements (the status
shows those, and must stay small); the verdict needs the counters only, so the history can be cut
without changing any decision.

An analysis is as bad as its worst metric: any Failed is Failed, else any Error is Error, else
any Inconclusive is Inconclusive, else Successful when every metric is, else Running.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from pydantic import ConfigDict, SkipValidation

from coalmine.analysis.evaluate import Measurement, MeasurementOutcome
from coalmine.analysis.spec import Metric
from coalmine.api.limits import MEASUREMENTS_LIMIT
from coalmine.api.status import MetricCounts
from coalmine.api.vocabulary import AnalysisVerdict


class MetricRecord(MetricCounts):
    """A metric's measurements so far: the counts of every one, the latest ones in full."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    recent: tuple[SkipValidation[Measurement], ...] = ()
    """The latest measurements, oldest first, at most the `keep` given to `add`."""
    last_at: datetime | None = None
    """When the latest measurement was taken."""

    @property
    def measured(self) -> int:
        """Measurements taken, Errors included."""
        return self.judged + self.errors

    @property
    def judged(self) -> int:
        """Measurements that judged the canary: Successful, Failed or Inconclusive."""
        return self.successful + self.failed + self.inconclusive

    def add(self, measurement: Measurement, *, keep: int = MEASUREMENTS_LIMIT) -> MetricRecord:
        """This record with one more measurement, keeping the latest `keep` (at least 1)."""
        if keep < 1:
            raise ValueError("keep at least the latest measurement")
        outcome = measurement.outcome
        consecutive = self.consecutive_errors + 1 if outcome is MeasurementOutcome.ERROR else 0
        return self.model_copy(
            update={
                "successful": self.successful + (outcome is MeasurementOutcome.SUCCESSFUL),
                "failed": self.failed + (outcome is MeasurementOutcome.FAILED),
                "critical_failures": self.critical_failures
                + (outcome is MeasurementOutcome.FAILED and measurement.critical),
                "inconclusive": self.inconclusive + (outcome is MeasurementOutcome.INCONCLUSIVE),
                "errors": self.errors + (outcome is MeasurementOutcome.ERROR),
                "consecutive_errors": consecutive,
                "longest_error_run": max(self.longest_error_run, consecutive),
                "recent": (*self.recent, measurement)[-keep:],
                "last_at": measurement.at,
            }
        )

    @classmethod
    def of(
        cls, measurements: Iterable[Measurement], *, keep: int = MEASUREMENTS_LIMIT
    ) -> MetricRecord:
        """The record of these measurements, oldest first."""
        record = cls()
        for measurement in measurements:
            record = record.add(measurement, keep=keep)
        return record


def verdict(
    record: MetricRecord,
    *,
    count: int | None,
    failure_limit: int = 0,
    inconclusive_limit: int = 0,
    consecutive_error_limit: int = 4,
) -> AnalysisVerdict:
    """The verdict of a record under these limits (see the module docstring)."""
    if record.critical_failures or record.failed > failure_limit:
        return AnalysisVerdict.FAILED
    if record.consecutive_errors >= consecutive_error_limit:
        return AnalysisVerdict.ERROR
    if record.inconclusive > inconclusive_limit:
        return AnalysisVerdict.INCONCLUSIVE
    if count is not None and record.judged >= count:
        return AnalysisVerdict.SUCCESSFUL
    return AnalysisVerdict.RUNNING


def metric_verdict(metric: Metric, record: MetricRecord | Sequence[Measurement]) -> AnalysisVerdict:
    """The verdict of a metric, from its record or from all its measurements."""
    if not isinstance(record, MetricRecord):
        record = MetricRecord.of(record)
    return verdict(
        record,
        count=metric.count,
        failure_limit=metric.failure_limit,
        inconclusive_limit=metric.inconclusive_limit,
        consecutive_error_limit=metric.consecutive_error_limit,
    )


_SEVERITY: Final = (
    AnalysisVerdict.FAILED,
    AnalysisVerdict.ERROR,
    AnalysisVerdict.INCONCLUSIVE,
)


def analysis_verdict(verdicts: Iterable[AnalysisVerdict]) -> AnalysisVerdict:
    """The verdict of an analysis from its metrics' verdicts.

    Any Failed, else any Error, else any Inconclusive; else Successful when every metric is;
    else Running. No metrics at all is Running: an analysis promotes nothing it did not measure.
    """
    seen = set(verdicts)
    for severe in _SEVERITY:
        if severe in seen:
            return severe
    if seen == {AnalysisVerdict.SUCCESSFUL}:
        return AnalysisVerdict.SUCCESSFUL
    return AnalysisVerdict.RUNNING


def next_measurement_at(
    metric: Metric, started: datetime, record: MetricRecord | Sequence[Measurement]
) -> datetime | None:
    """When the metric is measured next; None once its verdict is final.

    The first measurement is due initialDelay after the analysis started, each next one an
    interval after the previous one was taken (Errors included, so a failing query is retried
    at the metric's pace, not in a loop). Counting from the previous measurement rather than
    from a fixed grid means an operator that was down does not catch up with a burst.
    """
    if not isinstance(record, MetricRecord):
        record = MetricRecord.of(record)
    if metric_verdict(metric, record).done:
        return None
    if record.last_at is None:
        return started + metric.initial_delay_length
    return record.last_at + metric.interval_length
