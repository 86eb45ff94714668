"""The analysis models: defaults, every validation rule naming its field, and template resolution.

Every problem the operator reports as InvalidSpec must name the field the user got wrong, and
must be found before any traffic moves; these tables pin both.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine.analysis.judge import Alternative, EffectMeasure, Thresholds
from coalmine.analysis.spec import (
    CLUSTER_TEMPLATE_KIND,
    AnalysisRef,
    AnalysisTemplateSpec,
    BackgroundAnalysis,
    Direction,
    Judgement,
    Metric,
    NanStrategy,
    NoDataPolicy,
    ResolvedMetric,
    resolve,
)
from coalmine.api.errors import SpecError

QUERY = 'sum(rate(http_requests_total{namespace="{{namespace}}"}[{{interval}}]))'
BASELINE_QUERY = 'sum(rate(http_requests_total{coalmine_revision="{{revision}}"}[{{interval}}]))'


def metric(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "error-rate",
        "provider": {"prometheus": {"query": QUERY}},
        "successCondition": "result < 0.01",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def template_error(*metrics: dict[str, Any], args: list[dict[str, Any]] | None = None) -> SpecError:
    with pytest.raises(SpecError) as caught:
        AnalysisTemplateSpec.from_object({"args": args or [], "metrics": list(metrics)})
    return caught.value


def test_a_minimal_metric_gets_every_default() -> None:
    parsed = Metric.model_validate(metric())
    assert parsed.to_dict() == {
        "name": "error-rate",
        "interval": "30s",
        "initialDelay": "0s",
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        "consecutiveErrorLimit": 4,
        "provider": {"prometheus": {"query": QUERY, "timeout": "10s"}},
        "successCondition": "result < 0.01",
        "noData": "Inconclusive",
        "baseline": False,
        "critical": False,
        "nanStrategy": "remove",
    }
    assert parsed.count is None
    assert parsed.judgement is Judgement.CONDITIONS
    assert parsed.interval_length == timedelta(seconds=30)
    assert parsed.initial_delay_length == timedelta(0)
    assert parsed.provider.prometheus.timeout_length == timedelta(seconds=10)


def test_a_full_metric_round_trips() -> None:
    full = metric(
        interval="1m30s",
        count=5,
        initialDelay="2m",
        failureLimit=1,
        inconclusiveLimit=2,
        consecutiveErrorLimit=3,
        provider={
            "prometheus": {
                "address": "http://prometheus.monitoring:9090",
                "query": BASELINE_QUERY,
                "timeout": "5s",
            }
        },
        successCondition="canary <= stable * 1.1",
        failureCondition="canary > stable * 2.0",
        noData="Fail",
        minSample={"query": "sum(up)", "min": 10},
        baseline=True,
    )
    parsed = Metric.model_validate(full)
    assert Metric.model_validate(parsed.to_dict()) == parsed
    assert parsed.interval_length == timedelta(seconds=90)
    assert parsed.no_data is NoDataPolicy.FAIL
    assert parsed.min_sample is not None
    assert parsed.min_sample.min == 10.0


def test_a_judge_metric_gets_the_judge_defaults() -> None:
    parsed = Metric.model_validate(
        metric(
            successCondition=None,
            baseline=True,
            provider={"prometheus": {"query": BASELINE_QUERY}},
            judge={"mannWhitney": {}},
        )
    )
    assert parsed.judgement is Judgement.JUDGE
    assert parsed.judge is not None
    test = parsed.judge.mann_whitney
    assert (test.confidence, test.direction, test.min_points) == (0.95, Direction.INCREASE, 10)
    assert test.direction.alternative is Alternative.GREATER
    assert test.effect_size.measure is EffectMeasure.MEAN_RATIO
    # Every significant increase fails, and (on a critical metric) aborts at once.
    assert test.effect_size.thresholds == Thresholds(1.0, 1.0, 1.0, 1.0)
    assert not parsed.critical
    assert parsed.nan_strategy is NanStrategy.REMOVE


def judge(effect_size: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    mann_whitney = {"effectSize": effect_size} if effect_size is not None else {}
    return metric(
        successCondition=None,
        baseline=True,
        provider={"prometheus": {"query": BASELINE_QUERY}},
        judge={"mannWhitney": mann_whitney},
        **fields,
    )


@pytest.mark.parametrize(
    ("effect_size", "thresholds"),
    [
        ({"measure": "cles"}, Thresholds(0.5, 0.5, 0.5, 0.5)),
        ({"allowedIncrease": 1.2}, Thresholds(1.2, 1.0, 1.2, 1.0)),
        ({"allowedIncrease": 1.2, "criticalIncrease": 3}, Thresholds(1.2, 1.0, 3.0, 1.0)),
        ({"allowedDecrease": 0.8, "criticalDecrease": 0.5}, Thresholds(1.0, 0.8, 1.0, 0.5)),
        ({"measure": "shift", "allowedIncrease": 1.1}, Thresholds(1.1, 1.0, 1.1, 1.0)),
        ({"measure": "cles", "allowedIncrease": 0.7}, Thresholds(0.7, 0.5, 0.7, 0.5)),
    ],
)
def test_effect_size_thresholds_default_to_their_neighbours(
    effect_size: dict[str, Any], thresholds: Thresholds
) -> None:
    parsed = Metric.model_validate(judge(effect_size, critical=True))
    assert parsed.judge is not None
    assert parsed.judge.mann_whitney.effect_size.thresholds == thresholds


@pytest.mark.parametrize(
    ("effect_size", "field", "reason"),
    [
        ({"allowedIncrease": 0.9}, "allowedIncrease", "must be at least 1 (for meanRatio, 1 is no"),
        ({"allowedDecrease": 1.1}, "allowedDecrease", "must be at most 1"),
        ({"measure": "cles", "allowedIncrease": 0.4}, "allowedIncrease", "at least 0.5"),
        ({"measure": "cles", "allowedIncrease": 1.5}, "allowedIncrease", "between 0 and 1"),
        ({"measure": "cles", "allowedDecrease": -0.1}, "allowedDecrease", "between 0 and 1"),
        (
            {"allowedIncrease": 2, "criticalIncrease": 1.5},
            "criticalIncrease",
            "must be at least allowedIncrease (2)",
        ),
        (
            {"allowedDecrease": 0.5, "criticalDecrease": 0.8},
            "criticalDecrease",
            "must be at most allowedDecrease (0.5)",
        ),
        ({"measure": "median"}, "measure", "meanRatio"),
        ({"allowedIncrease": "1.2"}, "allowedIncrease", ""),
    ],
)
def test_bad_effect_sizes_name_the_field(
    effect_size: dict[str, Any], field: str, reason: str
) -> None:
    error = template_error(judge(effect_size, critical=True))
    assert error.field == f"spec.metrics[0].judge.mannWhitney.effectSize.{field}"
    assert reason in error.reason


def test_critical_thresholds_need_a_critical_metric() -> None:
    error = template_error(judge({"criticalIncrease": 2}))
    assert error.field == "spec.metrics[0].judge.mannWhitney.effectSize.criticalIncrease"
    assert error.reason == (
        "metric 'error-rate': criticalIncrease acts only on a critical metric: set critical: true"
    )


def test_a_critical_metric_refuses_a_failure_limit_it_would_never_apply() -> None:
    error = template_error(metric(critical=True, failureLimit=2, count=3))
    assert error.field == "spec.metrics[0].failureLimit"
    assert "a critical metric aborts at its first Failed measurement" in error.reason
    judged = template_error(judge(critical=True, failureLimit=1, count=3))
    assert "set effectSize.criticalIncrease or criticalDecrease" in judged.reason
    # With a critical threshold above the allowed one, failureLimit counts the smaller failures.
    tiered = Metric.model_validate(
        judge({"allowedIncrease": 1.2, "criticalIncrease": 2}, critical=True, failureLimit=1)
    )
    assert tiered.failure_limit == 1


def test_nan_strategy_is_remove_or_replace() -> None:
    assert Metric.model_validate(metric(nanStrategy="replace")).nan_strategy is NanStrategy.REPLACE
    error = template_error(metric(nanStrategy="zero"))
    assert error.field == "spec.metrics[0].nanStrategy"
    assert "remove" in error.reason


def test_a_whole_number_written_as_a_float_is_an_integer() -> None:
    assert Metric.model_validate(metric(count=3.0)).count == 3


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        pytest.param(
            {"successCondition": None}, "spec.metrics[0]", "needs a judgement", id="no-judgement"
        ),
        pytest.param(
            {"thresholdRange": {"max": 1}},
            "spec.metrics[0].thresholdRange",
            "exclude each other",
            id="condition-and-threshold",
        ),
        pytest.param(
            {
                "successCondition": None,
                "provider": {"prometheus": {"query": BASELINE_QUERY}},
                "judge": {"mannWhitney": {}},
            },
            "spec.metrics[0].judge",
            "set baseline",
            id="judge-without-baseline",
        ),
        pytest.param(
            {
                "baseline": True,
                "provider": {"prometheus": {"query": BASELINE_QUERY}},
                "judge": {"mannWhitney": {}},
            },
            "spec.metrics[0].judge",
            "exclude each other",
            id="judge-and-condition",
        ),
        pytest.param(
            {
                "successCondition": None,
                "baseline": True,
                "provider": {"prometheus": {"query": BASELINE_QUERY}},
                "thresholdRange": {"max": 1},
            },
            "spec.metrics[0].thresholdRange",
            "with baseline",
            id="threshold-with-baseline",
        ),
        pytest.param(
            {"count": 2, "failureLimit": 2},
            "spec.metrics[0].count",
            "at least 3",
            id="count-below-failure-limit",
        ),
        pytest.param({"count": 0}, "spec.metrics[0].count", "greater than or equal to 1", id="c0"),
        pytest.param({"count": "3"}, "spec.metrics[0].count", "valid integer", id="count-str"),
        pytest.param({"interval": "10"}, "spec.metrics[0].interval", "Go duration", id="iv-unit"),
        pytest.param({"interval": "500ms"}, "spec.metrics[0].interval", "at least 1s", id="iv-ms"),
        pytest.param({"interval": "1d"}, "spec.metrics[0].interval", "no days", id="iv-days"),
        pytest.param(
            {"initialDelay": "-1s"}, "spec.metrics[0].initialDelay", "negative", id="delay-neg"
        ),
        pytest.param(
            {"provider": {"prometheus": {"query": QUERY, "timeout": "0s"}}},
            "spec.metrics[0].provider.prometheus.timeout",
            "> 0",
            id="timeout-zero",
        ),
        pytest.param(
            {"provider": {"prometheus": {"query": QUERY, "address": "prometheus:9090"}}},
            "spec.metrics[0].provider.prometheus.address",
            "pattern",
            id="address-without-scheme",
        ),
        pytest.param(
            {"provider": {"prometheus": {"query": ""}}},
            "spec.metrics[0].provider.prometheus.query",
            "at least 1 character",
            id="empty-query",
        ),
        pytest.param(
            {"provider": {}}, "spec.metrics[0].provider.prometheus", "Required", id="no-provider"
        ),
        pytest.param(
            {"successCondition": None, "thresholdRange": {}},
            "spec.metrics[0].thresholdRange",
            "min, max or both",
            id="empty-range",
        ),
        pytest.param(
            {"successCondition": None, "thresholdRange": {"min": 2, "max": 1}},
            "spec.metrics[0].thresholdRange.min",
            "must not be more than max",
            id="inverted-range",
        ),
        pytest.param(
            {"successCondition": None, "thresholdRange": {"max": float("nan")}},
            "spec.metrics[0].thresholdRange.max",
            "finite",
            id="nan-bound",
        ),
        pytest.param(
            {"successCondition": None, "thresholdRange": {"max": "1"}},
            "spec.metrics[0].thresholdRange.max",
            "valid number",
            id="string-bound",
        ),
        pytest.param({"noData": "Maybe"}, "spec.metrics[0].noData", "Inconclusive", id="nodata"),
        pytest.param(
            {"minSample": {"query": "sum(up)", "min": -1}},
            "spec.metrics[0].minSample.min",
            "greater than or equal to 0",
            id="negative-min-sample",
        ),
        pytest.param(
            {"consecutiveErrorLimit": 0},
            "spec.metrics[0].consecutiveErrorLimit",
            "greater than or equal to 1",
            id="error-limit-zero",
        ),
        pytest.param(
            {"failureLimit": -1}, "spec.metrics[0].failureLimit", "greater than or equal", id="fl"
        ),
        pytest.param({"name": "Error_Rate"}, "spec.metrics[0].name", "pattern", id="bad-name"),
        pytest.param({"baseline": "yes"}, "spec.metrics[0].baseline", "valid boolean", id="bl"),
        pytest.param(
            {"sucessCondition": "x"},
            "spec.metrics[0].sucessCondition",
            "unknown field (not in the analysis schema)",
            id="typo",
        ),
        pytest.param(
            {"successCondition": "result <"},
            "spec.metrics[0].successCondition",
            "metric 'error-rate': successCondition does not parse",
            id="cel-syntax",
        ),
        pytest.param(
            {"failureCondition": "canary > 1.0"},
            "spec.metrics[0].failureCondition",
            "only baseline metrics",
            id="cel-canary-without-baseline",
        ),
        pytest.param(
            {"provider": {"prometheus": {"query": 'up{ns="{{namespce}}"}'}}},
            "spec.metrics[0].provider.prometheus.query",
            "unknown variable {{namespce}}",
            id="query-unknown-variable",
        ),
        pytest.param(
            {"minSample": {"query": "sum(up{ns={{namespace}", "min": 1}},
            "spec.metrics[0].minSample.query",
            "unterminated",
            id="min-sample-unterminated",
        ),
        pytest.param(
            {"baseline": True, "successCondition": "canary < stable"},
            "spec.metrics[0].provider.prometheus.query",
            "{{revision}}",
            id="baseline-query-without-revision",
        ),
    ],
)
def test_an_invalid_metric_names_the_field(fields: dict[str, Any], field: str, reason: str) -> None:
    error = template_error(metric(**fields))
    assert error.field == field
    assert reason in error.reason
    # Only the item's own problem, not pydantic's "the tuple is now too short" as well.
    assert all(problem.field != "spec.metrics" for problem in error.problems)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confidence", 0.5),
        ("confidence", 1.0),
        ("confidence", "0.9"),
        ("tolerance", 0.1),
        ("direction", "up"),
        ("minPoints", 0),
    ],
)
def test_invalid_judge_settings_name_the_field(field: str, value: object) -> None:
    error = template_error(
        metric(
            successCondition=None,
            baseline=True,
            provider={"prometheus": {"query": BASELINE_QUERY}},
            judge={"mannWhitney": {field: value}},
        )
    )
    assert error.field == f"spec.metrics[0].judge.mannWhitney.{field}"


def test_a_template_needs_unique_metric_and_argument_names() -> None:
    error = template_error(metric(), metric())
    assert (error.field, error.reason) == ("spec.metrics[1].name", "duplicate metric 'error-rate'")
    error = template_error(metric(), args=[{"name": "a"}, {"name": "a"}])
    assert error.field == "spec.args[1].name"


def test_argument_names_are_identifiers_conditions_can_use() -> None:
    error = template_error(metric(), args=[{"name": "error-rate"}])
    assert error.field == "spec.args[0].name"


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        (
            {"successCondition": "result < double(args.maxRate)"},
            "spec.metrics[0].successCondition",
            "args.maxRate, which is not a declared argument",
        ),
        (
            {"provider": {"prometheus": {"query": 'up{job="{{args.job}}"}'}}},
            "spec.metrics[0].provider.prometheus.query",
            "{{args.job}} is not a declared argument",
        ),
    ],
)
def test_a_template_metric_only_uses_declared_arguments(
    fields: dict[str, Any], field: str, reason: str
) -> None:
    error = template_error(metric(**fields), args=[{"name": "other"}])
    assert error.field == field
    assert reason in error.reason


def test_a_template_with_declared_arguments_parses() -> None:
    template = AnalysisTemplateSpec.from_object(
        {
            "args": [{"name": "maxRate", "value": "0.01"}, {"name": "job"}],
            "metrics": [
                metric(
                    successCondition="result < double(args.maxRate)",
                    provider={"prometheus": {"query": 'up{job="{{args.job}}"}'}},
                )
            ],
        }
    )
    assert [arg.name for arg in template.args] == ["maxRate", "job"]


def test_an_analysis_reference_needs_something_to_run() -> None:
    with pytest.raises(SpecError) as caught:
        AnalysisRef.from_object({}, path="spec.steps[2].analysis")
    assert caught.value.field == "spec.steps[2].analysis"
    assert "templates, metrics or both" in caught.value.reason


def test_an_analysis_reference_refuses_duplicates() -> None:
    with pytest.raises(SpecError) as caught:
        AnalysisRef.from_object(
            {"templates": [{"name": "a"}, {"name": "a"}]}, path="spec.steps[0].analysis"
        )
    assert caught.value.field == "spec.steps[0].analysis.templates[1].name"
    # The same name in the two scopes is two different templates.
    AnalysisRef.from_object(
        {"templates": [{"name": "a"}, {"name": "a", "clusterScope": True}]}, path="x"
    )


def test_inline_metrics_see_the_reference_arguments() -> None:
    inline = metric(successCondition="result < double(args.maxRate)")
    ref = AnalysisRef.from_object(
        {"args": [{"name": "maxRate", "value": "0.05"}], "metrics": [inline]}, path="spec.analysis"
    )
    assert ref.metrics[0].success_condition == "result < double(args.maxRate)"
    with pytest.raises(SpecError) as caught:
        AnalysisRef.from_object({"metrics": [inline]}, path="spec.analysis")
    assert caught.value.field == "spec.analysis.metrics[0].successCondition"


def test_a_reference_argument_needs_a_string_value() -> None:
    with pytest.raises(SpecError) as caught:
        AnalysisRef.from_object(
            {"templates": [{"name": "a"}], "args": [{"name": "x", "value": 5}]}, path="p"
        )
    assert caught.value.field == "p.args[0].value"


def test_background_analysis_starts_at_a_step() -> None:
    background = BackgroundAnalysis.from_object(
        {"templates": [{"name": "a"}]}, path="spec.analysis"
    )
    assert background.starting_step == 0
    with pytest.raises(SpecError) as caught:
        BackgroundAnalysis.from_object(
            {"templates": [{"name": "a"}], "startingStep": -1}, path="spec.analysis"
        )
    assert caught.value.field == "spec.analysis.startingStep"


# --- resolve ------------------------------------------------------------------------------

TEMPLATES = {
    "error-rate": AnalysisTemplateSpec.from_object(
        {
            "args": [{"name": "maxRate", "value": "0.01"}, {"name": "job"}],
            "metrics": [
                metric(
                    count=3,
                    successCondition="result < double(args.maxRate)",
                    provider={"prometheus": {"query": 'up{job="{{args.job}}"}'}},
                )
            ],
        }
    ),
    "latency": AnalysisTemplateSpec.from_object(
        {"metrics": [metric(name="latency", count=3, successCondition="result < 0.3")]}
    ),
}
CLUSTER_TEMPLATES = {
    "latency": AnalysisTemplateSpec.from_object(
        {"metrics": [metric(name="cluster-latency", successCondition="result < 0.5")]}
    )
}


def resolve_ref(obj: dict[str, Any], *, blocking: bool = False) -> tuple[ResolvedMetric, ...]:
    return resolve(
        AnalysisRef.from_object(obj, path="spec.steps[1].analysis"),
        path="spec.steps[1].analysis",
        templates=TEMPLATES,
        cluster_templates=CLUSTER_TEMPLATES,
        blocking=blocking,
    )


def resolve_error(obj: dict[str, Any], *, blocking: bool = False) -> SpecError:
    with pytest.raises(SpecError) as caught:
        resolve_ref(obj, blocking=blocking)
    return caught.value


def test_resolve_expands_templates_with_defaults_and_passed_arguments() -> None:
    resolved = resolve_ref(
        {
            "templates": [{"name": "error-rate"}, {"name": "latency", "clusterScope": True}],
            "args": [{"name": "job", "value": "shop"}],
        }
    )
    assert [(item.metric.name, item.source) for item in resolved] == [
        ("error-rate", "AnalysisTemplate/error-rate"),
        ("cluster-latency", f"{CLUSTER_TEMPLATE_KIND}/latency"),
    ]
    assert resolved[0].args == {"maxRate": "0.01", "job": "shop"}
    assert resolved[0].path == "AnalysisTemplate/error-rate.spec.metrics[0]"
    assert resolved[1].args == {}


def test_a_passed_argument_overrides_the_default() -> None:
    resolved = resolve_ref(
        {
            "templates": [{"name": "error-rate"}],
            "args": [{"name": "job", "value": "shop"}, {"name": "maxRate", "value": "0.05"}],
        }
    )
    assert resolved[0].args["maxRate"] == "0.05"


def test_inline_metrics_resolve_with_the_reference_arguments() -> None:
    resolved = resolve_ref(
        {
            "args": [{"name": "limit", "value": "0.2"}],
            "metrics": [metric(name="inline", successCondition="result < double(args.limit)")],
        }
    )
    assert [(item.source, item.path, dict(item.args)) for item in resolved] == [
        ("inline", "spec.steps[1].analysis.metrics[0]", {"limit": "0.2"})
    ]


@pytest.mark.parametrize(
    ("obj", "blocking", "field", "reason"),
    [
        (
            {"templates": [{"name": "missing"}], "args": [{"name": "job", "value": "x"}]},
            False,
            "spec.steps[1].analysis.templates[0].name",
            "AnalysisTemplate 'missing' not found in the namespace",
        ),
        (
            {"templates": [{"name": "error-rate", "clusterScope": True}]},
            False,
            "spec.steps[1].analysis.templates[0].name",
            "ClusterAnalysisTemplate 'error-rate' not found in the cluster",
        ),
        (
            {"templates": [{"name": "error-rate"}]},
            False,
            "spec.steps[1].analysis.args",
            "AnalysisTemplate/error-rate needs argument 'job'",
        ),
        (
            {
                "templates": [{"name": "error-rate"}],
                "args": [{"name": "job", "value": "x"}, {"name": "maxrate", "value": "1"}],
            },
            False,
            "spec.steps[1].analysis.args[1].name",
            "no referenced template declares 'maxrate'",
        ),
        (
            {
                "templates": [{"name": "latency"}],
                "metrics": [metric(name="latency", count=1)],
            },
            False,
            "spec.steps[1].analysis.metrics[0].name",
            "also defined by AnalysisTemplate/latency",
        ),
        (
            {"templates": [{"name": "latency", "clusterScope": True}]},
            True,
            "ClusterAnalysisTemplate/latency.spec.metrics[0].count",
            "an analysis step would never end",
        ),
    ],
)
def test_resolve_names_what_is_missing(
    obj: dict[str, Any], blocking: bool, field: str, reason: str
) -> None:
    error = resolve_error(obj, blocking=blocking)
    assert error.field == field
    assert reason in error.reason


def test_a_missing_template_is_reported_without_blaming_its_arguments() -> None:
    error = resolve_error(
        {"templates": [{"name": "missing"}], "args": [{"name": "whatever", "value": "1"}]}
    )
    assert len(error.problems) == 1


def test_resolve_reports_every_problem_at_once() -> None:
    error = resolve_error(
        {"templates": [{"name": "missing"}, {"name": "error-rate"}], "metrics": [metric()]},
        blocking=True,
    )
    fields = [problem.field for problem in error.problems]
    assert fields == [
        "spec.steps[1].analysis.templates[0].name",
        "spec.steps[1].analysis.args",
        "spec.steps[1].analysis.metrics[0].name",
        "spec.steps[1].analysis.metrics[0].count",
    ]


def test_a_background_analysis_may_run_metrics_without_count() -> None:
    resolved = resolve_ref({"templates": [{"name": "latency", "clusterScope": True}]})
    assert resolved[0].metric.count is None


# --- the documentation --------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def test_the_documented_example_parses_and_resolves() -> None:
    text = DOCS.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    template, rollout = yaml.safe_load_all(block)
    catalog = {template["metadata"]["name"]: AnalysisTemplateSpec.from_object(template["spec"])}
    background = BackgroundAnalysis.from_object(rollout["spec"]["analysis"], path="spec.analysis")
    assert background.starting_step == 1
    assert background.metrics[0].baseline
    steps = [
        (index, AnalysisRef.from_object(step["analysis"], path=f"spec.steps[{index}].analysis"))
        for index, step in enumerate(rollout["spec"]["steps"])
        if "analysis" in step
    ]
    resolved = [
        resolve(
            ref,
            path=f"spec.steps[{index}].analysis",
            templates=catalog,
            cluster_templates={},
            blocking=True,
        )
        for index, ref in steps
    ]
    assert [[item.metric.name for item in metrics] for metrics in resolved] == [
        ["error-rate"],
        ["latency-judge"],
    ]
    assert resolved[0][0].args == {"maxErrorRate": "0.02"}
    assert resolved[1][0].metric.judgement is Judgement.JUDGE


def test_the_worked_examples_of_the_judge_parse() -> None:
    text = DOCS.read_text()
    examples = text.split("### Worked example")[1:]
    assert len(examples) == 2
    for example in examples:
        block = example.split("```yaml\n", 1)[1].split("```", 1)[0]
        (parsed,) = AnalysisTemplateSpec.from_object({"metrics": yaml.safe_load(block)}).metrics
        assert parsed.judgement is Judgement.JUDGE
        assert parsed.critical
