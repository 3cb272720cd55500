"""Check kinds, one module each, registered in KINDS: a kind holds the fields of its `check` and
`expect` tables and their validation, its evaluation, its expectation in words, the unit of what
it measures and the report's words for it (the base and what kinds share: common.py). The engine
(spec, checks, report, readings, the template) dispatches through KINDS and knows no kind by name.

Adding a kind: a module with a `Kind` subclass, and its line below (or `register(kind)`, e.g. from
a test).

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

import math

from ..fmt import metric_label
from . import difference, every, loglog_slope, monotonic, ratio, value, welch
from .common import Kind, SelectionError, position, tolerance

__all__ = ["KINDS", "Kind", "SelectionError", "kind", "quantity_unit", "register", "tolerance_position"]

KINDS = {k.name: k for k in (
    value.KIND,
    every.KIND,
    ratio.KIND,
    difference.KIND,
    monotonic.KIND,
    loglog_slope.KIND,
    welch.KIND,
)}


def register(k: Kind) -> Kind:
    """Add a kind to KINDS (a claim file may then use it); returns it."""
    KINDS[k.name] = k
    return k


def kind(check: dict) -> Kind:
    """The kind of a check table (its `type`)."""
    return KINDS[check["type"]]


def quantity_unit(check: dict) -> str:
    """Unit of the quantity a check measures, e.g. differences of percentages are in pp."""
    return kind(check).unit(check, metric_label(check["metric"])[1])


def tolerance_position(r: dict) -> dict | None:
    """The measured value and its 95% CI in tolerance units, {'z', 'lo', 'hi', 'band'}: the one
    definition, which the forest plot draws and the readings' fit ranks by. A two-sided band maps
    to [-1, 1] around its centre (the target, its unit the tolerance); a one-sided band (e.g. >= 99.95) with a paper value
    inside it (100) maps to [-1, None) (None: unbounded) around the paper value, its unit the
    paper's distance to the bound. None where there is no such unit (kinds that are no band, an
    exact count, a one-sided band without a paper value inside it)."""
    m, pv, e = r.get("measured"), r.get("paper_value"), r["expect"]
    if not m or not kind(r["check"]).band or not math.isfinite(m.get("value", math.nan)):
        return None
    if "target" in e and tolerance(e) > 0:
        z = [(v - e["target"]) / tolerance(e) for v in (m["value"], *m["ci"])]
        band = (-1.0, 1.0)
    elif position(e, m["value"])["units"] is not None:  # min and max: around the band's centre
        z = [position(e, v)["units"] for v in (m["value"], *m["ci"])]
        band = (-1.0, 1.0)
    elif isinstance(pv, (int, float)) and ("min" in e) != ("max" in e) and e.get("min", e.get("max")) != pv \
            and position(e, pv)["outside"] == 0:
        unit = abs(pv - e.get("min", e.get("max")))
        z = [(v - pv) / unit for v in (m["value"], *m["ci"])]
        band = (-1.0, None) if "min" in e else (None, 1.0)  # None: unbounded
    else:
        return None
    return {"z": z[0], "lo": z[1], "hi": z[2], "band": band}
