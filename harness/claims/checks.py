"""Checks: turn an experiment's rows into a verdict on one claim in one tier.

Each check computes a measured quantity over seeds (mean, std, 95% interval, n; harness.stats) and
decides on its interval: "pass" when the interval lies inside the expected band, "fail" when it
lies wholly outside, "inconclusive" when it straddles an edge (with about how many seeds would
decide it), and says by how much the point estimate misses. Exact quantities (a zero-width band:
parameter counts) are decided on their value; Welch claims on their p-value (raw, or adjusted for
the family). A selection that contains a diverged run (non-finite loss or metric) gets the verdict
"diverged", never "pass".

Check types (fields in the claim's `check` table):
  value        metric at one configuration (`where`)
  all          every configuration matching `where` lies within min/max
  ratio        mean(metric at a) / mean(metric at b)
  difference   mean(metric at a) - mean(metric at b)
  monotonic    means over the sweep field `over` move in `direction` (strict, or within `slack`),
               decided per step on the Welch interval of the two neighbouring means' difference
  loglog_slope slope of log(metric) against log(over), fitted per seed
  welch        two-tailed Welch t-test of a vs b: `significant` (p < alpha) and `direction`
"""
from __future__ import annotations

import json
import math

from . import stats


class SelectionError(ValueError):
    pass


def _matches(config: dict, where: dict) -> bool:
    for k, v in where.items():
        c = config.get(k)
        if isinstance(v, list):  # membership: where = {width = [32, 64]}
            if not any(_matches({k: c}, {k: x}) for x in v):
                return False
        elif isinstance(v, (int, float)) and isinstance(c, (int, float)) and not isinstance(v, bool):
            if not math.isclose(c, v, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif c != v:
            return False
    return True


def select(rows, where: dict | None) -> list:
    return [r for r in rows if _matches(r["config"], where or {})]


def groups(rows) -> list:
    """Rows grouped by configuration (everything but the seed), in first-seen order."""
    out = {}
    for r in rows:
        out.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r)
    return list(out.values())


def _values(group, metric) -> list:
    return [r["metrics"].get(metric, math.nan) for r in group]


def _diverged(group, metric) -> bool:
    return any(r["diverged"] or not math.isfinite(r["metrics"].get(metric, math.nan)) for r in group)


def _one_group(rows, where, label) -> list:
    g = groups(select(rows, where))
    if len(g) != 1:
        raise SelectionError(f"{label} {where or {}} matches {len(g)} configurations, expected exactly 1")
    return g[0]


def _band(expect) -> tuple:
    if "target" in expect:
        t = expect["target"]
        tol = expect.get("abs_tol", 0.0)
        if "rel_tol" in expect:
            tol = max(tol, expect["rel_tol"] * abs(t))
        return t - tol, t + tol
    return expect.get("min", -math.inf), expect.get("max", math.inf)


def _in_band(value, expect) -> tuple:
    """(passed, miss): miss is how far the value lies outside the expected band (0 inside)."""
    lo, hi = _band(expect)
    miss = max(lo - value, value - hi, 0.0)
    return miss == 0.0, miss


def position(expect, value) -> dict:
    """Where `value` lies against the expected band, to describe a result (verdicts do not use
    it): `delta` = value - target and `rel` = delta / |target| (None without a target, or rel
    for a zero target), `outside` = signed distance outside the band (0 inside), and `units` =
    (value - centre) / half-width, the value in tolerance units with the band at [-1, 1] (None for
    a one-sided or zero-width band)."""
    lo, hi = _band(expect)
    t = expect.get("target")
    delta = None if t is None else value - t
    half = (hi - lo) / 2
    units = (value - (lo + hi) / 2) / half if math.isfinite(half) and half > 0 else None
    outside = value - lo if value < lo else value - hi if value > hi else 0.0
    return {"delta": delta, "rel": delta / abs(t) if delta is not None and t else None,
            "outside": outside, "units": units}


def _describe_band(expect) -> str:
    lo, hi = _band(expect)
    if "target" in expect:
        t = expect["target"]
        if lo == hi:
            return f"= {t:.10g}"
        if "rel_tol" in expect and "abs_tol" not in expect:
            return f"{t:.10g} ± {100 * expect['rel_tol']:g}% [{lo:.4g}, {hi:.4g}]"
        return f"{t:.10g} ± {hi - t:.4g}"
    if math.isinf(lo):
        return f"<= {hi:.10g}"
    if math.isinf(hi):
        return f">= {lo:.10g}"
    return f"in [{lo:.10g}, {hi:.10g}]"


def _fmt(e: stats.Estimate) -> str:
    s = f"{e.value:.6g}"
    if e.std == e.std and e.n > 1:
        s += f" ± {e.std:.2g}"
    if e.method == "exact":
        return s + f" (exact, n={e.n})"
    if not all(c == c for c in e.ci):
        return s + f" (no 95% CI, n={e.n})"
    return s + f" (95% CI [{e.ci[0]:.4g}, {e.ci[1]:.4g}], n={e.n})"


def _exact_band(expect) -> bool:
    """A zero-width band (a target with no tolerance): the expectation of an exact quantity."""
    lo, hi = _band(expect)
    return lo == hi


def _exact_estimate(values) -> stats.Estimate:
    """An exact quantity (a parameter count): every seed agrees, so the value is known without
    error, whatever the number of seeds; otherwise the t estimate (and the check fails)."""
    x = [float(v) for v in values]
    if x and all(v == x[0] for v in x):
        return stats.Estimate(x[0], 0.0, (x[0], x[0]), len(x), "exact")
    return stats.summarize(x)


def _interval_verdict(ci, expect) -> str:
    """pass: the interval lies inside the band; fail: wholly outside it; inconclusive: it straddles
    an edge, or there is no interval (one seed)."""
    lo, hi = _band(expect)
    a, b = ci
    if not (a == a and b == b):
        return "inconclusive"
    if lo <= a and b <= hi:
        return "pass"
    if b < lo or a > hi:
        return "fail"
    return "inconclusive"


def _straddled(ci, expect) -> list:
    """The band edges (finite) that the interval straddles."""
    lo, hi = _band(expect)
    a, b = ci
    return [e for e in (lo, hi) if math.isfinite(e) and a <= e <= b and (a < e or e < b)]


def _decide(est: stats.Estimate, expect, spread, per: str = "", exact: bool = False) -> tuple:
    """(verdict, seeds_needed, sentence) of a band claim on the estimate's interval; `spread` is
    the per-seed spread that seeds_needed takes (see stats.seeds_needed). `exact`: the values
    were expected to be exact (see _exact_estimate)."""
    if est.method == "exact":
        return ("pass" if _in_band(est.value, expect)[0] else "fail"), None, ""
    if exact:  # seeds that disagree on a quantity expected exact: some run has another value
        return "fail", None, ""
    verdict = _interval_verdict(est.ci, expect)
    if verdict != "inconclusive":
        return verdict, None, ""
    return ("inconclusive",) + _undecided(est.value, est.ci, _straddled(est.ci, expect), spread, per)


def _undecided(value, ci, edges, spread, per: str = "") -> tuple:
    """(seeds_needed, sentence) for an interval that decides nothing."""
    if not (ci[0] == ci[0] and ci[1] == ci[1]):
        return None, ("inconclusive: a single seed gives no 95% interval (no spread to go on); "
                      "at least 2 seeds per configuration are needed")
    dist = min(abs(value - e) for e in edges)
    needed = stats.seeds_needed(spread, dist)
    edge_s = " and ".join(f"{e:.6g}" for e in edges)
    s = (f"inconclusive: the 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] straddles the band "
         f"edge{'s' if len(edges) > 1 else ''} {edge_s}")
    if needed is not None:
        s += f"; about {needed} seeds{per} would likely decide it"
    elif dist == 0:
        s += "; the estimate lies on the edge, so no number of seeds would likely decide it"
    elif spread == spread and math.isfinite(dist):
        s += f"; more than {stats.SEEDS_CAP} seeds would be needed at the observed spread"
    return needed, s


def _sd(values) -> float:
    return stats.summarize(values).std


def _ratio_spread(a, b, value) -> float:
    """Per-group spread of a ratio of means, by the delta method: sqrt(sd_a^2 + r^2 sd_b^2) / |mean(b)|."""
    mb = stats.summarize(b).value
    return math.sqrt(_sd(a) ** 2 + value ** 2 * _sd(b) ** 2) / abs(mb) if mb else math.nan


def _max_needed(ns: list):
    """Seeds to decide every undecided part: the largest, None if any is undecidable."""
    return None if not ns or any(n is None for n in ns) else max(ns)


def _summary_table(gs, metric, rows) -> list:
    return [{"label": label(g[0]["config"], rows), "n": len(g), "diverged": _diverged(g, metric),
             **stats.summarize([v for v in _values(g, metric) if math.isfinite(v)]).to_dict()}
            for g in gs]


def describe(check: dict, expect: dict) -> str:
    """The expectation in a few words, e.g. '>= 99.95' or 'p < 0.05, a greater'."""
    kind = check["type"]
    if kind == "welch":
        alpha = expect.get("alpha", 0.05)
        return (f"a significantly {expect.get('direction', 'greater')} than b (Welch t-test, Holm-adjusted p < {alpha:g})"
                if expect["significant"] else f"no significant difference (Welch t-test, Holm-adjusted p >= {alpha:g})")
    if kind == "monotonic":
        return f"{expect['direction']}" + (" (strict)" if expect.get("strict") else f" (slack {expect.get('slack', 0.0):g})")
    return _describe_band(expect)


def evaluate(check: dict, expect: dict, rows: list, adjusted_p: float | None = None) -> dict:
    """{"verdict": pass|fail|inconclusive|diverged, "measured": ..., "miss": float, "seeds_needed":
    int|None, "detail": str, "table": [...]}

    Band claims (value, all, ratio, difference, loglog_slope) are decided on the estimate's 95%
    interval (harness.stats): "pass" when it lies inside the band, "fail" when it lies wholly
    outside, "inconclusive" when it straddles an edge (or there is none: a single seed). Then
    `seeds_needed` says about how many seeds would decide it, were the observed mean and spread to
    hold (stats.seeds_needed; None otherwise, or where no number would). `miss` stays the point
    estimate's distance from the band (0 inside). A zero-width band (target with no tolerance:
    parameter counts) is exact: pass or fail on the value, which must be the same on every seed.
    `monotonic` is decided per step on the Welch interval of the difference of neighbouring means.
    `welch` stays pass/fail: a significance test decides; with `adjusted_p` (e.g. the claim's
    family's stats.holm value) it decides on that instead of the raw p; other checks ignore it."""
    kind, metric = check["type"], check["metric"]
    if kind in ("value", "all", "monotonic", "loglog_slope"):
        sel = groups(select(rows, check.get("where")))
        if not sel:
            raise SelectionError(f"where {check.get('where', {})} matches no configuration")
    else:
        sel = [_one_group(rows, check["a"], "a"), _one_group(rows, check["b"], "b")]
    table = _summary_table(sel, metric, rows)
    if any(_diverged(g, metric) for g in sel):
        bad = [t["label"] for t in table if t["diverged"]]
        return {"verdict": "diverged", "measured": None, "table": table,
                "detail": f"{metric}: run(s) diverged (non-finite loss or metric) at {bad}"}

    needed, why = None, ""
    if kind == "value":
        if len(sel) != 1:
            raise SelectionError(f"where {check.get('where', {})} matches {len(sel)} configurations, expected 1")
        vals = _values(sel[0], metric)
        exact = _exact_band(expect)
        est = _exact_estimate(vals) if exact else stats.summarize(vals)
        miss = _in_band(est.value, expect)[1]
        verdict, needed, why = _decide(est, expect, est.std, exact=exact)
        detail = f"{metric} = {_fmt(est)}; expected {_describe_band(expect)}"
    elif kind == "all":
        exact = _exact_band(expect)
        ests = [_exact_estimate(_values(g, metric)) if exact else stats.summarize(_values(g, metric)) for g in sel]
        decided = [_decide(e, expect, e.std, exact=exact) for e in ests]
        misses = [_in_band(e.value, expect)[1] for e in ests]
        verdicts = [d[0] for d in decided]
        verdict = "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
        # the configuration shown: the worst of those that decide the verdict
        cand = [i for i in range(len(ests)) if verdicts[i] == verdict]
        worst = max(cand, key=lambda i: (misses[i], -ests[i].value))
        if verdict == "inconclusive":
            worst = max(cand, key=lambda i: (decided[i][1] is None, decided[i][1] or 0, misses[i]))
            needed = _max_needed([decided[i][1] for i in cand])
            why = decided[worst][2]
            if len(cand) > 1:  # the least decided one's seeds decide them all
                why += f" ({len(cand)} of {len(ests)} configurations undecided)"
        est, miss = ests[worst], misses[worst]
        shown = "worst" if verdict != "inconclusive" else "least decided"
        detail = (f"{metric} over {len(sel)} configurations; {shown} {label(sel[worst][0]['config'], rows)}"
                  f" = {_fmt(est)}; expected every one {_describe_band(expect)}")
    elif kind in ("ratio", "difference"):
        a, b = (_values(g, metric) for g in sel)
        est = (stats.ratio if kind == "ratio" else stats.difference)(a, b)
        miss = _in_band(est.value, expect)[1]
        spread = (_ratio_spread(a, b, est.value) if kind == "ratio"
                  else math.sqrt(_sd(a) ** 2 + _sd(b) ** 2))
        verdict, needed, why = _decide(est, expect, spread, " per group")
        if verdict == "inconclusive" and math.isinf(est.ci[0]) and math.isinf(est.ci[1]):
            why += " (the mean of b is not significantly different from zero, so the ratio is unbounded)"
        sym = "/" if kind == "ratio" else "-"
        detail = f"{metric}: a {sym} b = {_fmt(est)}; expected {_describe_band(expect)}"
    elif kind == "monotonic":
        over = check["over"]
        sel = sorted(sel, key=lambda g: g[0]["config"][over])
        xs = [g[0]["config"][over] for g in sel]
        if len(set(xs)) != len(xs):
            raise SelectionError(f"several configurations share a value of {over!r}; narrow `where`")
        vals = [_values(g, metric) for g in sel]
        means = [stats.summarize(v).value for v in vals]
        up = expect["direction"] == "increasing"
        strict = expect.get("strict", False)
        slack = 0.0 if strict else expect.get("slack", 0.0)
        # each step as (next - previous) in the expected direction, with its Welch interval
        steps = [stats.difference(v1, v0) if up else stats.difference(v0, v1) for v0, v1 in zip(vals, vals[1:])]

        def step_verdict(d):
            lo, hi = d.ci
            if not (lo == lo and hi == hi):
                return "inconclusive"
            if (lo > 0) if strict else (lo >= -slack):
                return "pass"
            if (hi <= 0) if strict else (hi < -slack):
                return "fail"
            return "inconclusive"

        sv = [step_verdict(d) for d in steps]
        verdict = "fail" if "fail" in sv else "inconclusive" if "inconclusive" in sv else "pass"
        cand = [i for i in range(len(steps)) if sv[i] == verdict]
        worst_point = min(d.value for d in steps) if steps else math.inf
        ok_point = worst_point > 0 if strict else worst_point >= -slack
        miss = 0.0 if ok_point else -worst_point
        if steps:
            k = min(cand, key=lambda i: steps[i].value)
            est = steps[k]
        else:
            est = stats.Estimate(math.inf, math.nan, (math.inf, math.inf), min(len(v) for v in vals), "welch")
        if verdict == "inconclusive":
            undecided = []
            for i in cand:
                spread = math.sqrt(_sd(vals[i]) ** 2 + _sd(vals[i + 1]) ** 2)
                undecided.append(_undecided(steps[i].value, steps[i].ci, [-slack], spread))
            needed = _max_needed([u[0] for u in undecided])
            where_s = ", ".join(f"{xs[i]}->{xs[i + 1]}" for i in cand)
            why = (f"inconclusive: the 95% interval of {len(cand)} step{'s' if len(cand) > 1 else ''} ({where_s})"
                   f" straddles {0.0 - slack:g}, e.g. [{est.ci[0]:.4g}, {est.ci[1]:.4g}]")
            if any(not all(c == c for c in steps[i].ci) for i in cand):
                why = ("inconclusive: a configuration has a single seed, so its step has no 95% interval; "
                       "at least 2 seeds per configuration are needed")
            elif needed is not None:
                why += f"; about {needed} seeds per configuration would likely decide {'them' if len(cand) > 1 else 'it'}"
        detail = (f"{metric} means over {over} {xs}: {[round(m, 4) for m in means]}; smallest step in the "
                  f"{expect['direction']} direction {worst_point:.4g}"
                  + (f" (95% CI [{est.ci[0]:.4g}, {est.ci[1]:.4g}])" if steps and all(c == c for c in est.ci) else "")
                  + "; expected every step " + ("> 0 (strict)" if strict else f">= -{slack:g}"))
    elif kind == "loglog_slope":
        over = check["over"]
        sel = sorted(sel, key=lambda g: g[0]["config"][over])
        xs = [g[0]["config"][over] for g in sel]
        seeds = sorted({r["seed"] for g in sel for r in g})
        by_seed = []
        for s in seeds:
            ys = [next((r["metrics"][metric] for r in g if r["seed"] == s), None) for g in sel]
            if None not in ys:
                by_seed.append(ys)
        if not by_seed:
            raise SelectionError(f"no seed has every value of {over!r}")
        est = stats.loglog_slope(xs, by_seed)
        miss = _in_band(est.value, expect)[1]
        verdict, needed, why = _decide(est, expect, est.std)
        detail = f"slope of log {metric} vs log {over} over {xs} = {_fmt(est)}; expected {_describe_band(expect)}"
    elif kind == "welch":
        a, b = (_values(g, metric) for g in sel)
        w = stats.welch(a, b)
        diff = stats.difference(a, b)
        alpha = expect.get("alpha", 0.05)
        p = w["p"] if adjusted_p is None else float(adjusted_p)
        significant = p < alpha
        direction = expect.get("direction", "greater")
        right_way = diff.value > 0 if direction == "greater" else diff.value < 0
        ok = (significant and right_way) if expect["significant"] else not significant
        miss = 0.0 if ok else abs(p - alpha)
        p_text = f"p = {w['p']:.3g}" + ("" if adjusted_p is None else f", adjusted p = {p:.3g}")
        detail = (f"{metric}: mean(a) - mean(b) = {_fmt(diff)}, Welch t = {w['t']:.3g}, {p_text}; "
                  f"expected " + (f"p < {alpha:g} with a {direction} than b" if expect["significant"]
                                  else f"p >= {alpha:g} (no significant difference)")
                  + ("" if adjusted_p is None else " (on the adjusted p)"))
        measured = {**diff.to_dict(), **w, "p_adjusted": None if adjusted_p is None else p}
        return {"verdict": "pass" if ok else "fail", "measured": measured, "miss": miss,
                "seeds_needed": None, "detail": detail, "table": table}
    else:  # spec validation makes this unreachable
        raise SelectionError(f"unknown check {kind!r}")
    if verdict == "fail" and miss > 0:
        detail += f"; misses by {miss:.4g}"
    if verdict == "fail" and kind in ("value", "all") and est.method != "exact" and _exact_band(expect):
        detail += "; the seeds disagree on a quantity expected to be exact"
    if verdict == "inconclusive":
        detail += f"; {why}"
    return {"verdict": verdict, "measured": est.to_dict(), "miss": miss, "seeds_needed": needed,
            "detail": detail, "table": table}


def label(config: dict, rows: list) -> str:
    """The settings of `config` that vary across `rows`, e.g. 'width=32, batch_size=128'."""
    keys = [k for k in config if len({json.dumps(r["config"].get(k)) for r in rows}) > 1]
    return ", ".join(f"{k}={config[k]}" for k in keys) or "(single configuration)"
