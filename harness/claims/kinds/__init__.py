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

from ..fmt import metric_label
from . import difference, every, loglog_slope, monotonic, ratio, value, welch
from .common import Kind, SelectionError

__all__ = ["KINDS", "Kind", "SelectionError", "kind", "quantity_unit", "register"]

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
