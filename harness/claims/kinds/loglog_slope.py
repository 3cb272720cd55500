"""loglog_slope: the slope of log(metric) against log(over), fitted per seed; its interval is the
Student t interval over the per-seed slopes."""
from __future__ import annotations

from .. import stats
from .common import Kind, SelectionError, _decide, _describe_band, _fmt, _in_band, outcome


class LoglogSlope(Kind):
    name = "loglog_slope"
    words = "log-log slope"
    scale_free = True
    fields = {"metric", "over", "where"}
    required = {"metric", "over"}

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        metric, over = check["metric"], check["over"]
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
        return outcome(verdict, est, miss, needed, why, detail)

    def unit(self, check, unit):
        return ""


KIND = LoglogSlope()
