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
diverged run's) are written as null.

The report's assembly lives here (what each claim says, the sections, the headline, results.json);
figures are drawn in harness/claims/svg.py, numbers and units formatted in harness/claims/fmt.py,
and readings judged in harness/claims/readings.py."""
from __future__ import annotations

import datetime
import math
import platform
import re
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import jinja2

from ..runs.cache import dumps
from . import checks, readings, stats
from .fmt import AXES, decimals_for, estimate_text, metric_label, num, quantity_unit, with_unit
from .svg import COLOURS, axis_label, forest_svg, plot_svg


TEMPLATES = Path(__file__).resolve().parents[2] / "report_templates"
VERDICTS = ("pass", "fail", "diverged", "error", "not run")
PROVENANCE_FIELDS = ("device", "torch", "cuda", "commit")


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
    dec = None if float(m["value"]).is_integer() and float(d).is_integer() else decimals_for(m["value"])
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


def _plot_text(p: dict, first: dict) -> dict:
    """Caption (also the SVG's <title>), legend sentence, and the SVG's <desc>: every plotted value
    and paper value in words."""
    yl, xl = axis_label(p["y"]), AXES.get(p["x"], p["x"])
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
    results, reading_results = readings.split(results)  # the claims below are the primary reading's
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
            "readings": readings.table(results + reading_results),
            # checks of claims under other readings than the primary (pytest --readings)
            "reading_totals": dict(Counter(r["verdict"] for r in reading_results)),
            "not_in_session": sum(r.get("in_session") is False for r in results)}


def headline(doc: dict) -> str:
    t = doc["totals"]
    parts = [f"{t[v]} {v}" for v in VERDICTS if t.get(v)]
    out = f"{doc['evaluated']} of {doc['n_claims']} claims evaluated: " + ", ".join(parts) + "."
    rt = doc.get("reading_totals") or {}
    if rt:
        out += (f" Under other readings, {sum(rt.values())} checks: "
                + ", ".join(f"{rt[v]} {v}" for v in VERDICTS if rt.get(v)) + ".")
    if doc.get("not_in_session"):
        out += (f" ({doc['not_in_session']} of the claims were checked only under other readings in this session:"
                " their primary reading is judged from the run cache, or not run.)")
    return out


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
