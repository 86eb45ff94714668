"""The statistical judge: is the canary worse than the stable revision, or just noisy?

A threshold asks "is the canary's latency below 300ms?"; the judge asks "is the canary's
latency higher than the stable revision's, measured over the same minutes?", which needs no
threshold and is not fooled by a slow night for everyone. It is the test Kayenta uses: the
Mann-Whitney U (Wilcoxon rank-sum) test, which compares ranks rather than means, so it assumes
no distribution and is not moved by a single outlier. Significance alone is not enough: with
enough points every difference is significant. An **effect size** says how large the change is,
and the metric says how large a change it allows.

Implemented here from the definitions rather than borrowed from a library (the operator image
has no scipy), and checked against R's `wilcox.test` and SciPy in the unit tests. The canary
plays R's `x`, the stable revision R's `y`; `Alternative` is R's `alternative`.

The test:

- U for the canary counts the (canary, stable) pairs where the canary value is higher, ties
  counting a half: U_canary + U_stable = n_canary * n_stable. It is R's W.
- The p-value is the probability, if both samples came from one distribution, of a U at least as
  extreme: P(U >= u) for `greater` (the canary higher), P(U <= u) for `less`, twice the smaller
  of the two, at most 1, for `two.sided`.
- Exact, without ties, when both samples have fewer than 50 values (R's rule): the null
  distribution of U is counted (the coefficients of a Gaussian binomial).
- Exact, with ties, when n_canary * n_stable <= EXACT_MAX_PAIRS: the permutation distribution
  of the observed midranks is counted, every labelling of the pooled values being equally likely.
  R switches to the normal approximation as soon as there is a tie; for tiny samples with ties
  (a metric that is mostly 0) the counted distribution is the honest one.
- Otherwise the normal approximation, as R: mean n1*n2/2, variance
  n1*n2/12 * ((N + 1) - sum(t^3 - t) / (N * (N - 1))) with t the size of each group of ties, a
  continuity correction of 1/2 towards the mean. All values tied gives p = 1 (R gives NA).

The shift and its confidence interval, as R's `wilcox.test(conf.int = TRUE)`:

- The estimate is the Hodges-Lehmann shift: the median of the n1*n2 differences canary - stable.
- Exact (no ties, both samples under 50): the interval between two order statistics of those
  differences, at the quantiles of the exact null distribution (R's `qwilcox`); when the sample
  is too small for the confidence asked, the interval is as wide as it goes and its confidence is
  the one achieved, as R does.
- Otherwise: the shifts d at which the continuity- and tie-corrected statistic of `canary - d`
  against `stable` crosses the normal quantile. That statistic is a step function of d which
  jumps only at the differences, so the bound is the difference where it crosses: R finds it with
  `uniroot(tol = 1e-4)`, which lands within 1e-4 of that difference; we compute the difference.
- The interval has the test's sides: one-sided tests give a half-line (an infinite bound).
- Nothing is materialised: the k-th smallest of the n1*n2 differences is selected in
  O((n1 + n2) log(n1 n2)) steps from the two sorted samples.

The effect size, one of `EffectMeasure`, each read as "1 (0.5 for cles) is no change":

- `meanRatio`: mean(canary) / mean(stable), Kayenta's default; it sees a rate that is 0 most of
  the time, where the canary errs four times as often: the medians and the shift are 0 there.
- `shift`: 1 + shift / |median(stable)|, the typical value's change, unmoved by outliers.
- `cles`: U / (n1 * n2), the chance that a canary value is above a stable one.

For a negative reference (a stable mean or median below 0) the ratios are 1 + difference /
|reference|, so a higher canary always reads above 1. A reference of exactly 0 leaves the ratio
**undefined**: there is nothing to size the change against.

The verdict, in order:

1. Inconclusive with fewer than min_points values on either side.
2. Pass when the change is not significant (p > 1 - confidence). For a two-sided test, the side
   of the change is the side of U: above n1*n2/2 the canary is higher.
3. Fail when the change is significant and its effect is undefined: a real change with nothing
   to measure it against is treated as beyond any allowance (Kayenta's rule too). The canary's
   error rate went from 0 to something: that must not pass.
4. Fail when the effect reaches the allowance in the change's direction: effect >=
   allowed_increase for a higher canary, effect <= allowed_decrease for a lower one.
5. Pass otherwise: significant, but within what the metric allows.

A failure is also **critical** when it reaches the critical thresholds (or its effect is
undefined); only critical metrics act on that (see `analysis.limits`).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from math import comb
from typing import Final

from coalmine.api.types import DocumentedEnum

EXACT_MAX_PAIRS: Final = 100
"""Up to this many (canary, stable) pairs a sample with ties gets the exact permutation
p-value; counting it grows fast with the sample, and beyond this the normal approximation is
close."""

EXACT_MAX_SIZE: Final = 50
"""Without ties, both samples smaller than this get the exact p-value and interval (R's rule)."""

_EPSILON: Final = 2.0**-52
_QUANTILE_FUZZ: Final = Fraction(10 * _EPSILON)
"""R's qwilcox compares cumulative probabilities with this much slack."""
_SELECT_BY_SORTING: Final = 4096
"""Candidates left when selecting a difference, below which sorting them is quicker."""


class Alternative(StrEnum):
    """Which difference the test looks for, in R's words (the canary is R's x)."""

    GREATER = "greater"
    LESS = "less"
    TWO_SIDED = "two.sided"


class Method(StrEnum):
    """How the p-value and interval are computed; AUTO picks by sample size and ties."""

    AUTO = "auto"
    EXACT = "exact"
    ASYMPTOTIC = "asymptotic"


class Verdict(StrEnum):
    """The judge's answer for one measurement."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class EffectMeasure(DocumentedEnum):
    """How the size of a significant change is measured; the allowances are in its unit."""

    MEAN_RATIO = (
        "meanRatio",
        "mean(canary) / mean(baseline): 1 is no change, 1.5 is 50% more. The default: it sees "
        "an error rate that is 0 most of the time but non-zero more often on the canary.",
    )
    SHIFT = (
        "shift",
        "1 + (Hodges-Lehmann shift) / |median(baseline)|: the typical value's change as a "
        "ratio, unmoved by outliers (latency). Undefined when the baseline median is 0.",
    )
    CLES = (
        "cles",
        "common-language effect size U / (n_canary * n_baseline): the chance that a canary "
        "value is above a baseline value, ties counting a half; 0.5 is no change.",
    )

    @property
    def neutral(self) -> float:
        """The value that means "no change"."""
        return 0.5 if self is EffectMeasure.CLES else 1.0


@dataclass(frozen=True)
class Thresholds:
    """How large a significant change may be before the measurement fails, and before the
    failure is critical, in the effect measure's unit (Kayenta's names)."""

    allowed_increase: float
    allowed_decrease: float
    critical_increase: float
    critical_decrease: float

    @classmethod
    def strict(cls, measure: EffectMeasure = EffectMeasure.MEAN_RATIO) -> Thresholds:
        """Every significant change in the bad direction fails, and is critical (the default)."""
        neutral = measure.neutral
        return cls(neutral, neutral, neutral, neutral)


@dataclass(frozen=True)
class UTest:
    """The result of a Mann-Whitney U test."""

    u: float
    """U for the canary: pairs where the canary is higher, ties counting a half (R's W)."""
    p_value: float
    exact: bool
    """Whether p comes from a counted distribution rather than the normal approximation."""


@dataclass(frozen=True)
class ShiftInterval:
    """The Hodges-Lehmann shift (canary - stable) and its confidence interval."""

    estimate: float
    """The median of all canary - stable differences."""
    low: float
    """The lower bound; -inf for a test of `less` (a half-line)."""
    high: float
    """The upper bound; +inf for a test of `greater`."""
    confidence: float
    """The confidence achieved: the one asked for, or less when the samples are too small."""
    exact: bool
    """Whether the bounds come from the exact distribution rather than the normal one."""


@dataclass(frozen=True)
class JudgeResult:
    """The judge's verdict and the numbers behind it, recorded with the measurement."""

    verdict: Verdict
    p_value: float
    u: float
    n_canary: int
    n_stable: int
    measure: EffectMeasure
    effect_size: float | None
    """The change in the measure's unit; None when undefined (a reference of 0)."""
    interval: ShiftInterval | None
    """The shift and its interval; None without points on both sides."""
    message: str
    exact: bool = False
    critical: bool = False
    """A failure that reaches the critical thresholds, or whose effect is undefined."""

    @property
    def shift(self) -> float | None:
        """The Hodges-Lehmann shift, in the metric's unit."""
        return self.interval.estimate if self.interval is not None else None


# --- ranks, U and the p-value -------------------------------------------------------------


def _doubled_ranks(values: Sequence[float]) -> list[int]:
    # Twice the midranks: integers, so sums and the counted distributions stay exact.
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = start + end + 2
        start = end + 1
    return result


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of the values, tied values sharing the mean of their ranks (midranks)."""
    return [doubled / 2 for doubled in _doubled_ranks(values)]


def _tie_term(values: Sequence[float]) -> int:
    # sum(t^3 - t) over the groups of equal values: what ties take from the variance.
    return sum(t**3 - t for t in Counter(values).values())


def _sigma(n1: int, n2: int, ties: int) -> float:
    # R's SIGMA, written in R's order of operations.
    return math.sqrt((n1 * n2 / 12) * ((n1 + n2 + 1) - ties / ((n1 + n2) * (n1 + n2 - 1))))


def _check(canary: Sequence[float], stable: Sequence[float]) -> None:
    if not canary or not stable:
        raise ValueError("the U test needs at least one value on each side")
    if not all(math.isfinite(value) for value in (*canary, *stable)):
        raise ValueError("the U test needs finite values")


def u_statistic(canary: Sequence[float], stable: Sequence[float]) -> float:
    """U for the canary: the pairs where the canary value is higher, ties counting a half."""
    doubled = _doubled_ranks([*canary, *stable])
    return (sum(doubled[: len(canary)]) - len(canary) * (len(canary) + 1)) / 2


def _exact(method: Method, n1: int, n2: int, tied: bool) -> bool:
    if method is Method.EXACT:
        return True
    if method is Method.ASYMPTOTIC:
        return False
    if tied:
        return n1 * n2 <= EXACT_MAX_PAIRS
    return n1 < EXACT_MAX_SIZE and n2 < EXACT_MAX_SIZE


def u_test(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    alternative: Alternative = Alternative.GREATER,
    method: Method = Method.AUTO,
) -> UTest:
    """The Mann-Whitney U test of canary against stable (see the module docstring).

    Both samples must be non-empty and finite (ValueError otherwise).
    """
    _check(canary, stable)
    n1, n2 = len(canary), len(stable)
    pooled = [*canary, *stable]
    doubled = _doubled_ranks(pooled)
    doubled_u = sum(doubled[:n1]) - n1 * (n1 + 1)
    tied = len(set(pooled)) < len(pooled)
    exact = _exact(method, n1, n2, tied)
    if exact and tied:
        p_value = _permutation_p(doubled_u, doubled, n1, alternative)
    elif exact:
        p_value = _wilcoxon_p(doubled_u // 2, n1, n2, alternative)
    else:
        p_value = _normal_p(doubled_u / 2, n1, n2, _tie_term(pooled), alternative)
    return UTest(u=doubled_u / 2, p_value=min(1.0, max(0.0, p_value)), exact=exact)


@lru_cache(maxsize=32)  # at most 49 x 49: 2,401 integers of about 100 bits each
def _wilcoxon_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many of the C(n1 + n2, n1) labellings without ties give U = 0, 1, ..., n1 * n2.

    They are the coefficients of the Gaussian binomial [n1 + n2 choose n1] in q, built as
    prod_{i=1..n1} (1 - q^(n2 + i)) / (1 - q^i), each partial product a polynomial.
    """
    # Truncated at degree n1 * n2 the arithmetic is that of power series, exact as long as
    # the result is a polynomial of that degree, which it is.
    top = n1 * n2
    counts = [1] + [0] * top
    for i in range(1, n1 + 1):
        step = n2 + i
        for k in range(top, step - 1, -1):  # times (1 - q^step)
            counts[k] -= counts[k - step]
        for k in range(i, top + 1):  # divided by (1 - q^i)
            counts[k] += counts[k - i]
    return tuple(counts)


def _wilcoxon_p(u: int, n1: int, n2: int, alternative: Alternative) -> float:
    counts = _wilcoxon_counts(n1, n2)
    total = comb(n1 + n2, n1)
    at_most = sum(counts[: u + 1])
    at_least = sum(counts[u:])
    if alternative is Alternative.GREATER:
        return at_least / total
    if alternative is Alternative.LESS:
        return at_most / total
    return min(1.0, 2 * min(at_least, at_most) / total)


def _permutation_p(
    doubled_u: int, doubled: Sequence[int], n1: int, alternative: Alternative
) -> float:
    # Count, for every subset of the pooled (doubled mid)ranks the size of the smaller sample,
    # its rank sum. Each subset is one equally likely labelling under the null hypothesis; the
    # canary's U follows from the subset's sum.
    n = len(doubled)
    size = min(n1, n - n1)
    counts: list[defaultdict[int, int]] = [defaultdict(int) for _ in range(size + 1)]
    counts[0][0] = 1
    for seen, rank in enumerate(doubled):
        for taken in range(min(seen + 1, size), 0, -1):
            target = counts[taken]
            for total, ways in counts[taken - 1].items():
                target[total + rank] += ways
    grand = sum(doubled)
    offset = n1 * (n1 + 1)
    greater = less = everything = 0
    for total, ways in counts[size].items():
        canary_sum = total if size == n1 else grand - total
        everything += ways
        greater += ways if canary_sum - offset >= doubled_u else 0
        less += ways if canary_sum - offset <= doubled_u else 0
    if alternative is Alternative.GREATER:
        return greater / everything
    if alternative is Alternative.LESS:
        return less / everything
    return min(1.0, 2 * min(greater, less) / everything)


def _normal_p(u: float, n1: int, n2: int, ties: int, alternative: Alternative) -> float:
    sigma = _sigma(n1, n2, ties)
    if sigma == 0:
        return 1.0  # every value tied: U is its mean, and no labelling is more extreme
    z = u - n1 * n2 / 2
    correction = {
        Alternative.TWO_SIDED: math.copysign(0.5, z) if z else 0.0,
        Alternative.GREATER: 0.5,
        Alternative.LESS: -0.5,
    }[alternative]
    z = (z - correction) / sigma
    if alternative is Alternative.LESS:
        return _lower_tail(z)
    if alternative is Alternative.GREATER:
        return _lower_tail(-z)
    return 2 * min(_lower_tail(z), _lower_tail(-z))


def _lower_tail(z: float) -> float:
    """P(Z <= z) for a standard normal Z, accurate far into the tail."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


# --- the differences, the shift and its interval ------------------------------------------


def nth_difference(canary: Sequence[float], stable: Sequence[float], k: int) -> float:
    """The k-th smallest (0-based) of the n1*n2 differences canary[i] - stable[j].

    Both samples are sorted, so the differences form a matrix sorted along rows and columns;
    the search keeps, per row, the columns that may still hold the answer, and halves them
    around the weighted median of the rows' middle elements, counting in O(n1 + n2) what lies
    below it. The value returned is one of the differences, computed as `x - y`, exactly as R's
    `outer(x, y, "-")` computes it.
    """
    xs = sorted(canary)
    zs = sorted(stable, reverse=True)  # x - z then grows along each row as well as down
    n1, n2 = len(xs), len(zs)
    if not 0 <= k < n1 * n2:
        raise ValueError(f"there are {n1 * n2} differences; asked for index {k}")
    low = [0] * n1  # columns before low[i] are below the answer
    high = [n2] * n1  # columns from high[i] on are above it
    while True:
        left = sum(h - lo for lo, h in zip(low, high, strict=True))
        if left <= _SELECT_BY_SORTING:
            rest = sorted(xs[i] - zs[j] for i in range(n1) for j in range(low[i], high[i]))
            return rest[k - sum(low)]
        candidates = sorted(
            (xs[i] - zs[(low[i] + high[i]) // 2], high[i] - low[i])
            for i in range(n1)
            if high[i] > low[i]
        )
        half, pivot = left / 2, candidates[-1][0]
        for value, weight in candidates:
            half -= weight
            if half <= 0:
                pivot = value
                break
        below = _count_below(xs, zs, pivot, strict=True)
        if k < sum(below):
            high = [min(h, b) for h, b in zip(high, below, strict=True)]
            continue
        at_most = _count_below(xs, zs, pivot, strict=False)
        if k >= sum(at_most):
            low = [max(lo, a) for lo, a in zip(low, at_most, strict=True)]
            continue
        return pivot


def _count_below(
    xs: Sequence[float], zs: Sequence[float], pivot: float, *, strict: bool
) -> list[int]:
    # Per row i, how many columns j have xs[i] - zs[j] < pivot (<= when not strict). Rows grow
    # downwards, so the count only shrinks from one row to the next: one pass for all rows.
    counts = []
    j = len(zs)
    for x in xs:
        while j > 0 and (x - zs[j - 1] >= pivot if strict else x - zs[j - 1] > pivot):
            j -= 1
        counts.append(j)
    return counts


def hodges_lehmann(canary: Sequence[float], stable: Sequence[float]) -> float:
    """The Hodges-Lehmann estimate of the shift: the median of all canary - stable differences."""
    _check(canary, stable)
    pairs = len(canary) * len(stable)
    middle = nth_difference(canary, stable, pairs // 2)
    if pairs % 2:
        return middle
    return (nth_difference(canary, stable, pairs // 2 - 1) + middle) / 2


def shift_interval(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    confidence: float = 0.95,
    alternative: Alternative = Alternative.GREATER,
    method: Method = Method.AUTO,
) -> ShiftInterval:
    """The shift's estimate and confidence interval, as R's wilcox.test(conf.int = TRUE).

    Exact without ties for small samples (R's rule, or always with Method.EXACT), else the
    normal approximation with tie and continuity correction (see the module docstring).
    """
    _check(canary, stable)
    if not 0 < confidence < 1:
        raise ValueError(f"a confidence is between 0 and 1, not {confidence}")
    n1, n2 = len(canary), len(stable)
    estimate = hodges_lehmann(canary, stable)
    lowest, highest = min(canary) - max(stable), max(canary) - min(stable)
    low_open = -math.inf if alternative is Alternative.LESS else None
    high_open = math.inf if alternative is Alternative.GREATER else None
    if lowest == highest:
        # Every difference is the same: the shift is known. (R stops: "cannot compute
        # confidence interval when all observations are tied".)
        return ShiftInterval(
            estimate,
            lowest if low_open is None else low_open,
            highest if high_open is None else high_open,
            confidence,
            exact=False,
        )
    pooled = [*canary, *stable]
    tied = len(set(pooled)) < len(pooled)
    alpha = 1 - confidence
    if _exact(method, n1, n2, tied) and not tied:
        return _exact_interval(
            canary,
            stable,
            estimate=estimate,
            confidence=confidence,
            alpha=alpha,
            alternative=alternative,
        )
    statistic = _CorrectedStatistic(canary, stable, alternative)
    normal = statistics.NormalDist()

    def bound(quantile: float) -> float:
        return statistic.root(quantile, lowest, highest)

    if alternative is Alternative.TWO_SIDED:
        low = bound(normal.inv_cdf(1 - alpha / 2))
        high = bound(normal.inv_cdf(alpha / 2))
    elif alternative is Alternative.GREATER:
        low, high = bound(normal.inv_cdf(1 - alpha)), math.inf
    else:
        low, high = -math.inf, bound(normal.inv_cdf(alpha))
    return ShiftInterval(estimate, low, high, confidence, exact=False)


def _exact_interval(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    estimate: float,
    confidence: float,
    alpha: float,
    alternative: Alternative,
) -> ShiftInterval:
    n1, n2 = len(canary), len(stable)
    pairs = n1 * n2
    counts = _wilcoxon_counts(n1, n2)
    total = comb(n1 + n2, n1)
    tail = alpha / 2 if alternative is Alternative.TWO_SIDED else alpha
    # R's qwilcox: the smallest q with P(U <= q) >= tail; 0 is taken as 1.
    wanted = Fraction(tail) - _QUANTILE_FUZZ
    cumulative, quantile = 0, 0
    while True:
        cumulative += counts[quantile]
        if Fraction(cumulative, total) >= wanted:
            break
        quantile += 1
    quantile = max(quantile, 1)
    achieved = sum(counts[:quantile]) / total
    if alternative is Alternative.TWO_SIDED:
        achieved *= 2
    if achieved - alpha > alpha / 2:
        confidence = 1 - achieved  # R: "Requested conf.level not achievable"
    low = -math.inf
    high = math.inf
    if alternative is not Alternative.LESS:
        low = nth_difference(canary, stable, quantile - 1)
    if alternative is not Alternative.GREATER:
        high = nth_difference(canary, stable, pairs - quantile)
    return ShiftInterval(estimate, low, high, confidence, exact=True)


class _CorrectedStatistic:
    """R's standardised statistic of `canary - d` against `stable`, as a function of d.

    Between two consecutive differences canary[i] - stable[j] it is constant: only the pairs
    above d count, and the ties are those within each sample. It is computed there from a count
    (g pairs above d) rather than by ranking; at the two extreme differences, where R evaluates
    it first, it is ranked as R ranks it.
    """

    def __init__(
        self, canary: Sequence[float], stable: Sequence[float], alternative: Alternative
    ) -> None:
        self.canary, self.stable, self.alternative = canary, stable, alternative
        self.n1, self.n2 = len(canary), len(stable)
        self.between = _sigma(self.n1, self.n2, _tie_term(canary) + _tie_term(stable))

    def _correction(self, dz: float) -> float:
        if self.alternative is Alternative.GREATER:
            return 0.5
        if self.alternative is Alternative.LESS:
            return -0.5
        return math.copysign(0.5, dz) if dz else 0.0

    def at(self, shift: float) -> float:
        """The statistic at exactly `shift`, ties with the stable values included."""
        moved = [x - shift for x in self.canary]
        pooled = [*moved, *self.stable]
        doubled = _doubled_ranks(pooled)
        dz = (sum(doubled[: self.n1]) - self.n1 * (self.n1 + 1)) / 2 - self.n1 * self.n2 / 2
        sigma = _sigma(self.n1, self.n2, _tie_term(pooled))
        return (dz - self._correction(dz)) / sigma

    def _between(self, above: int) -> float:
        dz = above - self.n1 * self.n2 / 2
        return (dz - self._correction(dz)) / self.between

    def root(self, quantile: float, lowest: float, highest: float) -> float:
        """Where the statistic crosses `quantile`, as R's root(zq): an end when it does not."""
        if self.at(lowest) - quantile <= 0:
            return lowest
        if self.at(highest) - quantile >= 0:
            return highest
        # The fewest pairs above d that keep the statistic above the quantile; the statistic
        # grows with that count, so a binary search finds it.
        pairs = self.n1 * self.n2
        few, many = 0, pairs + 1
        while few < many:
            middle = (few + many) // 2
            if self._between(middle) - quantile > 0:
                many = middle
            else:
                few = middle + 1
        # With g pairs above d, d is below the g-th largest difference: that is the crossing.
        index = min(max(pairs - few, 0), pairs - 1)
        return nth_difference(self.canary, self.stable, index)


# --- the effect and the verdict -----------------------------------------------------------


def effect_size(
    measure: EffectMeasure,
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    u: float | None = None,
    shift: float | None = None,
) -> float | None:
    """The change from stable to canary in `measure`'s unit; None when it is undefined.

    `u` and `shift` may be passed when already computed.
    """
    _check(canary, stable)
    if measure is EffectMeasure.CLES:
        u = u_statistic(canary, stable) if u is None else u
        return u / (len(canary) * len(stable))
    if measure is EffectMeasure.MEAN_RATIO:
        canary_mean, reference = statistics.fmean(canary), statistics.fmean(stable)
        if reference > 0:
            return canary_mean / reference  # Kayenta's mean ratio
        difference = canary_mean - reference
    else:
        reference = statistics.median(stable)
        difference = hodges_lehmann(canary, stable) if shift is None else shift
    # A negative reference: still above 1 when the canary is higher.
    return 1 + difference / abs(reference) if reference != 0 else None


def mann_whitney(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    confidence: float = 0.95,
    alternative: Alternative = Alternative.GREATER,
    min_points: int = 10,
    measure: EffectMeasure = EffectMeasure.MEAN_RATIO,
    thresholds: Thresholds | None = None,
    method: Method = Method.AUTO,
) -> JudgeResult:
    """Judge canary values against stable values (see the module docstring for the rules).

    Values must be finite; the caller applies the NaN strategy first. `thresholds` default to
    the strict ones: every significant change in the bad direction fails.
    """
    limits = thresholds if thresholds is not None else Thresholds.strict(measure)
    n1, n2 = len(canary), len(stable)
    if n1 == 0 or n2 == 0:
        message = f"no points to compare (canary {n1}, stable {n2})"
        return JudgeResult(Verdict.INCONCLUSIVE, 1.0, 0.0, n1, n2, measure, None, None, message)
    test = u_test(canary, stable, alternative=alternative, method=method)
    interval = shift_interval(
        canary, stable, confidence=confidence, alternative=alternative, method=method
    )
    effect = effect_size(measure, canary, stable, u=test.u, shift=interval.estimate)
    higher = alternative is Alternative.GREATER or (
        alternative is Alternative.TWO_SIDED and test.u > n1 * n2 / 2
    )
    if min(n1, n2) < min_points:
        verdict, why, critical = (
            Verdict.INCONCLUSIVE,
            f"fewer than minPoints={min_points} points on a side",
            False,
        )
    elif test.p_value > 1 - confidence:
        wanted = {Alternative.GREATER: "increase", Alternative.LESS: "decrease"}
        verdict, why, critical = (
            Verdict.PASS,
            f"no significant {wanted.get(alternative, 'change')} at confidence {confidence:g}",
            False,
        )
    else:
        verdict, why, critical = _size(measure, effect, limits, higher=higher)
    size = "undefined" if effect is None else f"{effect:.4g}"
    numbers = (
        f"p={test.p_value:.4g} ({'exact' if test.exact else 'normal approximation'}), "
        f"{measure} {size}, location shift {interval.estimate:+.4g} "
        f"({interval.confidence:.0%} CI {_bound(interval.low)} to {_bound(interval.high)}), "
        f"U={test.u:g}, n={n1}/{n2}"
    )
    return JudgeResult(
        verdict=verdict,
        p_value=test.p_value,
        u=test.u,
        n_canary=n1,
        n_stable=n2,
        measure=measure,
        effect_size=effect,
        interval=interval,
        message=f"{why}: {numbers}",
        exact=test.exact,
        critical=critical,
    )


def _size(
    measure: EffectMeasure, effect: float | None, limits: Thresholds, *, higher: bool
) -> tuple[Verdict, str, bool]:
    """The verdict on a significant change: (verdict, why, critical)."""
    change = "increase" if higher else "decrease"
    if effect is None:
        reference = "median" if measure is EffectMeasure.SHIFT else "mean"
        return (
            Verdict.FAIL,
            f"significant {change} of undefined size (the baseline {reference} is 0): a real "
            "change with nothing to measure it against fails",
            True,
        )
    if higher and effect >= limits.allowed_increase:
        return (
            Verdict.FAIL,
            f"significant increase reaching allowedIncrease {limits.allowed_increase:g}",
            effect >= limits.critical_increase,
        )
    if not higher and effect <= limits.allowed_decrease:
        return (
            Verdict.FAIL,
            f"significant decrease reaching allowedDecrease {limits.allowed_decrease:g}",
            effect <= limits.critical_decrease,
        )
    allowance = (
        f"allowedIncrease {limits.allowed_increase:g}"
        if higher
        else f"allowedDecrease {limits.allowed_decrease:g}"
    )
    return Verdict.PASS, f"significant {change} within {allowance}", False


def _bound(value: float) -> str:
    return f"{value:+.4g}" if math.isfinite(value) else ("+inf" if value > 0 else "-inf")
