"""ratio: mean(metric at a) / mean(metric at b), with Fieller's interval, against a band."""
from __future__ import annotations

import math

from .. import stats
from ..fmt import metric_label
from .common import Kind, _decide, _describe_band, _fmt, _in_band, _sd, _values, outcome, where_text


def _ratio_spread(a, b, value) -> float:
    """Per-group spread of a ratio of means, by the delta method: sqrt(sd_a^2 + r^2 sd_b^2) / |mean(b)|."""
    mb = stats.summarize(b).value
    return math.sqrt(_sd(a) ** 2 + value ** 2 * _sd(b) ** 2) / abs(mb) if mb else math.nan


class Ratio(Kind):
    name = "ratio"
    words = "ratio"
    scale_free = True
    fields = {"metric", "a", "b"}
    required = {"metric", "a", "b"}
    symbol, sign = "/", "/"  # in the detail, in the report's words

    def estimate(self, a, b):
        return stats.ratio(a, b)

    def spread(self, a, b, est):
        return _ratio_spread(a, b, est.value)

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        metric = check["metric"]
        a, b = (_values(g, metric) for g in sel)
        est = self.estimate(a, b)
        miss = _in_band(est.value, expect)[1]
        verdict, needed, why = _decide(est, expect, self.spread(a, b, est), " per group")
        if verdict == "inconclusive" and math.isinf(est.ci[0]) and math.isinf(est.ci[1]):
            why += " (the mean of b is not significantly different from zero, so the ratio is unbounded)"
        detail = f"{metric}: a {self.symbol} b = {_fmt(est)}; expected {_describe_band(expect)}"
        return outcome(verdict, est, miss, needed, why, detail)

    def unit(self, check, unit):
        return "×"

    def explain(self, r):
        c = r["check"]
        return f"{self._name(r)}: ({where_text(c['a'])}) {self.sign} ({where_text(c['b'])})"

    def _name(self, r):
        return metric_label(r["check"]["metric"])[0]

    def compared(self, r):
        return f"({where_text(r['check']['a'])}) {self.sign} ({where_text(r['check']['b'])})"


KIND = Ratio()
