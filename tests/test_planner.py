"""The planning step: groups and keys from claims alone, deduplicated across experiments, in a stable
order, a ticket chain as one group, pending detection against the cache, and --plan-only."""
import pytest

from harness.execute import planner
from harness.runs import cache
from harness.runs.keys import run_key
from harness.claims import spec
from harness import procedures
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
    assert "pending: 3 group(s), 6 run(s)" in out and "[2] p.toml:a, p.toml:b [smoke] seeds, 2 run(s)" in out
    for g in planner.groups([(exps["a"], "smoke"), (exps["b"], "smoke")], "cpu"):
        assert " ".join(g.keys) in out
    assert "passed" not in out and not (tmp_path / "c" / "runs").exists() and not (tmp_path / "r").exists()



def test_plan_pending_on_the_command_line(exps, tmp_path, capsys):
    from harness.__main__ import main
    assert main(["plan", "--pending", "--tier", "smoke", "--claims", str(tmp_path / "claims"),
                 "--run-cache", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pending: 4 group(s), 16 run(s)")  # a, b (3 groups) and the ticket chain
    assert "[4] p.toml:tk [smoke] ticket chain, 10 run(s): mnist/mlp width=8" in out
