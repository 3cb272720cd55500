"""The pytest plugin end to end, in a scratch directory (pytester), on real MNIST."""
import json
import textwrap
import types

import pytest

from conftest import real_data_dir

CLAIMS = """
section = "T"
title = "Plugin test"

[experiments.tiny]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {{train_subset = 512, test_subset = 256, epochs = 4, batch_size = 16, lr = 0.05}}
grid = {{width = [16]}}
plot = {{x = "width", y = ["train_acc", "test_acc"]}}
smoke = {{seeds = [0, 1]}}

[experiments.count]
procedure = "count"
dataset = "mnist"
model = "mlp"
grid = {{width = [8]}}
smoke = {{seeds = [0]}}
full = {{seeds = [0]}}

[[claims]]
id = "learns"
statement = "{statement}"
paper = "more than chance"
experiment = "tiny"
check = {{type = "value", metric = "train_acc", where = {{width = 16}}}}
disagreements = ["a disagreement to show"]
[claims.smoke]
expect = {{min = {threshold}, why = "chance is 10%"}}

[[claims]]
id = "count"
statement = "count"
paper = "6,514"
experiment = "count"
check = {{type = "value", metric = "params", where = {{width = 8}}}}
[claims.smoke]
expect = {{target = 6514.0, abs_tol = 0.0, why = "exact"}}
[claims.full]
expect = {{target = 6514.0, abs_tol = 0.0, why = "exact"}}
"""


@pytest.fixture
def project(pytester, data_dir, tmp_path):
    def make(threshold=30.0, statement="the MLP learns <b>something</b>"):
        pytester.mkdir("claims") if not (pytester.path / "claims").exists() else None
        (pytester.path / "claims" / "t.toml").write_text(CLAIMS.format(threshold=threshold, statement=statement))
        return ["--data-dir", str(data_dir), "--run-cache", str(tmp_path / "cache"),
                "--report", str(tmp_path / "report")]
    return make


def test_claims_are_collected_with_tier_markers(pytester, project):
    args = project()
    r = pytester.runpytest("claims", "--collect-only", "-q", *args)
    out = r.stdout.str()
    assert "claims/t.toml::learns[smoke]" in out and "claims/t.toml::count[full]" in out
    r = pytester.runpytest("claims", "--collect-only", "-q", "-m", "full", *args)
    assert "count[full]" in r.stdout.str() and "learns[smoke]" not in r.stdout.str()


def test_smoke_run_writes_report_and_second_run_hits_the_cache(pytester, project, tmp_path):
    args = project()
    r = pytester.runpytest("claims", "-m", "smoke", *args)
    r.assert_outcomes(passed=2)
    doc = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {c["id"] for c in doc["claims"]} == {"learns", "count"}
    learns = next(c for c in doc["claims"] if c["id"] == "learns")
    assert learns["measured"]["n"] == 2 and learns["verdict"] == "pass"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "learns" in html and "count" in html and "<svg" in html
    assert "&lt;b&gt;something&lt;/b&gt;" in html and "<b>something</b>" not in html  # autoescaped
    assert "a disagreement to show" in html
    runs = sorted((tmp_path / "cache" / "runs").glob("*/metrics.json"))
    mtimes = [p.stat().st_mtime_ns for p in runs]
    assert len(runs) == 2
    r = pytester.runpytest("claims", "-m", "smoke", *args)
    r.assert_outcomes(passed=2)
    assert [p.stat().st_mtime_ns for p in runs] == mtimes  # nothing retrained


def test_failing_claim_shows_paper_measured_expectation_and_why(pytester, project):
    args = project(threshold=101.0)
    r = pytester.runpytest("claims", "-m", "smoke", "-k", "learns", *args)
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    for s in ("FAIL", "paper:    more than chance", "train_acc =", ">= 101", "why:      chance is 10%",
              "paper disagreement: a disagreement to show"):
        assert s in out, s


def test_bad_claim_file_is_a_collection_error_naming_file_claim_field(pytester, project):
    args = project()
    text = (pytester.path / "claims" / "t.toml").read_text().replace('metric = "params"', 'metric = "flops"')
    (pytester.path / "claims" / "t.toml").write_text(text)
    r = pytester.runpytest("claims", *args)
    out = r.stdout.str()
    assert r.ret != 0 and "t.toml" in out and "claim 'count'" in out and "'check.metric'" in out


def test_missing_dataset_is_a_clear_claim_error(pytester, project, tmp_path):
    args = project()
    args[1] = str(tmp_path / "nowhere")
    r = pytester.runpytest("claims", "-m", "smoke", "-k", "learns", *args)
    r.assert_outcomes(failed=1)
    assert "nowhere/mnist.npz" in r.stdout.str()


def test_gpu_without_cuda_is_a_usage_error(pytester, project):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    r = pytester.runpytest("claims", "--gpu", *project())
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "--gpu was given but CUDA is not available" in r.stderr.str()


def test_report_rerenders_from_cache_without_training(pytester, project, tmp_path):
    import subprocess
    import sys
    args = project()
    pytester.runpytest("claims", "-m", "smoke", *args).assert_outcomes(passed=2)
    out = tmp_path / "rerender"
    p = subprocess.run([sys.executable, "-m", "harness", "report", "--claims", str(pytester.path / "claims"),
                        "--run-cache", str(tmp_path / "cache"), "--data-dir", args[1], "--tier", "smoke",
                        "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "results.json").read_text())
    assert {c["verdict"] for c in doc["claims"]} == {"pass"}
    # the training time recorded with the runs survives re-rendering without training
    walls = [json.loads(m.read_text())["wall_s"] for m in (tmp_path / "cache" / "runs").glob("*/metrics.json")]
    assert doc["training_seconds_total"] == pytest.approx(sum(walls)) and sum(walls) > 0
    assert "Training time recorded with the runs" in (out / "report.html").read_text()
    from harness.runs import cache
    cache.RunCache(tmp_path / "other").save("k", {})  # a cache without these runs
    p = subprocess.run([sys.executable, "-m", "harness", "report", "--claims", str(pytester.path / "claims"),
                        "--run-cache", str(tmp_path / "other"), "--data-dir", args[1], "--tier", "smoke",
                        "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr  # like pytest: claims not run are skips, not failures
    doc = json.loads((out / "results.json").read_text())
    learns = next(c for c in doc["claims"] if c["id"] == "learns")
    assert learns["verdict"] == "not run" and learns["detail"] == "not run (2 of 2 runs missing)"


DIVERGING = """
section = "T"
title = "Divergence"

[experiments.blowup]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 256, test_subset = 256, width = 16, epochs = 2, batch_size = 32, lr = 1e6}
smoke = {seeds = [0]}

[[claims]]
id = "blows-up"
statement = "a run at lr 1e6"
paper = "-"
experiment = "blowup"
check = {type = "value", metric = "train_acc", where = {width = 16}}
[claims.smoke]
expect = {max = 100.0, why = "any finite accuracy would pass; a diverged run must not"}
"""


def test_a_diverged_run_is_reported_as_diverged_not_passed(pytester, data_dir, tmp_path):
    pytester.mkdir("claims")
    (pytester.path / "claims" / "d.toml").write_text(DIVERGING)
    r = pytester.runpytest("claims", "--data-dir", str(data_dir), "--run-cache", str(tmp_path / "c"),
                           "--report", str(tmp_path / "r"))
    r.assert_outcomes(failed=1)
    assert "DIVERGED" in r.stdout.str()
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["claims"][0]["verdict"] == "diverged" and doc["totals"] == {"diverged": 1}


def test_a_spent_time_budget_leaves_claims_not_run_and_trains_nothing(pytester, project, tmp_path):
    args = project()
    r = pytester.runpytest("claims", "-m", "smoke", "-rs", "--time-budget", "0", *args)
    r.assert_outcomes(passed=1, skipped=1)  # the parameter count needs no training
    assert "not run (2 of 2 runs missing): not run:" in r.stdout.str() and "time budget" in r.stdout.str()
    assert not list((tmp_path / "cache").glob("runs/*/metrics.json"))
    doc = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {c["id"]: c["verdict"] for c in doc["claims"]} == {"learns": "not run", "count": "pass"}


def test_a_claim_file_outside_a_claims_folder_runs_when_named_and_is_explained_when_not(pytester, project):
    args = project()
    pytester.mkdir("mine")
    (pytester.path / "mine" / "t.toml").write_text((pytester.path / "claims" / "t.toml").read_text())
    r = pytester.runpytest("mine/t.toml", "--collect-only", "-q", *args)
    assert "mine/t.toml::learns[smoke]" in r.stdout.str()
    r = pytester.runpytest("mine", "--collect-only", "-q", *args)
    assert r.ret == 5 and "are not claim files here: claims are collected from folders named `claims`" in r.stdout.str()
    (pytester.path / "mine" / "other.toml").write_text("[tool]\nx = 1\n")
    r = pytester.runpytest("mine/other.toml", "--collect-only", "-q", *args)
    assert "other.toml: file: field 'tool': unknown key" in r.stdout.str()


def test_inline_progress_lines_only_with_verbose_so_that_they_do_not_break_the_dots(pytester, project):
    args = project()
    r = pytester.runpytest("claims", "-m", "smoke", "--refresh", *args)
    out = r.stdout.str()
    assert "[harness]" not in out and "claims/t.toml .." in out  # one line of dots for the file
    r = pytester.runpytest("claims", "-m", "smoke", "--refresh", "-v", *args)
    assert "[harness] start group 1/1 t.toml:tiny [smoke] seeds, 2 run(s)" in r.stdout.str()


def test_an_inconclusive_claim_has_its_own_word_letter_and_count_and_exit_status_0(pytester, project, tmp_path):
    args = project()
    (pytester.path / "conftest.py").write_text(  # the claim's interval straddles its band edge
        "from harness.claims import checks\nreal = checks.evaluate\n"
        "def undecided(check, expect, rows, **kw):\n"
        "    out = real(check, expect, rows, **kw)\n"
        "    if check['metric'] == 'train_acc':\n"
        "        out.update(verdict='inconclusive', seeds_needed=7, detail='inconclusive: straddles 30')\n"
        "    return out\n"
        "checks.evaluate = undecided\n")
    # in a subprocess: this test's conftest.py patches a harness module (tests/conftest.py)
    r = pytester.runpytest_subprocess("claims", "-m", "smoke", *args)
    out = r.stdout.str()
    summary = out.strip().splitlines()[-1]
    assert r.ret == 0 and "1 passed" in summary and "1 inconclusive" in summary, out
    assert "claims/t.toml I." in out  # its own letter among the dots
    assert "inconclusive claims (more seeds would decide them)" in out
    assert "t.toml::learns[smoke]: inconclusive: straddles 30" in out
    r = pytester.runpytest_subprocess("claims", "-m", "smoke", "-v", *args)
    assert "t.toml::learns[smoke] INCONCLUSIVE" in r.stdout.str()
    doc = json.loads((tmp_path / "report" / "results.json").read_text())
    assert doc["totals"] == {"pass": 1, "inconclusive": 1}


def _one_epoch_experiment(folder, name: str, width: int, claims: tuple = ("c",)) -> None:
    """claims/NAME.toml: an MLP of `width` trained one epoch on 64 images, and claims (ids given)
    that it ran one epoch."""
    text = textwrap.dedent(f"""
        section = "{name}"
        title = "t"
        [experiments.e]
        procedure = "train"
        dataset = "mnist"
        model = "mlp"
        base = {{train_subset = 64, test_subset = 64, width = {width}, epochs = 1, batch_size = 32}}
        smoke = {{seeds = [0]}}
        """)
    for cid in claims:
        text += textwrap.dedent(f"""
            [[claims]]
            id = "{cid}"
            statement = "s"
            paper = "-"
            experiment = "e"
            check = {{type = "value", metric = "epochs_run"}}
            [claims.smoke]
            expect = {{target = 1, abs_tol = 0, why = "w"}}
            """)
    (folder / f"{name}.toml").write_text(text)


def test_xdist_workers_take_the_costliest_experiments_first(pytester):
    """In an xdist worker, claims are ordered by their experiment's training FLOPs (longest first),
    the other items after them in their order; outside xdist the files' order stays."""
    from harness.claims import plugin
    d = pytester.path / "claims"
    d.mkdir()
    for name, width in (("a_small", 4), ("b_large", 64)):
        _one_epoch_experiment(d, name, width)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    items = pytester.inline_genitems("claims", "test_x.py", "-m", "smoke or not full")[0]
    names = [i.nodeid for i in items]
    assert names == ["claims/a_small.toml::c[smoke]", "claims/b_large.toml::c[smoke]", "test_x.py::test_x"]
    worker = types.SimpleNamespace(workerinput={}, getvalue=lambda name: False)
    plugin.pytest_collection_modifyitems(None, worker, items)
    assert [i.nodeid for i in items] == ["claims/b_large.toml::c[smoke]", "claims/a_small.toml::c[smoke]",
                                         "test_x.py::test_x"]
    again = items[::-1]
    plugin.pytest_collection_modifyitems(None, types.SimpleNamespace(), again)  # not a worker: unchanged
    assert again == items[::-1]


def test_xdist_hands_out_groups_costliest_first_not_by_their_number_of_claims(pytester):
    """xdist's loadgroup sorts groups by their number of items unless told not to; the costly
    experiment with one claim must still run before the cheap one with three."""
    d = pytester.path / "claims"
    d.mkdir()
    for name, width, n in (("cheap", 4, 3), ("costly", 64, 1)):
        _one_epoch_experiment(d, name, width, tuple(f"c{i}" for i in range(n)))
    r = pytester.runpytest("claims", "-m", "smoke", "-n", "1", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
                           "--data-dir", str(real_data_dir()), "--run-cache", str(pytester.path / "cache"))
    r.assert_outcomes(passed=4)
    order = [line.split("PASSED ")[1].split("::")[0] for line in r.outlines if "PASSED claims/" in line]
    assert order == ["claims/costly.toml"] + ["claims/cheap.toml"] * 3, order


def test_under_loadgroup_the_claims_of_one_experiment_run_on_one_worker(pytester):
    """pytest-xdist marks an item's group in a way pytest 9 no longer reads; the plugin mends it,
    so each experiment's claims share a worker (and its run-cache locks never make one wait)."""
    d = pytester.path / "claims"
    d.mkdir()
    claims = "".join(f"""
        [[claims]]
        id = "c{i}"
        statement = "s"
        paper = "-"
        experiment = "{exp}"
        check = {{type = "value", metric = "params", where = {{width = 8}}}}
        [claims.smoke]
        expect = {{target = 6514, abs_tol = 0, why = "w"}}
        """ for i, exp in enumerate(["e", "f", "e", "f", "e", "f"]))
    (d / "g.toml").write_text(textwrap.dedent("""
        section = "G"
        title = "t"
        [experiments.e]
        procedure = "count"
        dataset = "mnist"
        model = "mlp"
        grid = {width = [8]}
        smoke = {seeds = [0]}
        [experiments.f]
        procedure = "count"
        dataset = "mnist"
        model = "mlp"
        grid = {width = [8]}
        smoke = {seeds = [0]}
        """) + textwrap.dedent(claims))
    r = pytester.runpytest("claims", "-m", "smoke", "-n", "2", "--dist", "loadgroup", "-v",
                           "-p", "no:cacheprovider")
    r.assert_outcomes(passed=6)
    workers = {}
    for line in r.outlines:
        if "PASSED claims/g.toml::" in line:
            assert line.rstrip().endswith(("@claims/g.toml:e:smoke", "@claims/g.toml:f:smoke")), line
            workers.setdefault(line.rstrip()[-7], set()).add(line.split("]")[0])
    assert len(workers) == 2 and all(len(w) == 1 for w in workers.values()), workers


def test_experiments_that_share_runs_form_one_xdist_group(pytester):
    """Two experiments (in two files) that share a run are one xdist group, so the run trains in
    one worker; an experiment sharing nothing keeps its own group. The merged group's cost counts
    the shared run once, and within it the costlier experiment goes first."""
    from harness.claims import plugin, xdist_order
    d = pytester.path / "claims"
    d.mkdir()
    for name, widths in (("a", "[8]"), ("b", "[8, 32]"), ("c", "[16]")):
        (d / f"{name}.toml").write_text(textwrap.dedent(f"""
            section = "{name}"
            title = "t"
            [experiments.e]
            procedure = "train"
            dataset = "mnist"
            model = "mlp"
            base = {{train_subset = 64, test_subset = 64, epochs = 1, batch_size = 32}}
            grid = {{width = {widths}}}
            smoke = {{seeds = [0]}}
            [[claims]]
            id = "c"
            statement = "s"
            paper = "-"
            experiment = "e"
            check = {{type = "all", metric = "epochs_run"}}
            [claims.smoke]
            expect = {{min = 1, max = 1, why = "w: it reads every configuration of its experiment"}}
            """))
    items = pytester.inline_genitems("claims", "-m", "smoke")[0]
    groups = xdist_order.run_groups(items)
    by_file = {i.nodeid.split("::")[0]: groups[i] for i in items}
    assert by_file["claims/a.toml"][0] == by_file["claims/b.toml"][0] == "claims/a.toml:e:smoke+claims/b.toml:e:smoke"
    assert by_file["claims/c.toml"][0] == "claims/c.toml:e:smoke"
    from harness.runs import expand
    (b,) = [i for i in items if i.nodeid.startswith("claims/b.toml")]
    assert by_file["claims/a.toml"][1] == by_file["claims/b.toml"][1] == by_file["claims/b.toml"][2] == sum(
        expand.training_cost(c)["flops"] for c in expand.training_runs(b.exp, "smoke", "cpu", b.reading))
    worker = types.SimpleNamespace(workerinput={}, getvalue=lambda name: name == "loadgroup")
    plugin.pytest_collection_modifyitems(None, worker, items)
    # a and b (widths 8 and 32) cost more than c (width 16): their group first, b (the costlier) first in it
    assert [i.nodeid for i in items] == [f"claims/{f}.toml::c[smoke]@{g}" for f, g in
                                         (("b", by_file["claims/a.toml"][0]), ("a", by_file["claims/a.toml"][0]),
                                          ("c", "claims/c.toml:e:smoke"))]
