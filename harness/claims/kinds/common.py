"""What every check kind shares: selecting rows (configurations, groups of seeds), the expected band
and its decisions on an interval (pass, fail, inconclusive with about how many seeds would decide
it), the estimate in words, and `Kind`, the base a kind's module subclasses (harness/claims/kinds/
__init__.py registers them)."""
from __future__ import annotations

import json
import math

from ...runs.expand import matches
from .. import stats
from ..fmt import given, num, with_unit


class SelectionError(ValueError):
    pass


# ------------------------------------------------------------------------------------ rows


def _matches(config: dict, where: dict) -> bool:
    """Whether a row's configuration agrees with a selector: runs.expand.matches, the one rule the
    planner also restricts the runs a claim reads by."""
    return matches(config, where)


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


def label(config: dict, rows: list) -> str:
    """The settings of `config` that vary across `rows`, e.g. 'width=32, batch_size=128'."""
    keys = [k for k in config if len({json.dumps(r["config"].get(k)) for r in rows}) > 1]
    return ", ".join(f"{k}={config[k]}" for k in keys) or "(single configuration)"


def where_text(w: dict) -> str:
    """A selection in words: 'width = 32, lr = 0.01'."""
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in (w or {}).items())


# ------------------------------------------------------------------------------------ bands


def tolerance(expect) -> float:
    """The tolerance of a target: abs_tol, or rel_tol x |target| where larger (0: an exact target)."""
    tol = expect.get("abs_tol", 0.0)
    if "rel_tol" in expect:
        tol = max(tol, expect["rel_tol"] * abs(expect["target"]))
    return tol


def _band(expect) -> tuple:
    if "target" in expect:
        t, tol = expect["target"], tolerance(expect)
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


def _max_needed(ns: list):
    """Seeds to decide every undecided part: the largest, None if any is undecidable."""
    return None if not ns or any(n is None for n in ns) else max(ns)


def outcome(verdict, est: stats.Estimate, miss, needed, why, detail) -> dict:
    """A band claim's result (less its table): the detail says by how much a failing estimate
    misses, and why an inconclusive one decides nothing."""
    if verdict == "fail" and miss > 0:
        detail += f"; misses by {miss:.4g}"
    if verdict == "inconclusive":
        detail += f"; {why}"
    return {"verdict": verdict, "measured": est.to_dict(), "miss": miss, "seeds_needed": needed, "detail": detail}


# ------------------------------------------------------------------------------------ kinds


class Kind:
    """One check kind, everything about it: the fields of its `check` and `expect` tables and their
    validation, its evaluation, its expectation in words, the unit of what it measures and the
    report's words for it. The defaults are a band claim's (target ± tolerance, or min/max) on
    the configurations `where` selects; a kind's module overrides what differs."""

    name = ""
    words = ""  # what the report calls its claims, e.g. "log-log slope"
    fields = {"metric", "where"}  # keys of the check table (besides type)
    required = {"metric"}
    expect_fields = {"target", "abs_tol", "rel_tol", "min", "max"}
    band = True  # the expectation is a band: the measured value has a distance from it (tolerance units)
    family = False  # decided on the p adjusted within the tier's family of claims of this kind (stats.holm)
    paper_points = None  # "one": the paper value sits on the one plotted point `where` selects; "each": on each
    left_out = "tests of direction or significance (no tolerance)"  # why the forest plot leaves out a non-band kind
    level = False  # it measures the metric's level (value, all); the findings name the other kinds beside it
    scale_free = False  # a constant factor on the metric leaves it unchanged (slopes, ratios): a trend
    detail_in_card = False  # the card shows the check's detail beside the measured value

    # ---- claim files
    def validate(self, expect: dict, fail) -> None:
        """Check an expect table beyond its keys and number ranges; fail(field, message) raises."""
        if self.band:
            if not ({"target", "min", "max"} & set(expect)):
                fail("", "give target (with abs_tol or rel_tol) or min/max")
            if "target" in expect and not ({"abs_tol", "rel_tol"} & set(expect)):
                fail(".abs_tol", "a target needs abs_tol or rel_tol")

    # ---- evaluation
    def reads(self, check: dict) -> list:
        """The selectors of the rows the check reads (`where`, or `a` and `b`; {}: every row): the
        configurations the planner trains for it (harness/runs/expand.py: may_read). A kind that
        selects rows otherwise says so here."""
        if "a" in self.fields:
            return [check["a"], check["b"]]
        return [check.get("where") or {}]

    def selection(self, check: dict, rows: list) -> list:
        """The groups of rows (one per configuration) the check reads."""
        if "a" in self.fields:
            return [_one_group(rows, check["a"], "a"), _one_group(rows, check["b"], "b")]
        sel = groups(select(rows, check.get("where")))
        if not sel:
            raise SelectionError(f"where {check.get('where', {})} matches no configuration")
        return sel

    def evaluate(self, check: dict, expect: dict, sel: list, rows: list, adjusted_p=None) -> dict:
        """{"verdict", "measured", "miss", "seeds_needed", "detail"} from the selected groups."""
        raise NotImplementedError

    def describe(self, check: dict, expect: dict) -> str:
        """The expectation in a few words, e.g. '>= 99.95'."""
        return _describe_band(expect)

    # ---- report
    def unit(self, check: dict, unit: str) -> str:
        """The unit of the measured quantity, given the metric's."""
        return unit

    def explain(self, r: dict) -> str:
        """The measured result in words, naming the compared configurations ('' for one value)."""
        return ""

    def compared(self, r: dict) -> str:
        """A short note for the at-a-glance table: the compared configurations."""
        return ""

    def expected_text(self, r: dict) -> str:
        """The expectation in words and the claim's unit: a band's numbers as the measured ones are
        written (6,514; 99.95 %)."""
        e, unit = r["expect"], r["unit"]
        u = "" if unit == "×" else unit
        lo, hi = _band(e)
        if "target" in e:  # the claim file's numbers as it gives them; a band derived from them to 4 digits
            t = e["target"]
            if lo == hi:
                return f"exactly {with_unit(given(t), u)}"
            if "rel_tol" in e and "abs_tol" not in e:
                return f"{with_unit(given(t), u)} ± {100 * e['rel_tol']:g}% (from {num(lo)} to {num(hi)})"
            tol = given(e["abs_tol"]) if "abs_tol" in e and "rel_tol" not in e else num(hi - t)
            return f"{with_unit(given(t), u)} ± {with_unit(tol, 'pp' if u == '%' else u)}"
        if math.isinf(lo):
            return f"at most {with_unit(given(hi), u)}"
        if math.isinf(hi):
            return f"at least {with_unit(given(lo), u)}"
        return f"from {given(lo)} to {with_unit(given(hi), u)}"
