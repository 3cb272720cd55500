"""Checks: turn an experiment's rows into a verdict on one claim in one tier.

Each check computes a measured quantity over seeds (mean, std, 95% bootstrap CI, n), compares its
point estimate with the expectation, and says by how much it misses. A selection that contains a
diverged run (non-finite loss or metric) gets the verdict "diverged", never "pass".

Check types (fields in the claim's `check` table):
  value        metric at one configuration (`where`)
  all          every configuration matching `where` lies within min/max
  ratio        mean(metric at a) / mean(metric at b)
  difference   mean(metric at a) - mean(metric at b)
  monotonic    means over the sweep field `over` move in `direction` (strict, or within `slack`)
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
    return s + f" (95% CI [{e.ci[0]:.4g}, {e.ci[1]:.4g}], n={e.n})"


def _summary_table(gs, metric, rows) -> list:
    return [{"label": label(g[0]["config"], rows), "n": len(g), "diverged": _diverged(g, metric),
             **stats.summarize([v for v in _values(g, metric) if math.isfinite(v)]).to_dict()}
            for g in gs]


def describe(check: dict, expect: dict) -> str:
    """The expectation in a few words, e.g. '>= 99.95' or 'p < 0.05, a greater'."""
    kind = check["type"]
    if kind == "welch":
        alpha = expect.get("alpha", 0.05)
        return (f"p < {alpha:g}, a {expect.get('direction', 'greater')}" if expect["significant"]
                else f"p >= {alpha:g}")
    if kind == "monotonic":
        return f"{expect['direction']}" + (" (strict)" if expect.get("strict") else f" (slack {expect.get('slack', 0.0):g})")
    return _describe_band(expect)


def evaluate(check: dict, expect: dict, rows: list) -> dict:
    """{"verdict": pass|fail|diverged, "measured": ..., "detail": str, "table": [...]}"""
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

    if kind == "value":
        if len(sel) != 1:
            raise SelectionError(f"where {check.get('where', {})} matches {len(sel)} configurations, expected 1")
        est = stats.summarize(_values(sel[0], metric))
        ok, miss = _in_band(est.value, expect)
        detail = f"{metric} = {_fmt(est)}; expected {_describe_band(expect)}"
    elif kind == "all":
        means = [stats.summarize(_values(g, metric)) for g in sel]
        misses = [_in_band(e.value, expect)[1] for e in means]
        worst = max(range(len(means)), key=lambda i: (misses[i], -means[i].value))
        est, miss = means[worst], misses[worst]
        ok = miss == 0.0
        detail = (f"{metric} over {len(sel)} configurations; worst {label(sel[worst][0]['config'], rows)}"
                  f" = {_fmt(est)}; expected every one {_describe_band(expect)}")
    elif kind in ("ratio", "difference"):
        a, b = (_values(g, metric) for g in sel)
        est = (stats.ratio if kind == "ratio" else stats.difference)(a, b)
        ok, miss = _in_band(est.value, expect)
        sym = "/" if kind == "ratio" else "-"
        detail = f"{metric}: a {sym} b = {_fmt(est)}; expected {_describe_band(expect)}"
    elif kind == "monotonic":
        over = check["over"]
        sel = sorted(sel, key=lambda g: g[0]["config"][over])
        xs = [g[0]["config"][over] for g in sel]
        if len(set(xs)) != len(xs):
            raise SelectionError(f"several configurations share a value of {over!r}; narrow `where`")
        means = [stats.summarize(_values(g, metric)).value for g in sel]
        sign = 1 if expect["direction"] == "increasing" else -1
        steps = [sign * (b - a) for a, b in zip(means, means[1:])]
        worst = min(steps) if steps else math.inf
        ok = worst > 0 if expect.get("strict", False) else worst >= -expect.get("slack", 0.0)
        miss = 0.0 if ok else -worst
        est = stats.Estimate(worst, math.nan, (worst, worst), min(len(g) for g in sel))
        detail = (f"{metric} means over {over} {xs}: {[round(m, 4) for m in means]}; smallest step in the "
                  f"{expect['direction']} direction {worst:.4g}; expected "
                  + ("> 0 (strict)" if expect.get("strict") else f">= -{expect.get('slack', 0.0):g}"))
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
        ok, miss = _in_band(est.value, expect)
        detail = f"slope of log {metric} vs log {over} over {xs} = {_fmt(est)}; expected {_describe_band(expect)}"
    elif kind == "welch":
        a, b = (_values(g, metric) for g in sel)
        w = stats.welch(a, b)
        diff = stats.difference(a, b)
        alpha = expect.get("alpha", 0.05)
        significant = w["p"] < alpha
        direction = expect.get("direction", "greater")
        right_way = diff.value > 0 if direction == "greater" else diff.value < 0
        ok = (significant and right_way) if expect["significant"] else not significant
        miss = 0.0 if ok else abs(w["p"] - alpha)
        detail = (f"{metric}: mean(a) - mean(b) = {_fmt(diff)}, Welch t = {w['t']:.3g}, p = {w['p']:.3g}; "
                  f"expected " + (f"p < {alpha:g} with a {direction} than b" if expect["significant"]
                                  else f"p >= {alpha:g} (no significant difference)"))
        measured = {**diff.to_dict(), **w}
        return {"verdict": "pass" if ok else "fail", "measured": measured, "miss": miss,
                "detail": detail, "table": table}
    else:  # spec validation makes this unreachable
        raise SelectionError(f"unknown check {kind!r}")
    if not ok:
        detail += f"; misses by {miss:.4g}"
    return {"verdict": "pass" if ok else "fail", "measured": est.to_dict(), "miss": miss,
            "detail": detail, "table": table}


def label(config: dict, rows: list) -> str:
    """The settings of `config` that vary across `rows`, e.g. 'width=32, batch_size=128'."""
    keys = [k for k in config if len({json.dumps(r["config"].get(k)) for r in rows}) > 1]
    return ", ".join(f"{k}={config[k]}" for k in keys) or "(single configuration)"
