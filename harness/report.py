"""Reproduction report: results.json (machine-readable) and report.html (Jinja, autoescaped,
templates in report_templates/): a self-contained page that says at a glance whether the paper
reproduces.

Layout: a headline and per-section totals (sections in the paper's order, the review's controls
last), a forest plot of every numeric claim against its expected band, an at-a-glance table
(paper | measured with its 95% CI | deviation), then one block per section and experiment: the
experiment's figure (measured points with 95% CI bars, the paper's values as open diamonds), the
provenance of its runs, and its claim cards (passing ones collapsed). Figures are matplotlib SVG,
inlined, text kept as text, ids made unique per figure. Verdicts: pass, fail, diverged, error and
"not run" (the runs are not in the cache). results.json is strict JSON: non-finite numbers (a
diverged run's) are written as null."""
from __future__ import annotations

import datetime
import io
import math
import platform
import re
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import jinja2

from . import checks, stats
from .cache import dumps

TEMPLATES = Path(__file__).resolve().parent.parent / "report_templates"
VERDICTS = ("pass", "fail", "diverged", "error", "not run")
# verdict colours, each >= 4.5:1 against white (WCAG AA), shared by the HTML and the figures
COLOURS = {"pass": "#1b6e20", "fail": "#b71c1c", "diverged": "#8a4b00", "error": "#8a4b00",
           "not run": "#595959"}
METRICS = {"train_acc": ("train accuracy", "%"), "test_acc": ("test accuracy", "%"),
           "gen_gap": ("generalisation gap", "pp"), "train_loss": ("train loss", ""),
           "test_loss": ("test loss", ""), "movement": ("relative parameter movement", ""),
           "hessian_top": ("top Hessian eigenvalue", ""), "hessian_residual": ("Hessian residual", ""),
           "params": ("parameters", ""), "steps": ("optimiser steps", ""), "wall_s": ("training time", "s"),
           "epochs_run": ("epochs", "")}
AXES = {"width": "width", "batch_size": "batch size", "remaining": "fraction of weights remaining"}
PROVENANCE_FIELDS = ("device", "torch", "cuda", "commit")


def metric_label(metric: str) -> tuple:
    """(readable name, unit) of a metric."""
    if metric.startswith("perturb_"):
        return f"relative train-loss rise at σ = {metric[len('perturb_'):]}", ""
    return METRICS.get(metric, (metric.replace("_", " "), ""))


def quantity_unit(check: dict) -> str:
    """Unit of the quantity a check measures: differences of percentages are in pp."""
    unit = metric_label(check["metric"])[1]
    if check["type"] == "ratio":
        return "×"
    if check["type"] == "loglog_slope":
        return ""
    if check["type"] in ("difference", "welch", "monotonic") and unit == "%":
        return "pp"
    return unit


def _decimals(v: float, digits: int = 4) -> int:
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
        decimals = _decimals(v, digits)
    return f"{v:,.{decimals}f}"


def with_unit(s: str, unit: str) -> str:
    if unit == "×":
        return s + "×"
    return f"{s} {unit}" if unit else s


def estimate_text(m: dict, unit: str = "") -> dict:
    """{'value', 'ci', 'n'} strings of a measured estimate, the CI bounds in the value's decimals;
    the CI only where it is not degenerate (n > 1 and the bounds differ)."""
    v, (lo, hi), n = m["value"], m["ci"], m["n"]
    d = None if float(v).is_integer() or not 1e-3 <= abs(v) < 1e6 else _decimals(v)
    ci = ""
    if n > 1 and all(map(math.isfinite, (lo, hi))) and lo != hi:
        ci = f"[{num(lo, d)}, {num(hi, d)}]"
    return {"value": with_unit(num(v, d), unit), "ci": ci, "n": n}


def _where(w: dict) -> str:
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in (w or {}).items())


def explain(r: dict) -> str:
    """The measured result in words, naming the compared configurations (Welch tests, ratios,
    differences, monotonic steps); '' for a single value."""
    m, check, expect = r.get("measured"), r["check"], r["expect"]
    if not m:
        return ""
    unit = quantity_unit(check)
    name = metric_label(check["metric"])[0]
    if check["type"] == "welch":
        a, b = _where(check["a"]), _where(check["b"])
        d = m["value"]
        alpha = expect.get("alpha", 0.05)
        size = with_unit(num(abs(d), digits=3), unit)
        ci = estimate_text(m, unit)["ci"]
        higher, lower = (a, b) if d > 0 else (b, a)
        if not math.isfinite(m.get("p", math.nan)):
            return f"no Welch test (fewer than 2 seeds): {name} {a} minus {b} = {with_unit(num(d), unit)}"
        p = f"p = {num(m['p'], digits=2)}"
        if m["p"] >= alpha:
            return (f"not significant ({p} ≥ {alpha:g}): {name} differs by {size} between {a} and {b}"
                    + (f", 95% CI of a − b {ci}" if ci else ""))
        wanted = expect.get("direction", "greater")
        right = (d > 0) == (wanted == "greater")
        head = "significant" if right else "significant, opposite direction"
        return (f"{head} ({p} < {alpha:g}): {name} at {higher} is {size} above {lower}"
                + (f" (95% CI of a − b {ci})" if ci else "")
                + ("" if right else f"; the claim expects {a} {'above' if wanted == 'greater' else 'below'} {b}"))
    if check["type"] in ("ratio", "difference"):
        op = "/" if check["type"] == "ratio" else "−"
        return f"{name}: ({_where(check['a'])}) {op} ({_where(check['b'])})"
    if check["type"] == "monotonic":
        return (f"smallest step of {name} along {check['over']} in the expected ({expect['direction']}) direction: "
                f"{with_unit(num(m['value']), unit)}")
    if check["type"] == "all":
        return f"worst of the configurations {_where(check.get('where'))}"
    return ""


def compared(r: dict) -> str:
    """A short note for the at-a-glance table: the compared configurations, the worst one of an
    'all' check, or how many runs are missing."""
    c = r["check"]
    if r["verdict"] == "not run":
        return r["detail"].removeprefix("not run (").removesuffix(")")
    if not r.get("measured"):
        return ""
    if c["type"] in ("welch", "difference"):
        note = f"({_where(c['a'])}) − ({_where(c['b'])})"
        p = r["measured"].get("p")
        return note + (f", p = {num(p, digits=2)}" if c["type"] == "welch" and p is not None else "")
    if c["type"] == "ratio":
        return f"({_where(c['a'])}) / ({_where(c['b'])})"
    if c["type"] == "monotonic":
        return f"smallest step along {c['over']}"
    if c["type"] == "all":
        worst = [t["label"] for t in r["table"] if t["value"] == r["measured"]["value"]]
        return f"worst: {worst[0]}" if worst else ""
    return ""


def deviation_text(r: dict) -> str:
    """'Δ' column: measured − target (absolute, in pp for percentages; relative; and in tolerance
    units, the band's half-width), or how far outside a min/max band; '' where it does not apply."""
    m = r.get("measured")
    if not m or r["check"]["type"] in ("welch", "monotonic") or r["verdict"] not in ("pass", "fail"):
        return ""
    pos = checks.position(r["expect"], m["value"])
    unit = {"%": "pp", "×": ""}.get(r["unit"], r["unit"])
    d = pos["delta"] if pos["delta"] is not None else pos["outside"]
    dec = None if float(m["value"]).is_integer() and float(d).is_integer() else _decimals(m["value"])
    size = with_unit(("+" if d > 0 else "") + num(d, dec) if d else "0", unit)
    if pos["delta"] is None:
        text = "inside the band" if not d else size + (" below the band" if d < 0 else " above the band")
    else:
        text = size + (f" ({100 * pos['rel']:+.1f}%)" if pos["rel"] is not None and d else "")
        if not d and pos["units"] is None:
            text += " (exact)"
    if pos["units"] is not None:
        text += f", {pos['units']:+.2f} tol"
    return text


def paper_text(r: dict) -> str:
    pv = r.get("paper_value")
    if isinstance(pv, (int, float)) and not isinstance(pv, bool):
        return with_unit(num(pv) if float(pv).is_integer() else f"{pv:g}", quantity_unit(r["check"]))
    return "—"


def section_key(section: str) -> tuple:
    """Paper order: 'IV-C' < 'V-A / V-D' < 'V-B' ...; anything else (the review's controls) after."""
    roman = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "X": 10}
    m = re.match(r"([IVX]+)-([A-Z])", section)
    if m and m.group(1) in roman:
        return (0, roman[m.group(1)], m.group(2), section)
    m = re.match(r"([IVX]+)\b", section)
    if m and m.group(1) in roman:
        return (0, roman[m.group(1)], "", section)
    return (1, 0, "", section)


def slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(str(p) for p in parts)).strip("-")


def environment(device: str = "cpu") -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
           "cuda_available": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "tf32_convolutions": torch.backends.cudnn.allow_tf32,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
           "cpu_threads": torch.get_num_threads()}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=TEMPLATES.parent, timeout=10).stdout.strip() or None
    except Exception:
        env["git_commit"] = None
    return env


def _apart_label(cfg: dict, plot: dict, optimizer: str) -> str | None:
    """The label of a configuration drawn apart from the curve along plot.x: one named in
    plot.apart, one with another optimizer than the curve's, or full-batch GD (batch_size = 0)."""
    for name, where in (plot.get("apart") or {}).items():
        if checks._matches(cfg, where):
            return name
    if cfg.get("batch_size") == 0:
        return "GD (full batch)"
    if cfg.get("optimizer", optimizer) != optimizer:
        return f"{cfg['optimizer'].capitalize()} (batch {cfg.get('batch_size')})"
    if plot.get("logx") and cfg[plot["x"]] <= 0:
        return f"{plot['x']} = {cfg[plot['x']]}"
    return None


def experiment_series(exp, rows) -> dict:
    """Mean over seeds and 95% bootstrap CI of the plotted metrics, per configuration: along plot.x
    (one series per metric, or per metric and plot.by value), and apart from it for the
    configurations _apart_label names (Adam, GD), each with its configuration."""
    p = exp.plot
    x, by = p["x"], p.get("by")
    gs = checks.groups(rows)
    optimizer = Counter(g[0]["config"].get("optimizer") for g in gs).most_common(1)[0][0]
    series, apart = {}, []
    for g in sorted(gs, key=lambda g: g[0]["config"][x]):
        cfg = g[0]["config"]
        away = _apart_label(cfg, p, optimizer)
        for metric in p["y"]:
            vals = [v for v in (r["metrics"].get(metric, math.nan) for r in g) if math.isfinite(v)]
            if not vals:
                continue
            est = stats.summarize(vals)
            point = {"mean": est.value, "lo": est.ci[0], "hi": est.ci[1], "n": est.n, "config": cfg}
            if away:
                apart.append({"label": away, "metric": metric, **point})
                continue
            name = metric_label(metric)[0] + ("" if by is None else f", {by} = {cfg[by]}")
            s = series.setdefault(name, {"name": name, "metric": metric, "points": []})
            s["points"].append({"x": cfg[x], **point})
    return {"experiment": exp.name, "file": Path(exp.file).name, "x": x, "y": list(p["y"]), "by": by,
            "logx": p.get("logx", False), "logy": p.get("logy", False), "model": exp.model,
            "dataset": exp.dataset, "series": list(series.values()), "apart": apart}


def paper_points(plot: dict, claims: list) -> list:
    """The paper's values that sit on a plotted point: a claim of type value (or all) on a plotted
    metric whose `where` selects configurations of the plot, with a numeric paper_value."""
    out = []
    for r in claims:
        c, pv = r["check"], r.get("paper_value")
        if c["type"] not in ("value", "all") or c["metric"] not in plot["y"] or \
                not isinstance(pv, (int, float)) or isinstance(pv, bool):
            continue
        hits = [(s["name"], pt["x"], None) for s in plot["series"] if s["metric"] == c["metric"]
                for pt in s["points"] if checks._matches(pt["config"], c.get("where") or {})]
        hits += [(None, None, a["label"]) for a in plot["apart"]
                 if a["metric"] == c["metric"] and checks._matches(a["config"], c.get("where") or {})]
        if c["type"] == "value" and len(hits) != 1:
            continue
        out += [{"series": s, "x": x, "apart": a, "metric": c["metric"], "value": pv, "claim": r["id"]}
                for s, x, a in hits]
    return out


def _axis_label(metrics: list) -> str:
    labels = [metric_label(m) for m in metrics]
    units = {u for _, u in labels}
    if len(units) == 1 and units != {""}:
        unit = units.pop()
        names = [n for n, _ in labels]
        if len(names) > 1 and all(n.endswith("accuracy") for n in names):
            return f"accuracy ({unit})"
        return f"{' / '.join(names)} ({unit})"
    return " / ".join(n + (f" ({u})" if u else "") for n, u in labels)


def _log_ticks(lo: float, hi: float) -> list:
    """1-2-5 ticks from the one at or below `lo` to the one at or above `hi`, so both data ends
    are labelled."""
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2)
             for m in (1, 2, 5)]
    first = max(t for t in ticks if t <= lo * (1 + 1e-9))
    last = min(t for t in ticks if t >= hi * (1 - 1e-9))
    return [t for t in ticks if first <= t <= last]


def _svg(fig, uid: str, title: str, desc: str) -> str:
    """The figure as inline SVG: text as text, ids prefixed by `uid` (unique in the page), a
    <title> and <desc> for screen readers."""
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": uid, "svg.id": uid}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # matplotlib's own ids (clip paths, markers, axes groups) become uid-prefixed
    ids = set(re.findall(r'\bid="([^"]+)"', svg)) - {uid}
    for i in sorted(ids, key=len, reverse=True):
        svg = re.sub(rf'(\bid="|url\(#|xlink:href="#|href="#){re.escape(i)}(?=["\)])', rf"\g<1>{uid}-{i}", svg)
    head_end = svg.index(">") + 1
    svg = (svg[:head_end - 1] + f' role="img" aria-labelledby="{uid}-title {uid}-desc">'
           + f'<title id="{uid}-title">{_esc(title)}</title><desc id="{uid}-desc">{_esc(desc)}</desc>'
           + svg[head_end:])
    return svg


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _log_y(ax, ys: list) -> None:
    """A log y axis with 1-2-5 ticks that label both ends of the data."""
    import matplotlib.ticker as mticker

    ys = [y for y in ys if math.isfinite(y)]
    if not ys or min(ys) <= 0:
        return
    ax.set_yscale("log")
    ticks = _log_ticks(min(ys), max(ys))
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.set_ylim(ticks[0] / 1.15, ticks[-1] * 1.15)


def plot_svg(plot: dict, uid: str) -> str:
    """One experiment's figure: per series, means with 95% CI bars along plot.x (log axes as the
    plot asks); the configurations drawn apart (Adam, GD) in a panel of their own on the right,
    with its own y axis so that they do not squash the sweep's; the paper's values as open
    diamonds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker

    apart_labels = list(dict.fromkeys(a["label"] for a in plot["apart"]))
    if apart_labels:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6.6, 3.6),
                                      gridspec_kw={"width_ratios": [5, 0.9 + 0.6 * len(apart_labels)]})
    else:
        fig, ax = plt.subplots(figsize=(6.6, 3.6))
        ax2 = None
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {s["name"]: cycle[i % len(cycle)] for i, s in enumerate(plot["series"])}
    metric_colour = {}
    for s in plot["series"]:
        metric_colour.setdefault(s["metric"], colour[s["name"]])
    for i, m in enumerate(plot["y"]):
        metric_colour.setdefault(m, cycle[(len(plot["series"]) + i) % len(cycle)])
    # series of one metric that share an x (a ticket and its controls at 10%) are dodged apart
    sharing = defaultdict(list)
    for s in plot["series"]:
        for p in s["points"]:
            sharing[(s["metric"], p["x"])].append(s["name"])
    xs = [x for _, x in sharing] or [0]
    step = 0.04 if plot["logx"] else 0.015 * ((max(xs) - min(xs)) or 1)  # 4% apart on a log axis

    def xpos(name, metric, x):
        names = sharing[(metric, x)]
        shift = step * (names.index(name) - (len(names) - 1) / 2) if name in names else 0.0
        return x * math.exp(shift) if plot["logx"] else x + shift

    def offset(metric):  # metrics side by side at one apart configuration
        return 0.12 * (plot["y"].index(metric) - (len(plot["y"]) - 1) / 2)

    ys, ys2 = [], []
    for s in plot["series"]:
        pts = s["points"]
        err = [[p["mean"] - p["lo"] for p in pts], [p["hi"] - p["mean"] for p in pts]]
        ax.errorbar([xpos(s["name"], s["metric"], p["x"]) for p in pts], [p["mean"] for p in pts], yerr=err,
                    marker="o", ms=4, capsize=3, color=colour[s["name"]], label=s["name"])
        ys += [p["lo"] for p in pts] + [p["hi"] for p in pts]
    for a in plot["apart"]:
        ax2.errorbar([apart_labels.index(a["label"]) + offset(a["metric"])], [a["mean"]],
                     yerr=[[a["mean"] - a["lo"]], [a["hi"] - a["mean"]]], marker="s", ms=5, capsize=3,
                     color=metric_colour[a["metric"]], linestyle="none")
        ys2 += [a["lo"], a["hi"]]
    paper_metrics = []
    for pp in plot.get("paper", []):
        c = colour.get(pp["series"]) or metric_colour[pp["metric"]]
        if pp["apart"]:
            target, at = ax2, apart_labels.index(pp["apart"]) + offset(pp["metric"])
            ys2.append(pp["value"])
        else:
            target, at = ax, xpos(pp["series"], pp["metric"], pp["x"])
            ys.append(pp["value"])
        target.plot([at], [pp["value"]], linestyle="none", marker="D", ms=7, mfc="none", mec=c, mew=1.5,
                    label=None if pp["metric"] in paper_metrics else f"paper: {metric_label(pp['metric'])[0]}")
        paper_metrics.append(pp["metric"])
    if plot["logx"]:
        ax.set_xscale("log")
        xs = sorted({p["x"] for s in plot["series"] for p in s["points"]})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.xaxis.set_minor_locator(mticker.NullLocator())
    width = {"mlp": " (hidden units)", "cnn": " (channels c)"}.get(plot["model"], "") if plot["x"] == "width" else ""
    ax.set_xlabel(AXES.get(plot["x"], plot["x"]) + width)
    ax.set_ylabel(_axis_label(plot["y"]))
    ax.grid(alpha=0.3)
    if plot["logy"]:
        _log_y(ax, ys)
    if ax2 is not None:
        ax2.set_xticks(range(len(apart_labels)), apart_labels, rotation=25, ha="right", fontsize=8)
        ax2.set_xlim(-0.6, len(apart_labels) - 0.4)
        ax2.grid(alpha=0.3)
        ax2.set_title("apart (own y axis)", fontsize=8)
        if plot["logy"]:
            _log_y(ax2, ys2)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _svg(fig, uid, plot["caption"], plot["desc"])


def forest_rows(claims: list) -> list:
    """One row per numeric claim, in section order: the measured value and its 95% CI in
    tolerance units. A two-sided band maps to [-1, 1] around its centre (the target); a one-sided
    band (e.g. >= 99.95) with a paper value inside it (100) maps to [-1, None) (None: unbounded)
    around the paper value, its unit the paper's distance to the bound. Other claims have no unit and no row."""
    rows = []
    for r in claims:
        m, pv, e = r.get("measured"), r.get("paper_value"), r["expect"]
        if not m or r["check"]["type"] not in ("value", "all", "ratio", "difference", "loglog_slope"):
            continue
        if checks.position(e, m["value"])["units"] is not None:
            z = [checks.position(e, v)["units"] for v in (m["value"], *m["ci"])]
            band = (-1.0, 1.0)
        elif isinstance(pv, (int, float)) and ("min" in e) != ("max" in e) and e.get("min", e.get("max")) != pv \
                and checks.position(e, pv)["outside"] == 0:
            unit = abs(pv - e.get("min", e.get("max")))
            z = [(v - pv) / unit for v in (m["value"], *m["ci"])]
            band = (-1.0, None) if "min" in e else (None, 1.0)  # None: unbounded
        else:
            continue
        rows.append({"section": r["section"], "label": r["id"], "z": z[0], "lo": z[1], "hi": z[2],
                     "band": band, "verdict": r["verdict"]})
    return rows


def forest_svg(rows: list, uid: str, title: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clip = 5.0
    sections = list(dict.fromkeys(r["section"] for r in rows))
    ypos, labels, y = [], [], 0
    for sec in sections:
        labels.append((y, sec, True))
        y += 1
        for r in (r for r in rows if r["section"] == sec):
            ypos.append(y)
            labels.append((y, r["label"], False))
            y += 1
    fig, ax = plt.subplots(figsize=(6.6, 0.6 + 0.19 * y))
    ax.axvline(0, color="#555", lw=0.8, zorder=1)
    for r, yy in zip(rows, ypos):
        lo_b, hi_b = (side * (clip + 1) if b is None else max(-clip - 1, min(clip + 1, b))
                      for side, b in zip((-1, 1), r["band"]))
        ax.fill_between([lo_b, hi_b], yy - 0.45, yy + 0.45, color="#dcebdc", lw=0, zorder=0,
                        label="expected band" if r is rows[0] else None)
        c = COLOURS.get(r["verdict"], "#333")
        z, lo, hi = (max(-clip, min(clip, v)) for v in (r["z"], r["lo"], r["hi"]))
        ax.plot([lo, hi], [yy, yy], color=c, lw=1.5, zorder=2)
        off = abs(r["z"]) > clip
        ax.plot([z], [yy], marker=(">" if r["z"] > 0 else "<") if off else "o", color=c, ms=5, zorder=3)
        if off:
            ax.annotate(f"{r['z']:+.1f}", (z, yy), xytext=(-6 if z > 0 else 6, 0), textcoords="offset points",
                        ha="right" if z > 0 else "left", va="center", fontsize=7, color=c)
    ax.set_yticks([p for p, _, _ in labels], [t for _, t, _ in labels], fontsize=7)
    for tick, (_, _, head) in zip(ax.get_yticklabels(), labels):
        if head:
            tick.set_fontweight("bold")
            tick.set_fontsize(8)
    ax.set_ylim(y - 0.5, -0.7)
    ax.set_xlim(-clip - 0.6, clip + 0.6)
    ax.set_xlabel("(measured − expected) in tolerance units; dot: point estimate, bar: 95% CI", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    for v, name in COLOURS.items():
        if v in {r["verdict"] for r in rows}:
            ax.plot([], [], marker="o", color=name, linestyle="none", label=v)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    fig.tight_layout()
    desc = "; ".join(f"{r['label']}: {r['z']:+.2f} ({r['verdict']})" for r in rows)
    return _svg(fig, uid, title, desc)


def _plot_text(p: dict, first: dict) -> dict:
    """Caption (also the SVG's <title>), legend sentence, and the SVG's <desc>: every plotted value
    and paper value in words."""
    yl, xl = _axis_label(p["y"]), AXES.get(p["x"], p["x"])
    n = max((pt["n"] for s in p["series"] for pt in s["points"]), default=0)
    setup = f"{p['model'].upper()} on {'MNIST' if p['dataset'] == 'mnist' else 'CIFAR-10'}"
    caption = f"{first['section']} · {first['title']}: {yl} against {xl}, {setup} ({p['tier']} tier)"
    legend = f"Points: mean over {n} seeds, bars: 95% bootstrap CI."
    if p["paper"]:
        legend += " Open diamonds: the paper's values" + (
            " (for the paper's full-scale setup; this tier is smaller)." if p["tier"] == "smoke" else ".")
    else:
        legend += " No claim of this experiment gives a paper value on these axes."
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


def provenance(runs: dict) -> dict:
    """Where one experiment's runs were made, from their run_provenance ({run key: dict or None}):
    the distinct values of device, torch, cuda and commit, the date range, how many runs carry no
    provenance (trained by older code), the part files that supplied it for runs that had none
    (`sources`), and `mixed`: the fields with more than one value."""
    known = [p for p in runs.values() if p]
    out = {f: sorted({"none" if p.get(f) is None else str(p[f]) for p in known}) for f in PROVENANCE_FIELDS}
    # provenance an export's part file supplied for runs made before it was recorded (cache.import_exports)
    out["sources"] = sorted({p["source"] for p in known if p.get("source")})
    dates = sorted(str(p["date"])[:10] for p in known if p.get("date"))  # the day of an ISO date or time
    out.update({"runs": len(runs), "without": len(runs) - len(known),
                "dates": [dates[0], dates[-1]] if dates else [],
                "mixed": [f for f in ("device", "torch", "cuda", "commit") if len(out[f]) > 1]})
    return out


def build(results: list, wall_s: float, device: str = "cpu") -> dict:
    results, reading_results = split_readings(results)  # the claims below are the primary reading's
    results = sorted(results, key=lambda r: (section_key(r["section"]), r["file"], r["tier"], r.get("order", 0),
                                             r["id"]))
    tiers = sorted({r["tier"] for r in results})
    recorded, per_experiment, prov = {}, defaultdict(dict), defaultdict(dict)
    for r in results:
        walls = r.pop("run_wall_s", None) or {}
        recorded.update(walls)
        per_experiment[f"{r['experiment']}[{r['tier']}]"].update(walls)
        runs = prov[(r["experiment"], r["tier"])]
        runs.update({k: runs.get(k) for k in walls})  # runs made before provenance was recorded: None
        runs.update({k: v for k, v in (r.pop("run_provenance", None) or {}).items() if v or k not in runs})
        r["anchor"] = slug(Path(r["file"]).stem, r["id"], r["tier"])
        r["unit"] = quantity_unit(r["check"])
        r["paper_text"] = paper_text(r)
        r["measured_text"] = estimate_text(r["measured"], r["unit"]) if r.get("measured") else None
        r["explanation"] = explain(r)
        r["compared"] = compared(r)
        r["deviation"] = deviation_text(r)
    sections, plots = [], {}
    for r in results:
        name = r["section"]
        if not sections or sections[-1]["name"] != name:
            sections.append({"name": name, "title": r["title"], "anchor": slug("sec", name), "groups": [],
                             "counts": Counter()})
        sec = sections[-1]
        sec["counts"][r["verdict"]] += 1
        key = f"{r['experiment']}[{r['tier']}]"
        if not sec["groups"] or sec["groups"][-1]["key"] != key:
            sec["groups"].append({"key": key, "experiment": r["experiment"], "tier": r["tier"],
                                  "anchor": slug("exp", sec["name"], r["experiment"], r["tier"]),
                                  "plot": None, "plot_at": None, "claims": [],
                                  "provenance": provenance(prov[(r["experiment"], r["tier"])])})
        g = sec["groups"][-1]
        g["claims"].append(r)
        if r.get("plot") and r["plot"]["series"]:
            if key not in plots:
                plots[key] = {**r["plot"], "tier": r["tier"], "anchor": g["anchor"], "section": sec["name"]}
                g["plot"] = key
            elif plots[key]["anchor"] != g["anchor"]:
                g["plot_at"] = plots[key]["anchor"]
    for key, p in plots.items():
        mine = [r for r in results if f"{r['experiment']}[{r['tier']}]" == key]
        p["paper"] = paper_points(p, mine)
        p.update(_plot_text(p, mine[0]))
    for sec in sections:
        sec["counts"] = dict(sec["counts"])
    totals = Counter(r["verdict"] for r in results)
    evaluated = sum(totals[v] for v in ("pass", "fail", "diverged"))
    return {"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(device), "wall_s": wall_s, "tiers": tiers,
            "verdicts": list(VERDICTS), "colours": COLOURS,
            "totals": dict(totals), "evaluated": evaluated, "n_claims": len(results),
            "sections": sections,
            "experiment_seconds": {f"{r['experiment']}[{r['tier']}]": r.get("experiment_seconds")
                                   for r in results if r.get("experiment_seconds") is not None},
            "training_seconds": {k: sum(v.values()) for k, v in per_experiment.items() if v},
            "training_seconds_total": sum(recorded.values()),
            "claims": results, "plots": plots, "forest": forest_rows(results),
            "readings": readings(results + reading_results)}


def headline(doc: dict) -> str:
    t = doc["totals"]
    parts = [f"{t[v]} {v}" for v in VERDICTS if t.get(v)]
    return f"{doc['evaluated']} of {doc['n_claims']} claims evaluated: " + ", ".join(parts) + "."


def render(doc: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = num
    env.filters["slug"] = lambda s: slug(s)
    svgs = {k: plot_svg(p, slug("fig", k)) for k, p in doc["plots"].items()}
    forest = forest_svg(doc["forest"], "fig-forest",
                        "Every numeric claim: measured value against its expected band, in tolerance units") \
        if doc["forest"] else None
    return env.get_template("report.html.j2").render(doc=doc, svgs=svgs, forest=forest, headline=headline(doc))


def write(results: list, out_dir, wall_s: float, device: str = "cpu") -> tuple:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = build(results, wall_s, device)
    json_path, html_path = out / "results.json", out / "report.html"
    # sections list their claims by anchor in results.json (the claims are in doc["claims"])
    slim = {**doc, "sections": [{**sec, "groups": [{**g, "claims": [r["anchor"] for r in g["claims"]]}
                                                   for g in sec["groups"]]} for sec in doc["sections"]]}
    json_path.write_text(dumps(slim, indent=1))
    html_path.write_text(render(doc))
    return json_path, html_path


# ------------------------------------------------------------------------------------- readings
# Claims checked under several readings of the paper's lost or ambiguous parameters (spec.py):
# per claim and per section, whether the claim holds under every reading tried, only under some,
# or under none; and per experiment, which reading fits the paper's numbers best.

HOLDS_EVERY = "holds under every reading tried"
HOLDS_SOME = "holds only under some readings"
HOLDS_NONE = "fails under every reading tried"
TRIED = ("pass", "fail", "diverged")  # an "error" (e.g. runs not in the cache) is not a reading tried


def split_readings(results: list) -> tuple:
    """(results of the primary reading, results of the other readings)."""
    primary = [r for r in results if r.get("reading_id", "primary") == "primary"]
    return primary, [r for r in results if r.get("reading_id", "primary") != "primary"]


def classify(verdicts: dict) -> dict:
    """Three-way classification of one claim from {reading_id: verdict}: every reading tried
    passes, some do (named), or none does. Errors are left out; one reading tried is no
    classification ("class": None)."""
    tried = [k for k, v in verdicts.items() if v in TRIED]
    holding = [k for k in tried if verdicts[k] == "pass"]
    if len(tried) < 2:
        return {"class": None, "sentence": "only one reading tried", "tried": tried, "holding": holding}
    if len(holding) == len(tried):
        cls, sentence = "every", f"{HOLDS_EVERY} ({len(tried)})"
    elif not holding:
        cls, sentence = "none", f"{HOLDS_NONE} ({len(tried)})"
    else:
        cls, sentence = "some", f"{HOLDS_SOME} ({len(holding)} of {len(tried)}): {', '.join(holding)}"
    return {"class": cls, "sentence": sentence, "tried": tried, "holding": holding}


def tolerance_units(result: dict):
    """(measured - paper value) / tolerance for a claim with a numeric paper value and a
    numeric measurement: the tolerance is the expectation's (abs_tol, or rel_tol x target),
    or for a min/max expectation the distance from the paper value to that bound. None if the
    claim has no such number."""
    m, pv, e = result.get("measured"), result.get("paper_value"), result["expect"]
    if result["verdict"] not in TRIED or not m or not isinstance(pv, (int, float)) \
            or "value" not in m or "p" in m or not math.isfinite(m["value"]):
        return None
    if "target" in e:
        tol = max(e.get("abs_tol", 0.0), e.get("rel_tol", 0.0) * abs(e["target"]))
    else:
        bounds = [abs(pv - e[k]) for k in ("min", "max") if k in e]
        tol = min(bounds) if bounds else 0.0
    return (m["value"] - pv) / tol if tol > 0 else None


def fit(results: list) -> list:
    """Readings of one experiment in one tier ranked by the sum of squared misses of its claims'
    paper values in tolerance units (`tolerance_units`). Readings missing a claim that others
    have rank after the complete ones. Rows: reading, n, sum_sq, rms, passes, missing, primary."""
    by = defaultdict(dict)
    for r in results:
        z = tolerance_units(r)
        if z is not None:
            by[r.get("reading_id", "primary")][(r["file"], r["id"])] = (z, r["verdict"])
    claims = set().union(*by.values()) if by else set()
    rows = []
    for reading, zs in by.items():
        sum_sq = sum(z * z for z, _ in zs.values())
        rows.append({"reading": reading, "n": len(zs), "sum_sq": sum_sq, "rms": math.sqrt(sum_sq / len(zs)),
                     "passes": sum(v == "pass" for _, v in zs.values()), "missing": len(claims - set(zs)),
                     "primary": reading == "primary"})
    return sorted(rows, key=lambda r: (r["missing"], r["sum_sq"], r["reading"]))


def readings(results: list) -> dict:
    """The readings part of the report: per claim (key FILE::ID[TIER]) a row per reading and its
    classification; per section, the claims in each class; per experiment[tier], the fit."""
    claims, by_exp, walls = {}, defaultdict(list), {}
    for r in sorted(results, key=lambda r: r.get("reading_id", "primary") != "primary"):
        walls.update(r.pop("run_wall_s", None) or {})  # (build took the primary results' already)
        key = f"{r['file']}::{r['id']}[{r['tier']}]"
        c = claims.setdefault(key, {"section": f"{r['section']} {r['title']}", "experiment": r["experiment"],
                                    "tier": r["tier"], "declared": r.get("readings_declared", {}), "rows": []})
        m = r.get("measured") or {}
        c["rows"].append({"reading": r.get("reading_id", "primary"), "values": r.get("reading_values", {}),
                          "verdict": r["verdict"], "value": m.get("value"), "std": m.get("std"),
                          "ci": m.get("ci"), "p": m.get("p"), "z": tolerance_units(r), "detail": r["detail"]})
        by_exp[f"{r['experiment']}[{r['tier']}]"].append(r)
    sections = defaultdict(lambda: {"every": [], "some": [], "none": []})
    for key, c in claims.items():
        c.update(classify({row["reading"]: row["verdict"] for row in c["rows"]}))
        if c["class"]:
            sections[c["section"]][c["class"]].append(key)
    for name, s in sections.items():
        n = sum(len(v) for v in s.values())
        s["sentence"] = (f"of {n} claims checked under several readings: {len(s['every'])} hold under every "
                         f"reading tried, {len(s['some'])} hold only under some, {len(s['none'])} fail under "
                         f"every reading tried")
    fits = {k: fit(v) for k, v in by_exp.items() if len({r.get("reading_id", "primary") for r in v}) > 1}
    for c in claims.values():
        rows = fits.get(f"{c['experiment']}[{c['tier']}]")
        c["best_fit"] = rows[0] if rows else None
        c["primary_fit"] = next((row for row in rows or [] if row["primary"]), None)
    return {"claims": {k: c for k, c in claims.items() if len(c["rows"]) > 1},
            "sections": dict(sorted(sections.items())), "fit": fits,
            # training time recorded with the runs the other readings used (shared runs included)
            "training_seconds_total": sum(walls.values())}
