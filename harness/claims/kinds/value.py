"""value: the metric at one configuration (`where`), against a band; a zero-width band (a target
with no tolerance: a parameter count) is exact, decided on the value every seed must share."""
from __future__ import annotations

from .. import stats
from .common import (Kind, SelectionError, _decide, _describe_band, _exact_band, _exact_estimate, _fmt, _in_band,
                     _values, outcome)


EXACT_DISAGREE = "; the seeds disagree on a quantity expected to be exact"


class Value(Kind):
    name = "value"
    words = "value"
    level = True
    paper_points = "one"

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        metric = check["metric"]
        if len(sel) != 1:
            raise SelectionError(f"where {check.get('where', {})} matches {len(sel)} configurations, expected 1")
        vals = _values(sel[0], metric)
        exact = _exact_band(expect)
        est = _exact_estimate(vals) if exact else stats.summarize(vals)
        miss = _in_band(est.value, expect)[1]
        verdict, needed, why = _decide(est, expect, est.std, exact=exact)
        out = outcome(verdict, est, miss, needed, why, f"{metric} = {_fmt(est)}; expected {_describe_band(expect)}")
        if verdict == "fail" and est.method != "exact" and exact:
            out["detail"] += EXACT_DISAGREE
        return out


KIND = Value()
