"""PromQL query templates: `{{variable}}` placeholders filled in, each value escaped for its place.

A metric's query is written once, in a template shared by many rollouts, and names the
rollout's pods through variables: `{{namespace}}`, `{{rollout}}`, `{{service}}`,
`{{stableRevision}}`, `{{canaryRevision}}`, `{{revision}}` (the side being measured: the canary,
or the stable revision for the stable half of a baseline metric), `{{interval}}` (the metric's
interval as a PromQL duration) and `{{args.NAME}}`. Plain string substitution, no Jinja: a
template can only insert values, never run anything.

Values come partly from users (arguments), so they are escaped for where they land, which the
renderer knows by scanning the query's string literals:

- inside "double quotes" (a label matcher, the usual place): backslash, double quote, newline
  and carriage return are escaped, so a value can never end the string;
- inside 'single quotes': the same, for the single quote;
- inside `backticks` (raw strings, no escapes exist): a value containing a backtick is refused;
- anywhere else (a range `[{{interval}}]`, a threshold `> {{args.limit}}`): the value must be a
  single PromQL token of letters, digits and `_ . : + -`, so it cannot add an `or` clause or
  close a bracket.

An unknown variable or a malformed placeholder is found by `check_template` when the metric is
parsed (`analysis.spec` names the metric and the field), before any traffic moves.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

NAMESPACE: Final = "namespace"
ROLLOUT: Final = "rollout"
SERVICE: Final = "service"
STABLE_REVISION: Final = "stableRevision"
CANARY_REVISION: Final = "canaryRevision"
REVISION: Final = "revision"
INTERVAL: Final = "interval"
ARGS_PREFIX: Final = "args."

VARIABLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        NAMESPACE: "the rollout's namespace",
        ROLLOUT: "the rollout's name",
        SERVICE: "the name of the rollout's Service (spec.service.name)",
        STABLE_REVISION: "the stable revision's name (the coalmine_revision label of its pods)",
        CANARY_REVISION: "the canary revision's name",
        REVISION: "the revision being measured: the canary's, or the stable one's for the "
        "stable half of a baseline metric",
        INTERVAL: "the metric's interval as a PromQL duration (1.5m is 1m30s)",
    }
)
"""The variables every query template may use besides `{{args.NAME}}`, with their meaning."""

QUERY_FIELD: Final = "provider.prometheus.query"
MIN_SAMPLE_FIELD: Final = "minSample.query"

_PLACEHOLDER_NAME = re.compile(r"(?:args\.)?[A-Za-z_][A-Za-z0-9_]*")
_BARE_SAFE = re.compile(r"[A-Za-z0-9_.:+-]+")
_NO_ARGS: Mapping[str, str] = MappingProxyType({})


class Side(StrEnum):
    """Which revision a query measures."""

    CANARY = "canary"
    STABLE = "stable"


class Context(StrEnum):
    """Where a placeholder sits in the query, which decides how its value is escaped."""

    BARE = "bare"
    DOUBLE_QUOTED = "double-quoted string"
    SINGLE_QUOTED = "single-quoted string"
    RAW = "raw string"


class QueryError(ValueError):
    """A query template that cannot be rendered, naming the metric and the variable."""

    def __init__(self, message: str, *, metric: str = "", variable: str | None = None) -> None:
        self.metric = metric
        self.variable = variable
        self.message = message
        super().__init__(f"metric {metric!r}: {message}" if metric else message)


@dataclass(frozen=True)
class Placeholder:
    """One `{{variable}}` in a template, where it is and in what context."""

    variable: str
    start: int
    end: int
    context: Context

    @property
    def argument(self) -> str | None:
        """The argument name for `{{args.NAME}}`, else None."""
        return self.variable.removeprefix(ARGS_PREFIX) if self.is_argument else None

    @property
    def is_argument(self) -> bool:
        """Whether this is an `{{args.NAME}}` placeholder."""
        return self.variable.startswith(ARGS_PREFIX)


@dataclass(frozen=True)
class QueryVariables:
    """The values of the variables for one rollout (the metric gives the interval)."""

    namespace: str
    rollout: str
    service: str
    stable_revision: str
    canary_revision: str
    args: Mapping[str, str] = field(default_factory=lambda: _NO_ARGS)


@dataclass(frozen=True)
class MetricQueries:
    """Every query one measurement of a metric runs, rendered; None where it runs none."""

    canary: str
    stable: str | None = None
    canary_min_sample: str | None = None
    stable_min_sample: str | None = None


_CLOSING = {Context.DOUBLE_QUOTED: '"', Context.SINGLE_QUOTED: "'", Context.RAW: "`"}
_OPENING = {quote: context for context, quote in _CLOSING.items()}


def placeholders(template: str, *, metric: str = "") -> tuple[Placeholder, ...]:
    """The placeholders of a template, in order; raises QueryError when one is malformed.

    Tracks PromQL's string literals (double, single, backtick quotes; backslash escapes in the
    first two) and skips `#` comments, to know each placeholder's context.
    """
    found: list[Placeholder] = []
    context = Context.BARE
    index = 0
    while index < len(template):
        if template.startswith("{{", index):
            end = template.find("}}", index + 2)
            if end < 0:
                raise QueryError(
                    f"unterminated '{{{{' at offset {index} of the query", metric=metric
                )
            name = template[index + 2 : end].strip()
            if not _PLACEHOLDER_NAME.fullmatch(name):
                raise QueryError(
                    f"'{{{{{name}}}}}' is not a variable (expected a name like {{{{namespace}}}} "
                    "or {{args.NAME}})",
                    metric=metric,
                    variable=name,
                )
            found.append(Placeholder(name, index, end + 2, context))
            index = end + 2
            continue
        char = template[index]
        if context is Context.BARE:
            if char in _OPENING:
                context = _OPENING[char]
            elif char == "#":
                newline = template.find("\n", index)
                index = len(template) if newline < 0 else newline
                continue
        elif char == "\\" and context is not Context.RAW:
            index += 2
            continue
        elif char == _CLOSING[context]:
            context = Context.BARE
        index += 1
    return tuple(found)


def referenced_arguments(template: str) -> frozenset[str]:
    """The argument names a template uses as `{{args.NAME}}`; empty when it is malformed."""
    try:
        return frozenset(p.argument for p in placeholders(template) if p.argument is not None)
    except QueryError:
        return frozenset()


def escape(value: str, context: Context, *, metric: str = "", variable: str = "") -> str:
    """`value` made safe for its context in a PromQL query (see the module docstring)."""
    if context is Context.DOUBLE_QUOTED or context is Context.SINGLE_QUOTED:
        quote = _CLOSING[context]
        return (
            value.replace("\\", "\\\\")
            .replace(quote, "\\" + quote)
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    if context is Context.RAW:
        if "`" in value:
            raise QueryError(
                f"the value of {{{{{variable}}}}} contains a backtick, which cannot be escaped "
                "in a `raw` string; use double quotes",
                metric=metric,
                variable=variable,
            )
        return value
    if not _BARE_SAFE.fullmatch(value):
        raise QueryError(
            f"the value {value!r} of {{{{{variable}}}}} is used outside quotes, where only a "
            "single token of letters, digits and _ . : + - is allowed; quote it, or pass a "
            "number, duration or name",
            metric=metric,
            variable=variable,
        )
    return value


def promql_duration(length: timedelta) -> str:
    """A positive timedelta as a PromQL duration (`1m30s`, `250ms`), to the millisecond."""
    milliseconds = length // timedelta(milliseconds=1)
    if milliseconds <= 0:
        raise ValueError(f"a PromQL duration must be positive, not {length}")
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)):
        amount, milliseconds = divmod(milliseconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def render(
    template: str,
    variables: QueryVariables,
    *,
    interval: timedelta,
    side: Side = Side.CANARY,
    metric: str = "",
) -> str:
    """The query with every placeholder replaced by its escaped value.

    Raises QueryError naming the metric and the variable for an unknown variable, an argument
    without a value, or a value that cannot be made safe where it is used.
    """
    values = {
        NAMESPACE: variables.namespace,
        ROLLOUT: variables.rollout,
        SERVICE: variables.service,
        STABLE_REVISION: variables.stable_revision,
        CANARY_REVISION: variables.canary_revision,
        REVISION: variables.canary_revision if side is Side.CANARY else variables.stable_revision,
        INTERVAL: promql_duration(interval),
    }
    pieces: list[str] = []
    last = 0
    for placeholder in placeholders(template, metric=metric):
        argument = placeholder.argument
        if argument is not None:
            if argument not in variables.args:
                raise QueryError(
                    f"argument {argument!r} has no value", metric=metric, variable=argument
                )
            value = variables.args[argument]
        elif placeholder.variable in values:
            value = values[placeholder.variable]
        else:
            raise QueryError(
                _unknown(placeholder.variable), metric=metric, variable=placeholder.variable
            )
        pieces.append(template[last : placeholder.start])
        pieces.append(
            escape(value, placeholder.context, metric=metric, variable=placeholder.variable)
        )
        last = placeholder.end
    pieces.append(template[last:])
    return "".join(pieces)


def _unknown(variable: str) -> str:
    known = ", ".join(f"{{{{{name}}}}}" for name in VARIABLES)
    return f"unknown variable {{{{{variable}}}}} (known: {known} and {{{{args.NAME}}}})"


def check_template(
    template: str,
    *,
    arg_names: Collection[str] | None = None,
    needs_revision: bool = False,
) -> str | None:
    """What is wrong with a query template, or None: a malformed placeholder, an unknown
    variable, an argument not in `arg_names` (None skips that check: a metric parsed alone does
    not know its template's arguments yet), or, with `needs_revision` (the query of a baseline
    metric, run once per side), no {{revision}} to tell the sides apart."""
    try:
        found = placeholders(template)
    except QueryError as error:
        return error.message
    for placeholder in found:
        argument = placeholder.argument
        if argument is None and placeholder.variable not in VARIABLES:
            return _unknown(placeholder.variable)
        if argument is not None and arg_names is not None and argument not in arg_names:
            return f"{{{{args.{argument}}}}} is not a declared argument"
    if needs_revision and not any(p.variable == REVISION for p in found):
        return (
            "a baseline metric measures canary and stable with the same query, so it must select "
            "pods by {{revision}}"
        )
    return None
