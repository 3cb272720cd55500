"""The report's answer (one sentence, a verdict per section, the headline claims and the claims that
presuppose them), the Calibration section, the Markdown summary, and the numbers the review found
wrong: each test fails on the report as it was before (tests/test_report.py holds the fixtures)."""
import copy
from pathlib import Path

import pytest

from harness.claims import plans, readings, report, spec, summary_md, words
from harness.claims.figures import paper_points
from harness.claims.results import claim_result
from harness.claims.trained import provenance, trained_where
from harness.runs.context import Context

from test_report import OTHERS, _project, _results, _provenance

CLAIMS = Path(__file__).resolve().parents[1] / "claims"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("answer")
    claims, root = _project(tmp)
    return _results(claims, root), claims, root


def _by_id(doc):
    return {c["id"]: c for c in doc["claims"]}


def _headlined(results):
    out = copy.deepcopy(results)
    for r in out:
        if r["id"] == "bs64":  # fails
            r["headline"] = True
        if r["id"] == "gd":  # passes, but presupposes bs64
            r["depends_on"] = "bs64"
        if r["id"] == "bs16":
            r["headline"] = True
    return out


def test_answer_sentence_section_verdicts_and_headlines_first(base):
    doc = report.build(_headlined(base[0]), 1.0)
    a = doc["answer"]
    assert a["sentence"] == "Partly: 1 of the paper's 2 headline claims reproduce and 1 does not."
    # what was measured, not the claim's words
    assert a["misses"] == [{"id": "bs64", "anchor": "sweep-bs64-smoke", "section": "V-E",
                            "text": "test accuracy at batch size 64: 85.20 %, not the paper's 80 % (+5.20 pp)"}]
    v = {line["name"]: line for line in a["sections"]}
    assert v["V-E"]["word"] == "partly reproduces" and v["IV-C"]["word"] == "reproduces"
    assert v["Review controls"]["word"] == "not run yet"
    # the dependent's pass is told with its headline and not counted
    assert "gd passes but presupposes it: not counted" in v["V-E"]["why"]
    text = " ".join(l for s in doc["findings"]["sections"] for l in s["lines"])
    assert "(gd) passes, but it presupposes the headline bs64" in text
    assert "1 more passes but presupposes a headline claim that does not pass" in doc["findings"]["overall"][0]
    assert "Reproduced: test accuracy (1 claim)" in text  # bs16, not gd
    assert a["headlines"][0]["id"] == "bs64"  # failures first
    # headline claims lead their experiment's cards
    sweep = [c["id"] for c in doc["claims"] if c["experiment"] == "sweep"]
    assert sweep[:2] == ["bs16", "bs64"]
    html = report.render(doc)
    assert html.index('id="answer"') < html.index('id="glance"') and "headline" in html


def test_a_section_whose_headline_fails_does_not_reproduce(base):
    results = _headlined(base[0])
    for r in results:
        r["headline"] = r["id"] == "bs64"
    doc = report.build(results, 1.0)
    v = {line["name"]: line for line in doc["answer"]["sections"]}
    assert v["V-E"]["word"] == "does not reproduce"
    assert doc["answer"]["sentence"].startswith("No: 0 of the paper's 1 headline claims reproduce")


DEP = """
section = "V-E"
title = "T"

[experiments.e]
procedure = "count"
dataset = "mnist"
model = "mlp"
grid = {{width = [8]}}
smoke = {{seeds = [0]}}

[[claims]]
id = "head"
statement = "s"
paper = "-"
experiment = "e"
check = {{type = "value", metric = "params", where = {{width = 8}}}}
{head}
[claims.smoke]
expect = {{min = 0.0, why = "w"}}

[[claims]]
id = "dep"
statement = "s"
paper = "-"
experiment = "e"
check = {{type = "value", metric = "params", where = {{width = 8}}}}
depends_on = "{dep}"
[claims.smoke]
expect = {{min = 0.0, why = "w"}}
"""


def test_depends_on_is_validated(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(DEP.format(head="headline = true", dep="head"))
    assert spec.load(p).claims[1].depends_on == "head"
    for head, dep, msg in (("headline = true", "nope", "not another claim"), ("", "head", "not a headline"),
                           ("headline = true", "dep", "not another claim")):
        p.write_text(DEP.format(head=head, dep=dep))
        with pytest.raises(spec.SpecError, match=msg):
            spec.load(p)


CAL = OTHERS.replace('title = "{title}"', 'title = "{title}"\nsource = "Other et al. (2020), Table 1"\n'
                     'validates = "the parameter count"')


def _with_calibration(base, tmp_path, procedure):
    claims, root = base[1], base[2]
    path = tmp_path / "calibration_other.toml"
    path.write_text(CAL.format(section="Calibration", title="Other paper", name="cal", procedure=procedure,
                               metric="params" if procedure == "count" else "test_acc")
                    .replace('plot = {x = "width", y = ["test_acc"], logx = true}\n', ""))
    cf = spec.load(path)
    ctx = Context(cache_root=str(root), allow_train=False)
    return base[0] + [claim_result(c, t, c.experiment, cf, ctx) for c in cf.claims for t in c.tiers]


def test_calibration_opens_the_report_apart_from_the_papers_counts(base, tmp_path):
    doc = report.build(_with_calibration(base, tmp_path, "count"), 1.0)
    cal = doc["calibration"]
    assert cal["sentence"].startswith("The harness reproduces 1 of 1 calibration results")
    assert "; none fails." in cal["sentence"]
    assert cal["claims"][0]["expected"] == "at least 0"  # the band beside the source's value
    assert doc["n_claims"] == len(base[0])  # the paper's counts exclude calibration claims
    assert all(not c.get("source") for c in doc["claims"])
    html = report.render(doc)
    # the paper's answer first; the calibration one line of it, linked to its section further down
    assert html.index('id="findings"') < html.index('id="calibration"')
    assert html.index('id="findings"') < html.index('class="answer-line"') < html.index('href="#calibration"')
    assert 'href="#calibration">Calibration: ' in html[html.index('id="contents"'):]  # in Contents
    assert doc["answer"]["lines"][0]["text"].startswith("Before these verdicts, the harness reproduced 1 of 1 results")
    assert '>at least 0 <span class="muted">' in html  # the band, and whose it is
    assert 'Other et al. (2020), Table 1<span class="validates">: validates the parameter count</span>' in html
    assert "calibration" not in (doc["answer"]["sentence"] or "").lower()
    md = summary_md.markdown(doc)
    assert md.index("## Does the paper reproduce?") < md.index("See [Calibration](#calibration)") < md.index("## Calibration")


def test_scaled_tier_is_answered_apart_from_the_papers_verdicts(base):
    """A scaled claim (the paper's statement at a smaller scale) never enters the paper's sentence,
    counts, sections or headline tally: it has its own block, line and section, labelled."""
    paper = _headlined(base[0])
    alone = report.build(paper, 1.0)
    extra = copy.deepcopy(next(r for r in paper if r["id"] == "bs64"))
    extra.update(tier="scaled", verdict="fail", headline=True)
    doc = report.build(paper + [extra], 1.0)
    assert doc["n_claims"] == alone["n_claims"] == len(base[0])
    assert doc["totals"] == alone["totals"] and all(c["tier"] != "scaled" for c in doc["claims"])
    assert [s["counts"] for s in doc["sections"]] == [s["counts"] for s in alone["sections"]]
    assert doc["answer"]["sentence"] == alone["answer"]["sentence"].replace(
        "headline claims reproduce", "headline claims reproduce at the paper's scale")
    sc = doc["scaled"]
    assert sc["counts"] == {"fail": 1} and sc["sections"][0]["claims"][0]["id"] == "bs64"
    line = doc["answer"]["lines"][0]
    assert line["anchor"] == "scaled" and line["text"].startswith("At reduced scale")
    assert "0 of 1 measured hold and 1 does not" in line["text"] and "not the paper's verdicts" in line["text"]
    v = {s["name"]: s for s in doc["answer"]["sections"]}
    assert "at reduced scale" in v["V-E"]["why"] and "scaled tier" in v["V-E"]["why"]
    html = report.render(doc)
    assert html.index('id="findings"') < html.index('id="scaled"')
    assert 'href="#scaled">Scaled tier' in html[html.index('id="contents"'):]
    assert html.count('id="sweep-bs64-smoke"') == 1  # the paper's card; the scaled row has its own anchor
    md = summary_md.markdown(doc)
    assert md.index("## Does the paper reproduce?") < md.index("## Scaled tier (not the paper's verdicts)")
    assert report.build(paper, 1.0)["scaled"] is None


def test_calibration_declared_but_not_run_is_one_line(base, tmp_path):
    doc = report.build(_with_calibration(base, tmp_path, "train"), 1.0)
    assert doc["calibration"]["sentence"].endswith("are declared, and none has run yet.") or \
        "none has run yet" in doc["calibration"]["sentence"]
    assert doc["calibration"]["evaluated"] == 0
    assert report.build(base[0], 1.0)["calibration"] is None


def test_markdown_summary_beside_the_report_and_in_the_job_summary(base, tmp_path, monkeypatch):
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    report.write(_headlined(base[0]), tmp_path / "out", 1.0)
    md = (tmp_path / "out" / "SUMMARY.md").read_text()
    assert md.startswith("# Reproduction summary") and "**Partly: 1 of the paper's 2 headline claims" in md
    # a repository page shows report.html as source: sections link to their claim files, relative
    # to the summary's folder
    line = next(l for l in md.splitlines() if l.startswith("- [V-E · Sweep]("))
    target = line.split("](")[1].split(")")[0]
    assert target.endswith(".toml") and (tmp_path / "out" / target).resolve().exists(), target
    assert "report.html#" not in md
    # each failing headline with the paper's value against the measured one
    row = next(l for l in md.splitlines() if l.startswith("| Batch 64 reaches"))
    assert "(`bs64`)" in row and "| 80 % |" in row and "85.20 %" in row and row.endswith("| fail |")
    assert step.read_text().strip() == md.strip()


# ---------------------------------------------------------------- numbers the review found wrong


def test_training_time_counts_every_run_on_the_page_once(base):
    results = copy.deepcopy(base[0])
    primary = sum({k: s for r in results for k, s in (r.get("run_wall_s") or {}).items()}.values())
    other = {**copy.deepcopy(next(r for r in results if r["id"] == "bs16")), "reading_id": "epochs=2",
             "run_wall_s": {"k-reading-1": 100.0, "k-reading-2": 200.0}}
    doc = report.build(results + [other], 1.0)
    assert doc["training_seconds_total"] == pytest.approx(primary + 300.0)


def test_where_trained_pairs_each_device_with_its_own_software():
    runs = {"a": {"device": "cpu (x86_64)", "torch": "2.14.1", "cuda": None, "date": "2026-11-30"},
            "b": {"device": "NVIDIA H100", "torch": "2.11.0", "cuda": "13.0", "date": "2026-11-27"},
            "c": None}
    pv = provenance(runs)
    rows = trained_where([{"groups": [{"key": "e[full]", "experiment": "e", "anchor": "x", "provenance": pv}]}])
    pairs = {(r["fields"]["device"], r["fields"]["torch"], r["runs"]) for r in rows}
    assert pairs == {("cpu (x86_64)", "2.14.1", 1), ("NVIDIA H100", "2.11.0", 1), ("not recorded", "not recorded", 1)}


def test_runs_two_waiting_experiments_share_count_once():
    root = Path(__file__).resolve().parents[1]
    files = {f: spec.load(root / f, with_claims=False) for f in ("claims/batch_size.toml", "claims/controls.toml")}
    exps = {}
    for f, name in (("claims/batch_size.toml", "bs_sweep"), ("claims/controls.toml", "equal_updates")):
        p = plans.experiment_plan(files[f].experiments[name], f, "full")
        n = len(plans.primary_keys(files[f].experiments[name], "full"))
        exps[name] = {"file": f, "experiment": name, "tier": "full", "verdicts": {"not run": 1},
                      "missing": {"runs": n, "of": n, "all": True, "pflop": p["pflop"]}}
    total = plans.missing_total(exps, files)
    listed = sum(e["missing"]["runs"] for e in exps.values())
    assert total["shared"] == 5 and total["runs"] == listed - 5  # equal_updates reuses bs_sweep's bs1024 runs
    assert total["pflop"] < sum(e["missing"]["pflop"] for e in exps.values())


def test_a_bound_over_several_configurations_is_not_drawn_as_each_ones_paper_value(base):
    doc = report.build(copy.deepcopy(base[0]), 1.0)
    drawn = {p["claim"] for plot in doc["plots"].values() for p in plot["paper"]}
    assert "all-interpolate" not in drawn and "bs16" in drawn


def test_an_inconclusive_claim_has_its_deviation_in_the_table_as_in_the_forest(base):
    doc = report.build(copy.deepcopy(base[0]), 1.0)
    r = copy.deepcopy(_by_id(doc)["bs16"])
    r["verdict"] = "inconclusive"
    assert words.deviation_text(r) and "tol" in words.deviation_text(r)


def test_tried_means_run(base):
    results = copy.deepcopy(base[0])
    other = {**copy.deepcopy(next(r for r in results if r["id"] == "missing-claim")), "reading_id": "epochs=2"}
    doc = report.build(results + [other], 1.0)
    e = doc["experiments"]["missing[smoke]"]
    assert e["tried"] == {}  # a reading whose runs are not in the cache was not tried
    assert readings.classify({"primary": "not run", "epochs=2": "not run"})["sentence"] == "no reading run"
    html = report.render(doc)
    assert "only one reading tried" not in html and "NOT RUN</td>\n<td class=\"num\">—" not in html


# ---------------------------------------------------------------- report v5 (issue 45)
def _claim(id, metric, where, verdict, value, paper=None, unit="%", **kw):
    from harness.claims.fmt import estimate_text
    r = {"id": id, "file": "claims/d.toml", "tier": "full", "experiment": "e", "section": "V-A",
         "check": {"type": "value", "metric": metric, "where": where}, "verdict": verdict, "unit": unit,
         "paper_value": paper, "paper_text": f"{paper} {unit}" if paper is not None else "—",
         "measured": {"value": value, "ci": [value - 1, value + 1], "n": 5},
         "measured_text": estimate_text({"value": value, "ci": [value - 1, value + 1], "n": 5}, unit)}
    if paper is not None:
        r["vs_paper"] = {"d": value - paper, "text": f"{value - paper:+.2f} pp"}
    return {**r, **kw}


def test_a_failing_headline_says_what_was_measured_where_it_holds_and_the_papers_own_numbers():
    from harness.claims import misses
    head = _claim("h", "train_acc", {"width": [32, 64, 128]}, "fail", 99.31, 100.0, explanation="worst of ...")
    e = {"declared": {"epochs": {}, "input_norm": {}}, "plan": {"readings": [{}, {}, {}]}}
    doc = {"claims": {"claims/d.toml::h[full]": {"rows": [
        {"reading": "primary", "verdict": "fail"}, {"reading": "epochs=80", "verdict": "fail"},
        {"reading": "input_norm=standard", "verdict": "pass", "value": 99.98, "ci": [99.97, 100.0]}]}}}
    text = misses.miss_text(head, [head], doc, e)
    # the value in the decimals its interval (+-1 here) supports: 99.3, not 99.31
    assert text.startswith("train accuracy at width 32-128: 99.3 % at worst, not the paper's 100.0 % (-0.69 pp)")
    assert "the paper leaves epochs and input_norm open" in text
    assert "it holds under 1 of the 2 other readings run (input_norm=standard: 99.98 % [99.97, 100.00])" in text
    # no other reading run: the trend measured, and the paper's own numbers at the configurations compared
    cnn = _claim("p", "test_acc", {}, "fail", -5.57, None, unit="pp")
    cnn["check"] = {"type": "welch", "metric": "test_acc", "a": {"width": 4}, "b": {"width": 8}}
    # its own figure holds the two widths it compares; the sweep is in a sibling claim's figure
    cnn["plot"] = {"x": "width", "series": [{"metric": "test_acc", "points": [
        {"x": 4, "mean": 58.2}, {"x": 8, "mean": 63.8}]}]}
    sweep = _claim("s", "test_acc", {}, "pass", 1.0, None, plot={"x": "width", "series": [
        {"metric": "test_acc", "points": [{"x": 8, "mean": 63.8}, {"x": 96, "mean": 76.6}]}]})
    train8 = _claim("t8", "train_acc", {"width": 8}, "fail", 93.9, 45.8)
    e = {"declared": {"epochs": {}}, "plan": {"readings": [{}] * 29}}
    text = misses.miss_text(cnn, [cnn, sweep, train8], {"claims": {}}, e)
    assert text.startswith("test accuracy rises with width, 58.2 % at 4 to 76.6 % at 96, with no peak "
                           "(the paper leaves epochs open; of 29 other readings declared, none has run)")
    assert "the paper's own numbers at width 8: train accuracy 45.8 % (measured 93.9 %): its models fit less" in text


def test_a_fit_names_its_largest_term_and_readings_beyond_the_papers_range():
    from harness.claims.answer import fit_words, outside_words
    row = {"reading": "epochs=20,input_norm=standard", "sum_sq": 240.0, "largest": [("mlp-w32", -13.84), ("b", 1.0)]}
    head = _claim("mlp-w32", "train_acc", {"width": 32}, "fail", 99.308, 100.0)
    assert fit_words(row, [head]) == "240 (80% of it mlp-w32, at −13.84 units of 0.05 pp)"
    assert outside_words(row["reading"], {"epochs=20": "the stated 60-80 epochs (IV-D)"}) == \
        "; epochs=20 lies outside the stated 60-80 epochs (IV-D)"
    text = (CLAIMS / "ntk.toml").read_text()
    assert 'value = 20, outside = "the stated 60-80 epochs (IV-D)"' in text


def test_what_has_not_run_counts_a_tickets_rounds_and_estimates_gpu_time_from_a_measured_rate():
    cf = spec.load(CLAIMS / "lottery.toml", with_claims=False)
    e = {"file": str(CLAIMS / "lottery.toml"), "experiment": "ticket", "tier": "full", "verdicts": {"not run": 3},
         "missing": {"runs": 5, "of": 5, "all": True, "pflop": 37.8}}
    total = plans.missing_total({"ticket[full]": e}, {e["file"]: cf})
    assert e["missing"]["trains"] == total["runs"] > 5  # the pruning rounds are runs, as their PFLOP count
    assert total["pflop"] == pytest.approx(37.8, rel=0.01)
    exps = {"done[full]": {"experiment": "done", "measured_s": 100.0, "missing": None,
                           "plan": {"model": "cnn", "dataset": "cifar10", "pflop": 4.0}},
            "todo[full]": {"experiment": "todo", "measured_s": None, "missing": {"pflop": 8.0},
                           "plan": {"model": "cnn", "dataset": "cifar10", "pflop": 8.0}},
            "mlp[full]": {"experiment": "mlp", "measured_s": None, "missing": {"pflop": 1.0},
                          "plan": {"model": "mlp", "dataset": "mnist", "pflop": 1.0}}}
    est = plans.gpu_estimates(exps, {"done[full]": {"NVIDIA H100"}})
    assert est["todo[full]"]["s"] == pytest.approx(200.0, rel=1e-9) and "mlp[full]" not in est
    assert "done's measured rate: 4.00 PFLOP in 100 s on NVIDIA H100" == est["todo[full]"]["rate"]
    assert plans.gpu_estimates(exps, {"done[full]": {"cpu (x86_64)"}}) == {}  # a CPU's rate is no GPU's


def test_a_commit_keeps_its_dirty_mark_in_the_provenance_table():
    from harness.claims.trained import short_commit
    assert short_commit("a033352564a9f2ff90218096bc936125bc80d9dd-dirty") == "a033352564-dirty"
    assert short_commit("73d27aaa6169ae1ce74f7750440fba6aaf0aa82d") == "73d27aaa61"


def test_calibration_tells_stated_values_from_our_readings_and_our_bands_from_the_sources():
    from harness.claims.answer import calibration, stated
    assert stated({"paper_value": 2.51, "paper": "'reaches minimum validation loss 2.51x faster'"})
    assert not stated({"paper_value": 0.62, "paper": "'early-stopping occurs 38% earlier'"})  # derived
    assert not stated({"paper_value": 1.0, "paper": "'returning to the early-stopping performance'"})  # words
    assert not stated({"paper_value": 1.1, "paper": "'21.1%'"}) and stated({"paper_value": 21.1, "paper": "Pm = 21.1%"})
    r = {"id": "c", "source": "S", "statement": "s", "verdict": "pass", "file": "claims/cal.toml",
         "paper_value": 21.1, "paper": "Pm = 21.1%", "why": "Exact arithmetic: the source's rounding"}
    cal = calibration([r, {**r, "id": "d", "why": "Ours: a reading"}],
                      {"claims/cal.toml": {"runs": 85, "seconds": 16624.0, "provenance": {}}})
    assert [c["band_ours"] for c in cal["claims"]] == [False, True] and cal["claims"][0]["stated"]
    assert cal["runs"] == 85 and cal["files"][0]["file"] == "claims/cal.toml" and cal["seconds"] == 16624.0


def test_a_bound_over_several_configurations_is_drawn_as_a_line_and_train_and_test_differ_in_style():
    from harness.claims.figures import bounds
    plot = {"y": ["train_acc", "test_acc"], "series": [{"name": "train accuracy", "metric": "train_acc", "points": [
        {"x": w, "config": {"width": w}} for w in (8, 32, 64)]}]}
    r = {"id": "interp", "verdict": "fail", "check": {"type": "all", "metric": "train_acc",
                                                      "where": {"width": [32, 64]}}, "expect": {"min": 99.95}}
    assert bounds(plot, [r]) == [{"metric": "train_acc", "x": [32, 64], "value": 99.95, "side": "≥",
                                  "claim": "interp", "verdict": "fail"}]
    from harness.claims.figures import _plot_text
    p = {**plot, "x": "width", "model": "mlp", "dataset": "mnist", "tier": "full", "interval": "Student t",
         "apart": [], "paper": [{"band": [1, 2], "metric": "train_acc", "x": 8, "value": 1.5, "apart": None}], "bounds": bounds(plot, [r])}
    p["series"][0]["points"] = [{**pt, "n": 5, "mean": 1.0} for pt in p["series"][0]["points"]]
    legend = _plot_text(p, {"section": "V-A", "title": "T"})["legend"]
    assert "train accuracy: circles, solid, test accuracy: squares, dashed" in legend
    assert "Dotted line: interp's bound, train accuracy ≥ 99.95 at every width from 32 to 64 (fail)" in legend
    assert "the shaded bar behind one: its claim's tolerance band" in legend


def test_readings_lacking_claims_are_compared_with_the_primary_on_the_claims_they_share():
    """dd_cnn's readings trained widths 4-16 only: they rank after the primary (which has the wide
    claims too), and the line compares them on the claims every reading measured."""
    from harness.claims.answer import reading_changes
    rows = lambda v: [{"reading": "primary", "verdict": v[0]}, {"reading": "r1", "verdict": v[1]}]  # noqa: E731
    doc = {"claims": {"claims/d.toml::c8[full]": {"experiment": "e", "tier": "full", "rows": rows(("fail", "pass"))},
                      "claims/d.toml::c96[full]": {"experiment": "e", "tier": "full", "rows": rows(("fail", "fail"))}},
           "fit": {"e[full]": [
               {"reading": "primary", "primary": True, "n": 2, "sum_sq": 544.0, "missing": 0, "largest": [],
                "shared_n": 1, "shared_sum_sq": 300.0},
               {"reading": "r1", "primary": False, "n": 1, "sum_sq": 44.1, "missing": 1, "largest": [],
                "shared_n": 1, "shared_sum_sq": 44.1}]}}
    text = reading_changes([], doc, {"e[full]": {"outside": {"r1": "the stated range"}}})["e[full]"][0]
    assert ("on the 1 claims with a paper value that every reading run measured, closest to the paper: r1 "
            "(sum of squared misses in tolerance units 44.1, against 300 for the primary); "
            "r1 lies outside the stated range") in text


def test_the_primary_is_counted_on_the_claims_a_reading_measured():
    """A reading run on some of an experiment's claims (dd_cnn's narrow widths) is set against the
    primary on those claims, not on every claim some reading measured."""
    from harness.claims.answer import reading_changes
    rows = lambda *v: [{"reading": name, "verdict": x} for name, x in zip(("primary", "r1", "r2"), v)]  # noqa: E731
    claims = {"c8": rows("fail", "pass", "fail"), "c16": rows("pass", "fail", "fail"),
              "c96": rows("pass", "not run", "fail")}
    doc = {"claims": {f"claims/d.toml::{k}[full]": {"experiment": "e", "tier": "full", "rows": v}
                      for k, v in claims.items()}}
    text = reading_changes([], doc)["e[full]"][0]
    assert text == "readings run for e (2): under r1, 1 of 2 pass, against 1 of 2 under the primary"
    doc["fit"] = {"e[full]": [{"reading": "r2", "primary": False}]}  # the best fit shown too, on 3 claims
    assert reading_changes([], doc)["e[full]"][0] == (
        "readings run for e (2): under r1, 1 of 2 pass, against 1 of 2 under the primary on the same "
        "claims; under r2, 0 of 3 pass, against 2 of 3 under the primary on the same claims")
    del doc["fit"]
    claims["c96"] = rows("pass", "fail", "fail")  # r1 now measures all three, as the primary does
    doc["claims"]["claims/d.toml::c96[full]"]["rows"] = claims["c96"]
    assert reading_changes([], doc)["e[full]"][0].endswith("under r1, 1 of 3 pass, against 2 of 3 under the primary")
