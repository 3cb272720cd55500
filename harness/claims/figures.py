"""The report's figure data: per experiment, the plotted metrics' means and intervals per
configuration (along the plot's x, and apart from it), the paper's values that sit on a plotted
point, the forest plot's rows (every numeric claim in tolerance units) and what it leaves out, and
each figure's caption, legend and description. svg.py draws them."""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from . import stats
from .fmt import AXES, metric_label, num
from .kinds import kind, tolerance_position
from .kinds.common import _matches, groups
from .svg import LINE_WORDS, axis_label


def _apart_label(cfg: dict, plot: dict, optimizer: str) -> str | None:
    """The label of a configuration drawn apart from the curve along plot.x: one named in
    plot.apart, one with another optimizer than the curve's, or full-batch GD (batch_size = 0)."""
    for name, where in (plot.get("apart") or {}).items():
        if _matches(cfg, where):
            return name
    if cfg.get("batch_size") == 0:
        return "GD (full batch)"
    if cfg.get("optimizer", optimizer) != optimizer:
        return f"{cfg['optimizer'].capitalize()} (batch {cfg.get('batch_size')})"
    if plot.get("logx") and cfg[plot["x"]] <= 0:
        return f"{plot['x']} = {cfg[plot['x']]}"
    return None


def experiment_series(exp, rows) -> dict:
    """Mean over seeds and 95% interval (its method named in `interval`, from the estimates: stats.summarize's
    Student t) of the plotted metrics, per configuration: along plot.x
    (one series per metric, or per metric and plot.by value), and apart from it for the
    configurations _apart_label names (Adam, GD), each with its configuration."""
    p = exp.plot
    x, by = p["x"], p.get("by")
    gs = groups(rows)
    optimizer = Counter(g[0]["config"].get("optimizer") for g in gs).most_common(1)[0][0]
    series, apart, methods = {}, [], []
    for g in sorted(gs, key=lambda g: g[0]["config"][x]):
        cfg = g[0]["config"]
        away = _apart_label(cfg, p, optimizer)
        for metric in p["y"]:
            vals = [v for v in (r["metrics"].get(metric, math.nan) for r in g) if math.isfinite(v)]
            if not vals:
                continue
            est = stats.summarize(vals)
            methods.append(est.interval)
            point = {"mean": est.value, "lo": est.ci[0], "hi": est.ci[1], "n": est.n, "config": cfg,
                     "values": vals}  # each seed's, drawn beside the mean
            if away:
                apart.append({"label": away, "metric": metric, **point})
                continue
            name = metric_label(metric)[0] + ("" if by is None else f", {by} = {cfg[by]}")
            s = series.setdefault(name, {"name": name, "metric": metric, "points": []})
            s["points"].append({"x": cfg[x], **point})
    return {"experiment": exp.name, "file": Path(exp.file).name, "x": x, "y": list(p["y"]), "by": by,
            "logx": p.get("logx", False), "logy": p.get("logy", False), "model": exp.model,
            "dataset": exp.dataset, "series": list(series.values()), "apart": apart,
            "interval": interval_names(methods)}


def merged(plots: list) -> dict:
    """One experiment's figure from its claims' (each drawn from the rows its own claim read, see
    harness/runs/expand.py: may_read): every configuration any of them read, drawn once."""
    series, apart = {}, {}
    for p in plots:
        for s in p["series"]:
            points = series.setdefault(s["name"], {**s, "points": {}})["points"]
            for pt in s["points"]:
                points.setdefault(json.dumps(pt["config"], sort_keys=True, default=str), pt)
        for a in p["apart"]:
            apart.setdefault((a["label"], a["metric"], json.dumps(a["config"], sort_keys=True, default=str)), a)
    return {**plots[0], "series": [{**s, "points": sorted(s["points"].values(), key=lambda pt: pt["x"])}
                                   for s in series.values()],
            "apart": list(apart.values()),
            "interval": next((p["interval"] for p in plots if p["interval"] != "none"), "none")}


def interval_names(methods) -> str:
    """The distinct interval names, in words: 'Student t', 'Fieller, Student t or Welch'."""
    names = sorted(set(methods))
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0] if names else "none"


def paper_points(plot: dict, claims: list) -> list:
    """The paper's values that sit on a plotted point: a claim of type value (or all) on a plotted
    metric whose `where` selects configurations of the plot, with a numeric paper_value."""
    out = []
    for r in claims:
        c, pv = r["check"], r.get("paper_value")
        # a claim over several configurations ("each") has one paper value for all of them: a bound
        # the paper's values share (99.9 for 100.0 / 99.9 / 99.9), not each one's value; not drawn
        if kind(c).paper_points in (None, "each") or c["metric"] not in plot["y"] or \
                not isinstance(pv, (int, float)) or isinstance(pv, bool):
            continue
        hits = [(s["name"], pt["x"], None) for s in plot["series"] if s["metric"] == c["metric"]
                for pt in s["points"] if _matches(pt["config"], c.get("where") or {})]
        hits += [(None, None, a["label"]) for a in plot["apart"]
                 if a["metric"] == c["metric"] and _matches(a["config"], c.get("where") or {})]
        if kind(c).paper_points == "one" and len(hits) != 1:
            continue
        out += [{"series": s, "x": x, "apart": a, "metric": c["metric"], "value": pv, "claim": r["id"],
                 "band": _band(r.get("expect") or {})} for s, x, a in hits]
    return out


def bounds(plot: dict, claims: list) -> list:
    """The one-sided bounds of claims over several plotted configurations (a claim of type `all`:
    "every MLP from width 32 reaches 100%", checked as >= 99.95 at each width): drawn as a line
    at the bound across those configurations, since no one point carries the paper's value."""
    out = []
    for r in claims:
        c, e = r["check"], r.get("expect") or {}
        if kind(c).paper_points != "each" or c["metric"] not in plot["y"] or ("min" in e) == ("max" in e):
            continue
        xs = sorted(pt["x"] for s in plot["series"] if s["metric"] == c["metric"] for pt in s["points"]
                    if _matches(pt["config"], c.get("where") or {}))
        if len(xs) > 1:
            out.append({"metric": c["metric"], "x": [xs[0], xs[-1]], "value": e.get("min", e.get("max")),
                        "side": "≥" if "min" in e else "≤", "claim": r["id"], "verdict": r["verdict"]})
    return out


def _band(e: dict) -> list | None:
    """The claim's expected band [lo, hi] where it is two-sided (target ± tolerance, or min and
    max), drawn behind the paper's value; None for a one-sided bound."""
    if "target" in e:
        tol = max(e.get("abs_tol", 0.0), abs(e["target"]) * e.get("rel_tol", 0.0))
        return [e["target"] - tol, e["target"] + tol] if tol else None
    if "min" in e and "max" in e:
        return [e["min"], e["max"]]
    return None


def forest_rows(claims: list) -> list:
    """One row per numeric claim, in section order (see tolerance_position). Other claims have no unit
    and no row; `forest_left_out` says which and why."""
    rows = []
    for r in claims:
        t = tolerance_position(r)
        if t is None:
            continue
        rows.append({"section": r["section"], "label": r["id"], "statement": r["statement"], **t,
                     "interval": stats.interval_name(r["measured"].get("method", "")),
                     "verdict": r["verdict"], "anchor": r.get("anchor")})
    return rows


def forest_left_out(claims: list, rows: list) -> list:
    """The claims the forest plot does not draw, by reason: [{'reason', 'ids'}]."""
    drawn = {r["label"] for r in rows}
    why = defaultdict(list)
    for r in claims:
        if r["id"] in drawn:
            continue
        if r["verdict"] == "not run":
            reason = "not run (nothing measured)"
        elif r["verdict"] in ("error", "diverged"):
            reason = f"{r['verdict']} (no value)"
        elif not kind(r["check"]).band:
            reason = kind(r["check"]).left_out
        elif r.get("training_free") or (r["expect"].get("abs_tol") == 0 and "target" in r["expect"]):
            reason = "exact counts (no tolerance)"
        else:
            reason = "one-sided bounds without a paper value inside them"
        why[reason].append(r)
    return [{"reason": k, "n": len(v), "ids": [r["id"] for r in v], "anchors": [r["anchor"] for r in v]}
            for k, v in why.items()]


def _plot_text(p: dict, first: dict) -> dict:
    """Caption (also the SVG's <title>), legend sentence, and the SVG's <desc>: every plotted value
    and paper value in words."""
    yl, xl = axis_label(p["y"]), AXES.get(p["x"], p["x"])
    n = max((pt["n"] for s in p["series"] for pt in s["points"]), default=0)
    setup = f"{p['model'].upper()} on {'MNIST' if p['dataset'] == 'mnist' else 'CIFAR-10'}"
    caption = f"{first['section']} · {first['title']}: {yl} against {xl}, {setup} ({p['tier']} tier)"
    legend = f"Points: mean over {n} seeds (small dots: each seed), bars: 95% {p['interval']} CI."
    if p["paper"]:
        legend += (" Open diamonds: the paper's values" + (", the shaded bar behind one: its claim's tolerance band"
                   if any(pp.get("band") for pp in p["paper"]) else "")) + (
            " (for the paper's full-scale setup; this tier is smaller)." if p["tier"] != "full" else ".")
    else:
        legend += " No claim of this experiment gives a paper value on these axes."
    for b in p.get("bounds", []):
        legend += (f" Dotted line: {b['claim']}'s bound, {metric_label(b['metric'])[0]} {b['side']} {b['value']:g} "
                   f"at every {xl} from {b['x'][0]:g} to {b['x'][1]:g} ({b['verdict']}).")
    if len(p["y"]) > 1:
        legend += " Each metric has its own marker and line style (" + ", ".join(
            f"{metric_label(m)[0]}: {w}" for m, w in zip(p["y"], LINE_WORDS)) + ")."
    shared = Counter((s["metric"], pt["x"]) for s in p["series"] for pt in s["points"])
    if any(n > 1 for n in shared.values()):
        legend += f" Series that share a {xl} are drawn slightly side by side."
    if p["apart"]:
        legend += (f" Right panel, on its own y axis: configurations outside the {xl} sweep "
                   f"({', '.join(dict.fromkeys(a['label'] for a in p['apart']))}).")
    desc = ([f"{s['name']}: " + ", ".join(f"{pt['x']:g}: {num(pt['mean'])}" for pt in s["points"]) for s in p["series"]]
            + [f"{a['label']}, {metric_label(a['metric'])[0]}: {num(a['mean'])}" for a in p["apart"]]
            + [f"paper, {metric_label(pp['metric'])[0]} at " + (pp["apart"] or f"{xl} {pp['x']:g}")
               + f": {pp['value']:g}" for pp in p["paper"]])
    return {"caption": caption, "legend": legend, "desc": "; ".join(desc),
            "heading": f"{setup}: {yl} against {xl}"}

