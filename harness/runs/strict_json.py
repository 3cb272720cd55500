"""Strict JSON: what the run cache's metrics.json and the report's results.json are written as.

A non-finite number (a diverged run's loss) is written as null, and readers take null where a
number is expected as NaN (`number`).
"""
from __future__ import annotations

import json
import math


def jsonable(value):
    """`value` as strict JSON takes it: non-finite floats (NaN, inf: a diverged run) become None,
    written as null; other numbers that are not int or float (numpy, tensor scalars) become
    floats. Used for metrics.json and results.json."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def dumps(value, **kw) -> str:
    """Strict JSON text of `value` (see `jsonable`)."""
    return json.dumps(jsonable(value), allow_nan=False, **kw)


def number(value) -> float:
    """A number read back from strict JSON: null (a non-finite value, see `jsonable`) is NaN."""
    return math.nan if value is None else value
