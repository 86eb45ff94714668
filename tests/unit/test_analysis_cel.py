"""CEL conditions: what they see, what they compute, and every way they are refused up front.

The operator turns a problem `spec.expression_problems` finds into InvalidSpec before any traffic
moves, so anything a condition could only discover at its first measurement (a typo in a
variable, a type error, an expression that is not a bool) is tested here to be found up front.
"""

from __future__ import annotations

import math

import pytest

from coalmine.analysis.cel import (
    ConditionError,
    ConditionEvalError,
    check_condition,
    compile_condition,
    evaluate_condition,
)
from coalmine.analysis.spec import Metric, expression_problems

QUERY = 'sum(rate(x{coalmine_revision="{{revision}}"}[{{interval}}]))'


def metric(
    success: str | None = None, failure: str | None = None, *, baseline: bool = False
) -> Metric:
    # Metric's own validator walks its expressions and would refuse the invalid conditions these
    # tests feed to expression_problems directly: parse a valid metric, then swap them in.
    parsed = Metric.model_validate(
        {
            "name": "error-rate",
            "provider": {"prometheus": {"query": QUERY}},
            "successCondition": "true",
            "baseline": baseline,
        }
    )
    return parsed.model_copy(update={"success_condition": success, "failure_condition": failure})


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        ("result < 0.01", 0.005, True),
        ("result < 0.01", 0.01, False),
        ("result <= 0.01", 0.01, True),
        ("result > 0.0 && result < 1.0", 0.5, True),
        ("result < 0.0 || result > 1.0", 0.5, False),
        ("!(result == 0.0)", 0.0, False),
        ("result * 100.0 < 5.0", 0.04, True),
        ("result < 1", 0.5, True),  # cel-python compares a double with an int literal
        ("[0.1, 0.2].exists(x, x == result)", 0.2, True),
        # cel-python 0.5 makes every double divided by 0.0 +Inf, even 0/0 and -1/0 (IEEE 754
        # says NaN and -Inf); docs/analysis.md tells users to guard ratios because of it.
        ("result / 0.0 > 1e300", 1.0, True),
        ("(result - result) / 0.0 > 1e300", 1.0, True),
        ("-result / 0.0 > 1e300", 1.0, True),
        ("result > 0.0 && 1.0 / result > 1.0", 0.0, False),  # the guard short-circuits
        ("type(result) == double", 1.0, True),
    ],
)
def test_conditions_see_the_result(text: str, result: float, expected: bool) -> None:
    assert evaluate_condition(compile_condition(text), result=result) is expected


def test_baseline_conditions_see_canary_and_stable() -> None:
    condition = compile_condition("canary <= stable * 1.1 && result == canary")
    assert evaluate_condition(condition, result=1.05, stable=1.0)
    assert not evaluate_condition(condition, result=1.2, stable=1.0)


def test_conditions_see_the_arguments_as_strings() -> None:
    args = {"maxRate": "0.05", "env": "prod"}
    for text in (
        "result < double(args.maxRate)",
        'result < double(args["maxRate"])',
        'args.env == "prod"',
        "has(args.env) && !has(args.other)",
    ):
        assert evaluate_condition(compile_condition(text), result=0.01, args=args), text


def test_a_condition_is_compiled_once_per_text() -> None:
    assert compile_condition("result < 0.5") is compile_condition("result < 0.5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("result <", "does not parse: unexpected end of expression at line 1, column 8"),
        ("result < 0.5)", "does not parse: unexpected ')' at line 1, column 13"),
        ("'unterminated", "does not parse: unexpected character"),
        ("", "does not parse"),
    ],
)
def test_a_syntax_error_names_the_metric_and_the_position(text: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(text, metric="error-rate", field="successCondition")
    assert caught.value.metric == "error-rate"
    assert caught.value.field == "successCondition"
    assert message in caught.value.message
    assert str(caught.value).startswith("metric 'error-rate': successCondition does not parse")


@pytest.mark.parametrize(
    ("text", "result", "args", "message"),
    [
        ("int(result) / 0 > 1", 1.0, {}, "divide by zero"),
        ('args.missing == "x"', 1.0, {}, "evaluation error"),
        ("double(args.rate) > result", 1.0, {"rate": "abc"}, "evaluation error"),
        ("result > 0.0 ? 1.0 : 2.0", 1.0, {}, "evaluates to a double (1.0), not a bool"),
        ("int(result) > 1", 1e300, {}, "overflow"),
    ],
)
def test_an_evaluation_error_is_an_error_not_an_answer(
    text: str, result: float, args: dict[str, str], message: str
) -> None:
    with pytest.raises(ConditionEvalError) as caught:
        evaluate_condition(compile_condition(text), result=result, args=args)
    assert message in str(caught.value)
    assert "in activation" not in str(caught.value)  # celpy's dump of every variable


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_never_reach_a_condition(value: float) -> None:
    condition = compile_condition("result < 1.0")
    with pytest.raises(ValueError, match="finite"):
        evaluate_condition(condition, result=value)
    with pytest.raises(ValueError, match="finite"):
        evaluate_condition(condition, result=1.0, stable=value)


def test_a_condition_cannot_reach_python() -> None:
    # No eval, no transpiler: a Python builtin is just an unknown CEL function.
    condition = compile_condition('__import__("os").system("true") == 0')
    assert condition.functions >= {"__import__"}
    with pytest.raises(ConditionEvalError):
        evaluate_condition(condition, result=1.0)


# --- checked up front -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "baseline", "arg_names", "reason"),
    [
        ("result < 0.01", False, None, None),
        ("canary <= stable * 1.1", True, None, None),
        ("result < double(args.max)", False, ["max"], None),
        ("result < double(args.max)", False, None, None),
        ("[1.0, 2.0].all(x, x > result) && [3.0].map(y, y).size() == 1", False, None, None),
        ('"abc".startsWith("a") && size(args) >= 0', False, None, None),
        ("result <", False, None, "does not parse"),
        ("reslt < 0.01", False, None, "unknown variable 'reslt' (conditions see args, result)"),
        ("canary < 1.0", False, None, "only baseline metrics see (set baseline: true)"),
        ("x > 1.0", True, None, "conditions see args, canary, result, stable"),
        ("[1.0].exists(x, x > y)", False, None, "unknown variable 'y'"),
        ("result < double(args.max)", False, ["min"], "args.max, which is not a declared"),
        ('result < double(args["max"])', False, [], "args.max, which is not a declared"),
        ("avg(result) < 1.0", False, None, "calls unknown function 'avg'"),
        ("result.floor() < 1.0", False, None, "calls unknown function 'floor'"),
        ("result == 1", False, None, "write 1.0, not 1"),
        ('result > "0.5"', False, None, "has a type error"),
        ("args.max > result", False, ["max"], "compare double(args.NAME)"),
        ("result + 1.0", False, None, "must be a bool expression, but gives a double"),
        ('args.max + "%"', False, ["max"], "gives a string"),
    ],
)
def test_up_front_finds_what_would_fail_later(
    success: str, baseline: bool, arg_names: list[str] | None, reason: str | None
) -> None:
    problems = expression_problems(metric(success, baseline=baseline), arg_names=arg_names)
    if reason is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].field == "successCondition"
        assert problems[0].reason.startswith("metric 'error-rate': successCondition ")
        assert reason in problems[0].reason


def test_up_front_leaves_value_errors_to_evaluation() -> None:
    # A division by zero depends on the value; the probe's value must not make it a spec error.
    assert expression_problems(metric("int(result) / int(result - 1.0) > 0")) == []


def test_up_front_checks_both_conditions_under_the_given_path() -> None:
    problems = expression_problems(metric("result <", "result >"), path="spec.analysis.metrics[3]")
    assert [problem.field for problem in problems] == [
        "spec.analysis.metrics[3].successCondition",
        "spec.analysis.metrics[3].failureCondition",
    ]


def test_check_condition_raises_for_every_kind_of_problem() -> None:
    for text, message in (
        ("result <", "does not parse"),
        ("result == 1", "has a type error"),
        ("canary < 1.0", "only baseline metrics"),
        ("result + 1.0", "must be a bool expression"),
    ):
        with pytest.raises(ConditionError) as caught:
            check_condition(text, metric="error-rate", field="failureCondition")
        assert str(caught.value).startswith("metric 'error-rate': failureCondition ")
        assert message in caught.value.message
    checked = check_condition("canary < stable", baseline=True)
    assert checked is compile_condition("canary < stable")
