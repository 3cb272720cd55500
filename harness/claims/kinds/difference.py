"""difference: mean(metric at a) - mean(metric at b), with Welch's interval, against a band (in pp
for percentages)."""
from __future__ import annotations

import math

from .. import stats
from .common import _sd
from .ratio import Ratio


class Difference(Ratio):
    name = "difference"
    words = "difference"
    scale_free = False
    symbol, sign = "-", "−"

    def estimate(self, a, b):
        return stats.difference(a, b)

    def spread(self, a, b, est):
        return math.sqrt(_sd(a) ** 2 + _sd(b) ** 2)

    def unit(self, check, unit):
        return "pp" if unit == "%" else unit


KIND = Difference()
