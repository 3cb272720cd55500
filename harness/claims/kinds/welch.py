"""welch: a two-tailed Welch t-test of a vs b, `significant` (p < alpha) and `direction`; decided
on the p adjusted (Holm) within the tier's family of Welch claims where one is given."""
from __future__ import annotations

import math

from .. import stats
from ..fmt import estimate_text, metric_label, num, with_unit
from .common import Kind, _fmt, _values, where_text


class Welch(Kind):
    name = "welch"
    words = "Welch test"
    fields = {"metric", "a", "b"}
    required = {"metric", "a", "b"}
    expect_fields = {"significant", "direction", "alpha"}
    band = False
    family = True

    def validate(self, expect, fail):
        if not isinstance(expect.get("significant"), bool):
            v = expect.get("significant")
            fail(".significant", f"expected bool, got {type(v).__name__} ({v!r})")
        if expect.get("direction", "greater") not in ("greater", "less"):
            fail(".direction", "expected 'greater' or 'less'")

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        metric = check["metric"]
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
                "seeds_needed": None, "detail": detail}

    def describe(self, check, expect):
        alpha = expect.get("alpha", 0.05)
        return (f"a significantly {expect.get('direction', 'greater')} than b (Welch t-test, Holm-adjusted p < {alpha:g})"
                if expect["significant"] else f"no significant difference (Welch t-test, Holm-adjusted p >= {alpha:g})")

    def unit(self, check, unit):
        return "pp" if unit == "%" else unit

    def explain(self, r):
        m, check, expect, unit = r["measured"], r["check"], r["expect"], r["unit"]
        name = metric_label(check["metric"])[0]
        a, b = where_text(check["a"]), where_text(check["b"])
        d = m["value"]
        alpha = expect.get("alpha", 0.05)
        size = with_unit(num(abs(d), digits=3), unit)
        ci = estimate_text(m, unit)["ci"]
        higher, lower = (a, b) if d > 0 else (b, a)
        if not math.isfinite(m.get("p", math.nan)):
            return f"no Welch test (fewer than 2 seeds): {name} {a} minus {b} = {with_unit(num(d), unit)}"
        # the decision is taken on the Holm-adjusted p where there is one: quote that one
        pv = m["p"] if m.get("p_adjusted") is None else m["p_adjusted"]
        p = f"p = {num(m['p'], digits=2)}" if m.get("p_adjusted") is None else \
            f"Holm-adjusted p = {num(pv, digits=2)}"
        if pv >= alpha:
            return (f"not significant ({p} ≥ {alpha:g}): {name} differs by {size} between {a} and {b}"
                    + (f", 95% CI of a − b {ci}" if ci else ""))
        wanted = expect.get("direction", "greater")
        right = (d > 0) == (wanted == "greater")
        head = "significant" if right else "significant, opposite direction"
        return (f"{head} ({p} < {alpha:g}): {name} at {higher} is {size} above {lower}"
                + (f" (95% CI of a − b {ci})" if ci else "")
                + ("" if right else f"; the claim expects {a} {'above' if wanted == 'greater' else 'below'} {b}"))

    def compared(self, r):
        c = r["check"]
        note = f"({where_text(c['a'])}) − ({where_text(c['b'])})"
        m = r["measured"]
        if m.get("p_adjusted") is not None:
            return note + f", adjusted p = {num(m['p_adjusted'], digits=2)}"
        return note + (f", p = {num(m['p'], digits=2)}" if m.get("p") is not None else "")

    def expected_text(self, r):
        c, e = r["check"], r["expect"]
        alpha = e.get("alpha", 0.05)
        a, b = where_text(c["a"]), where_text(c["b"])
        if not e.get("significant", True):
            return f"no significant difference between ({a}) and ({b}) (Welch t-test, Holm-adjusted p ≥ {alpha:g})"
        rel = "above" if e.get("direction", "greater") == "greater" else "below"
        return (f"{metric_label(c['metric'])[0]} at ({a}) significantly {rel} ({b}) "
                f"(Welch t-test, Holm-adjusted p < {alpha:g})")


KIND = Welch()
