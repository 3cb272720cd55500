"""welch: a two-tailed Welch t-test of a vs b, `significant` (p < alpha) and `direction`; decided
on the p adjusted (Holm) within the tier's family of Welch claims where one is given."""
from __future__ import annotations

import math

import numpy as np

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
        fam = adjusted_p if isinstance(adjusted_p, stats.FamilyP) or adjusted_p is None \
            else stats.FamilyP(float(adjusted_p), float(adjusted_p))
        lo, hi = (w["p"], w["p"]) if fam is None else (fam.low, fam.high)
        direction = expect.get("direction", "greater")
        right_way = diff.value > 0 if direction == "greater" else diff.value < 0
        # decided only where every p the family's unknown members allow decides alike
        if expect["significant"]:
            verdict = "pass" if right_way and hi < alpha else "fail" if not right_way or lo >= alpha else "inconclusive"
        else:
            verdict = "pass" if lo >= alpha else "fail" if hi < alpha else "inconclusive"
        miss = abs(hi - alpha) if verdict == "fail" else 0.0
        p_text = f"p = {w['p']:.3g}" + ("" if fam is None else f", adjusted p = {_p_range(lo, hi)}")
        detail = (f"{metric}: mean(a) - mean(b) = {_fmt(diff)}, Welch t = {w['t']:.3g}, {p_text}; "
                  f"expected " + (f"p < {alpha:g} with a {direction} than b" if expect["significant"]
                                  else f"p >= {alpha:g} (no significant difference)")
                  + ("" if fam is None else " (on the adjusted p)"))
        if verdict == "inconclusive":
            detail += "; " + (_incomplete(fam, alpha) if fam is not None and fam.missing
                              else "inconclusive: no p-value (a group has fewer than 2 seeds)")
        na, nb = len(a), len(b)
        sd = [float(np.std(x, ddof=1)) if len(x) > 1 else math.nan for x in (a, b)]
        detectable = stats.detectable_difference(sd[0], na, sd[1], nb, alpha)
        measured = {**diff.to_dict(), **w, "p_adjusted": None if fam is None else hi,
                    "p_adjusted_low": None if fam is None else lo,
                    "family_missing": None if fam is None else fam.missing,
                    "family_size": None if fam is None else fam.size,
                    "n_a": na, "n_b": nb, "detectable": detectable, "detectable_power": stats.POWER}
        if verdict != "inconclusive" and hi >= alpha and math.isfinite(detectable):
            detail += "; " + _unnoticed(measured, self.unit(check, metric_label(metric)[1]))
        return {"verdict": verdict, "measured": measured, "miss": miss, "seeds_needed": None, "detail": detail}

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
        est = estimate_text(m, unit)  # the difference and its CI in the decimals the CI supports
        size, ci = est["value"].lstrip("−"), est["ci"]
        higher, lower = (a, b) if d > 0 else (b, a)
        if not math.isfinite(m.get("p", math.nan)):
            return f"no Welch test (fewer than 2 seeds): {name} {a} minus {b} = {with_unit(num(d), unit)}"
        # the decision is taken on the Holm-adjusted p where there is one: quote that one
        pv = m["p"] if m.get("p_adjusted") is None else m["p_adjusted"]
        low = pv if m.get("p_adjusted_low") is None else m["p_adjusted_low"]
        p = f"p = {num(m['p'], digits=2)}" if m.get("p_adjusted") is None else \
            f"Holm-adjusted p = {num(pv, digits=2)}"
        if low < alpha <= pv:
            return (f"family incomplete ({m['family_missing']} of its {m['family_size']} Welch claims not run): "
                    f"Holm-adjusted p between {num(low, digits=2)} and {num(pv, digits=2)}, on both sides of "
                    f"{alpha:g}; {name} differs by {size} between {a} and {b}")
        if low != pv:
            p = f"Holm-adjusted p {num(low, digits=2)} to {num(pv, digits=2)}, {m['family_missing']} of the family not run"
        if pv >= alpha:
            return (f"not significant ({p} ≥ {alpha:g}): {name} differs by {size} between {a} and {b}"
                    + (f", 95% CI of a − b {ci}" if ci else "")
                    + (f"; {_unnoticed(m, unit)}" if math.isfinite(m.get("detectable", math.nan)) else ""))
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
            low = m.get("p_adjusted_low")
            note += (f", adjusted p = {num(m['p_adjusted'], digits=2)}" if low is None or low == m["p_adjusted"]
                     else f", adjusted p {num(low, digits=2)} to {num(m['p_adjusted'], digits=2)} (family incomplete)")
        elif m.get("p") is not None:
            note += f", p = {num(m['p'], digits=2)}"
        pv = m["p"] if m.get("p_adjusted") is None else m["p_adjusted"]
        low = pv if m.get("p_adjusted_low") is None else m["p_adjusted_low"]
        if low >= r["expect"].get("alpha", 0.05) and math.isfinite(m.get("detectable", math.nan)):
            n = m["n_a"] if m["n_a"] == m["n_b"] else f"{m['n_a']}/{m['n_b']}"
            note += (f"; undetected below {with_unit(num(m['detectable'], digits=2), r['unit'])} "
                     f"at {n} seeds ({m['detectable_power']:.0%} power)")
        return note

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


def _p_range(lo, hi) -> str:
    return f"{hi:.3g}" if lo == hi else f"{lo:.3g} to {hi:.3g}"


def _incomplete(fam, alpha) -> str:
    """Why a family member is undecided: its family's unknown members."""
    return (f"family incomplete: {fam.missing} of the {fam.size} Welch claims of its family have no p-value "
            f"yet (not run), so its Holm-adjusted p lies between {fam.low:.3g} and {fam.high:.3g}, on both sides "
            f"of {alpha:g}; running the whole family decides it")


def _unnoticed(m, unit) -> str:
    """The difference the test would have detected with 80% power at the observed spread and
    seeds (stats.detectable_difference): 'a difference under 3.1 pp could go unnoticed with 5 seeds'."""
    n = f"{m['n_a']}" if m["n_a"] == m["n_b"] else f"{m['n_a']} and {m['n_b']}"
    size = with_unit(num(m["detectable"], digits=2), unit)
    return (f"a difference under {size} could go unnoticed with {n} seeds "
            f"({m['detectable_power']:.0%} power at {size})")
