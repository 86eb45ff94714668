"""The Mann-Whitney judge, checked against statistics computed independently of it.

Reference values come from three places: published outputs (scipy's documented example, R's
wilcox.test), textbook exact tails that follow from counting (with no overlap, only one of the
C(n1 + n2, n1) labellings is as extreme), and a brute-force permutation test written here from
the definition (every labelling of the pooled values, U counted pair by pair), which the exact
mode must match to the last bit, ties included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.analysis.judge import (
    EXACT_MAX_PAIRS,
    Method,
    Verdict,
    hodges_lehmann,
    mann_whitney,
    ranks,
    relative_effect,
    u_statistic,
    u_test,
)
from coalmine.analysis.spec import Direction

# scipy.stats.mannwhitneyu's documentation: ages of male and female subjects.
MALES = [19.0, 22.0, 16.0, 29.0, 24.0]
FEMALES = [20.0, 11.0, 17.0, 12.0]


def pair_u(canary: Sequence[float], stable: Sequence[float]) -> Fraction:
    """U from its definition: pairs where the canary is higher, ties counting a half."""
    return sum(
        (Fraction(1) if x > y else Fraction(1, 2) if x == y else Fraction(0))
        for x in canary
        for y in stable
    ) + Fraction(0)


def brute_force_p(canary: Sequence[float], stable: Sequence[float], direction: Direction) -> float:
    """The permutation p-value: every way to label len(canary) of the pooled values canary."""
    pooled = [*canary, *stable]
    observed = pair_u(canary, stable)
    greater = less = total = 0
    for chosen in combinations(range(len(pooled)), len(canary)):
        picked = set(chosen)
        u = pair_u(
            [pooled[i] for i in chosen], [pooled[i] for i in range(len(pooled)) if i not in picked]
        )
        total += 1
        greater += u >= observed
        less += u <= observed
    if direction is Direction.INCREASE:
        return float(Fraction(greater, total))
    if direction is Direction.DECREASE:
        return float(Fraction(less, total))
    return float(min(Fraction(1), 2 * Fraction(min(greater, less), total)))


# --- published and textbook values --------------------------------------------------------


def test_the_scipy_documentation_example() -> None:
    # scipy: mannwhitneyu(males, females, method="exact") -> U1 = 17.0, p = 0.1111111111111111;
    # method="asymptotic" -> p = 0.11134688653314041 (two-sided, continuity-corrected).
    exact = u_test(MALES, FEMALES, direction=Direction.EITHER, method=Method.EXACT)
    assert exact.u == 17.0
    assert exact.p_value == pytest.approx(1 / 9, abs=1e-15)
    normal = u_test(MALES, FEMALES, direction=Direction.EITHER, method=Method.ASYMPTOTIC)
    assert normal.p_value == pytest.approx(0.11134688653314041, abs=1e-15)
    assert u_statistic(FEMALES, MALES) == 3.0


def test_r_wilcox_test_without_exact() -> None:
    # R: wilcox.test(c(1, 2, 3), c(4, 5, 6), exact = FALSE) -> W = 0, p-value = 0.08086.
    test = u_test([1, 2, 3], [4, 5, 6], direction=Direction.EITHER, method=Method.ASYMPTOTIC)
    assert test.u == 0.0
    assert test.p_value == pytest.approx(0.0808556, abs=1e-6)
    # The same from the formula: mean 4.5, variance 3 * 3 * 7 / 12, continuity 1/2.
    z = (4.5 - 0.5) / math.sqrt(9 * 7 / 12)
    assert test.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)


def test_the_tie_correction() -> None:
    # Ranks of [1, 2, 2 | 2, 3, 4]: 1, 3, 3, 3, 5, 6, so U = 7 - 6 = 1; one tie group of 3,
    # variance = 9/12 * (7 - (27 - 3)/(6 * 5)) = 4.65; two-sided p = 0.1641597...
    canary, stable = [1.0, 2.0, 2.0], [2.0, 3.0, 4.0]
    assert ranks([*canary, *stable]) == [1, 3, 3, 3, 5, 6]
    test = u_test(canary, stable, direction=Direction.EITHER, method=Method.ASYMPTOTIC)
    assert test.u == 1.0
    assert test.p_value == pytest.approx(math.erfc(3 / math.sqrt(4.65) / math.sqrt(2)), rel=1e-12)
    assert test.p_value == pytest.approx(0.1641597, abs=1e-6)


@pytest.mark.parametrize(
    ("n", "one_sided"),
    [(3, Fraction(1, 20)), (4, Fraction(1, 70)), (5, Fraction(1, 252)), (6, Fraction(1, 924))],
)
def test_exact_tails_of_separated_samples(n: int, one_sided: Fraction) -> None:
    # With every canary value above every stable one, only 1 of C(2n, n) labellings is as
    # extreme: the classic table values (n = 3: p = 0.05, n = 4: p = 0.0143).
    stable = [float(i) for i in range(n)]
    canary = [float(i + 100) for i in range(n)]
    assert u_statistic(canary, stable) == n * n
    assert u_test(canary, stable, method=Method.EXACT).p_value == float(one_sided)
    two_sided = u_test(canary, stable, direction=Direction.EITHER, method=Method.EXACT)
    assert two_sided.p_value == float(2 * one_sided)
    assert u_test(canary, stable, direction=Direction.DECREASE, method=Method.EXACT).p_value == 1.0


@pytest.mark.parametrize(
    ("canary", "stable"),
    [
        (MALES, FEMALES),
        ([1.0, 2.0, 2.0], [2.0, 3.0, 4.0]),
        ([3.0, 3.0, 3.0, 1.0], [3.0, 2.0, 3.0]),
        ([0.5], [0.1, 0.2, 0.9, 0.4, 0.3]),
        ([1.0, 1.0], [1.0, 1.0, 1.0]),
        ([7.0, 1.0, 4.0, 4.0, 9.0, 2.0], [4.0, 5.0, 8.0, 4.0, 3.0, 6.0]),
    ],
)
@pytest.mark.parametrize("direction", list(Direction))
def test_exact_mode_is_the_permutation_test(
    canary: list[float], stable: list[float], direction: Direction
) -> None:
    test = u_test(canary, stable, direction=direction, method=Method.EXACT)
    assert test.exact
    assert test.u == float(pair_u(canary, stable))
    assert test.p_value == pytest.approx(brute_force_p(canary, stable, direction), rel=1e-12)


def test_auto_uses_the_exact_distribution_for_small_samples_only() -> None:
    small = [float(i) for i in range(10)]
    assert u_test(small, small).exact  # 10 * 10 pairs
    assert not u_test(small, [*small, 10.0]).exact  # 110 pairs
    assert EXACT_MAX_PAIRS == 100


def test_the_normal_approximation_is_close_to_exact_at_the_switch() -> None:
    canary = [float(i) + 0.5 for i in range(3, 13)]
    stable = [float(i) for i in range(10)]
    for direction in Direction:
        exact = u_test(canary, stable, direction=direction, method=Method.EXACT).p_value
        normal = u_test(canary, stable, direction=direction, method=Method.ASYMPTOTIC).p_value
        assert normal == pytest.approx(exact, abs=0.01)


# --- the verdict --------------------------------------------------------------------------


def test_identical_samples_pass_with_p_one() -> None:
    values = [float(i % 7) for i in range(30)]
    result = mann_whitney(values, list(values), direction=Direction.EITHER)
    assert result.p_value == 1.0
    assert result.verdict is Verdict.PASS
    assert result.effect_size == 0.0
    assert result.u == 30 * 30 / 2


def test_all_values_tied_is_p_one_in_every_direction() -> None:
    for method in (Method.EXACT, Method.ASYMPTOTIC):
        for direction in Direction:
            test = u_test([2.0] * 12, [2.0] * 12, direction=direction, method=method)
            assert test.p_value == 1.0


def test_a_clearly_worse_canary_fails() -> None:
    stable = [100.0 + (i * 7) % 13 for i in range(40)]
    canary = [value * 1.5 for value in stable]
    result = mann_whitney(canary, stable)
    assert result.verdict is Verdict.FAIL
    assert result.p_value < 1e-10
    assert result.effect_size == pytest.approx(0.5, abs=0.05)
    assert result.shift > 0
    assert (result.n_canary, result.n_stable) == (40, 40)
    assert "significant increase beyond tolerance" in result.message


def test_a_better_canary_passes_a_one_sided_judge() -> None:
    stable = [100.0 + i for i in range(20)]
    canary = [value / 2 for value in stable]
    assert mann_whitney(canary, stable, direction=Direction.INCREASE).verdict is Verdict.PASS
    assert mann_whitney(canary, stable, direction=Direction.DECREASE).verdict is Verdict.FAIL
    assert mann_whitney(canary, stable, direction=Direction.EITHER).verdict is Verdict.FAIL


def test_tolerance_forgives_a_small_but_significant_difference() -> None:
    stable = [100.0 + i * 0.1 for i in range(20)]
    canary = [value + 5.0 for value in stable]  # about 5% higher, perfectly separated
    strict = mann_whitney(canary, stable, tolerance=0.01)
    lenient = mann_whitney(canary, stable, tolerance=0.1)
    assert strict.p_value < 1e-6
    assert strict.verdict is Verdict.FAIL
    assert lenient.verdict is Verdict.PASS
    assert "within tolerance" in lenient.message
    assert lenient.effect_size == pytest.approx(5.0 / 100.95)


def test_confidence_sets_the_significance_level() -> None:
    # Separated samples of 4: one-sided exact p = 1/70 = 0.0143.
    canary, stable = [10.0, 11.0, 12.0, 13.0], [1.0, 2.0, 3.0, 4.0]
    assert mann_whitney(canary, stable, min_points=4, confidence=0.95).verdict is Verdict.FAIL
    assert mann_whitney(canary, stable, min_points=4, confidence=0.99).verdict is Verdict.PASS


def test_too_few_points_is_inconclusive() -> None:
    canary, stable = [10.0] * 9, [1.0] * 30
    result = mann_whitney(canary, stable, min_points=10)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "minPoints=10" in result.message
    empty = mann_whitney([], stable)
    assert (empty.verdict, empty.p_value, empty.n_canary) == (Verdict.INCONCLUSIVE, 1.0, 0)


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        u_test([1.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        u_test([], [1.0])


def test_hodges_lehmann_is_the_median_pairwise_difference() -> None:
    assert hodges_lehmann([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == 2.0
    assert hodges_lehmann([5.0, 6.0], [1.0, 2.0]) == 4.0  # differences 4, 3, 5, 4
    assert hodges_lehmann([x + 2.5 for x in MALES], MALES) == 2.5


def test_relative_effect_against_a_zero_median() -> None:
    assert relative_effect(0.0, [0.0, 0.0, 1.0]) == 0.0
    assert relative_effect(0.5, [0.0, 0.0, 1.0]) == math.inf
    assert relative_effect(-0.5, [0.0]) == -math.inf
    assert relative_effect(1.0, [-2.0, -2.0]) == 0.5


# --- properties ---------------------------------------------------------------------------

small_ints = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6)
samples = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=25
)


@given(small_ints, small_ints, st.sampled_from(list(Direction)))
@settings(max_examples=60, deadline=None)
def test_exact_mode_matches_brute_force_with_ties(
    canary: list[int], stable: list[int], direction: Direction
) -> None:
    canary_f, stable_f = [float(x) for x in canary], [float(x) for x in stable]
    test = u_test(canary_f, stable_f, direction=direction, method=Method.EXACT)
    assert test.p_value == pytest.approx(brute_force_p(canary_f, stable_f, direction), rel=1e-12)


@given(samples, samples)
def test_u_counts_pairs(canary: list[float], stable: list[float]) -> None:
    u_canary, u_stable = u_statistic(canary, stable), u_statistic(stable, canary)
    assert u_canary + u_stable == len(canary) * len(stable)
    assert u_canary == float(pair_u(canary, stable))


@given(samples, samples, st.sampled_from(list(Direction)), st.sampled_from(list(Method)))
def test_p_is_a_probability(
    canary: list[float], stable: list[float], direction: Direction, method: Method
) -> None:
    if method is Method.EXACT and len(canary) * len(stable) > 200:
        method = Method.AUTO  # keep the counting cheap
    assert 0.0 <= u_test(canary, stable, direction=direction, method=method).p_value <= 1.0


@given(samples, samples, st.sampled_from([Method.EXACT, Method.ASYMPTOTIC]))
def test_swapping_samples_swaps_the_one_sided_direction(
    canary: list[float], stable: list[float], method: Method
) -> None:
    if method is Method.EXACT and len(canary) * len(stable) > 200:
        method = Method.ASYMPTOTIC
    increase = u_test(canary, stable, direction=Direction.INCREASE, method=method).p_value
    decrease = u_test(stable, canary, direction=Direction.DECREASE, method=method).p_value
    assert increase == pytest.approx(decrease, rel=1e-12, abs=1e-300)
    either = u_test(canary, stable, direction=Direction.EITHER, method=method).p_value
    swapped = u_test(stable, canary, direction=Direction.EITHER, method=method).p_value
    assert either == pytest.approx(swapped, rel=1e-12, abs=1e-300)


ints = st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=20)


@given(ints, ints, st.integers(-(10**6), 10**6), st.sampled_from(list(Direction)))
def test_adding_a_constant_to_both_leaves_p_unchanged(
    canary: list[int], stable: list[int], constant: int, direction: Direction
) -> None:
    # Integers keep the shift exact in floating point, so no tie is made or broken by rounding.
    before = u_test([float(x) for x in canary], [float(x) for x in stable], direction=direction)
    after = u_test(
        [float(x + constant) for x in canary],
        [float(x + constant) for x in stable],
        direction=direction,
    )
    assert after == before


@given(ints, ints, st.integers(min_value=1, max_value=10))
def test_scaling_both_by_a_positive_factor_leaves_p_unchanged(
    canary: list[int], stable: list[int], power: int
) -> None:
    factor = 2.0**power
    before = u_test([float(x) for x in canary], [float(x) for x in stable])
    after = u_test([x * factor for x in canary], [x * factor for x in stable])
    assert after == before


@given(samples, samples)
def test_the_verdict_is_consistent_with_its_numbers(
    canary: list[float], stable: list[float]
) -> None:
    result = mann_whitney(canary, stable, min_points=3, tolerance=0.05)
    if min(len(canary), len(stable)) < 3:
        assert result.verdict is Verdict.INCONCLUSIVE
    elif result.verdict is Verdict.FAIL:
        assert result.p_value <= 0.05 + 1e-12
        assert result.effect_size > 0.05
    else:
        assert result.verdict is Verdict.PASS
        assert result.p_value > 0.05 or result.effect_size <= 0.05
