"""Running a canary's analyses: which runs are active, which metrics are due, their verdicts.

The judgement itself is pure (``coalmine.analysis``); this module does the I/O around it:
it reads AnalysisTemplates, asks Prometheus, and keeps each run's record in the status (the
operator's only memory), so a restarted operator continues a run where it stood. A metric is
measured when it is due (initialDelay, then every interval); a reconcile that comes early
measures nothing, so reconciles may happen as often as they like.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from coalmine import machine as m
from coalmine import metrics as operator_metrics
from coalmine.analysis import limits, query
from coalmine.analysis.evaluate import (
    Measurement,
    MeasurementOutcome,
    Observation,
    ProviderError,
    QueryResult,
    evaluate,
)
from coalmine.analysis.prometheus import Prometheus
from coalmine.analysis.spec import (
    AnalysisRef,
    AnalysisTemplateSpec,
    BackgroundAnalysis,
    ResolvedMetric,
    render_metric,
    resolve,
)
from coalmine.api.errors import Problem, SpecError
from coalmine.api.resource import CanaryRollout
from coalmine.api.status import AnalysisRunStatus, MeasurementStatus, MetricCounts, MetricStatus
from coalmine.api.vocabulary import AnalysisVerdict, StepAction
from coalmine.kube import Kube
from coalmine.resources import ANALYSIS_TEMPLATES, CLUSTER_ANALYSIS_TEMPLATES

EVENT_REASONS = {
    MeasurementOutcome.FAILED: "AnalysisFailed",
    MeasurementOutcome.INCONCLUSIVE: "AnalysisInconclusive",
    MeasurementOutcome.ERROR: "MetricError",
}


@dataclass(frozen=True)
class Run:
    """An analysis that should be running now."""

    name: str
    ref: AnalysisRef
    path: str
    blocking: bool
    started_at: datetime


@dataclass
class Progress:
    """What one reconcile learnt about the analyses."""

    step: m.AnalysisObserved | None = None
    background: m.AnalysisObserved | None = None
    runs: list[AnalysisRunStatus] = field(default_factory=list)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    next_due: datetime | None = None


def refs(rollout: CanaryRollout) -> list[tuple[AnalysisRef, str, bool]]:
    """Every analysis the spec names, parsed; raises SpecError naming the field."""
    found: list[tuple[AnalysisRef, str, bool]] = []
    for index, step in enumerate(rollout.spec.steps):
        if step.action == StepAction.ANALYSIS and step.analysis is not None:
            path = f"spec.steps[{index}].analysis"
            found.append((AnalysisRef.from_object(step.analysis, path=path), path, True))
    if rollout.spec.analysis is not None:
        found.append(
            (
                BackgroundAnalysis.from_object(rollout.spec.analysis, path="spec.analysis"),
                "spec.analysis",
                False,
            )
        )
    return found


def _templates(
    kube: Kube, namespace: str, ref: AnalysisRef
) -> tuple[dict[str, AnalysisTemplateSpec], dict[str, AnalysisTemplateSpec]]:
    local: dict[str, AnalysisTemplateSpec] = {}
    cluster: dict[str, AnalysisTemplateSpec] = {}
    for template in ref.templates:
        resource = CLUSTER_ANALYSIS_TEMPLATES if template.cluster_scope else ANALYSIS_TEMPLATES
        obj = kube.get(resource, None if template.cluster_scope else namespace, template.name)
        if obj is None:
            continue  # resolve() reports the missing template, naming the field
        kind = resource.kind
        spec = AnalysisTemplateSpec.from_object(
            obj.get("spec") or {}, path=f"{kind}/{template.name}.spec"
        )
        (cluster if template.cluster_scope else local)[template.name] = spec
    return local, cluster


def metrics_of(
    kube: Kube, rollout: CanaryRollout, ref: AnalysisRef, path: str, blocking: bool
) -> tuple[ResolvedMetric, ...]:
    namespace = rollout.metadata.namespace or "default"
    local, cluster = _templates(kube, namespace, ref)
    return resolve(ref, path=path, templates=local, cluster_templates=cluster, blocking=blocking)


def validate(kube: Kube, rollout: CanaryRollout) -> None:
    """Every analysis resolves and every query renders: checked before any traffic moves.

    Raises SpecError naming the field (the metric, the template, the variable)."""
    variables = _variables(rollout, "stable", "canary")
    for ref, path, blocking in refs(rollout):
        for resolved in metrics_of(kube, rollout, ref, path, blocking):
            try:
                render_metric(resolved.metric, _with_args(variables, resolved))
            except query.QueryError as error:
                field = f"{resolved.path}.provider.prometheus.query"
                raise SpecError((Problem(field, str(error)),)) from None


def _variables(rollout: CanaryRollout, stable: str, canary: str) -> query.QueryVariables:
    return query.QueryVariables(
        namespace=rollout.metadata.namespace or "default",
        rollout=rollout.metadata.name,
        service=rollout.spec.service.name,
        stable_revision=stable,
        canary_revision=canary,
    )


def _with_args(variables: query.QueryVariables, resolved: ResolvedMetric) -> query.QueryVariables:
    return query.QueryVariables(
        namespace=variables.namespace,
        rollout=variables.rollout,
        service=variables.service,
        stable_revision=variables.stable_revision,
        canary_revision=variables.canary_revision,
        args=dict(resolved.args),
    )


def active_runs(rollout: CanaryRollout, now: datetime) -> list[Run]:
    """The runs that judge the canary at its current step."""
    status = rollout.status
    canary, stable = status.canary_revision, status.stable_revision
    if canary is None or stable is None or status.abort_reason is not None:
        return []
    if status.stage is not None and status.stage.value != "Steps":
        return []
    index = status.current_step_index or 0
    runs: list[Run] = []
    steps = rollout.spec.steps
    if index < len(steps) and steps[index].action == StepAction.ANALYSIS:
        step = steps[index]
        if step.analysis is not None:
            path = f"spec.steps[{index}].analysis"
            runs.append(
                Run(
                    name=f"step-{index + 1}",
                    ref=AnalysisRef.from_object(step.analysis, path=path),
                    path=path,
                    blocking=True,
                    started_at=status.step_started_at or now,
                )
            )
    if rollout.spec.analysis is not None:
        background = BackgroundAnalysis.from_object(rollout.spec.analysis, path="spec.analysis")
        if index >= background.starting_step:
            known = _known(rollout, "background")
            started = known.started_at if known is not None else now
            runs.append(Run("background", background, "spec.analysis", False, started))
    return runs


def _known(rollout: CanaryRollout, name: str) -> AnalysisRunStatus | None:
    for run in rollout.status.analysis or []:
        if run.name == name and run.revision == rollout.status.canary_revision:
            return run
    return None


def _record(status: MetricStatus | None) -> limits.MetricRecord:
    if status is None:
        return limits.MetricRecord()
    recent = tuple(
        Measurement(
            outcome=MeasurementOutcome(each.outcome),
            value=each.value,
            message=each.message,
            at=each.at,
            stable_value=each.stable_value,
        )
        for each in status.measurements
    )
    return limits.MetricRecord(
        **_counts(status), recent=recent, last_at=recent[-1].at if recent else None
    )


def _counts(metric: MetricCounts) -> dict[str, int]:
    return {name: getattr(metric, name) for name in MetricCounts.model_fields}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _metric_status(
    name: str,
    record: limits.MetricRecord,
    verdict: str,
    previous: MetricStatus | None = None,
) -> MetricStatus:
    # A measurement read back from the status has lost its judge: keep it as it was written.
    written = {each.at: each for each in previous.measurements} if previous is not None else {}
    return MetricStatus(
        name=name,
        verdict=verdict,
        **_counts(record),
        measurements=[written.get(each.at) or _measurement_status(each) for each in record.recent],
    )


def _measurement_status(measurement: Measurement) -> MeasurementStatus:
    judge = measurement.judge
    interval = judge.interval if judge is not None else None
    return MeasurementStatus(
        at=measurement.at,
        outcome=measurement.outcome.value,
        value=_finite(measurement.value),
        stable_value=_finite(measurement.stable_value),
        p_value=_finite(judge.p_value) if judge else None,
        effect_size=_finite(judge.effect_size) if judge else None,
        shift=_finite(interval.estimate) if interval else None,
        shift_low=_finite(interval.low) if interval else None,
        shift_high=_finite(interval.high) if interval else None,
        message=measurement.message,
    )


class Runner:
    """Measures what is due for one rollout, once per reconcile."""

    def __init__(self, kube: Kube, prometheus: Prometheus, default_address: str) -> None:
        self.kube = kube
        self.prometheus = prometheus
        self.default_address = default_address

    def _query(
        self, promql: str | None, resolved: ResolvedMetric, run: Run, now: datetime
    ) -> QueryResult | None:
        if promql is None:
            return None
        provider = resolved.metric.provider.prometheus
        address = provider.address or self.default_address
        timeout = provider.timeout_length.total_seconds()
        if resolved.metric.judge is not None:
            # The judge compares the distributions over the run so far, point by point.
            start = max(run.started_at, now - resolved.metric.interval_length * 20)
            return self.prometheus.range(
                promql, address=address, timeout=timeout, start=start, end=now, step_seconds=5
            )
        return self.prometheus.instant(promql, address=address, timeout=timeout)

    def measure(
        self, resolved: ResolvedMetric, rollout: CanaryRollout, run: Run, now: datetime
    ) -> Measurement:
        status = rollout.status
        variables = _with_args(
            _variables(rollout, status.stable_revision or "", status.canary_revision or ""),
            resolved,
        )
        try:
            queries = render_metric(resolved.metric, variables)
        except query.QueryError as error:
            return evaluate(
                resolved.metric, Observation(ProviderError(str(error))), at=now, args=resolved.args
            )
        canary = self._query(queries.canary, resolved, run, now)
        assert canary is not None
        observation = Observation(
            canary=canary,
            stable=self._query(queries.stable, resolved, run, now),
            canary_min_sample=self._instant(queries.canary_min_sample, resolved),
            stable_min_sample=self._instant(queries.stable_min_sample, resolved),
        )
        return evaluate(resolved.metric, observation, at=now, args=resolved.args)

    def _instant(self, promql: str | None, resolved: ResolvedMetric) -> QueryResult | None:
        if promql is None:
            return None
        provider = resolved.metric.provider.prometheus
        return self.prometheus.instant(
            promql,
            address=provider.address or self.default_address,
            timeout=provider.timeout_length.total_seconds(),
        )

    def progress(self, rollout: CanaryRollout, now: datetime) -> Progress:
        """Measure every due metric of every active run; the verdicts for the machine."""
        result = Progress()
        for run in active_runs(rollout, now):
            known = _known(rollout, run.name)
            if known is not None and known.started_at != run.started_at:
                known = None  # a new run of the same step (a retry): start afresh
            metrics = metrics_of(self.kube, rollout, run.ref, run.path, run.blocking)
            statuses, verdicts = [], []
            for resolved in metrics:
                previous = next(
                    (s for s in (known.metrics if known else []) if s.name == resolved.metric.name),
                    None,
                )
                record = _record(previous)
                verdict = limits.metric_verdict(resolved.metric, record)
                due = limits.next_measurement_at(resolved.metric, run.started_at, record)
                if due is not None and due <= now and not verdict.done:
                    measurement = self.measure(resolved, rollout, run, now)
                    operator_metrics.ANALYSIS_MEASUREMENTS.labels(measurement.outcome.value).inc()
                    record = record.add(measurement)
                    verdict = limits.metric_verdict(resolved.metric, record)
                    due = limits.next_measurement_at(resolved.metric, run.started_at, record)
                    reason = EVENT_REASONS.get(measurement.outcome)
                    if reason:
                        result.events.append(
                            (
                                reason,
                                f"{run.name} metric {resolved.metric.name}: {measurement.message}",
                                True,
                            )
                        )
                if due is not None and not verdict.done:
                    result.next_due = due if result.next_due is None else min(result.next_due, due)
                statuses.append(
                    _metric_status(resolved.metric.name, record, verdict.value, previous)
                )
                verdicts.append(verdict)
            overall = limits.analysis_verdict(verdicts)
            message = _explain(statuses, overall.value)
            result.runs.append(
                AnalysisRunStatus(
                    name=run.name,
                    revision=rollout.status.canary_revision or "",
                    started_at=run.started_at,
                    verdict=overall.value,
                    message=message,
                    metrics=statuses,
                )
            )
            observed = m.AnalysisObserved(AnalysisVerdict(overall.value), message)
            if run.blocking:
                result.step = observed
            else:
                result.background = observed
        return result


def _explain(metrics: list[MetricStatus], verdict: str) -> str:
    """The verdict in words: for a failure, the metric, its value and the condition."""
    for status in metrics:
        if status.verdict == verdict and status.measurements:
            last = status.measurements[-1]
            return f"metric {status.name}: {last.message}"
    counts = ", ".join(
        f"{s.name} {s.successful + s.failed + s.inconclusive} measured" for s in metrics
    )
    return counts or "no metric"


def has_analysis(rollout: CanaryRollout) -> bool:
    return rollout.spec.analysis is not None or any(
        step.action == StepAction.ANALYSIS for step in rollout.spec.steps
    )
