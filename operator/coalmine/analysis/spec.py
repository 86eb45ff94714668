"""What users write to analyse a canary: metrics, analysis templates, and references to them.

The models follow the conventions of `coalmine.api` (camelCase aliases, strict scalars, frozen,
errors as a `SpecError` naming the dotted field), because they will be embedded in the
CanaryRollout (`spec.analysis`, a step's `analysis`) and in the AnalysisTemplate and
ClusterAnalysisTemplate resources, whose CRDs are generated from them.

Everything that can be wrong with a metric is found when it is parsed, before any traffic moves:
the structure, the durations, the combination of judgements, and also the CEL conditions and the
query templates (walked here, checked by `analysis.cel` and `analysis.query`, which know nothing
of metrics), so an invalid expression becomes
an InvalidSpec condition naming the metric and the parse error instead of a failed measurement
halfway through a canary. What can only be checked against other objects (does the template
exist, are its required arguments given) is `resolve`'s business.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Self, TypeVar

from pydantic import (
    AllowInfNan,
    BeforeValidator,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from coalmine.analysis import cel, query
from coalmine.analysis.judge import Alternative, EffectMeasure, Thresholds

# Shared with the CanaryRollout models on purpose: the same base model, the same error paths
# and the same wording, whichever resource the user got wrong.
from coalmine.api.durations import parse_duration
from coalmine.api.errors import Problem, SpecError, field_problem, problems_from
from coalmine.api.limits import (
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_PATTERN,
    DURATION_MAX_LENGTH,
    INT32_MAX,
    LABEL_MAX_LENGTH,
    MAX_STEPS,
    NAME_MAX_LENGTH,
)
from coalmine.api.types import DocumentedEnum, SpecModel, integral, plain_json

# --- identity of the template resources ---------------------------------------------------

TEMPLATE_KIND: Final = "AnalysisTemplate"
CLUSTER_TEMPLATE_KIND: Final = "ClusterAnalysisTemplate"

# --- limits -------------------------------------------------------------------------------
# Bounded like everything the CRD's CEL rules may walk; the numbers are generous for people and
# small for a reconcile loop that measures every metric at every interval.

MAX_METRICS = 20
MAX_ARGS = 32
MAX_TEMPLATE_REFS = 10
METRIC_NAME_MAX_LENGTH = LABEL_MAX_LENGTH
ARG_NAME_MAX_LENGTH = LABEL_MAX_LENGTH
ARG_VALUE_MAX_LENGTH = 1024
QUERY_MAX_LENGTH = 8192
CONDITION_MAX_LENGTH = 2048
ADDRESS_MAX_LENGTH = 2048
MAX_MIN_POINTS = 100_000

# An argument is visible as `args.NAME` in CEL and `{{args.NAME}}` in queries, so its name must
# be a CEL identifier (no `-`: `args.error-rate` would be a subtraction).
ARG_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
ADDRESS_PATTERN = "^https?://[^ ]+$"

MIN_INTERVAL = timedelta(seconds=1)
"""Measuring more often than every second only loads Prometheus; its samples are not fresher."""

Number = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite JSON number: 3 is 3.0, but "3", true, NaN and Infinity are refused."""

NonNegative = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX), BeforeValidator(integral)]
Positive = Annotated[int, Strict(), Field(ge=1, le=INT32_MAX), BeforeValidator(integral)]


def _duration(value: str, *, minimum: timedelta, what: str) -> str:
    if parse_duration(value) < minimum:
        raise ValueError(f"invalid duration {value!r}: {what}")
    return value


# --- enums --------------------------------------------------------------------------------


class NoDataPolicy(DocumentedEnum):
    """What a measurement is when the query has no usable value: an empty vector, NaN, ±Inf,
    or fewer samples than minSample asks for."""

    INCONCLUSIVE = (
        "Inconclusive",
        "the measurement is Inconclusive: counted against inconclusiveLimit, then the rollout "
        "pauses for a person to decide.",
    )
    FAIL = (
        "Fail",
        "the measurement is Failed: counted against failureLimit, then the canary aborts.",
    )
    PASS = (
        "Pass",
        "the measurement is Successful: no traffic means nothing went wrong (use with care).",
    )


class Direction(DocumentedEnum):
    """Which difference between canary and stable counts against the canary."""

    INCREASE = (
        "increase",
        "the canary is bad when its values are higher (errors, latency): a one-sided test.",
    )
    DECREASE = (
        "decrease",
        "the canary is bad when its values are lower (throughput, success rate): one-sided.",
    )
    EITHER = "either", "any difference counts against the canary: a two-sided test."

    @property
    def alternative(self) -> Alternative:
        """The test's alternative hypothesis, in R's words (the canary is R's x)."""
        return {
            Direction.INCREASE: Alternative.GREATER,
            Direction.DECREASE: Alternative.LESS,
            Direction.EITHER: Alternative.TWO_SIDED,
        }[self]


class NanStrategy(DocumentedEnum):
    """What a NaN from the metric's query is. PromQL answers NaN for 0/0: a ratio over an
    interval without traffic."""

    REMOVE = (
        "remove",
        "no data: a judge drops the NaN points; a single NaN value is decided by noData.",
    )
    REPLACE = (
        "replace",
        "0: for metrics where no traffic means nothing went wrong, such as an error ratio. "
        "Applies to the metric's query only (never to minSample); +Inf, -Inf and an empty "
        "result stay no data.",
    )


class Judgement(StrEnum):
    """How a metric turns a value into an outcome; exactly one per metric."""

    CONDITIONS = "conditions"
    THRESHOLD_RANGE = "thresholdRange"
    JUDGE = "judge"


# --- a metric -----------------------------------------------------------------------------


class PrometheusProvider(SpecModel):
    """Measure with a PromQL query against a Prometheus server."""

    address: StrictStr | None = Field(
        default=None, max_length=ADDRESS_MAX_LENGTH, pattern=ADDRESS_PATTERN
    )
    """Base URL of the Prometheus HTTP API (http:// or https://); the operator's setting when
    omitted."""

    query: StrictStr = Field(min_length=1, max_length=QUERY_MAX_LENGTH)
    """The PromQL query, a template: see docs/analysis.md for the {{variables}}. An instant query
    that must return one series (a range query over the interval for a judge)."""

    timeout: StrictStr = Field(default="10s", max_length=DURATION_MAX_LENGTH)
    """How long one query may take (Go duration, more than 0); slower is an Error measurement."""

    @field_validator("timeout")
    @classmethod
    def _timeout_positive(cls, value: str) -> str:
        return _duration(value, minimum=timedelta(microseconds=1), what="a timeout must be > 0")

    @property
    def timeout_length(self) -> timedelta:
        """The timeout as a timedelta."""
        return parse_duration(self.timeout)


class Provider(SpecModel):
    """Where the numbers come from; Prometheus is the only provider so far."""

    prometheus: PrometheusProvider


class ThresholdRange(SpecModel):
    """Shorthand judgement: Successful when min <= value <= max, Failed otherwise."""

    min: Number | None = None
    """Smallest acceptable value (inclusive); no lower bound when omitted."""

    max: Number | None = None
    """Largest acceptable value (inclusive); no upper bound when omitted."""

    @model_validator(mode="after")
    def _a_real_range(self) -> Self:
        if self.min is None and self.max is None:
            raise field_problem("", "set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise field_problem(".min", f"must not be more than max ({self.min} > {self.max})")
        return self

    def contains(self, value: float) -> bool:
        """Whether `value` is within the range, bounds included."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class MinSample(SpecModel):
    """A second query that says whether there was enough traffic to judge at all."""

    query: StrictStr = Field(min_length=1, max_length=QUERY_MAX_LENGTH)
    """A PromQL query template returning one value, e.g. the number of requests in the
    interval; evaluated for each side the metric measures."""

    min: Number = Field(ge=0)
    """Below this value (or with no value at all) the measurement is no data (see noData)."""


class EffectSize(SpecModel):
    """How large a significant change may be, in Kayenta's terms: ratios for meanRatio and shift
    (1 is no change, 1.2 is 20% higher), a probability for cles (0.5 is no change). A change is
    sized only when the test finds it significant; one it cannot size (a baseline mean or median
    of 0) fails."""

    measure: EffectMeasure = EffectMeasure.MEAN_RATIO

    allowed_increase: Number | None = None
    """A significant increase fails the measurement when the effect is at or above this (at
    least 1; 0.5 for cles). 1.2 forgives a canary up to 20% higher. Default: no change, so every
    significant increase fails."""

    allowed_decrease: Number | None = None
    """A significant decrease fails the measurement when the effect is at or below this (at most
    1; 0.5 for cles). 0.8 forgives a canary up to 20% lower. Default: no change."""

    critical_increase: Number | None = None
    """On a critical metric: an increase at or above this aborts the canary at once, whatever
    failureLimit says (at least allowedIncrease). Default: allowedIncrease."""

    critical_decrease: Number | None = None
    """On a critical metric: a decrease at or below this aborts the canary at once (at most
    allowedDecrease). Default: allowedDecrease."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        neutral = self.measure.neutral
        what = f"for {self.measure}, {neutral:g} is no change"
        limits = self.thresholds
        checks = (
            (self.allowed_increase, limits.allowed_increase >= neutral, f"at least {neutral:g}"),
            (self.allowed_decrease, limits.allowed_decrease <= neutral, f"at most {neutral:g}"),
            (
                self.critical_increase,
                limits.critical_increase >= limits.allowed_increase,
                f"at least allowedIncrease ({limits.allowed_increase:g})",
            ),
            (
                self.critical_decrease,
                limits.critical_decrease <= limits.allowed_decrease,
                f"at most allowedDecrease ({limits.allowed_decrease:g})",
            ),
        )
        for (value, holds, rule), field in zip(checks, _EFFECT_FIELDS, strict=True):
            if value is not None and not holds:
                raise field_problem(f".{field}", f"must be {rule} ({what}), not {value:g}")
        if self.measure is EffectMeasure.CLES:
            values = (
                self.allowed_increase,
                self.allowed_decrease,
                self.critical_increase,
                self.critical_decrease,
            )
            for value, field in zip(values, _EFFECT_FIELDS, strict=True):
                if value is not None and not 0 <= value <= 1:
                    raise field_problem(
                        f".{field}",
                        f"must be between 0 and 1 (cles is a probability), not {value:g}",
                    )
        return self

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds, defaults filled in."""
        neutral = self.measure.neutral
        increase = neutral if self.allowed_increase is None else self.allowed_increase
        decrease = neutral if self.allowed_decrease is None else self.allowed_decrease
        return Thresholds(
            allowed_increase=increase,
            allowed_decrease=decrease,
            critical_increase=increase
            if self.critical_increase is None
            else self.critical_increase,
            critical_decrease=decrease
            if self.critical_decrease is None
            else self.critical_decrease,
        )

    @property
    def has_critical_thresholds(self) -> bool:
        """Whether criticalIncrease or criticalDecrease is set."""
        return self.critical_increase is not None or self.critical_decrease is not None


_EFFECT_FIELDS: Final = (
    "allowedIncrease",
    "allowedDecrease",
    "criticalIncrease",
    "criticalDecrease",
)


class MannWhitney(SpecModel):
    """Compare the canary's values with the stable revision's with a Mann-Whitney U test, and
    size a significant change with an effect measure."""

    confidence: Number = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the test (0.5 < c < 1): a change is significant when p <= 1 - c. Also the
    confidence of the shift's interval."""

    direction: Direction = Direction.INCREASE

    min_points: Annotated[
        int, Strict(), Field(ge=1, le=MAX_MIN_POINTS), BeforeValidator(integral)
    ] = 10
    """Fewer points than this on either side make the measurement Inconclusive."""

    effect_size: EffectSize = Field(default_factory=EffectSize)


class Judge(SpecModel):
    """A statistical judgement of canary against stable; requires `baseline: true`."""

    mann_whitney: MannWhitney


class Metric(SpecModel):
    """One metric: a query measured every interval and judged into an outcome.

    Exactly one judgement: successCondition and/or failureCondition (CEL), or thresholdRange,
    or judge.
    """

    name: StrictStr = Field(max_length=METRIC_NAME_MAX_LENGTH, pattern=DNS1123_LABEL_PATTERN)
    """The metric's name, unique within an analysis (a DNS label: it keys the status)."""

    interval: StrictStr = Field(default="30s", max_length=DURATION_MAX_LENGTH)
    """Time between two measurements (Go duration, at least 1s); also {{interval}}."""

    count: Positive | None = None
    """Measurements to judge before the metric is Successful; unset: measure until the rollout
    ends (background analysis only). Error measurements are retried and do not count."""

    initial_delay: StrictStr = Field(default="0s", max_length=DURATION_MAX_LENGTH)
    """Wait this long after the analysis starts before the first measurement."""

    failure_limit: NonNegative = 0
    """Failed measurements tolerated: one more and the metric fails, aborting the canary."""

    inconclusive_limit: NonNegative = 0
    """Inconclusive measurements tolerated: one more and the metric is Inconclusive (paused)."""

    consecutive_error_limit: Positive = 4
    """This many Error measurements in a row and the metric is Error (paused, never promoted)."""

    provider: Provider

    success_condition: StrictStr | None = Field(
        default=None, min_length=1, max_length=CONDITION_MAX_LENGTH
    )
    """CEL expression that is true when the measurement is good, e.g. `result < 0.01`."""

    failure_condition: StrictStr | None = Field(
        default=None, min_length=1, max_length=CONDITION_MAX_LENGTH
    )
    """CEL expression that is true when the measurement is bad, e.g. `result > 0.05`."""

    threshold_range: ThresholdRange | None = None

    no_data: NoDataPolicy = NoDataPolicy.INCONCLUSIVE

    min_sample: MinSample | None = None

    baseline: StrictBool = False
    """Measure the stable revision too, with the same query ({{revision}} differs): conditions
    then see `canary` and `stable`."""

    judge: Judge | None = None

    critical: StrictBool = False
    """A Failed measurement aborts the canary at once, whatever failureLimit says: any Failed
    measurement, no data with noData: Fail included; for a judge, a significant change reaching
    criticalIncrease/criticalDecrease (or one whose size is undefined)."""

    nan_strategy: NanStrategy = NanStrategy.REMOVE

    @field_validator("interval")
    @classmethod
    def _interval_long_enough(cls, value: str) -> str:
        return _duration(value, minimum=MIN_INTERVAL, what="an interval must be at least 1s")

    @field_validator("initial_delay")
    @classmethod
    def _delay_not_negative(cls, value: str) -> str:
        return _duration(value, minimum=timedelta(0), what="a delay cannot be negative")

    @model_validator(mode="after")
    def _judgement(self) -> Self:
        conditions = self.success_condition is not None or self.failure_condition is not None
        chosen = [
            kind
            for kind, present in (
                (Judgement.CONDITIONS, conditions),
                (Judgement.THRESHOLD_RANGE, self.threshold_range is not None),
                (Judgement.JUDGE, self.judge is not None),
            )
            if present
        ]
        if not chosen:
            raise field_problem(
                "",
                f"metric {self.name!r} needs a judgement: successCondition and/or "
                "failureCondition, or thresholdRange, or judge",
            )
        if len(chosen) > 1:
            where = ".thresholdRange" if Judgement.THRESHOLD_RANGE in chosen else ".judge"
            raise field_problem(
                where,
                f"metric {self.name!r}: conditions, thresholdRange and judge exclude each other "
                f"(found {' and '.join(chosen)})",
            )
        if self.judge is not None and not self.baseline:
            raise field_problem(
                ".judge", f"metric {self.name!r}: a judge compares canary and stable: set baseline"
            )
        if self.threshold_range is not None and self.baseline:
            raise field_problem(
                ".thresholdRange",
                f"metric {self.name!r}: thresholdRange judges one value; with baseline, write a "
                "condition on canary and stable (e.g. canary <= stable * 1.1)",
            )
        if self.count is not None and self.count < self.failure_limit + 1:
            raise field_problem(
                ".count",
                f"metric {self.name!r}: count {self.count} can never exceed failureLimit "
                f"{self.failure_limit}; it must be at least {self.failure_limit + 1}",
            )
        self._check_critical()
        problems = expression_problems(self)
        if problems:
            raise field_problem(f".{problems[0].field}", problems[0].reason)
        return self

    def _check_critical(self) -> None:
        effect = self.judge.mann_whitney.effect_size if self.judge is not None else None
        tiered = effect is not None and effect.has_critical_thresholds
        if tiered and not self.critical:
            assert effect is not None
            field = (
                "criticalIncrease" if effect.critical_increase is not None else "criticalDecrease"
            )
            raise field_problem(
                f".judge.mannWhitney.effectSize.{field}",
                f"metric {self.name!r}: {field} acts only on a critical metric: set critical: true",
            )
        if self.critical and self.failure_limit > 0 and not tiered:
            raise field_problem(
                ".failureLimit",
                f"metric {self.name!r}: a critical metric aborts at its first Failed measurement, "
                f"so failureLimit {self.failure_limit} would never apply"
                + (
                    " (set effectSize.criticalIncrease or criticalDecrease beyond the allowed "
                    "change to let failureLimit count the smaller failures)"
                    if self.judge is not None
                    else ""
                ),
            )

    @property
    def judgement(self) -> Judgement:
        """How this metric judges a value."""
        if self.threshold_range is not None:
            return Judgement.THRESHOLD_RANGE
        if self.judge is not None:
            return Judgement.JUDGE
        return Judgement.CONDITIONS

    @property
    def interval_length(self) -> timedelta:
        """The interval as a timedelta."""
        return parse_duration(self.interval)

    @property
    def initial_delay_length(self) -> timedelta:
        """The initial delay as a timedelta."""
        return parse_duration(self.initial_delay)


def expression_problems(
    metric: Metric, *, path: str = "", arg_names: Collection[str] | None = None
) -> list[Problem]:
    """Every problem with the metric's CEL conditions and query templates, each at its field
    under `path` (`spec.metrics[0].successCondition`...).

    `arg_names` are the arguments the metric can see; None skips the check of `args.NAME` and
    `{{args.NAME}}` (a metric parsed alone does not know its template's arguments yet).
    """

    def where(field: str) -> str:
        return f"{path}.{field}" if path else field

    problems: list[Problem] = []
    for field, text in (
        (cel.SUCCESS_CONDITION, metric.success_condition),
        (cel.FAILURE_CONDITION, metric.failure_condition),
    ):
        if text is None:
            continue
        try:
            cel.check_condition(
                text,
                metric=metric.name,
                field=field,
                baseline=metric.baseline,
                arg_names=arg_names,
            )
        except cel.ConditionError as error:
            problems.append(Problem(where(field), str(error)))
    templates = [(query.QUERY_FIELD, metric.provider.prometheus.query, metric.baseline)]
    if metric.min_sample is not None:
        templates.append((query.MIN_SAMPLE_FIELD, metric.min_sample.query, False))
    for field, template, needs_revision in templates:
        reason = query.check_template(template, arg_names=arg_names, needs_revision=needs_revision)
        if reason is not None:
            problems.append(Problem(where(field), f"metric {metric.name!r}: {field}: {reason}"))
    return problems


# --- templates and references -------------------------------------------------------------

ArgName = Annotated[
    StrictStr, Field(min_length=1, max_length=ARG_NAME_MAX_LENGTH, pattern=ARG_NAME_PATTERN)
]


class Argument(SpecModel):
    """An argument a template declares; without a value, every reference must pass one."""

    name: ArgName
    """The argument's name: `args.NAME` in conditions, `{{args.NAME}}` in queries."""

    value: StrictStr | None = Field(default=None, max_length=ARG_VALUE_MAX_LENGTH)
    """The default value (a string); omitted: the argument is required."""


class ArgumentValue(SpecModel):
    """An argument passed to the templates of an analysis (and seen by its inline metrics)."""

    name: ArgName

    value: StrictStr = Field(max_length=ARG_VALUE_MAX_LENGTH)
    """The value, always a string (quote numbers in YAML); `double(args.NAME)` in CEL."""


def _unique(names: Iterable[str], what: str, field: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise field_problem(f".{field}[{index}].name", f"duplicate {what} {name!r}")
        seen.add(name)


def _check_arg_references(metrics: tuple[Metric, ...], declared: Iterable[str]) -> None:
    names = frozenset(declared)
    for index, metric in enumerate(metrics):
        path = f"metrics[{index}]"
        problems = expression_problems(metric, path=path, arg_names=names)
        if problems:
            raise field_problem(f".{problems[0].field}", problems[0].reason)


class AnalysisTemplateSpec(SpecModel):
    """The spec of an AnalysisTemplate (namespaced) or ClusterAnalysisTemplate: reusable metrics
    and the arguments they take."""

    args: tuple[Argument, ...] = Field(default=(), max_length=MAX_ARGS)
    """Arguments the metrics use, with optional defaults."""

    metrics: tuple[Metric, ...] = Field(min_length=1, max_length=MAX_METRICS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique((arg.name for arg in self.args), "argument", "args")
        _unique((metric.name for metric in self.metrics), "metric", "metrics")
        _check_arg_references(self.metrics, (arg.name for arg in self.args))
        return self

    @classmethod
    def from_object(cls, spec: Mapping[str, Any], *, path: str = "spec") -> Self:
        """Parse a template's spec; raises SpecError naming a field under `path`."""
        return _parse(cls, spec, path)


class TemplateRef(SpecModel):
    """A reference to an AnalysisTemplate, or with clusterScope to a ClusterAnalysisTemplate."""

    name: StrictStr = Field(max_length=NAME_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN)

    cluster_scope: StrictBool = False
    """True: a ClusterAnalysisTemplate; false: an AnalysisTemplate in the rollout's namespace."""

    @property
    def kind(self) -> str:
        """The kind of the referenced template."""
        return CLUSTER_TEMPLATE_KIND if self.cluster_scope else TEMPLATE_KIND


class AnalysisRef(SpecModel):
    """An analysis: metrics from templates and inline, with the arguments they get."""

    templates: tuple[TemplateRef, ...] = Field(default=(), max_length=MAX_TEMPLATE_REFS)

    args: tuple[ArgumentValue, ...] = Field(default=(), max_length=MAX_ARGS)

    metrics: tuple[Metric, ...] = Field(default=(), max_length=MAX_METRICS)
    """Metrics written in place; they see the args above."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.templates and not self.metrics:
            raise field_problem("", "an analysis needs templates, metrics or both")
        seen: set[tuple[str, bool]] = set()
        for index, ref in enumerate(self.templates):
            key = (ref.name, ref.cluster_scope)
            if key in seen:
                raise field_problem(
                    f".templates[{index}].name", f"{ref.kind} {ref.name!r} is referenced twice"
                )
            seen.add(key)
        _unique((arg.name for arg in self.args), "argument", "args")
        _unique((metric.name for metric in self.metrics), "metric", "metrics")
        _check_arg_references(self.metrics, (arg.name for arg in self.args))
        return self

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], *, path: str) -> Self:
        """Parse an analysis reference found at `path`; raises SpecError naming the field."""
        return _parse(cls, obj, path)


class BackgroundAnalysis(AnalysisRef):
    """`spec.analysis`: an analysis that runs beside the steps, from startingStep to the end of
    the canary; a failure aborts the canary whatever step it is at."""

    starting_step: Annotated[
        int, Strict(), Field(ge=0, le=MAX_STEPS), BeforeValidator(integral)
    ] = 0
    """Index in spec.steps of the step at which the analysis starts (0: with the canary)."""


_Model = TypeVar("_Model", bound=SpecModel)
# coalmine.api.resource words it for the CanaryRollout; a template is read here on its own.
_UNKNOWN_FIELD = "unknown field (not in the analysis schema)"


def _parse(model: type[_Model], obj: Mapping[str, Any], path: str) -> _Model:
    plain = plain_json(obj)
    try:
        return model.model_validate(plain)
    except ValidationError as error:
        prefix: tuple[int | str, ...] = (path,) if path else ()
        problems = tuple(
            Problem(problem.field, _UNKNOWN_FIELD)
            if problem.reason.startswith("unknown field")
            else problem
            for problem in problems_from(error, prefix)
        )
        # pydantic also reports a tuple emptied by its one invalid item as too short; the
        # item's own problem is the one to read.
        kept = tuple(
            problem
            for problem in problems
            if not problem.reason.startswith("must have at least")
            or not any(other.field.startswith(f"{problem.field}[") for other in problems)
        )
        raise SpecError(kept) from None


# --- resolving an analysis ----------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedMetric:
    """A metric ready to run: where it came from, and the argument values it sees."""

    metric: Metric
    args: Mapping[str, str]
    source: str
    """`inline`, or the template as `Kind/name`, for messages."""
    path: str
    """Where the metric is written, for problems: the rollout's field for inline metrics, the
    template's field (`AnalysisTemplate/name.spec.metrics[0]`) for the others."""


def resolve(
    ref: AnalysisRef,
    *,
    path: str,
    templates: Mapping[str, AnalysisTemplateSpec],
    cluster_templates: Mapping[str, AnalysisTemplateSpec],
    blocking: bool,
) -> tuple[ResolvedMetric, ...]:
    """The metrics an analysis runs, templates expanded; raises SpecError listing every problem.

    `templates` are the AnalysisTemplates of the rollout's namespace and `cluster_templates` the
    ClusterAnalysisTemplates, by name, already parsed. Each template's metrics see its own
    defaults overridden by the reference's args; inline metrics see the reference's args. An
    argument no template declares is refused (it is a typo, or the template changed) unless
    inline metrics may use it. `blocking` is true for an analysis step, whose metrics must all
    have a count: a step that waits for a metric measured forever would never end.
    """
    problems: list[Problem] = []
    passed = {arg.name: arg.value for arg in ref.args}
    declared: set[str] = set()
    resolved: list[ResolvedMetric] = []
    missing_template = False
    for index, template_ref in enumerate(ref.templates):
        catalog = cluster_templates if template_ref.cluster_scope else templates
        template = catalog.get(template_ref.name)
        if template is None:
            missing_template = True
            scope = "in the cluster" if template_ref.cluster_scope else "in the namespace"
            problems.append(
                Problem(
                    f"{path}.templates[{index}].name",
                    f"{template_ref.kind} {template_ref.name!r} not found {scope}",
                )
            )
            continue
        source = f"{template_ref.kind}/{template_ref.name}"
        args: dict[str, str] = {}
        for argument in template.args:
            declared.add(argument.name)
            value = passed.get(argument.name, argument.value)
            if value is None:
                problems.append(
                    Problem(
                        f"{path}.args",
                        f"{source} needs argument {argument.name!r} (it has no default)",
                    )
                )
            else:
                args[argument.name] = value
        resolved.extend(
            ResolvedMetric(metric, args, source, f"{source}.spec.metrics[{position}]")
            for position, metric in enumerate(template.metrics)
        )
    resolved.extend(
        ResolvedMetric(metric, passed, "inline", f"{path}.metrics[{position}]")
        for position, metric in enumerate(ref.metrics)
    )
    # With a template missing, its arguments would all look unknown: report the template only.
    if not ref.metrics and not missing_template:
        problems.extend(
            Problem(f"{path}.args[{index}].name", f"no referenced template declares {arg.name!r}")
            for index, arg in enumerate(ref.args)
            if arg.name not in declared
        )
    first_seen: dict[str, ResolvedMetric] = {}
    for item in resolved:
        earlier = first_seen.setdefault(item.metric.name, item)
        if earlier is not item:
            problems.append(
                Problem(
                    f"{item.path}.name",
                    f"metric {item.metric.name!r} is also defined by {earlier.source} "
                    f"({earlier.path}); metric names must be unique within an analysis",
                )
            )
        if blocking and item.metric.count is None:
            problems.append(
                Problem(
                    f"{item.path}.count",
                    f"metric {item.metric.name!r} has no count: an analysis step would never "
                    "end (a metric without count belongs in the background spec.analysis)",
                )
            )
    if problems:
        raise SpecError(tuple(problems))
    return tuple(resolved)


def render_metric(metric: Metric, variables: query.QueryVariables) -> query.MetricQueries:
    """Every query one measurement of `metric` runs: the stable side only for baseline metrics,
    the minSample query only when set. Raises QueryError like `query.render`."""
    interval = metric.interval_length

    def side(template: str, which: query.Side) -> str:
        return query.render(template, variables, interval=interval, side=which, metric=metric.name)

    main = metric.provider.prometheus.query
    sample = metric.min_sample.query if metric.min_sample is not None else None
    return query.MetricQueries(
        canary=side(main, query.Side.CANARY),
        stable=side(main, query.Side.STABLE) if metric.baseline else None,
        canary_min_sample=side(sample, query.Side.CANARY) if sample is not None else None,
        stable_min_sample=(
            side(sample, query.Side.STABLE) if sample is not None and metric.baseline else None
        ),
    )
