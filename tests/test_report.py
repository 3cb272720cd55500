"""The HTML report from a small fixture cache (fabricated run metrics, no training): its structure,
numbers, "not run" state, provenance, accessibility; and, where chromium is installed, the page in
a real headless browser at phone width."""
import copy
from pathlib import Path
import json
import re
import shutil
import subprocess

import pytest

from harness.runs import cache
from harness.runs.keys import run_key
from harness.claims import checks, plans, report, spec
from harness.claims.results import claim_result
from harness.runs.context import Context
from harness.runs.expand import expand
from harness.claims import fmt
from harness.claims import svg

SWEEP = """
section = "V-E"
title = "Sweep"

[experiments.sweep]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {width = 16, train_subset = 256, epochs = 1}
configs = [{batch_size = 16, lr = 0.01}, {batch_size = 64, lr = 0.02}, {batch_size = 0, lr = 0.001},
           {optimizer = "adam", batch_size = 16, lr = 0.001}]
plot = {x = "batch_size", y = ["test_acc"], logx = true}
smoke = {seeds = [0, 1, 2]}

[[claims]]
id = "bs16"
statement = "Batch 16 reaches 90% test accuracy"
paper = "90.0%"
paper_value = 90.0
experiment = "sweep"
check = {type = "value", metric = "test_acc", where = {optimizer = "sgd", batch_size = 16}}
[claims.smoke]
expect = {target = 90.0, abs_tol = 1.0, why = "w"}

[[claims]]
id = "bs64"
statement = "Batch 64 reaches 80% test accuracy"
paper = "80.0%"
paper_value = 80.0
experiment = "sweep"
check = {type = "value", metric = "test_acc", where = {batch_size = 64}}
[claims.smoke]
expect = {target = 80.0, abs_tol = 1.0, why = "w"}

[[claims]]
id = "gd"
statement = "GD reaches 30% test accuracy"
paper = "30.0%"
paper_value = 30.0
experiment = "sweep"
check = {type = "value", metric = "test_acc", where = {batch_size = 0}}
[claims.smoke]
expect = {target = 30.0, abs_tol = 5.0, why = "w"}

[[claims]]
id = "all-interpolate"
statement = "Every SGD batch size interpolates"
paper = "100%"
paper_value = 100.0
experiment = "sweep"
check = {type = "all", metric = "train_acc", where = {batch_size = [16, 64]}}  # Adam's too: every configuration is read
[claims.smoke]
expect = {min = 99.95, why = "w"}

[[claims]]
id = "bigger-batch-better"
statement = "Batch 64 beats batch 16"
paper = "-"
experiment = "sweep"
check = {type = "welch", metric = "test_acc", a = {batch_size = 64}, b = {optimizer = "sgd", batch_size = 16}}
[claims.smoke]
expect = {significant = true, direction = "greater", why = "w"}
"""

OTHERS = """
section = "{section}"
title = "{title}"

[experiments.{name}]
procedure = "{procedure}"
dataset = "mnist"
model = "mlp"
grid = {{width = [8, 2048]}}
plot = {{x = "width", y = ["test_acc"], logx = true}}
smoke = {{seeds = [0, 1, 2]}}

[[claims]]
id = "{name}-claim"
statement = "{name} statement"
paper = "-"
experiment = "{name}"
check = {{type = "value", metric = "{metric}", where = {{width = 2048}}}}
[claims.smoke]
expect = {{min = 0.0, why = "w"}}
"""

ACC = {(16, "sgd"): [90.1, 90.3, 89.9], (64, "sgd"): [85.0, 85.4, 85.2], (0, "sgd"): [31.0, 29.0, 30.5],
       (16, "adam"): [88.0, 88.5, 88.2]}


def _project(tmp_path):
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "sweep.toml").write_text(SWEEP)
    (claims / "counts.toml").write_text(OTHERS.format(section="IV-C", title="Counts", name="counted",
                                                      procedure="count", metric="params")
                                        .replace('plot = {x = "width", y = ["test_acc"], logx = true}\n', ""))
    (claims / "missing.toml").write_text(OTHERS.format(section="Review controls", title="Controls",
                                                       name="missing", procedure="train", metric="test_acc"))
    root = tmp_path / "cache"
    rc = cache.RunCache(root)
    exp = spec.load(claims / "sweep.toml").experiments["sweep"]
    for cfg in expand(exp, "smoke", "cpu"):
        acc = ACC[(cfg.batch_size, cfg.optimizer)][cfg.seed]
        final = {"train_acc": 100.0, "test_acc": acc, "train_loss": 0.01, "test_loss": 0.3, "gen_gap": 100 - acc}
        rc.save(run_key(cfg), {"config": cfg.to_dict(), "extra": None, "final": final, "history": [final],
                                     "diverged": False, "steps": 16, "wall_s": 1.5})
    return claims, root


def _results(claims, root):
    ctx = Context(cache_root=str(root), allow_train=False)
    out = []
    for path in sorted(claims.glob("*.toml")):
        cf = spec.load(path)
        out += [claim_result(c, t, c.experiment, cf, ctx) for c in cf.claims for t in c.tiers]
    return out


def _provenance(results, devices):
    """run_provenance as the run recording will attach it: per run key, a dict (or None); a run's the
    same in every result that reads it (each result carries the runs its claim reads)."""
    keys = sorted({k for r in results for k in r.get("run_wall_s") or {}})
    for r in results:
        r["run_provenance"] = {k: None if devices[i % len(devices)] is None else
                               {"device": devices[i % len(devices)], "torch": "2.5.1", "cuda": None,
                                "commit": "abc1234", "date": f"2026-11-2{i % 3}", "tf32_conv": False,
                                "tf32_matmul": False, "amp": False, "trainer": "single", "cuda_graph": False}
                               for i, k in enumerate(keys) if k in (r.get("run_wall_s") or {})}
    return results


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    claims, root = _project(tmp)
    results = _provenance(_results(claims, root), ["cpu", "NVIDIA H100 80GB HBM3", None])
    json_path, html_path = report.write(results, tmp / "out", wall_s=1.0)
    return json.loads(json_path.read_text()), html_path.read_text(), html_path


def test_verdicts_headline_and_not_run(rendered):
    doc, html, _ = rendered
    verdicts = {c["id"]: c["verdict"] for c in doc["claims"]}
    assert verdicts == {"bs16": "pass", "bs64": "fail", "gd": "pass", "all-interpolate": "pass",
                        "bigger-batch-better": "fail",
                        "counted-claim": "pass", "missing-claim": "not run"}
    missing = next(c for c in doc["claims"] if c["id"] == "missing-claim")
    assert missing["detail"] == "not run (3 of 3 runs missing)"  # the runs its check reads: width 2048
    assert "6 of 7 claims evaluated: 4 pass, 2 fail, 1 not run." in html
    assert 'class="claim not-run"' in html and "3 of 3 runs missing" in html
    # the verdict per section lists sections in the paper's order, the review's controls last
    order = [html.index(f'id="sec-{s}"') for s in ("IV-C", "V-E", "Review-controls")]
    assert order == sorted(order)
    lines = html[html.index('id="summary"'):]
    assert lines.index('href="#sec-IV-C"') < lines.index('href="#sec-V-E"') < lines.index('href="#sec-Review-controls"')


def test_one_figure_per_plotted_experiment_beside_its_claims_with_paper_values(rendered):
    doc, html, _ = rendered
    assert list(doc["plots"]) == ["sweep[smoke]"]  # `missing` has no runs, so no figure
    figures = re.findall(r'<svg[^>]*id="(fig-[^"]+)"', html)
    # each figure twice, for a desktop and for a phone (the phone's: larger type, 4.2 inches wide)
    assert figures == ["fig-forest", "fig-forest-phone", "fig-sweep-smoke", "fig-sweep-smoke-phone"]
    phone = html[html.rindex("<svg", 0, html.index('id="fig-sweep-smoke-phone"')):]
    phone = phone[:phone.index("</svg>")]
    assert 'width="302.4pt"' in phone[:phone.index(">")] and "paper: test accuracy" in phone
    fig, exp_head = html.index('id="fig-sweep-smoke"'), html.index('id="exp-V-E-sweep-smoke"')
    first_card = html.index('id="sweep-bs16-smoke"')
    assert exp_head < fig < first_card
    svg = html[fig:html.index("</svg>", fig)]
    # the paper's values are drawn (legend entry, and listed in the SVG description), Adam and
    # full-batch GD apart from the log batch-size axis, whose ticks are the SGD batch sizes only
    assert "paper: test accuracy" in svg
    for s in ("paper, test accuracy at batch size 16: 90", "paper, test accuracy at batch size 64: 80",
              "paper, test accuracy at GD (full batch): 30", "Adam (batch 16)"):
        assert s in svg, s
    plot = doc["plots"]["sweep[smoke]"]
    assert [p["x"] for p in plot["series"][0]["points"]] == [16, 64]
    assert {a["label"] for a in plot["apart"]} == {"GD (full batch)", "Adam (batch 16)"}
    # 95% CI error bars, not std
    bs16 = plot["series"][0]["points"][0]
    assert bs16["lo"] < bs16["mean"] < bs16["hi"] and bs16["mean"] == pytest.approx(90.1)
    assert 'role="img" aria-labelledby="fig-sweep-smoke-title fig-sweep-smoke-desc"' in svg
    assert "<title id=\"fig-sweep-smoke-title\">V-E · Sweep: test accuracy (%) against batch size" in svg


def test_forest_rows_in_tolerance_units(rendered):
    doc, html, _ = rendered
    rows = {r["label"]: r for r in doc["forest"]}
    assert list(rows) == ["bs16", "bs64", "gd", "all-interpolate"]  # not the count, welch or not-run claims
    assert rows["bs64"]["z"] == pytest.approx(5.2) and rows["bs64"]["band"] == [-1.0, 1.0]
    assert rows["gd"]["z"] == pytest.approx((30.1667 - 30) / 5, abs=1e-4)
    # one-sided (>= 99.95, paper 100): units of the paper's distance to the bound, band [-1, unbounded)
    assert rows["all-interpolate"]["z"] == 0.0 and rows["all-interpolate"]["band"] == [-1.0, None]
    assert 'id="fig-forest"' in html and "bs64: +5.20 tol (fail)" in html


def test_page_is_valid_for_readers_and_tools(rendered):
    doc, html, _ = rendered
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), [i for i in set(ids) if ids.count(i) > 1]
    for ref in set(re.findall(r'(?:href="#|url\(#)([^")]+)', html)):
        assert ref in ids, ref
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<thead>" in html and "<caption>" in html and 'scope="col"' in html
    assert "<link" not in html and "src=" not in html  # self-contained


def _luminance(hex_colour):
    rgb = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_verdict_colours_meet_contrast_minimum():
    for verdict, colour in svg.COLOURS.items():
        ratio = 1.05 / (_luminance(colour) + 0.05)
        assert ratio >= 4.5, (verdict, colour, ratio)


def test_numbers_deltas_and_welch_in_words(rendered):
    doc, html, _ = rendered
    assert fmt.num(10020874.0) == "10,020,874" and fmt.num(94.454) == "94.45"
    assert fmt.num(3.31e-4, digits=2) == "3.3×10⁻⁴"
    # an estimate in the decimals its interval supports (the half-width to two significant digits)
    est = lambda v, lo, hi: fmt.estimate_text({"value": v, "ci": (lo, hi), "n": 5})  # noqa: E731
    assert est(63.46, 61.72, 65.30) == {"value": "63.5", "ci": "[61.7, 65.3]", "n": 5}
    assert est(21.1, 21.05, 21.15) == {"value": "21.10", "ci": "[21.05, 21.15]", "n": 5}
    assert est(99.99, 99.97, 100.0)["ci"] == "[99.97, 100.00]"  # never past four significant digits
    assert est(0.0068, 0.001, 0.02)["ci"] == "[0.0010, 0.0200]"
    assert "e+0" not in html and "e-0" not in html
    counted = next(c for c in doc["claims"] if c["id"] == "counted-claim")
    assert counted["measured_text"] == {"value": "10,020,874", "ci": "", "n": 3}  # no degenerate CI
    bs64 = next(c for c in doc["claims"] if c["id"] == "bs64")
    assert bs64["measured_text"]["value"] == "85.20 %" and bs64["paper_text"] == "80 %"
    assert bs64["deviation"] == "+5.20 pp (+6.5%), +5.20 tol"
    welch = next(c for c in doc["claims"] if c["id"] == "bigger-batch-better")
    # the decision is taken on the Holm-adjusted p, and that is the p the words quote
    assert welch["explanation"].startswith("significant, opposite direction (Holm-adjusted p = ")
    assert "test accuracy at optimizer = sgd, batch_size = 16 is 4.90 pp above batch_size = 64" in welch["explanation"]
    # the measured value appears in the card's always-visible line and once in its details (the
    # check's raw detail is not repeated)
    card = html[html.index('id="sweep-bs64-smoke"'):]
    card = card[:card.index("Per configuration")]
    assert card.count("85.20") == 2


def test_provenance_per_experiment_with_mixed_warning(rendered):
    doc, html, _ = rendered
    sweep = next(g for s in doc["sections"] for g in s["groups"] if g["experiment"] == "sweep")
    p = sweep["provenance"]
    assert p["runs"] == 12 and p["without"] == 4 and p["mixed"] == ["device"]
    assert p["device"] == ["NVIDIA H100 80GB HBM3", "cpu"] and p["dates"] == ["2026-11-20", "2026-11-21"]
    block = html[html.index('id="exp-V-E-sweep-smoke"'):html.index('id="sweep-bs16-smoke"')]
    assert "trained on NVIDIA H100 80GB HBM3, cpu" in block and "4 runs without recorded provenance" in block
    assert "Mixed provenance:</strong> this experiment's runs differ in device" in block


def test_report_without_provenance_or_with_one_device(tmp_path):
    claims, root = _project(tmp_path)
    plain = report.build(_results(claims, root), 1.0)  # before the recording exists: no run_provenance
    sweep = next(g for s in plain["sections"] for g in s["groups"] if g["experiment"] == "sweep")
    assert sweep["provenance"]["runs"] == 12 and sweep["provenance"]["without"] == 12
    one = report.build(_provenance(_results(claims, root), ["cpu"]), 1.0)
    sweep = next(g for s in one["sections"] for g in s["groups"] if g["experiment"] == "sweep")
    assert sweep["provenance"]["mixed"] == [] and "Mixed provenance" not in report.render(one)


def test_position_against_the_band_in_exact_numbers():
    assert checks.position({"target": 10.0, "abs_tol": 2.0}, 13.0) == \
        {"delta": 3.0, "rel": 0.3, "outside": 1.0, "units": 1.5}
    assert checks.position({"target": 10.0, "rel_tol": 0.5}, 7.5)["units"] == -0.5
    assert checks.position({"min": 1.0, "max": 3.0}, 2.5) == {"delta": None, "rel": None, "outside": 0.0, "units": 0.5}
    assert checks.position({"min": 99.5}, 99.0) == {"delta": None, "rel": None, "outside": -0.5, "units": None}
    assert checks.position({"target": 6514.0, "abs_tol": 0.0}, 6514.0)["units"] is None  # exact: no tolerance unit


def test_paper_order_and_log_ticks():
    names = ["Review controls", "V-F", "V-A / V-D", "IV-C", "V-B", "VI"]
    assert sorted(names, key=report.section_key) == ["IV-C", "V-A / V-D", "V-B", "V-F", "VI", "Review controls"]
    # log-y ticks reach past both ends of the data, so both ends are labelled
    assert svg._log_ticks(0.0831, 1.3413) == pytest.approx([0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
    assert svg._log_ticks(0.19, 2.24) == pytest.approx([0.1, 0.2, 0.5, 1.0, 2.0, 5.0])


def test_plot_apart_is_validated(tmp_path):
    bad = SWEEP.replace('logx = true}', 'logx = true, apart = {"GD" = {bogus = 1}}}')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(spec.SpecError, match=r"bad.toml: experiment 'sweep': field 'plot.apart.GD.bogus'"):
        spec.load(tmp_path / "bad.toml")


CONFTEST = """
import pytest
from harness.claims import plugin

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    plugin.state(config).ctx.allow_train = False  # the fixture cache only: nothing trains
"""


def test_pytest_skips_a_claim_whose_runs_are_not_cached(pytester, tmp_path):
    claims, root = _project(tmp_path)
    shutil.copytree(claims, pytester.path / "claims")
    pytester.makeconftest(CONFTEST)
    r = pytester.runpytest("claims", "-rs", "--run-cache", str(root), "--report", str(tmp_path / "r"))
    r.assert_outcomes(passed=4, failed=2, skipped=1)
    assert "not run (3 of 3 runs missing)" in r.stdout.str()
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert {c["id"]: c["verdict"] for c in doc["claims"]}["missing-claim"] == "not run"


BROWSER_PROBE = """<script>
window.addEventListener("load", function () {
  function shown(sel) {
    return Array.prototype.filter.call(document.querySelectorAll(sel), function (e) { return e.offsetParent !== null; }).length;
  }
  var out = {width: innerWidth, scroll: document.documentElement.scrollWidth,
             svgs: Array.prototype.map.call(document.querySelectorAll("figure svg"),
                                            function (s) { return s.getBoundingClientRect().width; }),
             forest_phone: document.getElementById("fig-forest-phone").getBoundingClientRect().width,
             forest_wide: document.getElementById("fig-forest").getBoundingClientRect().width,
             filter: !document.getElementById("filter-box").hidden, shown: {}};
  ["not-passed", "fail", "inconclusive", "not-run"].forEach(function (v) {
    document.querySelector('input[name=show][value="' + v + '"]').click();
    out.shown[v] = {pass: shown(".claim.pass"), fail: shown(".claim.fail"), notrun: shown(".claim.not-run"),
                    inconclusive: shown(".claim.inconclusive")};
  });
  var h = document.querySelector("article.claim h4");
  out.heading_font = parseFloat(getComputedStyle(h).fontSize);
  out.heading_in_summary = !!document.querySelector("summary h4");
  out.main = !!document.querySelector("main");
  parent.postMessage(JSON.stringify(out), "*");
});
</script></body>"""
# headless chromium's window is at least 500 px wide: the report is probed in a 390 px iframe
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="probe.html" width="390" height="800" style="border:0"></iframe>
<script>addEventListener("message", function (e) {
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = e.data; document.body.appendChild(pre);
});</script></body></html>"""


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless chromium installed (apt-get install chromium)")
def test_in_headless_browser_at_phone_width(rendered, tmp_path):
    """At 390 px the page does not scroll sideways (wide tables scroll in their own boxes), the
    figures fit, and the failures-only filter hides passing claims."""
    _, html, _ = rendered
    (tmp_path / "probe.html").write_text(html.replace("</body>", BROWSER_PROBE))
    (tmp_path / "frame.html").write_text(FRAME)
    p = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=800,900",
                        "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "frame.html").as_uri()],
                       capture_output=True, text=True, timeout=600)  # a safety net: takes seconds
    m = re.search(r'<pre id="probe">(.*?)</pre>', p.stdout)
    assert m, p.stderr[-2000:]
    out = json.loads(m.group(1).replace("&quot;", '"'))
    assert out["width"] == 390 and out["scroll"] <= out["width"], out
    visible = [w for w in out["svgs"] if w]  # the desktop forest is hidden (width 0)
    assert len(visible) == 2 and all(w <= out["width"] for w in visible), out
    # at phone width the phone forest shows, not the desktop one
    assert out["forest_phone"] > 0 and out["forest_wide"] == 0, out
    # the filter separates fail, inconclusive and not run
    assert out["filter"], out
    assert out["shown"]["not-passed"] == {"pass": 0, "fail": 2, "notrun": 1, "inconclusive": 0}, out
    assert out["shown"]["fail"] == {"pass": 0, "fail": 2, "notrun": 0, "inconclusive": 0}, out
    assert out["shown"]["not-run"] == {"pass": 0, "fail": 0, "notrun": 1, "inconclusive": 0}, out
    assert out["shown"]["inconclusive"] == {"pass": 0, "fail": 0, "notrun": 0, "inconclusive": 0}, out
    # landmarks: a <main>, claim headings outside <summary> (reachable by heading navigation)
    assert out["main"] and not out["heading_in_summary"], out


# ---------------------------------------------------------------- report v3: findings, not run, readings


def _built(results):
    return report.build(copy.deepcopy(results), 1.0)


def _findings_text(doc):
    return " ".join(doc["findings"]["overall"] + [l for s in doc["findings"]["sections"] for l in s["lines"]])


@pytest.fixture(scope="module")
def fixture_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("findings")
    claims, root = _project(tmp)
    return _results(claims, root)


def test_build_leaves_its_input_untouched(fixture_results):
    """build works on a copy: the records it is given (primary and other readings, with their run
    wall times and provenance) are equal afterwards to a deep copy taken before."""
    results = _provenance(copy.deepcopy(fixture_results), ["cpu", None])
    other = copy.deepcopy(next(r for r in results if r["id"] == "bs16"))
    results.append({**other, "reading_id": "epochs=2", "reading_values": {"epochs": 2}})
    before = copy.deepcopy(results)
    doc = report.build(results, 1.0)
    assert results == before
    assert doc["claims"] and all("run_wall_s" not in r for r in doc["claims"])


def test_findings_are_generated_from_the_results(fixture_results):
    """Two sets of results, two different answers: nothing in the findings is written for one run."""
    one = _built(fixture_results)
    text = _findings_text(one)
    # training-free claims counted apart from the trained ones
    assert "Of the 5 claims measured on trained models, 3 reproduce and 2 do not." in one["findings"]["overall"][0]
    assert "1 training-free claim (counted from the architecture, nothing trained): all pass." in text
    # a miss in words, with the measured value against the paper's and by how much
    assert "Batch 64 reaches 80% test accuracy: measured 85.20 % against the paper's 80 % (+5.20 pp)." in text
    assert "Not run: 1 claim of missing (3 of 3 runs missing" in text and "PFLOP" in text
    # the same project with bs64 measured inside its band, and the Welch test passing
    other = copy.deepcopy(fixture_results)
    for r in other:
        if r["id"] == "bs64":
            r.update(verdict="pass", measured={**r["measured"], "value": 80.2, "ci": [80.0, 80.4]})
        if r["id"] == "bigger-batch-better":
            r["verdict"] = "pass"
    two = _built(other)
    text2 = _findings_text(two)
    assert "Of the 5 claims measured on trained models, 5 reproduce and 0 do not." in two["findings"]["overall"][0]
    assert "Batch 64 reaches 80% test accuracy: measured" not in text2
    assert text != text2


def test_a_constant_factor_is_named(fixture_results):
    """Three or more misses of one metric in one direction are summarised; with a passing ratio on
    that metric the summary says the level misses and the trend holds."""
    rs = copy.deepcopy(fixture_results)
    base = next(r for r in rs if r["id"] == "gd")
    made = []
    for i, (pv, v) in enumerate([(1.0, 1.45), (2.0, 2.9), (4.0, 5.9)]):
        made.append({**copy.deepcopy(base), "id": f"mv{i}", "statement": f"movement {i}", "paper_value": pv,
                     "check": {"type": "value", "metric": "movement", "where": {"batch_size": 0}},
                     "expect": {"target": pv, "rel_tol": 0.1, "why": "w"}, "verdict": "fail",
                     "measured": {"value": v, "std": 0.01, "ci": [v - 0.01, v + 0.01], "n": 3}})
    made.append({**copy.deepcopy(base), "id": "mv-ratio", "statement": "ratio", "paper_value": 2.0,
                 "check": {"type": "ratio", "metric": "movement", "a": {}, "b": {}},
                 "expect": {"target": 2.0, "rel_tol": 0.1, "why": "w"}, "verdict": "pass",
                 "measured": {"value": 2.0, "std": 0.01, "ci": [1.99, 2.01], "n": 3}})
    text = _findings_text(_built(rs + made))
    assert "Relative parameter movement (sweep) misses the paper in 3 claims, every one above it, by 45% to 48%" in text
    assert "while its ratio passes: the same factor at every configuration (about ×1.46)" in text


def test_inconclusive_is_a_verdict_everywhere(fixture_results):
    rs = copy.deepcopy(fixture_results)
    for r in rs:
        if r["id"] == "gd":
            r.update(verdict="inconclusive", seeds_needed=12)
    doc = _built(rs)
    html = report.render(doc)
    assert report.VERDICTS == ("pass", "fail", "inconclusive", "diverged", "error", "not run")
    assert doc["totals"]["inconclusive"] == 1 and doc["evaluated"] == 6
    assert '<article class="claim inconclusive"' in html and 'class="verdict inconclusive"' in html
    assert "about 12 seeds would settle it" in html
    assert 'value="inconclusive"> inconclusive (1)' in html
    assert "1 inconclusive" in report.headline(doc)
    assert "gd: +0.03 tol (inconclusive)" in html  # in the forest, with its own marker
    assert len(set(svg.MARKERS.values())) == len(svg.MARKERS)  # one shape per verdict
    assert "Inconclusive (the 95% interval straddles a band edge): gd; about 12 seeds" in _findings_text(doc)


def test_not_run_per_experiment_with_command_and_cost(rendered):
    doc, html, _ = rendered
    (e,) = doc["waiting"]
    assert e["experiment"] == "missing" and e["missing"]["runs"] == 3 and e["missing"]["of"] == 3
    assert e["command"].endswith("missing.toml -m smoke") and e["command"].startswith("pytest ")
    assert e["missing"]["pflop"] > 0 and "PFLOP" in e["missing"]["pflop_text"]
    block = html[html.index('id="not-run"'):html.index('id="glance"')]
    assert "no rate measured for this model" in block and e["command"] in block  # a CPU fixture: no GPU rate
    # the forest says what it leaves out
    left = {x["reason"]: x["ids"] for x in doc["forest_left_out"]}
    assert left["not run (nothing measured)"] == ["missing-claim"]
    assert "bigger-batch-better" in left["tests of direction or significance (no tolerance)"]
    assert "Not drawn (3 claims)" in html


def test_declared_readings_cost_and_command():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    exp = spec.load(root / "claims" / "ntk.toml").experiments["ntk_mlp"]
    plan = plans.experiment_plan(exp, "claims/ntk.toml", "full")
    rs = {x["name"]: x for x in plan["readings"]}
    assert len(rs) == len(exp.readings("full")) - 1
    assert rs["epochs=30"]["command"] == "pytest claims/ntk.toml -m full --gpu --readings epochs=30"
    assert rs["epochs=30"]["runs"] > 0 and rs["epochs=30"]["pflop"] > 0
    assert rs["movement=weights"]["runs"] == 0  # an instrument option trains nothing new
    assert plan["runs"] > 0 and plan["procedure"] == "train"


def test_a_run_two_readings_share_counts_once():
    """The report's reading costs and `python -m harness plan`'s follow one rule (plans.reading_runs):
    a run that several readings (or experiments) share counts once."""
    from pathlib import Path
    from harness.__main__ import plan_readings
    root = Path(__file__).resolve().parents[1]
    exp = spec.load(root / "claims" / "ntk.toml").experiments["ntk_mlp"]
    rs = {x["name"]: x for x in plans.experiment_plan(exp, "claims/ntk.toml", "full")["readings"]}
    # epochs=20 trains 40 new runs; measuring them with another movement definition trains nothing more
    assert rs["epochs=20"]["runs"] == 40 and rs["epochs=20,movement=weights"]["runs"] == 0
    seen = plans.primary_keys(exp, "full")
    counted = [len(runs) for _, runs in plans.reading_runs(exp, "full", seen)]
    assert sum(counted) == sum(x["runs"] for x in rs.values())
    printed = {r["reading"]: r["runs"] for r in plan_readings(root / "claims", "full", set())
               if r["experiment"] == "ntk.toml:ntk_mlp"}
    assert printed == {name: x["runs"] for name, x in rs.items()}


def test_units_and_wording(rendered):
    doc, html, _ = rendered
    claims = {c["id"]: c for c in doc["claims"]}
    assert claims["bigger-batch-better"]["expected_text"] == (
        "test accuracy at (batch_size = 64) significantly above (optimizer = sgd, batch_size = 16) (Welch t-test, Holm-adjusted p < 0.05)")
    assert "a greater" not in html
    assert claims["bs16"]["expected_text"] == "90 % ± 1 pp"
    assert claims["all-interpolate"]["expected_text"] == "at least 99.95 %"
    assert "counted from the architecture" in html  # not "n = 1 seed" on a count
    counted = html[html.index('id="counts-counted-claim-smoke"'):]
    assert "seed" not in counted[:counted.index("</tr>")]
    # table and headline CI use the value's decimals
    t = claims["bs64"]["table"][0]
    assert t["ci_text"].count(".") == 2 and t["value_text"] == "85.20"
    # where the runs were trained, apart from where the page was rendered
    assert 'id="trained-where"' in html and 'id="rendered-where"' in html
    assert '<a href="results.json">' in html


def test_interval_names_come_from_the_estimates(rendered):
    """Captions name the interval the estimates carry (stats.Estimate.method), never a bootstrap."""
    doc, html, _ = rendered
    assert "bootstrap" not in html
    plot = doc["plots"]["sweep[smoke]"]
    assert plot["interval"] == "Student t" and "bars: 95% Student t CI." in plot["legend"]
    assert {row["interval"] for row in doc["forest"]} == {"Student t"} and doc["forest_interval"] == "Student t"
    assert "bar: the claim's 95% CI over seeds (Student t, as its estimate)" in html
    from harness.claims import figures, stats
    assert stats.ratio([2.0, 2.2], [1.0, 1.1]).interval == "Fieller"
    assert figures.interval_names(["Welch", "Student t", "Fieller", "Welch"]) == "Fieller, Student t or Welch"


HEIGHT_PROBE = """<script>addEventListener("load", function () {
  var o = {h: document.documentElement.scrollHeight, w: document.documentElement.scrollWidth, iw: innerWidth};
  if (parent !== window) { parent.postMessage(JSON.stringify(o), "*"); }
  else { var p = document.createElement("pre"); p.id = "probe"; p.textContent = JSON.stringify(o); document.body.appendChild(p); }
});</script></body>"""


def _page_size(tmp_path, html, phone):
    (tmp_path / "probe.html").write_text(html.replace("</body>", HEIGHT_PROBE))
    (tmp_path / "frame.html").write_text(FRAME)
    page = tmp_path / ("frame.html" if phone else "probe.html")
    p = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1440,900",
                        "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=600)
    m = re.search(r'<pre id="probe">(.*?)</pre>', p.stdout)
    assert m, p.stderr[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"'))


FULL = Path(__file__).resolve().parents[1] / "reports" / "full" / "report.html"


@pytest.mark.skipif(_browser() is None, reason="no headless chromium installed (apt-get install chromium)")
@pytest.mark.skipif(not FULL.exists(), reason="no committed full report")
def test_full_report_height_as_loaded(tmp_path):
    """The committed full report, as loaded: at most 20,000 px tall at 1440 px and 40,000 px at
    390 px, and no sideways scroll at 390 px."""
    html = FULL.read_text()
    wide = _page_size(tmp_path, html, phone=False)
    assert wide["h"] <= 20000, wide
    phone = _page_size(tmp_path, html, phone=True)
    assert phone["iw"] == 390 and phone["h"] <= 40000 and phone["w"] <= 390, phone
