"""Reproduction report: results.json (machine-readable) and report.html (Jinja, autoescaped,
templates in report_templates/), with one inline-SVG plot per experiment that declares `plot`.
results.json is strict JSON: non-finite numbers (a diverged run's) are written as null."""
from __future__ import annotations

import datetime
import io
import math
import platform
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import jinja2

from . import checks, stats
from .cache import dumps

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
            "claims": results, "plots": plots}


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
    json_path.write_text(dumps(doc, indent=1))
    html_path.write_text(render(doc))
    return json_path, html_path
