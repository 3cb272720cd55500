"""Checks: turn an experiment's rows into a verdict on one claim in one tier.

Each check computes a measured quantity over seeds (mean, std, 95% interval, n; harness.stats) and
decides on its interval: "pass" when the interval lies inside the expected band, "fail" when it
lies wholly outside, "inconclusive" when it straddles an edge (with about how many seeds would
decide it), and says by how much the point estimate misses. Exact quantities (a zero-width band:
parameter counts) are decided on their value; Welch claims on their p-value (raw, or adjusted for
the family). A selection that contains a diverged run (non-finite loss or metric) gets the verdict
"diverged", never "pass".

The check types and what each computes are in harness/claims/kinds/ (one module per kind, the
registry KINDS); this module selects the rows, tables them and dispatches to the kind.
"""
from __future__ import annotations

import json
import math

from . import stats
from .kinds import KINDS, kind
from .kinds.common import (SelectionError, _band, _diverged, _in_band, _matches, _values, groups, label,
                           position, select)

__all__ = ["KINDS", "SelectionError", "_band", "_in_band", "_matches", "describe", "evaluate", "groups", "label",
           "position", "reads", "select", "union"]  # (the row and band helpers are kinds.common's, named here for the engine)


def _summary_table(gs, metric, rows) -> list:
    return [{"label": label(g[0]["config"], rows), "n": len(g), "diverged": _diverged(g, metric),
             **stats.summarize([v for v in _values(g, metric) if math.isfinite(v)]).to_dict()}
            for g in gs]


def reads(check: dict):
    """The selectors of the rows a check reads (kinds' `reads`), or None where it reads every row."""
    sel = kind(check).reads(check)
    return None if any(not w for w in sel) else tuple(sel)


def union(selectors) -> tuple | None:
    """The selectors of several checks together (each `reads`' value; None: every row)."""
    out = {}
    for sel in selectors:
        if sel is None:
            return None
        out.update((json.dumps(w, sort_keys=True), w) for w in sel)
    return tuple(out.values())


def describe(check: dict, expect: dict) -> str:
    """The expectation in a few words, e.g. '>= 99.95' or 'p < 0.05, a greater'."""
    return kind(check).describe(check, expect)


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
    k, metric = KINDS.get(check["type"]), check["metric"]
    if k is None:  # spec validation makes this unreachable
        raise SelectionError(f"unknown check {check['type']!r}")
    sel = k.selection(check, rows)
    table = _summary_table(sel, metric, rows)
    if any(_diverged(g, metric) for g in sel):
        bad = [t["label"] for t in table if t["diverged"]]
        return {"verdict": "diverged", "measured": None, "table": table,
                "detail": f"{metric}: run(s) diverged (non-finite loss or metric) at {bad}"}
    return {**k.evaluate(check, expect, sel, rows, adjusted_p), "table": table}
