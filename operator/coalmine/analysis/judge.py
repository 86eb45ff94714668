"""The statistical judge: is the canary worse than the stable revision, or just noisy?

A threshold asks "is the canary's latency below 300ms?"; the judge asks "is the canary's
latency higher than the stable revision's, measured over the same minutes?", which needs no
threshold and is not fooled by a slow night for everyone. It is the test Kayenta uses: the
Mann-Whitney U (Wilcoxon rank-sum) test, which compares ranks rather than means, so it assumes
no distribution and is not moved by a single outlier.

The definition, implemented here from the textbook rather than borrowed from a library (no
scipy in the operator image):

- U for the canary counts the (canary, stable) pairs where the canary value is higher, ties
  counting a half: U_canary + U_stable = n_canary * n_stable.
- The p-value is the probability of a U at least as extreme under the null hypothesis that both
  samples come from one distribution: one-sided towards higher canary values for direction
  `increase`, towards lower ones for `decrease`, two-sided (twice the smaller tail, at most 1)
  for `either`.
- Exact: when n_canary * n_stable <= EXACT_MAX_PAIRS, the null distribution is counted: every
  way to choose which of the pooled values are the canary's is equally likely, and a dynamic
  programme over the (mid)ranks counts the choices by rank sum. Ties are handled exactly: it is
  the permutation distribution of the observed ranks.
- Asymptotic, above that: the normal approximation, mean n1*n2/2, variance
  n1*n2/12 * ((N + 1) - sum(t^3 - t) / (N * (N - 1))) with t the size of each group of ties, and
  a continuity correction of 1/2 towards the mean. All values tied gives p = 1.
- The effect is the Hodges-Lehmann estimate of the shift (the median of all canary - stable
  differences), relative to the stable median: effect_size = shift / |median(stable)|, signed,
  so 0.25 reads "the canary is about 25% higher". A stable median of 0 gives 0 for no shift and
  ±Inf otherwise.

The verdict: fewer than minPoints values on either side is `inconclusive`; otherwise `fail` when
the test is significant (p <= 1 - confidence) and the effect exceeds the tolerance in the bad
direction (effect > tolerance for increase, effect < -tolerance for decrease, |effect| >
tolerance for either); else `pass`. The tolerance keeps a large sample from failing a canary for
a difference nobody would notice: significance says a difference is real, tolerance says it
matters.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from coalmine.analysis.spec import Direction

EXACT_MAX_PAIRS = 100
"""Up to this many (canary, stable) pairs the p-value is exact; beyond, the normal
approximation, which is close by then and does not grow in cost with the samples."""


class Verdict(StrEnum):
    """The judge's answer for one measurement."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Method(StrEnum):
    """How the p-value is computed; AUTO picks by sample size (see EXACT_MAX_PAIRS)."""

    AUTO = "auto"
    EXACT = "exact"
    ASYMPTOTIC = "asymptotic"


@dataclass(frozen=True)
class UTest:
    """The result of a Mann-Whitney U test."""

    u: float
    """U for the canary: pairs where the canary is higher, ties counting a half."""
    p_value: float
    exact: bool
    """Whether p comes from the exact distribution rather than the normal approximation."""


@dataclass(frozen=True)
class JudgeResult:
    """The judge's verdict and the numbers behind it, recorded with the measurement."""

    verdict: Verdict
    p_value: float
    effect_size: float
    """Hodges-Lehmann shift relative to the stable median (0.1: canary about 10% higher)."""
    u: float
    n_canary: int
    n_stable: int
    message: str
    shift: float = 0.0
    """The Hodges-Lehmann shift itself, in the metric's unit."""
    exact: bool = False


def ranks(values: Sequence[float]) -> list[Fraction]:
    """1-based ranks of the values, tied values sharing the mean of their ranks (midranks)."""
    order = sorted(range(len(values)), key=lambda index: values[index])
    result = [Fraction(0)] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        midrank = Fraction(start + end + 2, 2)
        for position in range(start, end + 1):
            result[order[position]] = midrank
        start = end + 1
    return result


def u_statistic(canary: Sequence[float], stable: Sequence[float]) -> float:
    """U for the canary: the pairs where the canary value is higher, ties counting a half."""
    return float(_u(len(canary), ranks([*canary, *stable])))


def _u(n1: int, pooled: Sequence[Fraction]) -> Fraction:
    # The canary's rank sum less its smallest possible value; the canary comes first in pooled.
    return sum(pooled[:n1], Fraction(0)) - Fraction(n1 * (n1 + 1), 2)


def u_test(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    direction: Direction = Direction.INCREASE,
    method: Method = Method.AUTO,
) -> UTest:
    """The Mann-Whitney U test of canary against stable, in the direction that counts.

    Both samples must be non-empty and finite (ValueError otherwise).
    """
    n1, n2 = len(canary), len(stable)
    if n1 == 0 or n2 == 0:
        raise ValueError("the U test needs at least one value on each side")
    if not all(math.isfinite(value) for value in (*canary, *stable)):
        raise ValueError("the U test needs finite values")
    pooled = ranks([*canary, *stable])
    u = _u(n1, pooled)
    exact = method is Method.EXACT or (method is Method.AUTO and n1 * n2 <= EXACT_MAX_PAIRS)
    if exact:
        p_value = _exact_p(u, pooled, n1, direction)
    else:
        p_value = _normal_p(u, pooled, n1, n2, direction)
    return UTest(u=float(u), p_value=min(1.0, max(0.0, p_value)), exact=exact)


def _exact_p(u: Fraction, pooled: Sequence[Fraction], n1: int, direction: Direction) -> float:
    # Count, for every subset of the pooled ranks the size of the smaller sample, its rank sum
    # (ranks doubled so midranks stay integers). Each subset is one equally likely labelling
    # under the null hypothesis; the canary's U follows from the subset's sum.
    doubled = [int(rank * 2) for rank in pooled]
    n = len(doubled)
    n2 = n - n1
    size = min(n1, n2)
    counts: list[defaultdict[int, int]] = [defaultdict(int) for _ in range(size + 1)]
    counts[0][0] = 1
    for seen, rank in enumerate(doubled):
        for taken in range(min(seen + 1, size), 0, -1):
            target = counts[taken]
            for total, ways in counts[taken - 1].items():
                target[total + rank] += ways
    grand = sum(doubled)
    offset = n1 * (n1 + 1)
    observed = int(u * 2)
    greater = less = everything = 0
    for total, ways in counts[size].items():
        canary_sum = total if size == n1 else grand - total
        doubled_u = canary_sum - offset
        everything += ways
        if doubled_u >= observed:
            greater += ways
        if doubled_u <= observed:
            less += ways
    if direction is Direction.INCREASE:
        return greater / everything
    if direction is Direction.DECREASE:
        return less / everything
    return min(1.0, 2 * min(greater, less) / everything)


def _normal_p(
    u: Fraction, pooled: Sequence[Fraction], n1: int, n2: int, direction: Direction
) -> float:
    n = n1 + n2
    tie_groups: defaultdict[Fraction, int] = defaultdict(int)
    for rank in pooled:
        tie_groups[rank] += 1
    ties = sum(t**3 - t for t in tie_groups.values())
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0  # every value tied: U is its mean, and no labelling is more extreme
    sigma = math.sqrt(variance)
    deviation = float(u) - n1 * n2 / 2
    if direction is Direction.INCREASE:
        return _upper_tail((deviation - 0.5) / sigma)
    if direction is Direction.DECREASE:
        return _upper_tail((-deviation - 0.5) / sigma)
    return min(1.0, 2 * _upper_tail((abs(deviation) - 0.5) / sigma))


def _upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def hodges_lehmann(canary: Sequence[float], stable: Sequence[float]) -> float:
    """The Hodges-Lehmann estimate of the shift: the median of all canary - stable differences.

    Cost grows with n_canary * n_stable; a measurement's few hundred points are fine.
    """
    if not canary or not stable:
        raise ValueError("the shift needs at least one value on each side")
    return statistics.median(x - y for x in canary for y in stable)


def relative_effect(shift: float, stable: Sequence[float]) -> float:
    """The shift relative to the stable median; ±Inf for a shift from a median of 0."""
    reference = abs(statistics.median(stable))
    if reference == 0:
        return 0.0 if shift == 0 else math.copysign(math.inf, shift)
    return shift / reference


def mann_whitney(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    confidence: float = 0.95,
    tolerance: float = 0.0,
    direction: Direction = Direction.INCREASE,
    min_points: int = 10,
    method: Method = Method.AUTO,
) -> JudgeResult:
    """Judge canary values against stable values (see the module docstring for the rules).

    Values must be finite; the caller drops NaN and Inf first (they are no data).
    """
    n1, n2 = len(canary), len(stable)
    if n1 == 0 or n2 == 0:
        return JudgeResult(
            verdict=Verdict.INCONCLUSIVE,
            p_value=1.0,
            effect_size=0.0,
            u=0.0,
            n_canary=n1,
            n_stable=n2,
            message=f"no points to compare (canary {n1}, stable {n2})",
        )
    test = u_test(canary, stable, direction=direction, method=method)
    shift = hodges_lehmann(canary, stable)
    effect = relative_effect(shift, stable)
    alpha = 1 - confidence
    numbers = (
        f"p={test.p_value:.4g} ({'exact' if test.exact else 'normal approximation'}), "
        f"U={test.u:g}, effect {effect:+.2%} (shift {shift:+.4g}), n={n1}/{n2}"
    )

    def result(verdict: Verdict, why: str) -> JudgeResult:
        return JudgeResult(
            verdict=verdict,
            p_value=test.p_value,
            effect_size=effect,
            u=test.u,
            n_canary=n1,
            n_stable=n2,
            message=f"{why}: {numbers}",
            shift=shift,
            exact=test.exact,
        )

    if min(n1, n2) < min_points:
        return result(Verdict.INCONCLUSIVE, f"fewer than minPoints={min_points} points on a side")
    if test.p_value > alpha:
        return result(Verdict.PASS, f"no significant {direction} at confidence {confidence:g}")
    if _beyond(effect, tolerance, direction):
        return result(Verdict.FAIL, f"significant {direction} beyond tolerance {tolerance:.2%}")
    return result(Verdict.PASS, f"significant but within tolerance {tolerance:.2%}")


def _beyond(effect: float, tolerance: float, direction: Direction) -> bool:
    if direction is Direction.INCREASE:
        return effect > tolerance
    if direction is Direction.DECREASE:
        return effect < -tolerance
    return abs(effect) > tolerance
