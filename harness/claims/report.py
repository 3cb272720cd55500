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

The report's assembly lives here (the sections, the headline, results.json, the page); `build`
works on a copy of the results it is given. What each claim says is harness/claims/words.py (with
the words of its kind, harness/claims/kinds/), the figures' data harness/claims/figures.py, what
experiments train and cost harness/claims/plans.py, the findings harness/claims/findings.py, where
the runs were made harness/claims/trained.py; figures are drawn in harness/claims/svg.py, numbers
and units formatted in harness/claims/fmt.py, and readings judged in harness/claims/readings.py."""
from __future__ import annotations

import copy
import os
import datetime
import re
from collections import Counter, defaultdict
from pathlib import Path

import jinja2
import markupsafe

from ..runs.strict_json import dumps
from . import prereg, readings, scaled, summary_md
from .answer import answer, calibration
from .findings import EVALUATED, VERDICTS, findings
from .figures import _plot_text, bounds, forest_left_out, forest_rows, interval_names, merged, paper_points
from .fmt import num
from .kinds import kind
from .plans import _load_claim_files, duration, experiments, gpu_estimates, missing_total, pflop_text
from .svg import COLOURS, MARKER_WORDS, forest_svg, plot_svg
from .trained import TRAINED_FIELDS, environment, provenance, short_commit, trained_where
from .words import annotate


TEMPLATES = Path(__file__).resolve().parents[2] / "report_templates"



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


def build(results: list, wall_s: float, device: str = "cpu") -> dict:
    """The report's document (what results.json holds and report.html renders) from the claims'
    result records, which it leaves as they are (it works on a copy)."""
    results, reading_results = readings.split(copy.deepcopy(results))  # the claims below are the primary reading's
    # calibration claims (another paper's results, reproduced to check the harness) are answered apart
    calib = [r for r in results if r.get("source")]
    results = [r for r in results if not r.get("source")]
    reading_results = [r for r in reading_results if not r.get("source")]
    # the scaled tier (the paper's GPU sections at a CPU's scale) is answered apart too: its
    # verdicts never enter the paper's sentence, counts or sections (harness/claims/scaled.py)
    scaled_claims = sorted((r for r in results if r["tier"] == scaled.TIER),
                           key=lambda r: (section_key(r["section"]), r["file"], not r.get("headline"), r.get("order", 0)))
    results = [r for r in results if r["tier"] != scaled.TIER]
    reading_results = [r for r in reading_results if r["tier"] != scaled.TIER]
    first = {}  # an experiment's place in its file: its first claim's
    for r in results:
        k = (r["file"], r["tier"], r["experiment"])
        first[k] = min(first.get(k, r.get("order", 0)), r.get("order", 0))
    # in paper order, each experiment's claims together, the claims the paper puts first leading
    results = sorted(results, key=lambda r: (section_key(r["section"]), r["file"], r["tier"],
                                             first[(r["file"], r["tier"], r["experiment"])],
                                             not r.get("headline"), r.get("order", 0), r["id"]))
    tiers = sorted({r["tier"] for r in results})
    devices = defaultdict(lambda: defaultdict(set))  # (experiment, tier) -> reading -> devices of its runs
    for r in results + reading_results:
        for p in (r.get("run_provenance") or {}).values():
            devices[(r["experiment"], r["tier"])][readings.reading_id(r)].add((p or {}).get("device") or "not recorded")
    recorded, per_experiment, prov = {}, defaultdict(dict), defaultdict(dict)
    for r in results + calib + scaled_claims:  # was the band set before the runs it judges? (from the git history)
        r["prereg"] = prereg.status(r["file"], r["id"], r["tier"],
                                    [(p or {}).get("commit") for p in (r.get("run_provenance") or {}).values()])
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
    files = _load_claim_files(results + scaled_claims)
    scaled_runs = {"walls": {}, "prov": {}}
    for r in scaled_claims:
        r["anchor"] = slug("scaled", Path(r["file"]).stem, r["id"])
        scaled_runs["walls"].update(r.pop("run_wall_s", None) or {})
        scaled_runs["prov"].update({k: v for k, v in (r.pop("run_provenance", None) or {}).items() if v})
        r["training_free"] = False
        annotate(r, (r.get("plot") or {}).get("model"))
    exps = experiments(results, files, {k: sum(v.values()) for k, v in per_experiment.items() if v})
    cal_runs = defaultdict(lambda: {"walls": {}, "prov": {}})  # per calibration file: its runs, once each
    for r in calib:
        r["anchor"] = slug("cal", Path(r["file"]).stem, r["id"], r["tier"])
        cal_runs[r["file"]]["walls"].update(r.pop("run_wall_s", None) or {})
        cal_runs[r["file"]]["prov"].update({k: v for k, v in (r.pop("run_provenance", None) or {}).items() if v})
        r["training_free"] = False
        annotate(r, (r.get("plot") or {}).get("model"))
    for r in results:
        e = exps[f"{r['experiment']}[{r['tier']}]"]
        r["training_free"] = e["training_free"]
        annotate(r, (e["plan"] or {}).get("model") or (r.get("plot") or {}).get("model"))
    sections, plots, figures = [], {}, defaultdict(list)
    for r in results:  # an experiment's figure under a reading: every configuration its claims read
        if r.get("plot"):
            figures[(f"{r['experiment']}[{r['tier']}]", readings.reading_id(r))].append(r["plot"])
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
        figure = merged(figures[(key, readings.reading_id(r))]) if r.get("plot") else None
        if figure and figure["series"]:
            if key not in plots:
                plots[key] = {**figure, "tier": r["tier"], "anchor": g["anchor"], "section": sec["name"]}
                g["plot"] = key
            elif plots[key]["anchor"] != g["anchor"]:
                g["plot_at"] = plots[key]["anchor"]
    for key, p in plots.items():
        mine = [r for r in results if f"{r['experiment']}[{r['tier']}]" == key]
        p["paper"] = paper_points(p, mine)
        p["bounds"] = bounds(p, mine)
        p["runs"] = sum(pt["n"] for s in p["series"] if s["metric"] == p["y"][0] for pt in s["points"]) + \
            sum(a["n"] for a in p["apart"] if a["metric"] == p["y"][0])  # the runs the figure plots
        p.update(_plot_text(p, mine[0]))
    for sec in sections:
        sec["counts"] = dict(sec["counts"])
        # a section of parameter counts only is one table
        sec["training_free"] = all(r["training_free"] for g in sec["groups"] for r in g["claims"])
    totals = Counter(r["verdict"] for r in results)
    evaluated = sum(totals[v] for v in EVALUATED)
    for r in reading_results:  # readings run (in this session or found in the cache): "tried" means run
        e = exps.get(f"{r['experiment']}[{r['tier']}]")
        if e is not None and r["verdict"] in readings.TRIED:
            e["tried"].setdefault(r.get("reading_id"), Counter())[r["verdict"]] += 1
    for e in exps.values():
        e["tried"] = {k: dict(v) for k, v in e["tried"].items()}
        plan = e["plan"] or {}
        for x in plan.get("readings", []):
            x["tried"] = e["tried"].get(x["name"])
    readings_doc = readings.table(results + reading_results, {
        (r["file"], r["id"], r["tier"]): readings.repeated(r["check"], files[r["file"]].experiments[r["experiment"]],
                                                           r["tier"])
        for r in results if files.get(r["file"]) and r["experiment"] in files[r["file"]].experiments})
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
    missing = missing_total(exps, files)
    estimates = gpu_estimates(exps, {f"{k[0]}[{k[1]}]": v.get(readings.PRIMARY, ())
                                     for k, v in devices.items()})
    for k, est in estimates.items():
        exps[k]["gpu_estimate"] = est
    if waiting and all(e.get("gpu_estimate") for e in waiting) and \
            len({e["gpu_estimate"]["rate"] for e in waiting}) == 1:  # one measured rate: the total at it
        e0 = waiting[0]
        missing["estimate"] = {**e0["gpu_estimate"],
                               "s": missing["pflop"] / e0["missing"]["pflop"] * e0["gpu_estimate"]["s"]}
    # training time: every run on the page once, the other readings' runs included
    walls = dict(recorded)
    for r in reading_results:
        walls.update(r.get("run_wall_s") or {})
        per_experiment[f"{r['experiment']}[{r['tier']}]"].update(r.get("run_wall_s") or {})
    return _with_scaled({"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(device), "wall_s": wall_s, "tiers": tiers,
            "verdicts": list(VERDICTS), "colours": COLOURS,
            "totals": dict(totals), "evaluated": evaluated, "n_claims": len(results),
            "sections": sections,
            "experiment_seconds": {f"{r['experiment']}[{r['tier']}]": r.get("experiment_seconds")
                                   for r in results if r.get("experiment_seconds") is not None},
            "training_seconds": {k: sum(v.values()) for k, v in per_experiment.items() if v},
            "training_seconds_total": sum(walls.values()),
            "training_seconds_primary": sum(recorded.values()),
            "missing_total": missing,
            "claims": results, "plots": plots, "forest": forest,
            "forest_left_out": forest_left_out(results, forest),
            "forest_interval": interval_names([row["interval"] for row in forest if row["interval"]]),
            "experiments": exps, "findings": findings(sections, exps, readings_doc, missing),
            "answer": answer(sections, readings_doc, exps, cal := calibration(calib, {f: {"runs": len(c["walls"]), "seconds": sum(c["walls"].values()),
                                       "provenance": provenance(c["prov"])} for f, c in cal_runs.items()})), "calibration": cal,
            "scaled": scaled.block(scaled_claims, files, results, {"runs": len(scaled_runs["walls"]),
                                                                  "seconds": sum(scaled_runs["walls"].values()),
                                                                  "provenance": provenance(scaled_runs["prov"])}),
            "waiting": waiting, "markers": MARKER_WORDS,
            "trained_where": trained_where(sections), "provenance_fields": list(TRAINED_FIELDS),
            "data_provenance": "shared/data/PROVENANCE.md",
            "readings": readings_doc,
            # checks of claims under other readings than the primary (pytest --readings)
            "reading_totals": dict(Counter(r["verdict"] for r in reading_results)),
            "not_in_session": sum(r.get("in_session") is False for r in results)})


def _with_scaled(doc: dict) -> dict:
    """The scaled tier's line joins the answer (before the calibration's) and its verdicts the
    section lines of the sections it covers, each labelled with its scale."""
    sc = doc.get("scaled")
    if sc:
        if doc["answer"].get("sentence"):  # the paper's tally is at its own scale; the scaled line follows
            doc["answer"]["sentence"] = doc["answer"]["sentence"].replace(
                "headline claims reproduce", "headline claims reproduce at the paper's scale", 1)
        doc["answer"]["lines"].insert(0, {"text": sc["answer_line"], "anchor": "scaled", "link": "Scaled tier"})
        for line in doc["answer"]["sections"]:
            note = sc["notes"].get(line["name"])
            if note:
                line["why"] = line["why"].rstrip(".") + "; " + note + "."
    return doc


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


def render(doc: dict, base: str = "") -> str:
    """The page; `base`: the path from the page's folder to the project root, for links to claim
    files and parts ("" where the page is not written inside the project)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = num
    env.filters["slug"] = lambda s: slug(s)
    env.filters["duration"] = duration
    env.filters["commit"] = short_commit
    # a reading's name ("epochs=30,input_norm=standard") may break after its commas, never mid-token
    env.filters["wbr"] = lambda s: markupsafe.Markup(str(markupsafe.escape(s)).replace(",", ",<wbr>"))
    env.filters["pflop"] = pflop_text
    env.globals["kind"] = kind
    svgs = {k: plot_svg(p, slug("fig", k)) for k, p in doc["plots"].items()}
    svgs_narrow = {k: plot_svg(p, slug("fig", k) + "-phone", narrow=True) for k, p in doc["plots"].items()}
    title = "Every numeric claim: measured value against its expected band, in tolerance units"
    forest = forest_svg(doc["forest"], "fig-forest", title) if doc["forest"] else None
    narrow = forest_svg(doc["forest"], "fig-forest-phone", title, narrow=True) if doc["forest"] else None
    return env.get_template("report.html.j2").render(doc=doc, svgs=svgs, svgs_narrow=svgs_narrow, forest=forest,
                                                     forest_narrow=narrow,
                                                     headline=headline(doc), base=base)


def write(results: list, out_dir, wall_s: float, device: str = "cpu") -> tuple:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = build(results, wall_s, device)
    json_path, html_path = out / "results.json", out / "report.html"
    # sections list their claims by anchor in results.json (the claims are in doc["claims"])
    slim = {**doc, "sections": [{**sec, "groups": [{**g, "claims": [r["anchor"] for r in g["claims"]]}
                                                   for g in sec["groups"]]} for sec in doc["sections"]]}
    json_path.write_text(dumps(slim, indent=1))
    root = Path.cwd().resolve()
    base = Path(os.path.relpath(root, out.resolve())).as_posix() + "/" if root in out.resolve().parents else ""
    html_path.write_text(render(doc, base))
    summary_md.write(doc, out)  # SUMMARY.md beside it (and the CI job summary where there is one)
    return json_path, html_path

