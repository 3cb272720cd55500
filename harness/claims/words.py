"""What the report says of one claim: the measured result in words, the compared configurations,
the deviation from the expected band (absolute, relative, in tolerance units), the paper's value
and the expectation in words; the kind-specific words come from the claim's kind
(harness/claims/kinds/)."""
from __future__ import annotations

import math
import re

from .fmt import decimals_for, estimate_text, num, with_unit
from .kinds import kind, quantity_unit, tolerance_position
from .kinds.common import position


def explain(r: dict) -> str:
    """The measured result in words, naming the compared configurations (Welch tests, ratios,
    differences, monotonic steps); '' for a single value."""
    return kind(r["check"]).explain(r) if r.get("measured") else ""


def compared(r: dict) -> str:
    """A short note for the at-a-glance table: the compared configurations, the worst one of an
    'all' check, or how many runs are missing."""
    if r["verdict"] == "not run":
        return r["detail"].removeprefix("not run (").removesuffix(")")
    if not r.get("measured"):
        return ""
    return kind(r["check"]).compared(r)


def deviation_text(r: dict) -> str:
    """'Δ' column: measured − target (absolute, in pp for percentages; relative; and in tolerance
    units, the band's half-width), or how far outside a min/max band; '' where it does not apply."""
    m = r.get("measured")
    if not m or not kind(r["check"]).band or r["verdict"] not in ("pass", "fail", "inconclusive"):
        return ""
    pos = position(r["expect"], m["value"])
    unit = {"%": "pp", "×": ""}.get(r["unit"], r["unit"])
    d = pos["delta"] if pos["delta"] is not None else pos["outside"]
    dec = None if float(m["value"]).is_integer() and float(d).is_integer() else decimals_for(m["value"])
    size = with_unit(("+" if d > 0 else "") + num(d, dec) if d else "0", unit)
    if pos["delta"] is None:  # to the band's edge, unlike vs_paper's difference to the paper's value
        text = "inside the band" if not d else size + (" below the band" if d < 0 else " above the band")
    else:
        text = size + (f" ({100 * pos['rel']:+.1f}%)" if pos["rel"] is not None and d else "")
        if not d and pos["units"] is None:
            text += " (exact)"
    t = tolerance_position(r)  # the forest's unit, also for a one-sided band around the paper's value
    if t is not None:
        text += f", {t['z']:+.2f} tol"
    return text.replace("-", "−")  # minus signs, as vs_paper writes them


def paper_text(r: dict) -> str:
    pv = r.get("paper_value")
    if isinstance(pv, (int, float)) and not isinstance(pv, bool):
        return with_unit(num(pv) if float(pv).is_integer() else f"{pv:g}", quantity_unit(r["check"]))
    return "—"


def vs_paper(r: dict) -> dict | None:
    """The measured value against the paper's: {'d', 'rel', 'text'} (pp for percentages, else a
    relative %), or None where there is no single number to compare (tests, monotonic steps)."""
    m, pv = r.get("measured"), r.get("paper_value")
    if not m or not isinstance(pv, (int, float)) or isinstance(pv, bool) \
            or not kind(r["check"]).band or not math.isfinite(m.get("value", math.nan)):
        return None
    d = m["value"] - pv
    if r["unit"] == "%":  # to the measured value's precision (99.31 against 100: -0.69 pp)
        text = f"{d:+.{min(decimals_for(m['value']), 2)}f} pp".replace("-", "−")
    elif pv:
        text = f"{100 * d / abs(pv):+.0f}%".replace("-", "−")
    else:
        text = num(d)
    return {"d": d, "rel": d / abs(pv) if pv else None, "text": text}


def type_words(check: dict) -> str:
    """What the report calls a check's claims, e.g. 'log-log slope'."""
    return kind(check).words


def expected_text(r: dict) -> str:
    """The expectation in words and the claim's unit: a band's numbers as the measured ones are
    written (6,514; 99.95 %), a Welch test as the difference it expects."""
    return kind(r["check"]).expected_text(r)


def _cfg_label(label: str, model: str | None) -> str:
    """A configuration's label as the claims name it: a CNN's width is its channel count c."""
    return re.sub(r"\bwidth=", "c=", label) if model == "cnn" else re.sub(r"\bwidth=", "w=", label)



def annotate(r: dict, model: str | None) -> None:
    """Add the words of one claim to its record (a copy: build's own), `model` naming its
    configurations (a CNN's width is its channel count)."""
    for t in r.get("table") or []:
        t["label"] = _cfg_label(t["label"], model)
        d = None if float(t["value"]).is_integer() or not 1e-3 <= abs(t["value"]) < 1e6 else decimals_for(t["value"])
        t["value_text"] = num(t["value"], d)
        t["ci_text"] = (f"[{num(t['ci'][0], d)}, {num(t['ci'][1], d)}]"
                        if t["n"] > 1 and t["ci"][0] != t["ci"][1] else "")
    r["unit"] = quantity_unit(r["check"])
    r["expected_text"] = expected_text(r)
    r["paper_text"] = paper_text(r)
    r["measured_text"] = estimate_text(r["measured"], r["unit"]) if r.get("measured") else None
    r["explanation"] = explain(r)
    r["compared"] = compared(r)
    r["deviation"] = deviation_text(r)
    r["vs_paper"] = vs_paper(r)
    t = tolerance_position(r)
    r["z"] = t["z"] if t else None
