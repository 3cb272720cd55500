"""Coverage of harness.stats' 95% intervals at the seed counts a reproduction can afford.

Seeds are simulated with known parameters and each interval is checked to cover the true value at
least 93% of the time at nominal 95%, at n = 3, 5 and 10 seeds per group, for:

  mean        Student t interval (stats.summarize)
  difference  Welch interval (stats.difference), groups with unequal spreads (sd 1 and 2)
  ratio       Fieller's interval (stats.ratio), true ratio 2, denominator mean 5 with sd 0.5
              (coefficient of variation 10%: well away from zero)
  slope       t interval over per-seed log-log slopes (stats.loglog_slope): each seed a sweep over
              widths 32..256 whose exponent varies from seed to seed (sd 0.05 around -0.5), plus a
              little per-point noise

Two seed distributions: normal, and a moderately right-skewed lognormal (sigma 0.25, skewness
0.78), standing for the mild skew of seed-to-seed accuracy spreads (a stray bad seed); the sign of
the skew does not matter to a two-sided interval.

Known limit, measured here and kept as a test (test_t_interval_under_covers_strong_skew): the t
interval of a mean (and of a mean slope) is not robust to strong skew. Its coverage is 94-95% at
skewness 0.78, falls to 92.9-93.6% at skewness 1.1 (lognormal sigma 0.35), 91.6-92.8% at 1.75
(lognormal sigma 0.5) and 88-90% for exponential seeds (skewness 2), at n = 3-10. The Welch and
Fieller intervals held at least 93% up to exponential seeds in these set-ups (both groups skewed
the same way, so the skews partly cancel). Seeds as skewed as that need a transformation (e.g.
analyse log values) or far more seeds.

The percentile bootstrap the harness used before under-covers: 73-81% at n=3, 82-88% at n=5,
and still 89-91% at n=10 (normal seeds).

Every simulation is vectorised: the interval formulas are stats' own vectorised kernels
(t_interval, welch_interval, fieller_interval) applied to arrays of per-replicate summaries, with
a check that they agree with the scalar functions the checks call. Seeds are fixed, so the test is
deterministic; each assertion also keeps a margin of 3 Monte Carlo standard errors
(sqrt(c (1 - c) / R)) on the right side of 93%, so that another seed would not flip it either.
Run `python tests/test_coverage.py` to print the full coverage table.
"""
import math

import numpy as np
import pytest

from harness.claims import stats

FLOOR = 0.93
REPS = 20_000  # replicates per t-interval case: Monte Carlo SE about 0.0016 at 95%
BOOT_REPS, BOOT_B = 1_000, 400  # percentile bootstrap: replicates, resamples per replicate
WIDTHS = np.log([32.0, 64.0, 128.0, 256.0])
DISTS = {"normal": None, "lognormal": 0.25, "lognormal(0.35)": 0.35, "lognormal(0.5)": 0.5, "exponential": "exp"}
STATS = ("mean", "difference", "ratio", "slope")


def noise(rng, dist, shape):
    """Standardised draws (mean 0, sd 1) of a seed distribution."""
    kind = DISTS[dist]
    if kind is None:
        return rng.standard_normal(shape)
    if kind == "exp":
        return rng.exponential(1.0, shape) - 1.0
    m, sd = math.exp(kind ** 2 / 2), math.sqrt((math.exp(kind ** 2) - 1) * math.exp(kind ** 2))
    return (rng.lognormal(0.0, kind, shape) - m) / sd


def skewness(dist):
    kind = DISTS[dist]
    if kind is None:
        return 0.0
    if kind == "exp":
        return 2.0
    w = math.exp(kind ** 2)
    return (w + 2) * math.sqrt(w - 1)


def draw(stat, dist, n, reps, rng):
    """(samples, truth): per-replicate seed values, shape (reps, n) per group."""
    if stat == "mean":
        return (10 + noise(rng, dist, (reps, n)),), 10.0
    if stat == "difference":
        return (10 + noise(rng, dist, (reps, n)), 5 + 2 * noise(rng, dist, (reps, n))), 5.0
    if stat == "ratio":
        return (10 + noise(rng, dist, (reps, n)), 5 + 0.5 * noise(rng, dist, (reps, n))), 2.0
    beta = -0.5 + 0.05 * noise(rng, dist, (reps, n, 1))  # the seed's exponent
    logy = 1.0 + beta * WIDTHS + 0.02 * rng.standard_normal((reps, n, len(WIDTHS)))
    return (logy,), -0.5


def slopes(logy):
    """Least-squares slopes of log y on log width, vectorised over the leading axes."""
    xc = WIDTHS - WIDTHS.mean()
    return (logy * xc).sum(-1) / (xc ** 2).sum()


def interval(stat, samples):
    """stats' own interval formulas over replicates: (low, high) arrays."""
    if stat == "slope":
        samples = (slopes(samples[0]),)
    summ = [(x.mean(1), x.var(1, ddof=1), x.shape[1]) for x in samples]
    if stat in ("mean", "slope"):
        return stats.t_interval(*summ[0])
    kernel = stats.welch_interval if stat == "difference" else stats.fieller_interval
    return kernel(*summ[0], *summ[1])


def percentile_bootstrap(stat, samples, rng, b=BOOT_B):
    """The old interval: percentile bootstrap, each group's seeds resampled independently."""
    if stat == "slope":
        samples = (slopes(samples[0]),)

    def means(x):
        reps, n = x.shape
        idx = rng.integers(0, n, (reps, b, n))
        return np.take_along_axis(np.broadcast_to(x[:, None, :], (reps, b, n)), idx, 2).mean(2)

    m = [means(x) for x in samples]
    boot = m[0] if len(m) == 1 else m[0] - m[1] if stat == "difference" else m[0] / m[1]
    return np.quantile(boot, [0.025, 0.975], axis=1)


def coverage(lo, hi, truth):
    c = float(np.mean((lo <= truth) & (truth <= hi)))
    return c, math.sqrt(c * (1 - c) / len(lo))


def t_coverage(stat, dist, n, reps=REPS):
    rng = np.random.default_rng([20240, STATS.index(stat), list(DISTS).index(dist), n])
    samples, truth = draw(stat, dist, n, reps, rng)
    return coverage(*interval(stat, samples), truth)


def boot_coverage(stat, dist, n, reps=BOOT_REPS):
    rng = np.random.default_rng([7, STATS.index(stat), list(DISTS).index(dist), n])
    samples, truth = draw(stat, dist, n, reps, rng)
    return coverage(*percentile_bootstrap(stat, samples, rng), truth)


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("dist", ["normal", "lognormal"])
@pytest.mark.parametrize("stat", STATS)
def test_interval_covers_at_least_93_percent(stat, dist, n):
    c, se = t_coverage(stat, dist, n)
    assert c - 3 * se >= FLOOR, f"{stat} {dist} n={n}: coverage {c:.4f} ± {se:.4f}"
    assert c < 0.99  # and not by being uselessly wide


def test_t_interval_under_covers_strong_skew():
    """The documented limit: exponential seeds (skewness 2) defeat the t interval of a mean."""
    c, se = t_coverage("mean", "exponential", 5)
    assert c + 3 * se < FLOOR, f"coverage {c:.4f}"


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("stat", STATS)
def test_percentile_bootstrap_under_covers(stat, n):
    c, se = boot_coverage(stat, "normal", n)
    assert c + 3 * se < FLOOR, f"bootstrap {stat} n={n}: coverage {c:.4f}"


def test_percentile_bootstrap_under_covers_a_mean_at_10_seeds():
    c, se = boot_coverage("mean", "normal", 10, reps=2_000)
    assert c + 3 * se < FLOOR, f"coverage {c:.4f}"


@pytest.mark.parametrize("stat", STATS)
def test_vectorised_kernels_are_the_scalar_functions(stat):
    """The simulated intervals are the ones stats.summarize / difference / ratio / loglog_slope give."""
    rng = np.random.default_rng(3)
    samples, _ = draw(stat, "lognormal", 4, 10, rng)
    lo, hi = interval(stat, samples)
    for r in range(10):
        if stat == "mean":
            e = stats.summarize(samples[0][r])
        elif stat == "slope":
            e = stats.loglog_slope(np.exp(WIDTHS), [np.exp(y) for y in samples[0][r]])
        else:
            e = (stats.difference if stat == "difference" else stats.ratio)(samples[0][r], samples[1][r])
        assert e.ci == pytest.approx((lo[r], hi[r]), rel=1e-9)


def table():
    """Coverage of every interval, distribution and n (t intervals; bootstrap on normal seeds)."""
    print(f"{'interval':<11}{'seeds':<17}{'skew':>5}" + "".join(f"{'n=' + str(n):>9}" for n in (3, 5, 10)))
    for stat in STATS:
        for dist in DISTS:
            cells = [t_coverage(stat, dist, n)[0] for n in (3, 5, 10)]
            print(f"{stat:<11}{dist:<17}{skewness(dist):>5.2f}" + "".join(f"{c:>9.3f}" for c in cells))
        cells = [boot_coverage(stat, "normal", n)[0] for n in (3, 5, 10)]
        print(f"{stat:<11}{'normal, bootstrap':<17}{0.0:>5.2f}" + "".join(f"{c:>9.3f}" for c in cells))


if __name__ == "__main__":
    table()
