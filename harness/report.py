"""Reproduction report: results.json (machine-readable) and report.html (Jinja, autoescaped,
templates in report_templates/), with one inline-SVG plot per experiment that declares `plot`."""
from __future__ import annotations

import datetime
import io
import json
import math
import platform
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import jinja2

from . import checks, stats

TEMPLATES = Path(__file__).resolve().parent.parent / "report_templates"


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


def experiment_series(exp, rows) -> dict:
    """Mean and std over seeds of the plotted metrics, per configuration, along plot.x."""
    p = exp.plot
    x, by = p["x"], p.get("by")
    series = defaultdict(lambda: {"x": [], "mean": [], "std": []})
    for g in sorted(checks.groups(rows), key=lambda g: g[0]["config"][x]):
        cfg = g[0]["config"]
        for metric in p["y"]:
            vals = [r["metrics"].get(metric, math.nan) for r in g]
            vals = [v for v in vals if math.isfinite(v)]
            if not vals:
                continue
            est = stats.summarize(vals)
            name = metric if by is None else f"{metric} ({by}={cfg[by]})"
            s = series[name]
            s["x"].append(cfg[x])
            s["mean"].append(est.value)
            s["std"].append(est.std)
    return {"experiment": exp.name, "file": Path(exp.file).name, "x": x, "logx": p.get("logx", False),
            "logy": p.get("logy", False), "series": [{"name": k, **v} for k, v in series.items()]}


def plot_svg(spec: dict) -> str:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for s in spec["series"]:
        ax.errorbar(s["x"], s["mean"], yerr=s["std"], marker="o", capsize=3, label=s["name"])
    if spec["logx"]:
        ax.set_xscale("log")
        xs = sorted({x for s in spec["series"] for x in s["x"]})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if spec["logy"]:
        ax.set_yscale("log")
    ax.set_xlabel(spec["x"])
    ax.set_title(f"{spec['file']}: {spec['experiment']} (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def build(results: list, wall_s: float, device: str = "cpu") -> dict:
    results, reading_results = split_readings(results)  # the claims below are the primary reading's
    results = sorted(results, key=lambda r: (r["file"], r["tier"], r.get("order", 0), r["id"]))
    sections = defaultdict(Counter)
    for r in results:
        sections[f"{r['section']} {r['title']}"][r["verdict"]] += 1
    plots = {}
    for r in results:
        if r.get("plot") and r["plot"]["series"]:
            plots.setdefault(f"{r['plot']['file']}:{r['experiment']}:{r['tier']}", {**r["plot"], "tier": r["tier"]})
    recorded, per_experiment = {}, defaultdict(dict)
    for r in results:
        walls = r.pop("run_wall_s", None) or {}
        recorded.update(walls)
        per_experiment[f"{r['experiment']}[{r['tier']}]"].update(walls)
    return {"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(device), "wall_s": wall_s,
            "totals": dict(Counter(r["verdict"] for r in results)),
            "sections": {k: dict(v) for k, v in sorted(sections.items())},
            "experiment_seconds": {f"{r['experiment']}[{r['tier']}]": r.get("experiment_seconds")
                                   for r in results if r.get("experiment_seconds") is not None},
            "training_seconds": {k: sum(v.values()) for k, v in per_experiment.items() if v},
            "training_seconds_total": sum(recorded.values()),
            "claims": results, "plots": plots, "readings": readings(results + reading_results)}


def render(doc: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    svgs = {k: plot_svg(p) for k, p in doc["plots"].items()}
    return env.get_template("report.html.j2").render(doc=doc, svgs=svgs)


def write(results: list, out_dir, wall_s: float, device: str = "cpu") -> tuple:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = build(results, wall_s, device)
    json_path, html_path = out / "results.json", out / "report.html"
    json_path.write_text(json.dumps(doc, indent=1, default=float))
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
