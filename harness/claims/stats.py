"""Statistics over seeds (Section IV-D / Appendix D): mean, std (ddof=1), 95% bootstrap CI with
1,000 seeded resamples, two-tailed Welch t-test; ratios and differences of two groups get their CI
by bootstrapping each group's seeds independently. All from scipy.stats, nothing by hand.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

N_RESAMPLES = 1000
CONFIDENCE = 0.95
BOOT_SEED = 0


@dataclass
class Estimate:
    value: float  # point estimate (mean, or statistic of the means)
    std: float  # across seeds (nan for derived statistics of two groups)
    ci: tuple  # (low, high)
    n: int  # seeds

    def to_dict(self):
        return asdict(self)


def _clean(values) -> np.ndarray:
    return np.asarray(values, dtype=float).ravel()


def _bootstrap(samples, statistic) -> tuple:
    if any(len(s) < 2 for s in samples) or all(np.all(s == s[0]) for s in samples):
        point = statistic(*samples)
        return (float(point), float(point))
    res = sps.bootstrap(samples, statistic, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                        method="percentile", vectorized=False, paired=False,
                        rng=np.random.default_rng(BOOT_SEED))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarize(values) -> Estimate:
    x = _clean(values)
    if len(x) == 0:
        return Estimate(math.nan, math.nan, (math.nan, math.nan), 0)
    std = float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    return Estimate(float(np.mean(x)), std, _bootstrap((x,), np.mean), len(x))


def ratio(a, b) -> Estimate:
    """mean(a) / mean(b) with a bootstrap CI over the seeds of each group."""
    a, b = _clean(a), _clean(b)
    stat = lambda u, v: np.mean(u) / np.mean(v)  # noqa: E731
    return Estimate(float(stat(a, b)), math.nan, _bootstrap((a, b), stat), min(len(a), len(b)))


def difference(a, b) -> Estimate:
    """mean(a) - mean(b) with a bootstrap CI over the seeds of each group."""
    a, b = _clean(a), _clean(b)
    stat = lambda u, v: np.mean(u) - np.mean(v)  # noqa: E731
    return Estimate(float(stat(a, b)), math.nan, _bootstrap((a, b), stat), min(len(a), len(b)))


def welch(a, b) -> dict:
    """Two-tailed Welch t-test of mean(a) vs mean(b)."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        return {"t": math.nan, "p": math.nan, "df": math.nan}
    res = sps.ttest_ind(a, b, equal_var=False)
    return {"t": float(res.statistic), "p": float(res.pvalue), "df": float(getattr(res, "df", math.nan))}


def loglog_slope(x, ys_by_seed: list) -> Estimate:
    """Slope of log(y) against log(x), fitted per seed (each seed a full sweep); the estimate is the
    mean slope and its CI a bootstrap over seeds."""
    lx = np.log(_clean(x))
    slopes = np.array([np.polyfit(lx, np.log(_clean(y)), 1)[0] for y in ys_by_seed])
    return summarize(slopes)
