"""Statistics over seeds (Section IV-D / Appendix D): mean, std (ddof=1), 95% confidence intervals
that hold at the few seeds a reproduction can afford, the two-tailed Welch t-test, Holm's
step-down adjustment for a family of tests (bounded where members are unknown), the difference a
Welch test would detect with 80% power, and how many seeds would likely decide a claim.

Intervals (nominal 95%; tests/test_coverage.py measures their coverage at n = 3, 5 and 10 on normal
and skewed seed samples, against a percentile bootstrap, which under-covers badly at small n:
about 75% at n=3 and 84% at n=5):

  summarize     mean of one group: Student t interval, mean ± t_{n-1} s / sqrt(n)
  difference    mean(a) - mean(b): Welch interval, t quantile at the Welch–Satterthwaite df
  ratio         mean(a) / mean(b): Fieller's interval (see `ratio`), Welch–Satterthwaite df
  loglog_slope  mean of the per-seed slopes: Student t interval over the slopes

Conventions, the same for every statistic:
  - an interval that all seeds agree on (std 0 in every group) is degenerate: (value, value);
  - a statistic with a group of fewer than 2 seeds has no spread to go on: std is nan and the
    interval is (nan, nan), never a zero-width interval that would pretend to certainty (exact
    quantities such as parameter counts are decided on their value by harness.checks instead);
  - an interval may be unbounded, (-inf, inf): Fieller's, when the denominator's mean is not
    significantly different from zero.

The interval formulas are vectorised (`t_interval`, `welch_interval`, `fieller_interval` take
arrays of per-group summaries), so the coverage simulation runs the very code the checks use.
Quantiles and the Welch test's p-value come from scipy.special's Student t functions (stdtrit,
stdtr: what scipy.stats.t.ppf and ttest_ind use, without scipy.stats's second of import time in
every process; tests/test_stats.py checks them against scipy.stats).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

CONFIDENCE = 0.95
SEEDS_CAP = 1000  # seeds_needed() gives up beyond this


INTERVALS = {"t": "Student t", "welch": "Welch", "fieller": "Fieller", "exact": "exact"}  # Estimate.method -> name


def interval_name(method: str) -> str:
    """The name of an estimate's interval, from its method ("t" -> "Student t"), as the report writes it."""
    return INTERVALS.get(method, method)


@dataclass
class Estimate:
    value: float  # point estimate (mean, or statistic of the means)
    std: float  # across seeds (nan for derived statistics of two groups, and for n < 2)
    ci: tuple  # (low, high): 95% interval; (nan, nan) when undefined, +-inf when unbounded
    n: int  # seeds (the smaller group for two-group statistics)
    method: str = "t"  # "t", "welch", "fieller", or "exact" (set by harness.checks); named in INTERVALS

    @property
    def interval(self) -> str:
        """The name of its interval's method, e.g. "Student t" (see interval_name)."""
        return interval_name(self.method)

    def to_dict(self):
        return asdict(self)


def _clean(values) -> np.ndarray:
    return np.asarray(values, dtype=float).ravel()


def _var(x: np.ndarray) -> float:
    """Sample variance (ddof=1); nan for fewer than 2 values (no spread to go on)."""
    return float(np.var(x, ddof=1)) if len(x) > 1 else math.nan


def _tq(df, confidence=CONFIDENCE):
    """Two-sided t quantile; nan where df is not positive."""
    df = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(df > 0, special.stdtrit(np.where(df > 0, df, 1.0), (1 + confidence) / 2), np.nan)


def t_interval(mean, var, n, confidence=CONFIDENCE):
    """Student t interval of a mean, vectorised: mean ± t_{n-1} sqrt(var / n). Returns (low, high)
    arrays; (mean, mean) where var == 0, nan where n < 2 (var is nan there)."""
    mean, var, n = (np.asarray(v, dtype=float) for v in (mean, var, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(var == 0, 0.0, _tq(n - 1, confidence) * np.sqrt(var / n))
    return mean - half, mean + half


def welch_df(va_n, vb_n, na, nb):
    """Welch–Satterthwaite df of a combination with variance components va_n + vb_n (each a
    group's variance of the mean, var / n); nan where both components are 0."""
    va_n, vb_n, na, nb = (np.asarray(v, dtype=float) for v in (va_n, vb_n, na, nb))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (va_n + vb_n) ** 2 / (va_n ** 2 / (na - 1) + vb_n ** 2 / (nb - 1))


def welch_interval(ma, va, na, mb, vb, nb, confidence=CONFIDENCE):
    """Welch interval of mean(a) - mean(b), vectorised: d ± t_df sqrt(va/na + vb/nb), df by
    Welch–Satterthwaite. (d, d) where both variances are 0; nan where a group has n < 2."""
    ma, va, na, mb, vb, nb = (np.asarray(v, dtype=float) for v in (ma, va, na, mb, vb, nb))
    d = ma - mb
    with np.errstate(invalid="ignore", divide="ignore"):
        se2 = va / na + vb / nb
        half = np.where(se2 == 0, 0.0, _tq(welch_df(va / na, vb / nb, na, nb), confidence) * np.sqrt(se2))
    return d - half, d + half


def fieller_interval(ma, va, na, mb, vb, nb, confidence=CONFIDENCE):
    """Fieller's interval of mean(a) / mean(b) for independent groups, vectorised.

    The set of theta with (ma - theta mb)^2 <= t^2 (va/na + theta^2 vb/nb), t the quantile at the
    Welch–Satterthwaite df of ma - theta mb evaluated at theta = ma / mb. When mb is significantly
    non-zero (mb^2 > t^2 vb/nb) the set is a bounded interval; otherwise it is the whole line or
    the complement of an interval, and (-inf, inf), its hull, is returned: the data do not bound
    the ratio. (theta, theta) where both variances are 0; nan where a group has n < 2."""
    ma, va, na, mb, vb, nb = (np.asarray(v, dtype=float) for v in (ma, va, na, mb, vb, nb))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        theta = ma / mb
        va_n, vb_n = va / na, vb / nb
        df = welch_df(va_n, theta ** 2 * vb_n, na, nb)
        df = np.where(np.isfinite(df), df, np.minimum(na, nb) - 1)  # both components 0: any df will do
        q = _tq(df, confidence) ** 2
        a = mb ** 2 - q * vb_n
        disc = q * (va_n * a + vb_n * ma ** 2)
        root = np.sqrt(np.maximum(disc, 0.0))
        bounded = a > 0
        lo = np.where(bounded, (ma * mb - root) / np.where(bounded, a, 1.0), -np.inf)
        hi = np.where(bounded, (ma * mb + root) / np.where(bounded, a, 1.0), np.inf)
        exact = (va_n + vb_n == 0) & np.isfinite(theta)
        lo, hi = np.where(exact, theta, lo), np.where(exact, theta, hi)
        undefined = np.isnan(va_n) | np.isnan(vb_n)
    return np.where(undefined, np.nan, lo), np.where(undefined, np.nan, hi)


def _pair(lo, hi) -> tuple:
    return (float(lo), float(hi))


def summarize(values) -> Estimate:
    """Mean over seeds with its Student t interval (df n-1)."""
    x = _clean(values)
    if len(x) == 0:
        return Estimate(math.nan, math.nan, (math.nan, math.nan), 0)
    v = _var(x)
    m = float(np.mean(x))
    return Estimate(m, math.sqrt(v) if v == v else math.nan, _pair(*t_interval(m, v, len(x))), len(x), "t")


def difference(a, b) -> Estimate:
    """mean(a) - mean(b) with the Welch interval (groups of seeds independent, variances unequal)."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return Estimate(math.nan, math.nan, (math.nan, math.nan), 0, "welch")
    ma, mb = float(np.mean(a)), float(np.mean(b))
    ci = welch_interval(ma, _var(a), len(a), mb, _var(b), len(b))
    return Estimate(ma - mb, math.nan, _pair(*ci), min(len(a), len(b)), "welch")


def ratio(a, b) -> Estimate:
    """mean(a) / mean(b) with Fieller's interval (see fieller_interval).

    Fieller rather than the delta method: the delta method's interval theta ± t se(theta) is
    symmetric and assumes the ratio is near-normal, which fails when mean(b) is noisy relative to
    its size, exactly the small-n case; Fieller's inverts the t-test of ma - theta mb, which is
    exact for normal seeds (up to the Welch df), and is honest about a denominator the data
    cannot tell from zero by returning (-inf, inf)."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return Estimate(math.nan, math.nan, (math.nan, math.nan), 0, "fieller")
    ma, mb = float(np.mean(a)), float(np.mean(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.float64(ma) / np.float64(mb))
    ci = fieller_interval(ma, _var(a), len(a), mb, _var(b), len(b))
    return Estimate(value, math.nan, _pair(*ci), min(len(a), len(b)), "fieller")


def welch(a, b) -> dict:
    """Two-tailed Welch t-test of mean(a) vs mean(b)."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        return {"t": math.nan, "p": math.nan, "df": math.nan}
    va, vb = np.float64(_var(a)) / len(a), np.float64(_var(b)) / len(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.float64(np.mean(a)) - np.mean(b)) / np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    df = 1.0 if math.isnan(df) else float(df)  # (both samples constant: as scipy.stats.ttest_ind)
    return {"t": float(t), "p": float(2 * special.stdtr(df, -abs(t))), "df": df}


def slopes(x, ys_by_seed: list) -> np.ndarray:
    """Least-squares slope of log(y) against log(x), one per seed (each seed a full sweep)."""
    lx = np.log(_clean(x))
    return np.array([np.polyfit(lx, np.log(_clean(y)), 1)[0] for y in ys_by_seed], dtype=float)


def loglog_slope(x, ys_by_seed: list) -> Estimate:
    """Slope of log(y) against log(x), fitted per seed; the estimate is the mean slope and its
    interval the Student t interval over the per-seed slopes (the seeds are the replicates)."""
    return summarize(slopes(x, ys_by_seed))


def holm(pvalues, unknown: float = 1.0) -> list:
    """Holm's step-down adjusted p-values of a family of tests, in the given order.

    Entries may be None (or nan): members of the family not run yet. They still count in the
    family's size m and are ranked as if their p-values were `unknown`. Holm's adjusted p of a
    member never falls when another member's p rises (a larger p ranks later, and the multipliers
    of the members it passes grow by one), so with `unknown` = 1 (the default) every known member
    gets its largest possible adjusted p, and with `unknown` = 0 its smallest (Holm within the known
    members alone): `holm_range` gives both. Adjusted p-values are capped at 1 and made monotone
    in the raw ones (the running maximum of the step-down). Unknown entries come back as they
    were given (None, or nan)."""
    ps = list(pvalues)
    m = len(ps)
    known = [p is not None and math.isfinite(p) for p in ps]
    filled = [float(p) if k else float(unknown) for p, k in zip(ps, known)]
    out = list(ps)
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: (filled[i], not known[i]))):
        running = max(running, min(1.0, (m - rank) * filled[i]))
        if known[i]:
            out[i] = running
    return out


@dataclass
class FamilyP:
    """A family member's Holm-adjusted p, bounded: `low` and `high` (equal when the family is
    complete), with `missing` of the family's `size` members unknown (holm_range)."""
    low: float
    high: float
    missing: int = 0
    size: int = 1


def holm_range(pvalues) -> list:
    """(lowest, highest) Holm-adjusted p of every member, whatever the unknown members' p-values
    (None or nan) turn out to be: the unknowns at 0 and at 1 (see holm). Both are equal when the
    family is complete; (None, None) for an unknown member."""
    lo, hi = holm(pvalues, unknown=0.0), holm(pvalues, unknown=1.0)
    return [(a, b) if p is not None and math.isfinite(p) else (None, None)
            for p, a, b in zip(pvalues, lo, hi)]


POWER = 0.8  # the power at which detectable_difference is stated


def detectable_difference(sd_a, n_a, sd_b, n_b, alpha=0.05, power=POWER) -> float:
    """The smallest true difference of means that a two-sided Welch t-test at level `alpha` would
    detect with probability `power`, were the groups' standard deviations the observed ones:

        delta = lambda * sqrt(sd_a^2 / n_a + sd_b^2 / n_b),

    lambda the noncentrality at which a noncentral t with the Welch-Satterthwaite df nu exceeds
    the test's critical value t_{1-alpha/2, nu} with probability `power` (scipy.special.nctdtrinc;
    the opposite tail, below -t, is left out: at 80% power it adds under 1e-3, so delta errs at
    most that little high). The textbook shortcut (t_{1-alpha/2, nu} + t_{power, nu}) times the
    standard error is 1-2% lower at nu = 3-4 (a power of 78-79% there). Decided on a
    Holm-adjusted p, a member of a family needs a larger difference still: this is the least.
    nan where a group has fewer than 2 seeds; 0 where both groups are constant."""
    va, vb = float(sd_a) ** 2 / n_a if n_a >= 2 else math.nan, float(sd_b) ** 2 / n_b if n_b >= 2 else math.nan
    if not (math.isfinite(va) and math.isfinite(vb)):
        return math.nan
    se2 = va + vb
    if se2 == 0:
        return 0.0
    df = float(welch_df(va, vb, n_a, n_b))
    crit = float(special.stdtrit(df, 1 - alpha / 2))
    return float(special.nctdtrinc(df, 1 - power, crit)) * math.sqrt(se2)


def seeds_needed(std, distance, confidence=CONFIDENCE, cap=SEEDS_CAP):
    """The smallest number of seeds n (>= 2) at which a t interval of half-width
    t_{n-1} std / sqrt(n) is narrower than `distance`, the distance from the observed estimate to
    the band edge its interval straddles: about how many seeds would decide the claim if the
    observed mean and spread held. None where no number would: distance 0 (the estimate sits on
    the edge) or not finite, std unknown (nan: a single seed), or more than `cap` seeds needed.

    For a difference of two group means pass sqrt(std_a^2 + std_b^2): n is then the number of
    seeds per group (its df taken as n - 1, the smaller bound of Welch's, so n errs high); for a
    ratio, by the delta method, sqrt(std_a^2 + ratio^2 std_b^2) / |mean(b)|."""
    std, distance = float(std), float(distance)
    if not (math.isfinite(std) and math.isfinite(distance)) or distance <= 0 or std < 0:
        return None
    if std == 0:
        return 2
    n = np.arange(2, int(cap) + 1)
    ok = _tq(n - 1, confidence) * std / np.sqrt(n) < distance
    return int(n[np.argmax(ok)]) if ok.any() else None
