"""Numbers and units as the report writes them: metric names with their units, numbers to a few
significant digits with thousands separators, a measured estimate with its interval and seeds.
"""
from __future__ import annotations

import math


METRICS = {"train_acc": ("train accuracy", "%"), "test_acc": ("test accuracy", "%"),
           "gen_gap": ("generalisation gap", "pp"), "train_loss": ("train loss", ""),
           "test_loss": ("test loss", ""), "movement": ("relative parameter movement", ""),
           "hessian_top": ("top Hessian eigenvalue", ""), "hessian_residual": ("Hessian residual", ""),
           "params": ("parameters", ""), "steps": ("optimiser steps", ""), "wall_s": ("training time", "s"),
           "epochs_run": ("epochs", ""), "pm": ("weights remaining (Pm)", "%"),
           "early_stop_test_acc": ("test accuracy at early stopping", "%"),
           "early_stop_step": ("early-stopping iteration", ""), "sharpness_final": ("final sharpness", "")}


AXES = {"width": "width", "batch_size": "batch size", "remaining": "fraction of weights remaining"}


def metric_label(metric: str) -> tuple:
    """(readable name, unit) of a metric."""
    if metric.startswith("sharpness_ratio_"):  # the sharpness in units of the threshold 2/eta
        return f"sharpness / (2/η), {metric[len('sharpness_ratio_'):].replace('_', ' ')}", "× 2/η"
    if metric.startswith("perturb_"):
        return f"relative train-loss rise at σ = {metric[len('perturb_'):]}", ""
    return METRICS.get(metric, (metric.replace("_", " "), ""))


def decimals_for(v: float, digits: int = 4) -> int:
    return max(0, digits - 1 - math.floor(math.log10(abs(v)))) if v else 0


def num(v, decimals=None, digits: int = 4) -> str:
    """A number for reading: integers in full with thousands separators (10,020,874), else about
    `digits` significant digits without exponent between 1e-3 and 1e6, else 1.23×10⁻⁵."""
    if v is None or isinstance(v, str):
        return "—" if v is None else v
    if not math.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15 and decimals is None:
        return f"{int(v):,}"
    if decimals is None:
        if v and not 1e-3 <= abs(v) < 1e6:
            m, e = f"{v:.{digits - 1}e}".split("e")
            return f"{m}×10{str(int(e)).translate(str.maketrans('-0123456789', '⁻⁰¹²³⁴⁵⁶⁷⁸⁹'))}"
        decimals = decimals_for(v, digits)
    return f"{v:,.{decimals}f}"


def given(v) -> str:
    """A number as a claim file gives it (a band's edge, a target, a tolerance): its own digits,
    no trailing zeros added (0.05, not 0.05000), thousands separated."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.10g}" if isinstance(v, (int, float)) else str(v)


def with_unit(s: str, unit: str) -> str:
    if unit == "×":
        return s + "×"
    return f"{s} {unit}" if unit else s


def estimate_text(m: dict, unit: str = "") -> dict:
    """{'value', 'ci', 'n'} strings of a measured estimate, the value and its CI bounds in one
    number of decimals: as many as give the interval's half-width two significant digits (the
    estimate is known no better: 63.5 [61.7, 65.3], not 63.46 [61.72, 65.30]), never more than
    the value's four significant digits; minus signs, not hyphens; the CI only where it is not
    degenerate (n > 1 and the bounds differ)."""
    v, (lo, hi), n = m["value"], m["ci"], m["n"]
    d = None if float(v).is_integer() or not 1e-3 <= abs(v) < 1e6 else decimals_for(v)
    ci = ""
    if n > 1 and all(map(math.isfinite, (lo, hi))) and lo != hi:
        if d is not None:
            d = min(d, decimals_for((hi - lo) / 2, 2))
        ci = f"[{num(lo, d)}, {num(hi, d)}]".replace("-", "−")
    return {"value": with_unit(num(v, d), unit).replace("-", "−"), "ci": ci, "n": n}
