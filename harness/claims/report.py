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
from .fmt import AXES, decimals_for, estimate_text, metric_label, num, with_unit
from .kinds import kind, quantity_unit
from .svg import COLOURS, MARKER_WORDS, axis_label, forest_svg, plot_svg


TEMPLATES = Path(__file__).resolve().parents[2] / "report_templates"
VERDICTS = ("pass", "fail", "inconclusive", "diverged", "error", "not run")
EVALUATED = ("pass", "fail", "inconclusive", "diverged")  # a verdict from measured runs
MISSES = ("fail", "diverged")  # what the findings count as "does not reproduce"
PROVENANCE_FIELDS = ("device", "torch", "cuda", "commit")
TRAINED_FIELDS = ("device", "driver", "torch", "cuda", "cudnn", "python", "commit", "data")  # "where trained" table


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
    if not m or not kind(r["check"]).band or r["verdict"] not in ("pass", "fail"):
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
    t = tol_position(r)  # the forest's unit, also for a one-sided band around the paper's value
    if t is not None:
        text += f", {t['z']:+.2f} tol"
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
        if kind(c).paper_points is None or c["metric"] not in plot["y"] or \
                not isinstance(pv, (int, float)) or isinstance(pv, bool):
            continue
        hits = [(s["name"], pt["x"], None) for s in plot["series"] if s["metric"] == c["metric"]
                for pt in s["points"] if checks._matches(pt["config"], c.get("where") or {})]
        hits += [(None, None, a["label"]) for a in plot["apart"]
                 if a["metric"] == c["metric"] and checks._matches(a["config"], c.get("where") or {})]
        if kind(c).paper_points == "one" and len(hits) != 1:
            continue
        out += [{"series": s, "x": x, "apart": a, "metric": c["metric"], "value": pv, "claim": r["id"]}
                for s, x, a in hits]
    return out


def tol_position(r: dict) -> dict | None:
    """The measured value and its 95% CI in tolerance units, as the forest plot draws it: a
    two-sided band maps to [-1, 1] around its centre (the target); a one-sided band (e.g. >= 99.95)
    with a paper value inside it (100) maps to [-1, None) (None: unbounded) around the paper value,
    its unit the paper's distance to the bound. None where there is no such unit."""
    m, pv, e = r.get("measured"), r.get("paper_value"), r["expect"]
    if not m or not kind(r["check"]).band \
            or not math.isfinite(m.get("value", math.nan)):
        return None
    if checks.position(e, m["value"])["units"] is not None:
        z = [checks.position(e, v)["units"] for v in (m["value"], *m["ci"])]
        band = (-1.0, 1.0)
    elif isinstance(pv, (int, float)) and ("min" in e) != ("max" in e) and e.get("min", e.get("max")) != pv \
            and checks.position(e, pv)["outside"] == 0:
        unit = abs(pv - e.get("min", e.get("max")))
        z = [(v - pv) / unit for v in (m["value"], *m["ci"])]
        band = (-1.0, None) if "min" in e else (None, 1.0)  # None: unbounded
    else:
        return None
    return {"z": z[0], "lo": z[1], "hi": z[2], "band": band}


def forest_rows(claims: list) -> list:
    """One row per numeric claim, in section order (see tol_position). Other claims have no unit
    and no row; `forest_left_out` says which and why."""
    rows = []
    for r in claims:
        t = tol_position(r)
        if t is None:
            continue
        rows.append({"section": r["section"], "label": r["id"], "statement": r["statement"], **t,
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
    out = {f: sorted({"none" if p.get(f) is None else str(p[f]) for p in known}) for f in TRAINED_FIELDS}
    # provenance an export's part file supplied for runs made before it was recorded (cache.import_exports)
    out["sources"] = sorted({p["source"] for p in known if p.get("source")})
    dates = sorted(str(p["date"])[:10] for p in known if p.get("date"))  # the day of an ISO date or time
    out.update({"runs": len(runs), "without": len(runs) - len(known),
                "dates": [dates[0], dates[-1]] if dates else [],
                "mixed": [f for f in ("device", "torch", "cuda", "commit") if len(out[f]) > 1]})
    return out


def _load_claim_files(results: list) -> dict:
    """{file: ClaimFile or None} for the files the results name (None where it cannot be read, e.g.
    results built elsewhere): the report reads the experiments' procedure, plan and readings there."""
    from . import spec
    out = {}
    for f in dict.fromkeys(r["file"] for r in results):
        try:
            out[f] = spec.load(f, with_claims=False)
        except Exception:
            out[f] = None
    return out


def _cost(cfgs) -> dict:
    from ..runs.expand import training_cost
    costs = [training_cost(c) for c in cfgs]
    return {"runs": len(cfgs), "steps": sum(c["steps"] for c in costs), "pflop": sum(c["flops"] for c in costs) / 1e15}


def command(file: str, tier: str, readings_sel: tuple = ()) -> str:
    """The pytest command that trains (what is missing of) a claim file's experiments in a tier and
    checks their claims; with `readings_sel`, under those readings (NAME=VALUE pairs)."""
    gpu = " --gpu" if tier == "full" else ""
    return (f"pytest {file} -m {tier}{gpu}"
            + "".join(f" --readings {r}" for r in readings_sel))


def experiment_plan(exp, file: str, tier: str) -> dict:
    """What an experiment trains in a tier, from its claim file: procedure, runs, optimiser steps
    and PFLOP (harness.runs.expand, as `python -m harness plan`), and per declared reading beyond
    the primary the runs it adds (a reading that only changes an instrument option trains nothing
    new), their cost and the command that runs it."""
    from ..runs import cache as run_cache
    from ..runs import expand as ex
    out = {"procedure": exp.procedure, "model": exp.model, "dataset": exp.dataset, "notes": exp.notes,
           "command": command(file, tier), "readings": []}
    if exp.procedure == "count":
        return {**out, "runs": 0, "steps": 0, "pflop": 0.0}
    primary = ex.training_runs(exp, tier)
    out.update(_cost(primary))
    seen = {run_cache.run_key(c) for c in ex.expand(exp, tier, "cuda")}  # the primary's (dense) runs
    for reading in exp.readings(tier)[1:]:
        dense = len(ex.expand(exp, tier, "cuda", reading))
        new = [c for i, c in enumerate(ex.training_runs(exp, tier, reading=reading))
               if not (exp.procedure == "train" or i < dense) or run_cache.run_key(c) not in seen]
        pairs = tuple(f"{p}={readings.format_value(v)}" for p, v in reading.changed)
        out["readings"].append({"name": reading.name, **_cost(new), "command": command(file, tier, pairs)})
    return out


_MISSING = re.compile(r"(\d+) of (\d+) (?:dense )?runs missing")


def experiments(results: list, files: dict, measured_s: dict) -> dict:
    """Per experiment[tier]: its claims' verdicts, training-free or not, what is missing and what
    it costs, the command, its readings (declared, tried or not) and the training time measured
    with its runs (`measured_s`, {experiment[tier]: seconds})."""
    out = {}
    for r in results:
        key = f"{r['experiment']}[{r['tier']}]"
        e = out.get(key)
        if e is None:
            cf = files.get(r["file"])
            exp = cf.experiments.get(r["experiment"]) if cf else None
            plan = None
            if exp is not None:
                try:
                    plan = experiment_plan(exp, r["file"], r["tier"])
                except Exception:  # a plan the expansion cannot cost: the report still renders
                    plan = None
            procedure = r.get("procedure") or (plan or {}).get("procedure") or \
                ("count" if r["check"].get("metric") == "params" else "train")
            e = out[key] = {"key": key, "experiment": r["experiment"], "tier": r["tier"], "file": r["file"],
                            "section": r["section"], "procedure": procedure,
                            "training_free": procedure == "count", "plan": plan,
                            "command": (plan or {}).get("command") or command(r["file"], r["tier"]),
                            "verdicts": Counter(), "claims": [], "missing": None,
                            "measured_s": measured_s.get(key),
                            "notes": r.get("experiment_notes") or "", "tried": {},
                            "declared": r.get("readings_declared") or {}}
        e["verdicts"][r["verdict"]] += 1
        e["claims"].append(r["anchor"])
        if r["verdict"] == "not run":
            m = _MISSING.search(r.get("detail", ""))
            if m:
                e["missing"] = {"runs": int(m.group(1)), "of": int(m.group(2))}
    for e in out.values():
        e["verdicts"] = dict(e["verdicts"])
        plan = e["plan"]
        if plan and e["missing"]:
            share = e["missing"]["runs"] / e["missing"]["of"] if e["missing"]["of"] else 1.0
            e["missing"]["pflop"] = plan["pflop"] * share  # exact when every run is missing
            e["missing"]["all"] = e["missing"]["runs"] == e["missing"]["of"]
    return out


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _list(items: list) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def pflop_text(pflop: float) -> str:
    return f"{pflop:,.2f} PFLOP" if pflop < 10 else f"{pflop:,.0f} PFLOP"


def vs_paper(r: dict) -> dict | None:
    """The measured value against the paper's: {'d', 'rel', 'text'} (pp for percentages, else a
    relative %), or None where there is no single number to compare (tests, monotonic steps)."""
    m, pv = r.get("measured"), r.get("paper_value")
    if not m or not isinstance(pv, (int, float)) or isinstance(pv, bool) \
            or not kind(r["check"]).band or not math.isfinite(m.get("value", math.nan)):
        return None
    d = m["value"] - pv
    if r["unit"] == "%":
        text = f"{d:+.1f} pp".replace("-", "−")
    elif pv:
        text = f"{100 * d / abs(pv):+.0f}%".replace("-", "−")
    else:
        text = num(d)
    return {"d": d, "rel": d / abs(pv) if pv else None, "text": text}


def type_words(check: dict) -> str:
    """What the report calls a check's claims, e.g. 'log-log slope'."""
    return kind(check).words


def _misses(fails: list, passes: list, declared: dict) -> list:
    """Sentences on the claims that fail: grouped by experiment, metric and direction; three or
    more in one group are summarised (with a note where a slope or ratio on the same metric passes:
    a constant factor), fewer are named one by one; the largest misses first."""
    groups = defaultdict(list)
    for r in fails:
        v = r.get("vs_paper")
        groups[(r["experiment"], r["check"]["metric"], None if v is None else v["d"] > 0)].append(r)

    def size(g):
        return max(abs(r.get("z") or 0) for r in g)
    out = []
    for (exp, metric, up), g in sorted(groups.items(), key=lambda kv: -size(kv[1])):
        label = metric_label(metric)[0]
        if up is not None and len(g) >= 3:
            vs = [r["vs_paper"] for r in g]
            if g[0]["unit"] == "%":
                lo, hi = min(abs(v["d"]) for v in vs), max(abs(v["d"]) for v in vs)
                rng = f"{lo:.1f} pp" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f} to {hi:.1f} pp"
            else:
                rels = [abs(v["rel"]) for v in vs if v["rel"] is not None]
                lo, hi = (min(rels), max(rels)) if rels else (0, 0)
                rng = f"{100 * lo:.0f}% to {100 * hi:.0f}%"
            text = (f"{label[0].upper() + label[1:]} ({exp}) misses the paper in {len(g)} claims, every one "
                    f"{'above' if up else 'below'} it, by {rng}")
            same = [type_words(r["check"]) for r in passes
                    if r["experiment"] == exp and r["check"]["metric"] == metric
                    and kind(r["check"]).scale_free]
            if same and g[0]["unit"] != "%" and lo > 0 and hi / lo <= 1.5:
                same = list(dict.fromkeys(same))
                text += (f", while its {_list(same)} pass{'es' if len(same) == 1 else ''}: the same factor at every "
                         f"configuration (about ×{1 + (lo + hi) / 2 * (1 if up else -1):.2f}), so the trend "
                         f"reproduces and the level does not")
                if declared:
                    text += f"; the experiment declares readings of {_list(sorted(declared))} that could account for it"
            out.append(text + ".")
            continue
        for r in sorted(g, key=lambda r: -abs(r.get("z") or 0)):
            v, mt = r.get("vs_paper"), r.get("measured_text")
            if v is not None and mt:
                out.append(f"{r['statement']}: measured {mt['value']} against the paper's {r['paper_text']} ({v['text']}).")
            elif r["verdict"] == "diverged":
                out.append(f"{r['statement']}: a run diverged.")
            else:
                out.append(f"{r['statement']}: {r.get('explanation') or r.get('detail', '')}.")
    return out


def _reproduced(passes: list) -> str:
    by = defaultdict(list)
    for r in passes:
        by[metric_label(r["check"]["metric"])[0]].append(r["check"])
    parts = []
    for label, checks_ in by.items():
        other = [type_words(c) for c in {c["type"]: c for c in checks_}.values() if not kind(c).level]
        parts.append(f"{label} ({_plural(len(checks_), 'claim')}" + (f"; {_list(other)}" if other else "") + ")")
    return _list(parts)


def findings(sections: list, exps: dict, readings_doc: dict) -> dict:
    """The answer in words, generated from the verdicts, readings and plans (nothing here is
    written for one run's numbers): an overall paragraph, and per section what reproduces, what
    does not and by how much, what the readings say, what is training-free and what has not run."""
    claims = [r for sec in sections for g in sec["groups"] for r in g["claims"]]
    trained = [r for r in claims if not r["training_free"]]
    free = [r for r in claims if r["training_free"]]
    tv, fv = Counter(r["verdict"] for r in trained), Counter(r["verdict"] for r in free)
    overall = []
    n_eval = sum(tv[v] for v in EVALUATED)
    if n_eval:
        s = (f"Of the {_plural(n_eval, 'claim')} measured on trained models, {tv['pass']} reproduce"
             f"{'s' if tv['pass'] == 1 else ''} and {tv['fail'] + tv['diverged']} do not")
        if tv["inconclusive"]:
            s += f"; {tv['inconclusive']} {'is' if tv['inconclusive'] == 1 else 'are'} inconclusive (more seeds needed)"
        if tv["diverged"]:
            s += f" ({tv['diverged']} of them diverged)"
        overall.append(s + ".")
    elif trained:
        overall.append("No claim that needs training has been measured yet.")
    if free:
        fe = sum(fv[v] for v in EVALUATED)
        overall.append(f"{_plural(len(free), 'training-free claim')} (counted from the architecture, nothing trained): "
                       + ("all pass." if fv["pass"] == len(free) else
                          ", ".join(f"{fv[v]} {v}" for v in VERDICTS if fv.get(v)) + "." if fe or fv else ""))
    waiting = [e for e in exps.values() if e["verdicts"].get("not run")]
    if waiting:
        pf = sum((e["missing"] or {}).get("pflop", 0.0) for e in waiting)
        runs = sum((e["missing"] or {}).get("runs", 0) for e in waiting)
        overall.append(f"{_plural(sum(e['verdicts']['not run'] for e in waiting), 'claim')} in "
                       f"{_plural(len(waiting), 'experiment')} have not run: {_plural(runs, 'run')} to train"
                       + (f", {pflop_text(pf)}" if pf else "") + " (commands below).")
    if tv["error"] + fv["error"]:
        overall.append(f"{_plural(tv['error'] + fv['error'], 'claim')} could not be evaluated (error).")
    out = {"overall": overall, "sections": []}
    described = set()  # experiments whose readings are already told (a control section reuses them)
    for sec in sections:
        mine = [r for g in sec["groups"] for r in g["claims"]]
        tr = [r for r in mine if not r["training_free"]]
        fr = [r for r in mine if r["training_free"]]
        c = Counter(r["verdict"] for r in tr)
        lines = []
        if fr:
            cf = Counter(r["verdict"] for r in fr)
            lines.append(f"{_plural(len(fr), 'training-free claim')} (parameter counts, nothing trained): "
                         + ("all pass." if cf["pass"] == len(fr) else
                            ", ".join(f"{cf[v]} {v}" for v in VERDICTS if cf.get(v)) + "."))
        ev = sum(c[v] for v in EVALUATED)
        if ev:
            lines.append(f"Of {_plural(ev, 'claim')} measured on trained models, {c['pass']} "
                         f"reproduce{'s' if c['pass'] == 1 else ''}, {c['fail'] + c['diverged']} do not"
                         + (f", {c['inconclusive']} inconclusive" if c["inconclusive"] else "") + ".")
        passes = [r for r in tr if r["verdict"] == "pass"]
        if passes:
            lines.append(f"Reproduced: {_reproduced(passes)}.")
        declared = {}
        for g in sec["groups"]:
            declared.update(exps[g["key"]]["declared"])
        lines += _misses([r for r in tr if r["verdict"] in MISSES], passes, declared)
        inc = [r for r in tr if r["verdict"] == "inconclusive"]
        if inc:
            need = [r["seeds_needed"] for r in inc if isinstance(r.get("seeds_needed"), int)]
            lines.append(f"Inconclusive (the 95% interval straddles a band edge): {_list([r['id'] for r in inc])}"
                         + (f"; about {max(need)} seeds would settle {'it' if len(inc) == 1 else 'them'}" if need else "")
                         + ".")
        err = [r for r in mine if r["verdict"] == "error"]
        if err:
            lines.append(f"Could not be evaluated (error): {_list([r['id'] for r in err])}.")
        rsec = (readings_doc.get("sections") or {}).get(f"{sec['name']} {sec['title']}")
        if rsec:
            lines.append(f"Readings: {rsec['sentence']}.")
        done = set()
        for g in sec["groups"]:
            if g["key"] in done:
                continue
            done.add(g["key"])
            e = exps[g["key"]]
            plan = e["plan"] or {}
            waiting = sum(r["verdict"] == "not run" for x in sec["groups"] if x["key"] == g["key"] for r in x["claims"])
            if waiting:
                m = e["missing"] or {}
                lines.append(f"Not run: {_plural(waiting, 'claim')} of {e['experiment']}"
                             + (f" ({m['runs']} of {m['of']} runs missing" + (f", {pflop_text(m['pflop'])}" if m.get("pflop") else "")
                                + ")" if m else "") + ".")
            if plan.get("readings") and not rsec and g["key"] not in described:
                described.add(g["key"])
                new = [x for x in plan["readings"] if x["runs"]]
                lines.append(f"Readings of {e['experiment']}: {_plural(len(plan['readings']), 'other reading')} declared "
                             f"({_list(sorted(e['declared']))}), none tried yet"
                             + (f"; together they train {_plural(sum(x['runs'] for x in new), 'more run')}, "
                                f"{pflop_text(sum(x['pflop'] for x in new))}" if new else "") + ".")
        out["sections"].append({"name": sec["name"], "title": sec["title"], "anchor": sec["anchor"], "lines": lines})
    return out


def expected_text(r: dict) -> str:
    """The expectation in words and the claim's unit: a band's numbers as the measured ones are
    written (6,514; 99.95 %), a Welch test as the difference it expects."""
    return kind(r["check"]).expected_text(r)


def _cfg_label(label: str, model: str | None) -> str:
    """A configuration's label as the claims name it: a CNN's width is its channel count c."""
    return re.sub(r"\bwidth=", "c=", label) if model == "cnn" else re.sub(r"\bwidth=", "w=", label)


def trained_where(sections: list) -> list:
    rows, seen = [], set()
    for sec in sections:
        for g in sec["groups"]:
            pv = g["provenance"]
            if g["key"] in seen or pv["runs"] == pv["without"] and not pv["runs"]:
                continue
            seen.add(g["key"])
            vals = {}
            for f in TRAINED_FIELDS:
                got = [v for v in pv.get(f, [])]
                if not got:
                    vals[f] = "not recorded"
                else:
                    vals[f] = " / ".join("not recorded" if v == "none" else (v[:10] if f == "commit" else v) for v in got)
            dates = pv["dates"]
            rows.append({"experiment": g["experiment"], "anchor": g["anchor"], "runs": pv["runs"], "fields": vals,
                         "sources": pv["sources"], "without": pv["without"],
                         "dates": (dates[0] if dates[0] == dates[1] else f"{dates[0]} to {dates[1]}") if dates else "not recorded"})
    return rows


def build(results: list, wall_s: float, device: str = "cpu") -> dict:
    results, reading_results = readings.split(results)  # the claims below are the primary reading's
    results = sorted(results, key=lambda r: (section_key(r["section"]), r["file"], r["tier"], r.get("order", 0),
                                             r["id"]))
    tiers = sorted({r["tier"] for r in results})
    devices = defaultdict(lambda: defaultdict(set))  # (experiment, tier) -> reading -> devices of its runs
    for r in results + reading_results:
        for p in (r.get("run_provenance") or {}).values():
            devices[(r["experiment"], r["tier"])][r.get("reading_id", "primary")].add((p or {}).get("device") or "not recorded")
    recorded, per_experiment, prov = {}, defaultdict(dict), defaultdict(dict)
    for r in results:
        walls = r.pop("run_wall_s", None) or {}
        recorded.update(walls)
        per_experiment[f"{r['experiment']}[{r['tier']}]"].update(walls)
        runs = prov[(r["experiment"], r["tier"])]
        runs.update({k: runs.get(k) for k in walls})  # runs made before provenance was recorded: None
        runs.update({k: v for k, v in (r.pop("run_provenance", None) or {}).items() if v or k not in runs})
        r["anchor"] = slug(Path(r["file"]).stem, r["id"], r["tier"])
    for r in reading_results:  # runs of other readings belong to the experiment too: where were they made?
        runs = prov[(r["experiment"], r["tier"])]
        runs.update({k: runs.get(k) for k in (r.get("run_wall_s") or {})})
        runs.update({k: v for k, v in (r.get("run_provenance") or {}).items() if v or k not in runs})
    exps = experiments(results, _load_claim_files(results),
                       {k: sum(v.values()) for k, v in per_experiment.items() if v})
    for r in results:
        e = exps[f"{r['experiment']}[{r['tier']}]"]
        r["training_free"] = e["training_free"]
        model = (e["plan"] or {}).get("model") or (r.get("plot") or {}).get("model")
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
        t = tol_position(r)
        r["z"] = t["z"] if t else None
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
                                  "provenance": {**provenance(prov[(r["experiment"], r["tier"])]),
                                                 "by_reading": {k: sorted(v) for k, v in
                                                                devices[(r["experiment"], r["tier"])].items()}}})
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
    evaluated = sum(totals[v] for v in EVALUATED)
    for r in reading_results:  # readings tried in this session or found in the cache
        e = exps.get(f"{r['experiment']}[{r['tier']}]")
        if e is not None:
            e["tried"].setdefault(r.get("reading_id"), Counter())[r["verdict"]] += 1
    for e in exps.values():
        e["tried"] = {k: dict(v) for k, v in e["tried"].items()}
        plan = e["plan"] or {}
        for x in plan.get("readings", []):
            x["tried"] = e["tried"].get(x["name"])
    readings_doc = readings.table(results + reading_results)
    forest = forest_rows(results)
    anchors = {}
    for sec in sections:
        for g in sec["groups"]:
            anchors.setdefault(g["key"], g["anchor"])
    for k, e in exps.items():
        e["anchor"] = anchors.get(k)
        if e["missing"] and "pflop" in e["missing"]:
            e["missing"]["pflop_text"] = pflop_text(e["missing"]["pflop"])
    waiting = [e for e in exps.values() if e["verdicts"].get("not run")]
    return {"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(device), "wall_s": wall_s, "tiers": tiers,
            "verdicts": list(VERDICTS), "colours": COLOURS,
            "totals": dict(totals), "evaluated": evaluated, "n_claims": len(results),
            "sections": sections,
            "experiment_seconds": {f"{r['experiment']}[{r['tier']}]": r.get("experiment_seconds")
                                   for r in results if r.get("experiment_seconds") is not None},
            "training_seconds": {k: sum(v.values()) for k, v in per_experiment.items() if v},
            "training_seconds_total": sum(recorded.values()),
            "claims": results, "plots": plots, "forest": forest,
            "forest_left_out": forest_left_out(results, forest),
            "experiments": exps, "findings": findings(sections, exps, readings_doc),
            "waiting": waiting, "markers": MARKER_WORDS,
            "trained_where": trained_where(sections), "provenance_fields": list(TRAINED_FIELDS),
            "data_provenance": "shared/data/PROVENANCE.md",
            "readings": readings_doc,
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
    env.globals["kind"] = kind
    svgs = {k: plot_svg(p, slug("fig", k)) for k, p in doc["plots"].items()}
    title = "Every numeric claim: measured value against its expected band, in tolerance units"
    forest = forest_svg(doc["forest"], "fig-forest", title) if doc["forest"] else None
    narrow = forest_svg(doc["forest"], "fig-forest-phone", title, narrow=True) if doc["forest"] else None
    return env.get_template("report.html.j2").render(doc=doc, svgs=svgs, forest=forest, forest_narrow=narrow,
                                                     headline=headline(doc))


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
