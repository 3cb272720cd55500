import numpy as np
import pytest
from scipy import stats as sps

from harness.claims import stats

A = [85.5, 85.9, 85.2, 86.1, 85.7]
B = [84.1, 84.4, 83.9, 84.3, 84.0]


def test_summary_matches_numpy_and_scipy_bootstrap():
    e = stats.summarize(A)
    assert e.value == pytest.approx(np.mean(A)) and e.std == pytest.approx(np.std(A, ddof=1)) and e.n == 5
    ref = sps.bootstrap((np.array(A),), np.mean, n_resamples=1000, method="percentile",
                        rng=np.random.default_rng(0), vectorized=False)
    assert e.ci == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert e.ci[0] <= e.value <= e.ci[1]
    assert stats.summarize(A).ci == e.ci  # seeded


def test_welch_matches_scipy():
    w = stats.welch(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic) and w["p"] == pytest.approx(ref.pvalue)


def test_ratio_and_difference_with_bootstrap_ci():
    r = stats.ratio([2.0, 2.2, 2.4], [0.2, 0.19, 0.21])
    assert r.value == pytest.approx(2.2 / 0.2)
    assert r.ci[0] < r.value < r.ci[1]
    d = stats.difference(A, B)
    assert d.value == pytest.approx(np.mean(A) - np.mean(B)) and d.ci[0] > 0


def test_a_constant_group_does_not_collapse_a_two_group_ci():
    d = stats.difference([39.9, 39.9], [27.4, 31.8])
    assert d.ci[0] < d.value < d.ci[1]


def test_degenerate_inputs():
    assert stats.summarize([3.0]).ci == (3.0, 3.0)
    assert stats.summarize([2.0, 2.0]).ci == (2.0, 2.0)
    assert np.isnan(stats.welch([1.0], [2.0])["p"])


def test_loglog_slope_recovers_a_power_law():
    w = [32, 64, 128, 256]
    ys = [[3.0 * x ** -0.5 for x in w], [2.9 * x ** -0.5 for x in w]]
    e = stats.loglog_slope(w, ys)
    assert e.value == pytest.approx(-0.5)
