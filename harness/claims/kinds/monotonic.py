"""monotonic: the means over the sweep field `over` move in `direction` (strict, or within `slack`),
decided per step on the Welch interval of the two neighbouring means' difference."""
from __future__ import annotations

import math

from .. import stats
from ..fmt import decimals_for, metric_label, num, with_unit
from .common import Kind, SelectionError, _max_needed, _sd, _undecided, _values, outcome


class Monotonic(Kind):
    name = "monotonic"
    words = "trend"
    fields = {"metric", "over", "where"}
    required = {"metric", "over"}
    expect_fields = {"direction", "strict", "slack"}
    band = False
    detail_in_card = True

    def validate(self, expect, fail):
        if expect.get("direction") not in ("increasing", "decreasing"):
            fail(".direction", "expected 'increasing' or 'decreasing'")

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        metric, over = check["metric"], check["over"]
        needed, why = None, ""
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
        dec = decimals_for(max([abs(worst_point)] + ([abs(c) for c in est.ci if c == c] if steps else [])), 4)
        detail = (f"{metric} means over {over} {xs}: {[round(m, 4) for m in means]}; smallest step in the "
                  f"{expect['direction']} direction {num(worst_point, dec)}"  # the step and its CI at one precision
                  + (f" (95% CI [{num(est.ci[0], dec)}, {num(est.ci[1], dec)}])" if steps and all(c == c for c in est.ci)
                     else "")
                  + "; expected every step " + ("> 0 (strict)" if strict else f"≥ −{slack:g}"))
        return outcome(verdict, est, miss, needed, why, detail)

    def describe(self, check, expect):
        return f"{expect['direction']}" + (" (strict)" if expect.get("strict") else f" (slack {expect.get('slack', 0.0):g})")

    def unit(self, check, unit):
        return "pp" if unit == "%" else unit

    def explain(self, r):
        name = metric_label(r["check"]["metric"])[0]
        return (f"smallest step of {name} along {r['check']['over']} in the expected ({r['expect']['direction']}) "
                f"direction: {with_unit(num(r['measured']['value']), r['unit'])}")

    def compared(self, r):
        return f"smallest step along {r['check']['over']}"

    def expected_text(self, r):
        return r.get("expected", "")


KIND = Monotonic()
