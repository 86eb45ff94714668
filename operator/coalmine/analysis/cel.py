"""Success and failure conditions, written in CEL and run by cel-python's interpreter.

Users write conditions such as `result < 0.01` or `canary <= stable * 1.1`. They are never
handed to Python's `eval`, and not to cel-python's transpiler either (it `exec`s generated
Python): cel-python parses them into a tree and its interpreter walks it, so a condition can
compute and compare, but not import, open or loop forever over anything but its own literals.

A condition is compiled once per text (`compile_condition` caches the tree), and
`check_condition` finds what would otherwise only show up at the first measurement, while
traffic is already on the canary: syntax errors, variables that do not exist (`canary` without
`baseline: true`, `args.NAME` the template does not declare), type errors (`result == 1`
compares a double with an int) and conditions that are not bool. The last two are found by
evaluating the condition once with probe values; types in CEL do not depend on values, so a type
error on the probe's path is a type error, while value errors (an integer division by zero) are
left to evaluation time.

What conditions see:

- `result`: the canary's value, a double;
- `canary` and `stable`: the canary's and the stable revision's values, doubles, for baseline
  metrics only (`result` is then the canary's value too);
- `args`: the analysis arguments, a map of strings (`double(args.maxRate)` to compare).

Values reaching a condition are always finite: NaN and ±Inf from Prometheus are no data and
are decided by the metric's noData policy before any condition runs (see `analysis.evaluate`).
Inside an expression, cel-python 0.5 makes any double divided by 0.0 +Inf, even `0.0 / 0.0` and
`-1.0 / 0.0` (IEEE 754 would give NaN and -Inf), so with no stable traffic `canary / stable` is
+Inf whatever the canary did: a ratio must guard its denominator
(`stable > 0.0 && canary / stable < 1.1`). An evaluation error (integer division by zero, a
missing map key, an overflow) is a `ConditionEvalError`, which makes the measurement an Error.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

RESULT: Final = "result"
CANARY: Final = "canary"
STABLE: Final = "stable"
ARGS: Final = "args"
VARIABLES: Final = frozenset({RESULT, ARGS})
BASELINE_VARIABLES: Final = frozenset({CANARY, STABLE})

SUCCESS_CONDITION: Final = "successCondition"
FAILURE_CONDITION: Final = "failureCondition"

# CEL macros whose first argument names a variable bound inside the other arguments.
_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
TYPE_NAMES: Final = frozenset(
    {"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string"}
    | {"timestamp", "type", "uint"}
)
"""Type names, which CEL also lets an expression mention as values (`type(result) == double`)."""
FUNCTIONS: Final = (
    frozenset(name for name in base_functions if name.isidentifier())
    | _COMPREHENSIONS
    | {"has", "dyn"}
)
"""Functions, methods and macros the interpreter provides; a call to anything else would only
fail at evaluation."""
_SIMPLE_STRING = re.compile(r"""[rR]?(['"])([A-Za-z0-9_]*)\1""")
_MESSAGE_MAX_LENGTH = 300
_CELPY_TYPE = re.compile(r"<class 'celpy\.celtypes\.(\w+?)Type'>")
_CELPY_RULE = re.compile(r"Token\('RULE', '(\w+)'\)")
_OPERATORS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}
_NO_ARGS: Mapping[str, str] = MappingProxyType({})
_PROBE: Final = 1.0


class ConditionError(ValueError):
    """A condition that cannot be used: it does not parse, or is not a valid condition."""

    def __init__(self, metric: str, field: str, message: str) -> None:
        self.metric = metric
        self.field = field
        self.message = message
        super().__init__(f"metric {metric!r}: {field} {message}")


class ConditionEvalError(Exception):
    """A condition failed while being evaluated; the measurement is an Error."""


@dataclass(frozen=True)
class Condition:
    """A compiled condition, reusable for every measurement."""

    text: str
    program: Any = field(repr=False, compare=False)
    """cel-python's interpreted runner for the parsed tree."""
    variables: frozenset[str]
    """Free variables the expression refers to (comprehension variables excluded)."""
    arguments: frozenset[str]
    """Argument names referred to as `args.NAME` or `args["NAME"]`."""
    functions: frozenset[str]
    """Functions and methods the expression calls."""


def compile_condition(text: str, *, metric: str = "", field: str = "condition") -> Condition:
    """Compile a CEL condition, once per text; raises ConditionError when it does not parse."""
    compiled = _compile(text)
    if isinstance(compiled, str):
        raise ConditionError(metric, field, compiled)
    return compiled


def evaluate_condition(
    condition: Condition,
    *,
    result: float,
    stable: float | None = None,
    args: Mapping[str, str] = _NO_ARGS,
) -> bool:
    """Evaluate a condition for one measurement.

    `result` is the canary's value; `stable` is given for baseline metrics, which also makes
    `canary` (= result) and `stable` visible. Both must be finite (the caller applies the no-data
    policy first). Raises ConditionEvalError when the expression fails or is not a bool.
    """
    if not math.isfinite(result) or (stable is not None and not math.isfinite(stable)):
        raise ValueError("conditions only see finite values; NaN and Inf are no data")
    value = _run(condition, _activation(result, stable, args))
    if isinstance(value, CELEvalError):
        raise ConditionEvalError(f"evaluation error: {_eval_message(value)}")
    if not isinstance(value, celtypes.BoolType):
        raise ConditionEvalError(f"evaluates to a {_type_name(value)} ({value}), not a bool")
    return bool(value)


def check_condition(
    text: str,
    *,
    metric: str = "",
    field: str = "condition",
    baseline: bool = False,
    arg_names: Collection[str] | None = None,
) -> Condition:
    """Compile a condition and check what can be checked before any measurement; raises
    ConditionError naming the metric for a syntax error, an unknown variable, function or
    argument, a type error, or an expression that is not a bool.

    `baseline` makes `canary` and `stable` visible; `arg_names` are the arguments the condition
    can see, None to skip that check (a metric parsed alone does not know its template's
    arguments yet).
    """
    condition = compile_condition(text, metric=metric, field=field)
    reason = _check_references(condition, baseline, arg_names) or _probe(
        condition, baseline, arg_names
    )
    if reason is not None:
        raise ConditionError(metric, field, reason)
    return condition


# --- compiling ----------------------------------------------------------------------------


@functools.cache
def _environment() -> celpy.Environment:
    # Built on first use: creating an Environment raises the interpreter's recursion limit,
    # which importing this module should not do.
    return celpy.Environment()


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> Condition | str:
    environment = _environment()
    try:
        tree = environment.compile(text)
    except CELParseError as error:
        return _syntax_message(error)
    references = _References()
    references.walk(tree)
    return Condition(
        text=text,
        program=environment.program(tree),
        variables=frozenset(references.variables),
        arguments=frozenset(references.arguments),
        functions=frozenset(references.functions),
    )


def _syntax_message(error: CELParseError) -> str:
    # celpy's own message is the text with a caret under it; lark's exception, which it wraps,
    # says what was found, which reads better on one line of a condition.
    cause = error.__context__
    token = getattr(cause, "token", None)
    char = getattr(cause, "char", None)
    if token is not None and getattr(token, "type", "") == "$END":
        found = "end of expression"
    elif token is not None:
        found = f"{str(token)!r}"
    elif char is not None:
        found = f"character {char!r}"
    else:
        found = "input"
    line = getattr(error, "line", None)
    column = getattr(error, "column", None)
    where = f" at line {line}, column {column}" if line is not None else ""
    return f"does not parse: unexpected {found}{where}"


def _children(node: Any) -> list[Any]:
    children = getattr(node, "children", None)
    return [child for child in children or () if child is not None]


def _is_tree(node: Any) -> bool:
    return isinstance(node, celpy.Expression)


def _only_ident(node: Any) -> str | None:
    # An expression that is nothing but a name (`x` in `list.exists(x, ...)`, `args` in
    # `args.name`): a chain of single-child rules ending in `ident`.
    while _is_tree(node):
        if node.data == "ident":
            return str(node.children[0])
        children = _children(node)
        if len(children) != 1:
            return None
        node = children[0]
    return None


def _string_literal(node: Any) -> str | None:
    while _is_tree(node):
        children = _children(node)
        if node.data == "literal":
            match = _SIMPLE_STRING.fullmatch(str(children[0])) if children else None
            return match.group(2) if match else None
        if len(children) != 1:
            return None
        node = children[0]
    return None


@dataclass
class _References:
    """What an expression refers to, collected from its tree."""

    variables: set[str] = field(default_factory=set)
    arguments: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)

    def walk(self, node: Any, bound: frozenset[str] = frozenset()) -> None:
        if not _is_tree(node):
            return
        children = _children(node)
        if node.data in ("ident", "dot_ident"):
            if str(children[0]) not in bound:
                self.variables.add(str(children[0]))
            return
        if node.data in ("ident_arg", "dot_ident_arg"):
            self.functions.add(str(children[0]))
        elif node.data == "member_dot_arg":
            self.functions.add(str(children[1]))
            if str(children[1]) in _COMPREHENSIONS and len(children) == 3:
                self._comprehension(children[0], _children(children[2]), bound)
                return
        elif node.data in ("member_dot", "member_index") and len(children) == 2:
            self._argument(*children, member=node.data == "member_dot", bound=bound)
        for child in children:
            self.walk(child, bound)

    def _comprehension(self, target: Any, exprs: list[Any], bound: frozenset[str]) -> None:
        # `list.exists(x, x > 1.0)`: x is bound in the other arguments, not a free variable.
        self.walk(target, bound)
        variable = _only_ident(exprs[0]) if exprs else None
        if variable is None:
            for expr in exprs:
                self.walk(expr, bound)
            return
        for expr in exprs[1:]:
            self.walk(expr, bound | {variable})

    def _argument(self, target: Any, selector: Any, *, member: bool, bound: frozenset[str]) -> None:
        if ARGS in bound or _only_ident(target) != ARGS:
            return
        argument = str(selector) if member else _string_literal(selector)
        if argument is not None:
            self.arguments.add(argument)


# --- evaluating ---------------------------------------------------------------------------


def _activation(result: float, stable: float | None, args: Mapping[str, str]) -> dict[str, Any]:
    activation: dict[str, Any] = {
        RESULT: celtypes.DoubleType(result),
        ARGS: celtypes.MapType(
            {celtypes.StringType(name): celtypes.StringType(value) for name, value in args.items()}
        ),
    }
    if stable is not None:
        activation[CANARY] = celtypes.DoubleType(result)
        activation[STABLE] = celtypes.DoubleType(stable)
    return activation


def _run(condition: Condition, activation: dict[str, Any]) -> Any:
    # The value, or the CELEvalError the interpreter raised or returned (it does both).
    try:
        return condition.program.evaluate(activation)
    except CELEvalError as error:
        return error
    # A user's expression must never crash the operator: whatever else the interpreter raises
    # (a deep recursion, a bug of its own) is this measurement's Error, not an exception.
    except Exception as error:
        raise ConditionEvalError(f"evaluation failed: {type(error).__name__}: {error}") from None


def _eval_message(error: CELEvalError) -> str:
    message = str(error.args[0]) if error.args else str(error)
    # celpy appends the whole activation to "undeclared reference" errors, and names operators
    # and types as Python sees them; users wrote CEL.
    message = message.split(" (in activation", 1)[0]
    message = _CELPY_TYPE.sub(lambda match: match.group(1).lower(), message)
    message = _CELPY_RULE.sub(lambda match: _OPERATORS.get(match.group(1), match.group(1)), message)
    if "(double, int)" in message or "(int, double)" in message:
        message += " (CEL does not mix double and int: write 1.0, not 1)"
    elif "(double, string)" in message or "(string, double)" in message:
        message += " (arguments are strings: compare double(args.NAME))"
    if len(message) > _MESSAGE_MAX_LENGTH:
        message = message[: _MESSAGE_MAX_LENGTH - 3] + "..."
    return message


def _type_name(value: object) -> str:
    names: tuple[tuple[type, str], ...] = (
        (celtypes.BoolType, "bool"),
        (celtypes.IntType, "int"),
        (celtypes.UintType, "uint"),
        (int, "int"),
        (float, "double"),
        (str, "string"),
        (celtypes.BytesType, "bytes"),
        (celtypes.ListType, "list"),
        (celtypes.MapType, "map"),
    )
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _is_type_error(error: CELEvalError) -> bool:
    return (
        len(error.args) > 1
        and isinstance(error.args[1], type)
        and issubclass(error.args[1], TypeError)
    )


def _check_references(
    condition: Condition, baseline: bool, arg_names: Collection[str] | None
) -> str | None:
    functions = sorted(condition.functions - FUNCTIONS)
    if functions:
        return f"calls unknown function {functions[0]!r}"
    allowed = VARIABLES | BASELINE_VARIABLES if baseline else VARIABLES
    unknown = sorted(condition.variables - allowed - TYPE_NAMES)
    if unknown and unknown[0] in BASELINE_VARIABLES:
        return f"uses {unknown[0]!r}, which only baseline metrics see (set baseline: true)"
    if unknown:
        return f"uses unknown variable {unknown[0]!r} (conditions see {', '.join(sorted(allowed))})"
    undeclared = sorted(condition.arguments - set(arg_names)) if arg_names is not None else []
    if undeclared:
        return f"uses args.{undeclared[0]}, which is not a declared argument"
    return None


def _probe(condition: Condition, baseline: bool, arg_names: Collection[str] | None) -> str | None:
    # Types in CEL do not depend on values: a type error, or a result that is not a bool, on
    # the probe's path is one for real values too. Value errors are not judged here.
    names = set(condition.arguments) | set(arg_names or ())
    activation = _activation(_PROBE, _PROBE if baseline else None, dict.fromkeys(names, "1"))
    try:
        value = _run(condition, activation)
    except ConditionEvalError:
        return None
    if isinstance(value, CELEvalError):
        return f"has a type error: {_eval_message(value)}" if _is_type_error(value) else None
    if not isinstance(value, celtypes.BoolType):
        return f"must be a bool expression, but gives a {_type_name(value)}"
    return None
