import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.claims import stats

A = [85.5, 85.9, 85.2, 86.1, 85.7]
B = [84.1, 84.4, 83.9, 84.3, 84.0]


def test_summary_is_the_student_t_interval():
    e = stats.summarize(A)
    assert e.value == pytest.approx(np.mean(A)) and e.std == pytest.approx(np.std(A, ddof=1)) and e.n == 5
    ref = sps.t.interval(0.95, df=4, loc=np.mean(A), scale=sps.sem(A))
    assert e.ci == pytest.approx(ref) and e.method == "t"
    # by hand: t_{4, 0.975} = 2.7764451
    assert e.ci[1] - e.value == pytest.approx(2.7764451 * np.std(A, ddof=1) / math.sqrt(5), rel=1e-7)
    assert e.to_dict()["method"] == "t"


def test_welch_matches_scipy():
    w = stats.welch(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic) and w["p"] == pytest.approx(ref.pvalue)
    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=na), rng.normal(1.0, 3.0, size=nb)) for na, nb in ((2, 2), (3, 12), (5, 5), (12, 4))]
    cases += [([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]), ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]), ([1.0, 1.0], [1.0, 1.0, 1.0])]
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, b in cases:  # (the last two: no spread at all, a difference or none)
            w, ref = stats.welch(a, b), sps.ttest_ind(a, b, equal_var=False)
            for got, want in ((w["t"], ref.statistic), (w["p"], ref.pvalue), (w["df"], ref.df)):
                assert got == pytest.approx(float(want), rel=1e-9, nan_ok=True), (a, b)


def test_t_quantiles_match_scipy():
    df = np.array([1.0, 2.0, 4.0, 11.3, 1000.0])
    assert stats._tq(df) == pytest.approx(sps.t.ppf(0.975, df), rel=1e-12)
    assert np.isnan(stats._tq([0.0, -1.0])).all()


def test_difference_is_the_welch_interval():
    d = stats.difference(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False).confidence_interval(0.95)
    assert d.value == pytest.approx(np.mean(A) - np.mean(B)) and d.ci == pytest.approx((ref.low, ref.high))
    assert d.method == "welch" and d.ci[0] > 0
    d = stats.difference([1.0, 2.0, 4.0], [0.5, 0.7, 0.6, 0.9, 0.3])
    ref = sps.ttest_ind([1.0, 2.0, 4.0], [0.5, 0.7, 0.6, 0.9, 0.3], equal_var=False).confidence_interval()
    assert d.ci == pytest.approx((ref.low, ref.high)) and d.n == 3


def test_a_constant_group_does_not_collapse_a_two_group_ci():
    d = stats.difference([39.9, 39.9], [27.4, 31.8])
    assert d.ci[0] < d.value < d.ci[1]
    # the constant group adds no variance: the interval is the other group's t interval, df 1
    assert d.ci[1] - d.value == pytest.approx(12.7062047 * np.std([27.4, 31.8], ddof=1) / math.sqrt(2))


def fieller_set(a, b, theta):
    """Does theta lie in Fieller's set, by its definition (brute force)?"""
    ma, mb, va, vb = np.mean(a), np.mean(b), np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    th = ma / mb
    df = (va + th ** 2 * vb) ** 2 / (va ** 2 / (len(a) - 1) + (th ** 2 * vb) ** 2 / (len(b) - 1))
    q = sps.t.ppf(0.975, df) ** 2
    return (ma - theta * mb) ** 2 <= q * (va + theta ** 2 * vb)


def test_ratio_is_fiellers_interval():
    a, b = [2.0, 2.2, 2.4], [0.2, 0.19, 0.21]
    r = stats.ratio(a, b)
    assert r.value == pytest.approx(2.2 / 0.2) and r.method == "fieller"
    assert r.ci[0] < r.value < r.ci[1]
    lo, hi = r.ci
    assert fieller_set(a, b, lo * 1.0001) and fieller_set(a, b, hi * 0.9999)
    assert not fieller_set(a, b, lo * 0.999) and not fieller_set(a, b, hi * 1.001)
    assert r.value - lo < hi - r.value  # asymmetric, as a ratio's interval should be


def test_ratio_with_a_denominator_not_distinguishable_from_zero_is_unbounded():
    r = stats.ratio([1.0, 2.0], [0.1, 1.0])
    assert r.ci == (-math.inf, math.inf)
    assert stats.ratio([1.0, 1.0], [2.0, 2.0]).ci == (0.5, 0.5)  # all seeds agree: exact


def test_degenerate_inputs():
    one = stats.summarize([3.0])
    assert one.value == 3.0 and one.n == 1 and math.isnan(one.std) and all(map(math.isnan, one.ci))
    assert stats.summarize([2.0, 2.0]).ci == (2.0, 2.0) and stats.summarize([2.0, 2.0]).std == 0.0
    assert all(map(math.isnan, stats.difference([1.0], [2.0, 3.0]).ci))
    assert all(map(math.isnan, stats.ratio([1.0, 2.0], [2.0]).ci))
    assert stats.difference([1.0, 1.0], [3.0, 3.0]).ci == (-2.0, -2.0)
    assert np.isnan(stats.welch([1.0], [2.0])["p"])
    assert stats.summarize([]).n == 0


def test_loglog_slope_recovers_a_power_law():
    w = [32, 64, 128, 256]
    ys = [[3.0 * x ** -0.5 for x in w], [2.9 * x ** -0.5 for x in w]]
    e = stats.loglog_slope(w, ys)
    assert e.value == pytest.approx(-0.5) and e.ci == pytest.approx((-0.5, -0.5), abs=1e-9)


def test_loglog_slope_is_a_t_interval_over_the_per_seed_slopes():
    w = [32, 64, 128]
    ys = [[x ** -0.45 for x in w], [x ** -0.5 for x in w], [x ** -0.6 for x in w]]
    e = stats.loglog_slope(w, ys)
    ref = sps.t.interval(0.95, df=2, loc=np.mean([-0.45, -0.5, -0.6]), scale=sps.sem([-0.45, -0.5, -0.6]))
    assert e.value == pytest.approx(np.mean([-0.45, -0.5, -0.6])) and e.ci == pytest.approx(ref)
    assert e.n == 3 and e.std == pytest.approx(np.std([-0.45, -0.5, -0.6], ddof=1))


def test_holm_against_a_hand_computed_family():
    # sorted 0.005, 0.01, 0.03, 0.04: x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # x5 = 0.05, x4 = 0.08, x3 = 0.09, x2 = 0.08 -> 0.09, x1 = 0.05 -> 0.09 (what statsmodels'
    # multipletests(method="holm") gives for this family)
    assert stats.holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == [] and stats.holm([0.02]) == pytest.approx([0.02])


def test_holm_counts_unknown_members_and_gives_the_known_ones_the_largest_multipliers():
    # m = 4; the two known p-values rank first: x4 and x3
    assert stats.holm([0.01, None, 0.02, None]) == pytest.approx([0.04, None, 0.06, None])
    out = stats.holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.03) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    # conservative: whatever the unknown p-values turn out to be, no known adjusted p goes up
    partial = stats.holm([0.01, None, 0.02, None])
    for fill in ([0.001, 0.001], [0.015, 0.5], [0.9, 0.9], [0.0, 1.0]):
        full = stats.holm([0.01, fill[0], 0.02, fill[1]])
        assert full[0] <= partial[0] + 1e-15 and full[2] <= partial[2] + 1e-15


def test_seeds_needed():
    # t_{n-1} * 0.3 / sqrt(n) < 0.1: n = 37 gives 2.0281 * 0.3 / 6.083 = 0.1000...; n = 38: 0.0986
    n = stats.seeds_needed(0.3, 0.1)
    assert n == 38
    half = lambda k: sps.t.ppf(0.975, k - 1) * 0.3 / math.sqrt(k)  # noqa: E731
    assert half(n) < 0.1 <= half(n - 1)
    assert stats.seeds_needed(0.3, 0.2) < n < stats.seeds_needed(0.3, 0.05)  # nearer the edge: more
    assert stats.seeds_needed(0.0, 0.1) == 2
    assert stats.seeds_needed(1.0, 0.0) is None  # on the edge: undecidable
    assert stats.seeds_needed(math.nan, 0.1) is None  # one seed: no spread to go on
    assert stats.seeds_needed(1.0, 1e-3) is None  # beyond the cap
    assert stats.seeds_needed(1.0, 0.5, confidence=0.99) > stats.seeds_needed(1.0, 0.5)
