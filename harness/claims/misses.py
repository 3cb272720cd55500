"""What the answer says of a headline claim that does not reproduce, in three parts, each computed
from the results: what was measured (not the claim's words), the readings of the parameters the
paper leaves open under which it holds (or that none was run), and, where no other reading was
run, the paper's own numbers at the same configurations beside ours."""
from __future__ import annotations

from .fmt import AXES, decimals_for, metric_label, num, with_unit
from .readings import format_value


def _configs(where: dict) -> str:
    """{'width': [32, 64, 1024]} -> 'width 32-1024'; {'width': 8} -> 'width 8'."""
    out = []
    for k, v in where.items():
        name = AXES.get(k, k)
        if isinstance(v, list):
            out.append(f"{name} {min(v)}-{max(v)}" if len(v) > 2 else f"{name} {' and '.join(map(str, v))}")
        else:
            out.append(f"{name} {v}")
    return ", ".join(out)


def _value(v: float, unit: str, ci=None) -> str:
    d = decimals_for(v, 4) if v else 0
    s = with_unit(num(v, d), unit)
    return s + (f" [{num(ci[0], d)}, {num(ci[1], d)}]" if ci else "")


def _trend(plot: dict | None, metric: str) -> str | None:
    """'test accuracy rises with width, 58.2 % at 4 to 76.6 % at 96, with no peak' from the
    experiment's figure data (means per configuration), or None."""
    series = next((s for s in (plot or {}).get("series", []) if s.get("metric") == metric), None)
    pts = sorted((p["x"], p["mean"]) for p in (series or {}).get("points", []) if p.get("mean") is not None)
    if len(pts) < 3:
        return None
    label, unit = metric_label(metric)
    axis = AXES.get(plot["x"], plot["x"])
    ys = [y for _, y in pts]
    ends = (f"{with_unit(num(pts[0][1], digits=3), unit)} at {num(pts[0][0])} to "
            f"{with_unit(num(pts[-1][1], digits=3), unit)} at {num(pts[-1][0])}")
    if all(b > a for a, b in zip(ys, ys[1:])):
        return f"{label} rises with {axis}, {ends}, with no peak"
    if all(b < a for a, b in zip(ys, ys[1:])):
        return f"{label} falls with {axis}, {ends}, with no dip"
    top = max(pts, key=lambda p: p[1])
    return f"{label} peaks at {axis} {num(top[0])} ({with_unit(num(top[1], digits=3), unit)}), {ends}"


def _experiment_plot(r: dict, claims: list, metric: str) -> dict | None:
    """The claim's figure data with the points of `metric` that its experiment's other claims (same
    tier) plot added: a claim's own figure holds only the configurations it reads (two widths for
    a comparison), the others together the whole sweep (the same runs, so the same means)."""
    plot = r.get("plot")
    if not plot:
        return None
    pts = {}
    for x in [r] + [x for x in claims if x.get("experiment") == r.get("experiment") and x.get("tier") == r.get("tier")]:
        if (x.get("plot") or {}).get("x") == plot.get("x"):
            for s in x["plot"].get("series", []):
                if s.get("metric") == metric:
                    pts.update({p["x"]: p for p in s.get("points", [])})
    return {**plot, "series": [{"metric": metric, "points": [pts[k] for k in sorted(pts)]}]}


def measured(r: dict, claims: list = ()) -> str:
    """What was measured for the claim, with the paper's value where it has one."""
    mt, vs, check = r.get("measured_text") or {}, r.get("vs_paper"), r["check"]
    label = metric_label(check.get("metric", ""))[0]
    if mt and vs is not None:
        worst = " at worst" if (r.get("explanation") or "").startswith("worst") else ""
        return (f"{label} at {_configs(check.get('where') or {})}: {mt['value']}{worst}, not the paper's "
                f"{r['paper_text']} ({vs['text']})")
    trend = _trend(_experiment_plot(r, claims, check.get("metric")), check.get("metric"))
    if trend:
        return trend
    return f"{label}: {mt.get('value', '—')} {mt.get('ci', '')}".strip()


def held_under(r: dict, readings_doc: dict, e: dict) -> tuple:
    """(words, whether another reading was run): the readings run beside the primary and which of
    them the claim holds under, or how many were declared and not run; ("", False) where the
    experiment declares none."""
    declared = sorted((e or {}).get("declared") or {})
    if not declared:
        return "", False
    outside = (e or {}).get("outside") or {}
    primary = [f"{k}={format_value(v['value'])}" for k, p in ((e or {}).get("declared") or {}).items()
               for v in p.get("values", []) if v.get("primary")]
    beyond = [f"{pair}, the primary, lies outside {outside[pair]}" for pair in primary if pair in outside]
    opened = f"the paper leaves {' and '.join(declared)} open" + "".join(f"; {b}" for b in beyond)
    c = (readings_doc.get("claims") or {}).get(f"{r['file']}::{r['id']}[{r['tier']}]")
    other = [row for row in (c or {}).get("rows", []) if row["reading"] != "primary"
             and row["verdict"] in ("pass", "fail", "inconclusive", "diverged")]
    n_decl = len(((e or {}).get("plan") or {}).get("readings") or [])
    if not other:
        return f"{opened}; of {n_decl} other readings declared, none has run", False
    holds = [row for row in other if row["verdict"] == "pass"]
    if not holds:
        return f"{opened}; it holds under none of the {len(other)} other readings run", True
    best = holds[0]
    v = (f" ({best['reading']}: {_value(best['value'], r.get('unit', ''), best.get('ci'))})"
         if best.get("value") is not None else f" ({best['reading']})")
    return (f"under the primary reading ({opened}); it holds under {len(holds)} of the {len(other)} other "
            f"readings run{v}"), True


def beside_paper(r: dict, claims: list) -> str:
    """The paper's own numbers at the configurations the claim compares, beside ours: the claims of
    the same experiment at those configurations with a paper value and a measurement."""
    check = r["check"]
    wanted = [w for w in (check.get("a"), check.get("b"), check.get("where")) if isinstance(w, dict)]
    mine = [x for x in claims if x["experiment"] == r["experiment"] and x["tier"] == r["tier"] and x is not r
            and x["check"].get("where") in wanted and isinstance(x.get("paper_value"), (int, float))
            and x.get("measured_text")]
    if not mine:
        return ""
    by = {}
    for x in mine:
        by.setdefault(_configs(x["check"]["where"]), []).append(x)
    parts = [f"{where}: " + ", ".join(f"{metric_label(x['check']['metric'])[0]} {x['paper_text']} (measured "
                                      f"{x['measured_text']['value']})" for x in xs) for where, xs in by.items()]
    text = "the paper's own numbers at " + "; ".join(parts)
    fits = [x for x in mine if x["check"]["metric"] == "train_acc"]
    if fits and all(x["measured"]["value"] > x["paper_value"] for x in fits):
        text += ": its models fit less of their training set than ours, as a shorter training would"
    return text


def miss_text(r: dict, claims: list, readings_doc: dict, e: dict) -> str:
    """One failing headline claim: what was measured; the readings; the paper's own numbers where
    no other reading was run."""
    text = measured(r, claims)
    readings_said, ran = held_under(r, readings_doc, e)
    if readings_said:
        text += f", {readings_said}" if readings_said.startswith("under") else f" ({readings_said})"
    if not ran:
        paper = beside_paper(r, claims)
        if paper:
            text += f"; {paper}"
    return text
