"""How an invalid object is reported: a field path as the API server prints it, and a reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import (
    ValidationError,
)
from pydantic_core import PydanticCustomError

# --- errors -------------------------------------------------------------------------------


class Problem(NamedTuple):
    """One reason an object is invalid, at a Kubernetes-style field path."""

    field: str
    reason: str


class SpecError(ValueError):
    """A CanaryRollout the operator must not act on.

    `field` is a dotted path as the API server prints it (`spec.steps[2].setWeight`) and
    `reason` says what is wrong there; the operator puts both in the InvalidSpec condition.
    `problems` lists every problem found, the first one being `field`/`reason`.
    """

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        if not problems:
            raise ValueError("a SpecError needs at least one problem")
        self.problems = problems
        self.field, self.reason = problems[0]
        super().__init__(f"{self.field}: {self.reason}")


def field_problem(subpath: str, reason: str) -> PydanticCustomError:
    # pydantic locates a validator's error at the validated field or model; `subpath` carries
    # the rest of the path (`.spec.containers[0].image`) so SpecError can name the exact field.
    return PydanticCustomError("coalmine_field", "{reason}", {"reason": reason, "subpath": subpath})


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts)


def _reason(kind: str, message: str, ctx: Mapping[str, Any]) -> str:
    # Reword the pydantic messages that speak Python ("Tuple should have...", "Value error,")
    # into the API server's vocabulary, which is what users see for the same mistakes.
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return "unknown field (not in the CanaryRollout schema)"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    return message


def problems_from(
    error: ValidationError, prefix: tuple[int | str, ...] = ()
) -> tuple[Problem, ...]:
    problems = []
    for detail in error.errors(include_url=False):
        ctx = detail.get("ctx") or {}
        field = _path(prefix + tuple(detail["loc"])) + str(ctx.get("subpath", ""))
        problems.append(Problem(field, _reason(detail["type"], detail["msg"], ctx)))
    return tuple(problems)
