"""The planning step: groups and keys from claims alone, deduplicated across experiments, in a stable
order, a ticket chain as one group, pending detection against the cache, and --plan-only."""
import re

import pytest

from harness.execute import planner
from harness.runs import cache
from harness.runs.keys import run_key
from harness.claims import checks, spec
from harness import procedures
from harness.runs.expand import expand
from harness.runs.context import Context

TOML = """
section = "T"
title = "Planner"

[experiments.a]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 128, test_subset = 64, epochs = 2, batch_size = 32, lr = 0.05}
grid = {width = [8, 16]}
smoke = {seeds = [0, 1]}

[experiments.b]  # shares a's width-16 runs, adds width 32
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 128, test_subset = 64, epochs = 2, batch_size = 32, lr = 0.05}
grid = {width = [32, 16]}
smoke = {seeds = [0, 1]}

[experiments.tk]
procedure = "ticket"
dataset = "mnist"
model = "mlp"
base = {train_subset = 128, test_subset = 64, width = 8, epochs = 2, batch_size = 32, lr = 0.05}
ticket = {fractions = [0.5, 0.2], retrain_epochs = 1, control_fractions = [0.2], controls = ["reinit", "random"]}
smoke = {seeds = [0, 1]}

[experiments.n]
procedure = "count"
dataset = "mnist"
model = "mlp"
grid = {width = [8]}
smoke = {seeds = [0]}

[[claims]]
id = "a"
statement = "a"
paper = "-"
experiment = "a"
check = {type = "value", metric = "train_acc", where = {width = 16}}
[claims.smoke]
expect = {min = 0.0, why = "any"}

[[claims]]
id = "b"
statement = "b"
paper = "-"
experiment = "b"
check = {type = "value", metric = "train_acc", where = {width = 32}}
[claims.smoke]
expect = {min = 0.0, why = "any"}
"""


@pytest.fixture
def exps(tmp_path):
    (tmp_path / "claims").mkdir()
    p = tmp_path / "claims" / "p.toml"
    p.write_text(TOML)
    return spec.load(p).experiments


def test_groups_dedup_across_experiments_in_a_stable_order(exps):
    sel = [(exps["a"], "smoke"), (exps["b"], "smoke"), (exps["a"], "smoke"), (exps["n"], "smoke")]
    gs = planner.groups(sel, "cpu")
    assert [(g.experiments, [c.width for c in g.cfgs]) for g in gs] == [
        (("p.toml:a",), [8, 8]), (("p.toml:a", "p.toml:b"), [16, 16]), (("p.toml:b",), [32, 32])]
    keys = [k for g in gs for k in g.keys]
    assert len(keys) == len(set(keys)) == 6
    assert keys == [run_key(c) for g in gs for c in g.cfgs]
    assert planner.groups(sel, "cpu") == gs  # stable
    assert gs[0].steps == 2 * 2 * 4 and gs[0].flops > 0  # 2 runs x 2 epochs x 128/32 steps
    assert planner.groups(sel, "cuda")[0].keys == gs[0].keys  # what is trained, not where: the same runs


def test_ticket_chain_is_one_group_with_the_keys_the_chain_trains(exps, tmp_path, data_dir):
    ctx = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "cache"))
    [g] = planner.pending([(exps["tk"], "smoke")], ctx.cache, "cpu")
    assert g.kind == "ticket chain" and [c.seed for c in g.cfgs] == [0, 1]
    assert len(g.keys) == 2 * (1 + 2 + 2)  # seeds x (dense, two rounds, two controls)
    rows = procedures.rows(exps["tk"], "smoke", ctx)
    assert set(g.keys) == {r["key"] for r in rows}
    assert planner.pending([(exps["tk"], "smoke")], ctx.cache, "cpu") == []
    # a chain with one run missing is pending whole, costed by the fraction missing
    ctx.cache.invalidate(g.keys[-1])
    [again] = planner.pending([(exps["tk"], "smoke")], ctx.cache, "cpu")
    assert again.keys == g.keys and again.flops == pytest.approx(g.flops / 10)


def test_pending_keeps_the_missing_runs_of_a_seed_group(exps, tmp_path):
    c = cache.RunCache(tmp_path / "cache")
    sel = [(exps["a"], "smoke")]
    first = planner.pending(sel, c, "cpu")
    c.save(first[1].keys[0], {"done": True})
    c.save(first[0].keys[0], {"done": True})
    c.save(first[0].keys[1], {"done": True})
    [g] = planner.pending(sel, c, "cpu")
    assert g.keys == first[1].keys[1:] and [x.seed for x in g.cfgs] == [1] and g.steps == first[1].steps / 2
    assert len(planner.pending(sel, c, "cpu", refresh=True)) == 2


def test_plan_only_lists_pending_groups_and_runs_no_claim(pytester, exps, tmp_path, data_dir):
    pytester.mkdir("claims")
    (pytester.path / "claims" / "p.toml").write_text(TOML)
    args = ["--data-dir", str(data_dir), "--run-cache", str(tmp_path / "c"), "--report", str(tmp_path / "r")]
    r = pytester.runpytest("claims", "--plan-only", *args)
    assert r.ret == 0
    out = r.stdout.str()
    # only what the claims read: a's width 16, b's width 32 (b's width 16 is a's run; width 8 no claim reads)
    assert "pending: 2 group(s), 4 run(s)" in out and "[1] p.toml:a [smoke] seeds, 2 run(s)" in out
    for g in planner.groups([(exps["a"], "smoke", None, ({"width": 16},)),
                             (exps["b"], "smoke", None, ({"width": 32},))], "cpu"):
        assert " ".join(g.keys) in out
    assert "passed" not in out and not (tmp_path / "c" / "runs").exists() and not (tmp_path / "r").exists()



def test_plan_pending_on_the_command_line(exps, tmp_path, capsys):
    from harness.__main__ import main
    assert main(["plan", "--pending", "--tier", "smoke", "--claims", str(tmp_path / "claims"),
                 "--run-cache", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    # what the claims read: a's width 16 and b's width 32; no claim reads the ticket chain
    assert out.startswith("pending: 2 group(s), 4 run(s)")
    assert "[2] p.toml:b [smoke] seeds, 2 run(s): mnist/mlp width=32" in out


SIX = """
section = "T"
title = "Six widths"

[experiments.w]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 64, test_subset = 32, epochs = 1, batch_size = 32, lr = 0.05}
grid = {width = [2, 4, 8, 16, 32, 64]}
smoke = {seeds = [0, 1]}

[[claims]]
id = "peak"
statement = "peak"
paper = "-"
experiment = "w"
check = {type = "welch", metric = "test_acc", a = {width = 4}, b = {width = 8}}
[claims.smoke]
expect = {significant = true, direction = "greater", why = "any"}

[[claims]]
id = "rises"
statement = "rises"
paper = "-"
experiment = "w"
check = {type = "monotonic", metric = "train_acc", over = "width"}
[claims.smoke]
expect = {direction = "increasing", why = "any"}
"""


def test_a_claim_reading_two_of_six_widths_plans_two(pytester, tmp_path, data_dir):
    pytester.mkdir("claims")
    (pytester.path / "claims" / "w.toml").write_text(SIX)
    args = ["claims", "--plan-only", "--data-dir", str(data_dir), "--run-cache", str(tmp_path / "c")]
    out = pytester.runpytest(*args, "-k", "peak").stdout.str()
    assert "pending: 2 group(s), 4 run(s)" in out  # widths 4 and 8, two seeds each
    assert "width=4 " in out and "width=8 " in out and "width=16 " not in out
    # a claim that reads every configuration gets all six
    assert "pending: 6 group(s), 12 run(s)" in pytester.runpytest(*args).stdout.str()


def test_a_later_selection_trains_only_what_it_adds_and_report_reads_what_is_cached(tmp_path, data_dir):
    from harness.claims.results import claim_result
    p = tmp_path / "claims" / "w.toml"
    p.parent.mkdir()
    p.write_text(SIX)
    cf = spec.load(p)
    peak, rises = cf.claims
    exp = cf.experiments["w"]
    ctx = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "cache"))
    claim_result(peak, "smoke", exp, cf, ctx)  # trains what the Welch claim reads: widths 4 and 8
    every = planner.groups([(exp, "smoke")], "cpu")
    assert [k for g in every for k in g.keys] == [run_key(c) for c in expand(exp, "smoke", "cpu")]  # keys unchanged
    trained = {k for g in every for k in g.keys if ctx.cache.has(k)}
    assert trained == {k for g in every if g.cfgs[0].width in (4, 8) for k in g.keys}
    later = planner.pending([(exp, "smoke", None, checks.reads(rises.tiers["smoke"]["check"]))], ctx.cache, "cpu")
    assert [g.cfgs[0].width for g in later] == [2, 16, 32, 64] and not trained & {k for g in later for k in g.keys}
    # the report (reading the cache only) decides the claim whose runs are cached, and not the other
    judge = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "cache"), allow_train=False)
    assert claim_result(peak, "smoke", exp, cf, judge)["verdict"] in ("pass", "fail")
    r = claim_result(rises, "smoke", exp, cf, judge)
    assert r["verdict"] == "not run" and "8 of 12 runs missing" in r["detail"]


def test_plan_costs_what_the_claims_named_read(tmp_path, capsys):
    from harness.__main__ import main
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "w.toml").write_text(SIX)
    assert main(["plan", "--tier", "smoke", "--claims", str(tmp_path / "claims"), "--estimate", "off",
                 "--claim", "peak"]) == 0
    assert re.search(r"^w\.toml:w\s+4\s", capsys.readouterr().out, re.M)  # widths 4 and 8, two seeds each
    main(["plan", "--tier", "smoke", "--claims", str(tmp_path / "claims"), "--estimate", "off"])
    assert re.search(r"^w\.toml:w\s+12\s", capsys.readouterr().out, re.M)  # `rises` reads all six
    main(["plan", "--pending", "--tier", "smoke", "--claims", str(tmp_path / "claims"), "--claim", "peak",
          "--run-cache", str(tmp_path / "c")])
    assert capsys.readouterr().out.startswith("pending: 2 group(s), 4 run(s)")
