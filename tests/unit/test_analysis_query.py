"""Query templates: every variable, escaping by context, and errors naming metric and variable.

Argument values come from users and end up inside PromQL; the property tests check that no value
can leave the string literal it is placed in, whatever characters it holds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.analysis.query import (
    VARIABLES,
    Context,
    MetricQueries,
    QueryError,
    QueryVariables,
    Side,
    escape,
    placeholders,
    promql_duration,
    referenced_arguments,
    render,
)
from coalmine.analysis.spec import Metric, expression_problems, render_metric

VARS = QueryVariables(
    namespace="prod",
    rollout="shop",
    service="shop-svc",
    stable_revision="aaaaaaaaaa",
    canary_revision="bbbbbbbbbb",
    args={"job": "api", "limit": "0.5", "evil": 'x"} or vector(1) or {a="'},
)
INTERVAL = timedelta(seconds=30)


def rendered(template: str, *, side: Side = Side.CANARY, args: dict[str, str] | None = None) -> str:
    variables = VARS if args is None else QueryVariables("prod", "shop", "svc", "s", "c", args)
    return render(template, variables, interval=INTERVAL, side=side, metric="error-rate")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{namespace}}", "prod"),
        ("{{rollout}}", "shop"),
        ("{{service}}", "shop-svc"),
        ("{{stableRevision}}", "aaaaaaaaaa"),
        ("{{canaryRevision}}", "bbbbbbbbbb"),
        ("{{revision}}", "bbbbbbbbbb"),
        ("{{interval}}", "30s"),
        ("{{args.job}}", "api"),
        ("{{ namespace }}", "prod"),
        ("no variables at all", "no variables at all"),
    ],
)
def test_every_variable_renders(template: str, expected: str) -> None:
    assert rendered(template) == expected


def test_revision_is_the_side_being_measured() -> None:
    template = 'x{coalmine_revision="{{revision}}"}'
    assert rendered(template, side=Side.CANARY) == 'x{coalmine_revision="bbbbbbbbbb"}'
    assert rendered(template, side=Side.STABLE) == 'x{coalmine_revision="aaaaaaaaaa"}'


def test_a_realistic_query() -> None:
    template = (
        'sum(rate(http_requests_total{namespace="{{namespace}}", '
        'coalmine_revision="{{revision}}", code=~"5.."}[{{interval}}]))\n'
        '/ sum(rate(http_requests_total{namespace="{{namespace}}", '
        'coalmine_revision="{{revision}}"}[{{interval}}])) > {{args.limit}}'
    )
    assert rendered(template) == (
        'sum(rate(http_requests_total{namespace="prod", coalmine_revision="bbbbbbbbbb", '
        'code=~"5.."}[30s]))\n/ sum(rate(http_requests_total{namespace="prod", '
        'coalmine_revision="bbbbbbbbbb"}[30s])) > 0.5'
    )


@pytest.mark.parametrize(
    ("value", "context", "expected"),
    [
        ('a"b', Context.DOUBLE_QUOTED, 'a\\"b'),
        ("a\\b", Context.DOUBLE_QUOTED, "a\\\\b"),
        ("a\nb\rc", Context.DOUBLE_QUOTED, "a\\nb\\rc"),
        ("it's", Context.DOUBLE_QUOTED, "it's"),
        ("it's", Context.SINGLE_QUOTED, "it\\'s"),
        ('say "hi"', Context.SINGLE_QUOTED, 'say "hi"'),
        ("a\\b", Context.RAW, "a\\b"),
        ("5m", Context.BARE, "5m"),
        ("1e-3", Context.BARE, "1e-3"),
        ("job:rate5m", Context.BARE, "job:rate5m"),
    ],
)
def test_values_are_escaped_for_their_context(value: str, context: Context, expected: str) -> None:
    assert escape(value, context) == expected


@pytest.mark.parametrize(
    ("value", "context"),
    [
        ("a`b", Context.RAW),
        ("1 or vector(1)", Context.BARE),
        ("5m])", Context.BARE),
        ("", Context.BARE),
    ],
)
def test_values_that_cannot_be_made_safe_are_refused(value: str, context: Context) -> None:
    with pytest.raises(QueryError) as caught:
        escape(value, context, metric="error-rate", variable="args.x")
    assert caught.value.metric == "error-rate"
    assert caught.value.variable == "args.x"


def test_an_injection_attempt_stays_inside_its_string() -> None:
    query = rendered('up{job="{{args.evil}}"}')
    assert query == 'up{job="x\\"} or vector(1) or {a=\\""}'


def test_the_context_follows_the_quotes() -> None:
    template = (
        "a{x=\"{{namespace}}\", y='{{rollout}}', z=`{{service}}`} # '{{interval}}\n"
        '[{{interval}}] "\\"{{revision}}"'
    )
    contexts = [(p.variable, p.context) for p in placeholders(template)]
    assert contexts == [
        ("namespace", Context.DOUBLE_QUOTED),
        ("rollout", Context.SINGLE_QUOTED),
        ("service", Context.RAW),
        # The placeholder in the comment is skipped; the quote there opens nothing.
        ("interval", Context.BARE),
        ("revision", Context.DOUBLE_QUOTED),  # an escaped quote does not close the string
    ]


@pytest.mark.parametrize(
    ("template", "variable", "message"),
    [
        ("up{ns={{namespace}", None, "unterminated '{{'"),
        ("up{ns={{name space}}", "name space", "is not a variable"),
        ("up{ns={{}}", "", "is not a variable"),
        ('up{ns="{{namespce}}"}', "namespce", "unknown variable {{namespce}}"),
        ('up{job="{{args.nope}}"}', "nope", "argument 'nope' has no value"),
        ("up > {{args.evil}}", "args.evil", "used outside quotes"),
    ],
)
def test_render_errors_name_the_metric_and_the_variable(
    template: str, variable: str | None, message: str
) -> None:
    with pytest.raises(QueryError) as caught:
        rendered(template)
    assert caught.value.metric == "error-rate"
    assert caught.value.variable == variable
    assert message in str(caught.value)
    assert str(caught.value).startswith("metric 'error-rate': ")


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=25), "25h"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(microseconds=1500), "1ms"),
    ],
)
def test_intervals_render_as_promql_durations(length: timedelta, expected: str) -> None:
    assert promql_duration(length) == expected


def test_a_promql_duration_is_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        promql_duration(timedelta(microseconds=999))


def test_referenced_arguments() -> None:
    assert referenced_arguments('up{a="{{args.x}}", b="{{namespace}}"} > {{args.y}}') == {"x", "y"}
    assert referenced_arguments("up{a={{args.x}") == frozenset()


def test_every_documented_variable_is_known() -> None:
    assert set(VARIABLES) == {
        "namespace",
        "rollout",
        "service",
        "stableRevision",
        "canaryRevision",
        "revision",
        "interval",
    }


# --- whole metrics ------------------------------------------------------------------------


def parsed_metric(**fields: Any) -> Metric:
    base: dict[str, Any] = {
        "name": "error-rate",
        "interval": "1.5m",
        "provider": {"prometheus": {"query": 'x{r="{{revision}}"}[{{interval}}]'}},
        "successCondition": "result < 1.0",
    }
    return Metric.model_validate({**base, **fields})


def test_render_metric_runs_the_stable_side_only_for_baseline_metrics() -> None:
    assert render_metric(parsed_metric(), VARS) == MetricQueries(canary='x{r="bbbbbbbbbb"}[1m30s]')
    baseline = parsed_metric(
        baseline=True,
        successCondition="canary <= stable",
        minSample={"query": 'sum(n{r="{{revision}}"})', "min": 5},
    )
    assert render_metric(baseline, VARS) == MetricQueries(
        canary='x{r="bbbbbbbbbb"}[1m30s]',
        stable='x{r="aaaaaaaaaa"}[1m30s]',
        canary_min_sample='sum(n{r="bbbbbbbbbb"})',
        stable_min_sample='sum(n{r="aaaaaaaaaa"})',
    )


def test_render_metric_runs_the_min_sample_query_when_set() -> None:
    queries = render_metric(parsed_metric(minSample={"query": "sum(n)", "min": 1}), VARS)
    assert (queries.canary_min_sample, queries.stable, queries.stable_min_sample) == (
        "sum(n)",
        None,
        None,
    )


def unchecked(query: str, *, baseline: bool = False, min_sample: str | None = None) -> Metric:
    # validate is what Metric's own validator calls: build a valid metric, then swap the query.
    fields: dict[str, Any] = {"baseline": baseline, "successCondition": "true"}
    if min_sample is not None:
        fields["minSample"] = {"query": "sum(n)", "min": 1}
    metric = parsed_metric(**fields)
    prometheus = metric.provider.prometheus.model_copy(update={"query": query})
    update: dict[str, Any] = {
        "provider": metric.provider.model_copy(update={"prometheus": prometheus})
    }
    if metric.min_sample is not None:
        update["min_sample"] = metric.min_sample.model_copy(update={"query": min_sample})
    return metric.model_copy(update=update)


@pytest.mark.parametrize(
    ("metric", "arg_names", "field", "reason"),
    [
        (unchecked('x{r="{{revision}}"}'), None, None, None),
        (unchecked('x{r="{{args.job}}"}'), None, None, None),
        (unchecked('x{r="{{args.job}}"}'), ["job"], None, None),
        (
            unchecked('x{r="{{args.job}}"}'),
            ["other"],
            "provider.prometheus.query",
            "{{args.job}} is not a declared argument",
        ),
        (
            unchecked('x{r="{{revison}}"}'),
            None,
            "provider.prometheus.query",
            "unknown variable {{revison}} (known: {{namespace}}, {{rollout}}",
        ),
        (unchecked("x{r={{revision}"), None, "provider.prometheus.query", "unterminated"),
        (
            unchecked('x{r="{{canaryRevision}}"}', baseline=True),
            None,
            "provider.prometheus.query",
            "must select pods by {{revision}}",
        ),
        (
            unchecked("x", min_sample="sum(n{a={{nope}}})"),
            None,
            "minSample.query",
            "unknown variable {{nope}}",
        ),
    ],
)
def test_template_problems_are_found_up_front(
    metric: Metric, arg_names: list[str] | None, field: str | None, reason: str | None
) -> None:
    problems = expression_problems(metric, path="spec.analysis.metrics[0]", arg_names=arg_names)
    if field is None:
        assert problems == []
        return
    assert len(problems) == 1
    assert problems[0].field == f"spec.analysis.metrics[0].{field}"
    assert problems[0].reason.startswith(f"metric 'error-rate': {field}: ")
    assert reason is not None
    assert reason in problems[0].reason


# --- properties ---------------------------------------------------------------------------


def _unescape_double_quoted(body: str) -> str:
    # The inverse of PromQL's (Go's) escapes for the four characters escape() produces.
    out, index = [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            nxt = body[index + 1]
            out.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


@given(st.text())
def test_no_value_escapes_its_double_quoted_string(value: str) -> None:
    prefix, suffix = 'up{job="', '"} + 1'
    query = rendered(prefix + "{{args.x}}" + suffix, args={"x": value})
    assert query.startswith(prefix)
    assert query.endswith(suffix)
    body = query[len(prefix) : -len(suffix)]
    # Read with PromQL's rules, the string ends exactly where the template's did...
    index = 0
    while index < len(body):
        assert body[index] not in '"\n', f"the value ends the string at {index}: {body!r}"
        index += 2 if body[index] == "\\" else 1
    assert index == len(body), "a trailing backslash would escape the closing quote"
    # ...and reads back as the value itself.
    assert _unescape_double_quoted(body) == value


@given(st.text())
def test_a_bare_value_is_one_token_or_refused(value: str) -> None:
    try:
        query = rendered("up > {{args.x}}", args={"x": value})
    except QueryError:
        return
    token = query.removeprefix("up > ")
    assert token == value
    assert token
    assert all(char.isascii() and (char.isalnum() or char in "_.:+-") for char in token)
