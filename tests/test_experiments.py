"""Experiments end to end on real MNIST at toy scale: expansion, caching, instruments, and the
lottery-ticket chain with its controls (masks counted weight by weight)."""
import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch

from harness.paper import models, prune
from harness.paper.config import RunConfig
from harness.claims import spec
from harness import procedures
from harness.runs.context import Context
from harness.runs.context import NotCached
from harness.runs.expand import training_cost
from harness.runs.expand import expand, seed_groups, ticket_chain, training_runs
from harness.runs.keys import run_key
from harness.runs import inline

TOML = """
section = "T"
title = "t"

[experiments.tk]
procedure = "ticket"
dataset = "mnist"
model = "mlp"
measure = ["hessian", "perturbation", "movement"]
base = {train_subset = 256, test_subset = 256, width = 16, epochs = 2, batch_size = 32, lr = 0.05}
instruments = {hessian = {samples = 64, iters = 5}, perturbation = {samples = 64, draws = 2, sigmas = [0.01]}}
ticket = {fractions = [0.5, 0.2], retrain_epochs = 2, control_fractions = [0.2]}
smoke = {seeds = [0, 1]}
"""


def _setup(tmp_path, data_dir, batch_seeds=False):
    p = tmp_path / "t.toml"
    p.write_text(textwrap.dedent(TOML))
    exp = spec.load(p).experiments["tk"]
    ctx = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "cache"),
                              batch_seeds=batch_seeds)
    return exp, ctx


@pytest.mark.parametrize("batch_seeds", [False, True])
def test_ticket_chain_controls_and_instruments(tmp_path, data_dir, batch_seeds):
    exp, ctx = _setup(tmp_path, data_dir, batch_seeds)
    rows = procedures.rows(exp, "smoke", ctx)
    variants = [(r["config"]["variant"], r["config"]["remaining"]) for r in rows if r["seed"] == 0]
    assert variants == [("dense", 1.0), ("ticket", 0.5), ("ticket", 0.2), ("reinit", 0.2),
                        ("random", 0.2), ("init_magnitude", 0.2)]
    assert len(rows) == 12
    reinit = [r for r in rows if r["config"]["variant"] == "reinit"]
    assert len({str(r["config"]) for r in reinit}) == 1  # one configuration over seeds
    trainer = "grouped" if batch_seeds else "single"
    assert {ctx.cache.load_metrics(r["key"])["trainer"] for r in rows} == {trainer}
    for r in rows:
        assert {"hessian_top", "perturb_0.01", "movement", "test_acc"} <= set(r["metrics"])

    cache = ctx.cache
    by = {(r["seed"], r["config"]["variant"], r["config"]["remaining"]): r for r in rows}
    dense = cache.load_tensors(by[(0, "dense", 1.0)]["key"])
    names = list(models.prunable(models.build("mlp", 16)))
    total = sum(dense["theta0"][n].numel() for n in names)
    prev = None
    for f in (0.5, 0.2):
        t = cache.load_tensors(by[(0, "ticket", f)]["key"])
        masks = t["masks"]
        assert sum(int(m.sum()) for m in masks.values()) == round(total * f)  # weight by weight
        for n, m in masks.items():
            assert torch.equal(t["theta0"][n][m], dense["theta0"][n][m])  # rewound bit for bit
            assert torch.all(t["theta0"][n][~m] == 0) and torch.all(t["thetaT"][n][~m] == 0)
            if prev is not None:
                assert not (m & ~prev[n]).any()  # iterative: pruned weights stay pruned
        prev = masks

    ticket = cache.load_tensors(by[(0, "ticket", 0.2)]["key"])
    reinit = cache.load_tensors(by[(0, "reinit", 0.2)]["key"])
    random = cache.load_tensors(by[(0, "random", 0.2)]["key"])
    at_init = cache.load_tensors(by[(0, "init_magnitude", 0.2)]["key"])
    n = names[1]
    assert all(torch.equal(reinit["masks"][k], ticket["masks"][k]) for k in names)  # same mask
    assert not torch.equal(reinit["theta0"][n], ticket["theta0"][n])  # fresh init
    assert not torch.equal(random["masks"][n], ticket["masks"][n])  # another mask ...
    assert all(int(random["masks"][k].sum()) == int(ticket["masks"][k].sum()) for k in names)  # same sparsity
    assert not torch.equal(at_init["masks"][n], ticket["masks"][n])
    assert abs(prune.remaining_fraction(at_init["masks"]) - 0.2) < 1e-4
    assert torch.equal(at_init["theta0"][n][at_init["masks"][n]], dense["theta0"][n][at_init["masks"][n]])


def test_second_run_is_served_from_the_cache(tmp_path, data_dir, monkeypatch):
    exp, ctx = _setup(tmp_path, data_dir)
    first = procedures.rows(exp, "smoke", ctx)
    calls = []
    monkeypatch.setattr(inline, "train", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(procedures.instruments, "take", lambda *a, **k: calls.append(1))
    fresh = Context(data_dir=ctx.data_dir, cache_root=ctx.cache_root)
    assert procedures.rows(exp, "smoke", fresh) == first and calls == []


def test_training_runs_and_costs_of_a_ticket_chain(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(textwrap.dedent(TOML))
    exp = spec.load(p).experiments["tk"]
    runs = training_runs(exp, "smoke")
    # 2 seeds x (dense + 2 rounds + 3 controls at the one control fraction)
    assert len(runs) == 2 * (1 + 2 + 3)
    cost = training_cost(runs[0])
    assert cost["steps"] == 2 * (256 // 32)
    f = models.forward_flops("mlp", 16)
    assert cost["flops"] == 2 * (3 * f * 256 + f * 256) + f * 512
    # a last mini-batch of one sample is skipped (BatchNorm cannot train on it)
    assert training_cost(dataclasses.replace(runs[0], train_subset=257))["steps"] == 16


def test_training_cost_counts_the_evaluation_passes_the_run_makes(monkeypatch, data_dir):
    """By hand, for a small MNIST run with a validation split and the test set every other epoch;
    and the evaluated samples counted in the training loop itself agree."""
    from harness.paper import data, losses, train
    cfg = RunConfig(dataset="mnist", model="mlp", width=8, train_subset=1000, test_subset=500, epochs=3,
                    batch_size=100, test_every=2, val_size=100, eval_every=4, lr=0.05)
    f = 2 * (784 * 8 + 8 * 8 + 8 * 8 + 8 * 10)  # one forward pass of one sample
    n = 1000 - 100  # training rows left beside the validation split: 9 steps an epoch, 27 in all
    trained = 3 * n * 3  # 3 epochs, forward + backward (3x a forward pass)
    tests = 1 * 500  # the test set after epoch 2 (test_every 2); not after epochs 1 and 3
    val = (1 + 6 + 1) * 100  # validation at step 0, steps 4, 8, ..., 24, and the last step, 27
    final = n + 500 + 500  # final train and test passes, the test set on the early-stopping weights
    cost = training_cost(cfg)
    assert cost["steps"] == 27 and cost["eval_samples"] == tests + val + final
    assert cost["flops"] == pytest.approx(f * (trained + tests + val + final), rel=1e-12)
    evaluated = []
    real = losses.evaluate
    monkeypatch.setattr(losses, "evaluate", lambda net, x, y, **k: evaluated.append(len(x)) or real(net, x, y, **k))
    train.train(cfg, data.split_for(cfg, data_dir))
    assert sum(evaluated) == cost["eval_samples"]
    # no validation split, test set at the end only: the final train and test passes alone
    assert training_cost(dataclasses.replace(cfg, val_size=0, eval_every=0, test_every=0))["eval_samples"] == 1000 + 500


def test_a_ticket_chains_plan_from_configurations_alone(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(textwrap.dedent(TOML))
    exp = spec.load(p).experiments["tk"]
    t = exp.resolved("smoke")["ticket"]
    [cfgs] = seed_groups(expand(exp, "smoke", "cpu"))
    chain = ticket_chain(t, cfgs)
    assert [(rd.variant, rd.remaining) for rd in chain] == [
        ("dense", 1.0), ("ticket", 0.5), ("ticket", 0.2), ("reinit", 0.2), ("random", 0.2), ("init_magnitude", 0.2)]
    assert chain[0].keys == [run_key(c) for c in cfgs]
    assert [e["parent"] for e in chain[1].extras] == chain[0].keys  # each round's parents: the round before
    assert [e["parent"] for e in chain[2].extras] == chain[1].keys
    assert all(e["parent"] in chain[1].keys for rd in chain[3:] for e in rd.extras)  # controls share the round's parents
    assert all(c.epochs == t["retrain_epochs"] for rd in chain[1:] for c in rd.cfgs)
    assert [c.init_seed for c in chain[3].cfgs] == [c.seed + t["reinit_seed_offset"] for c in cfgs]
    assert len({k for rd in chain for k in rd.keys}) == len(cfgs) * len(chain)  # every run its own key
    assert ticket_chain(t, cfgs) == chain  # pure


def test_plan_counts_a_shared_run_once(capsys):
    from harness.__main__ import plan
    rows = {r["experiment"]: r for r in plan(str(Path(__file__).parent.parent / "claims"), "full")}
    # flat_sharp's bs32 / bs1024 runs are bs_sweep's (same configuration, same cache entry)
    assert rows["sharpness.toml:flat_sharp"]["runs"] == 0
    assert rows["batch_size.toml:bs_sweep"]["runs"] == 9 * 5
    assert "total" in capsys.readouterr().out


def test_a_metrics_only_cache_reports_a_finished_chain_and_explains_an_unfinished_one(tmp_path, data_dir):
    import tarfile
    exp, ctx = _setup(tmp_path, data_dir)
    rows = procedures.rows(exp, "smoke", ctx)
    out = tmp_path / "results.tar.gz"
    assert ctx.cache.export_metrics(out) == len(list((tmp_path / "cache").glob("runs/*/metrics.json")))
    last = {r["key"] for r in rows if r["config"]["variant"] == "ticket" and r["config"]["remaining"] == 0.2}
    with tarfile.open(out) as tar:  # no tensors travel; resume records only for the chain's last round
        names = tar.getnames()
        assert {n for n in names if not n.endswith("metrics.json")} == {f"runs/{k}/resume.pt" for k in last}
        tar.extractall(tmp_path / "elsewhere", filter="data")
    other = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "elsewhere"), allow_train=False)
    again = procedures.rows(exp, "smoke", other)
    assert [(r["key"], r["metrics"]) for r in again] == [(r["key"], r["metrics"]) for r in rows]

    # a round whose parent has neither weights nor a resume record there: a clear error, not a KeyError
    (tmp_path / "elsewhere" / "runs" / sorted(last)[0] / "metrics.json").unlink()
    other = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "elsewhere"))
    with pytest.raises(NotCached, match="metrics but no weights"):
        procedures.rows(exp, "smoke", other)


def test_a_chain_stopped_part_way_goes_on_elsewhere_from_its_export(tmp_path, data_dir, monkeypatch):
    """Killed in its second pruning round, exported (metrics and the last round's resume records,
    no tensors), extracted into a fresh cache: the chain goes on there and trains exactly what an
    uninterrupted chain trains, mask by mask and weight by weight."""
    import tarfile
    exp, ctx = _setup(tmp_path, data_dir)
    whole = procedures.rows(exp, "smoke", Context(data_dir=str(data_dir), cache_root=str(tmp_path / "whole")))
    real = inline.train
    _killed_in_run(5, exp, ctx, monkeypatch)  # one seed at a time: dense x2, ticket 0.5 x2, then ticket 0.2 seed 0
    monkeypatch.setattr(inline, "train", real)
    out = tmp_path / "part.tar.gz"
    ctx.cache.export_metrics(out)
    half = {r["key"] for r in whole if r["config"]["variant"] == "ticket" and r["config"]["remaining"] == 0.5}
    dense = {r["key"] for r in whole if r["config"]["variant"] == "dense"}
    with tarfile.open(out) as tar:
        runs = {n.split("/")[1] for n in tar.getnames()} & {r["key"] for r in whole}
        assert runs == dense | half  # the runs trained before the kill (with their measurements)
        assert {n for n in tar.getnames() if n.endswith("resume.pt")} == {f"runs/{k}/resume.pt" for k in half}
        tar.extractall(tmp_path / "elsewhere", filter="data")
    assert not list((tmp_path / "elsewhere").glob("runs/*/tensors.pt"))

    elsewhere = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "elsewhere"))
    rows = procedures.rows(exp, "smoke", elsewhere)
    assert [r["key"] for r in rows] == [r["key"] for r in whole]
    assert [r["metrics"]["test_acc"] for r in rows] == [r["metrics"]["test_acc"] for r in whole]
    for r in whole:
        if r["config"]["variant"] == "dense" or r["key"] in half:
            continue  # trained before the kill: there are no tensors of them elsewhere
        a, b = elsewhere.cache.load_tensors(r["key"]), load(tmp_path / "whole", r["key"])
        assert all(torch.equal(a["masks"][n], b["masks"][n]) for n in b["masks"])
        assert all(torch.equal(a[w][n], b[w][n]) for w in ("theta0", "thetaT") for n in b[w])

    # theta_0 made again must be the one the chain was trained from, or the chain does not go on
    from harness.procedures import ticket
    k = sorted(half)[0]
    path = tmp_path / "again" / "runs" / k / "resume.pt"
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "again", filter="data")
    record = torch.load(path, weights_only=True)
    record["theta0_sha256"] = "0" * 64
    torch.save(record, path)
    with pytest.raises(RuntimeError, match="cannot go on here: theta_0 of its dense run"):
        procedures.rows(exp, "smoke", Context(data_dir=str(data_dir), cache_root=str(tmp_path / "again")))
    assert ticket.digest(load(tmp_path / "whole", whole[0]["key"])["theta0"]) != "0" * 64


def test_a_time_budget_stops_a_chain_before_the_round_that_does_not_fit_and_it_goes_on_next_time(
        tmp_path, data_dir, monkeypatch):
    import time
    from harness.runs.context import OutOfBudget
    exp, ctx = _setup(tmp_path, data_dir)
    ctx.deadline = time.monotonic() + 3600
    real, calls = inline.train, []

    def spend_after_the_dense_round(*a, **k):
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == 2:  # both dense runs trained: the budget is spent
            ctx.deadline = time.monotonic() - 1
        return out

    monkeypatch.setattr(inline, "train", spend_after_the_dense_round)
    with pytest.raises(OutOfBudget, match="not run"):
        procedures.rows(exp, "smoke", ctx)
    [cfgs] = seed_groups(expand(exp, "smoke", "cpu"))
    chain = ticket_chain(exp.resolved("smoke")["ticket"], cfgs)
    assert all(ctx.cache.has(k) and (ctx.cache.dir(k) / "resume.pt").exists() for k in chain[0].keys)
    assert not any(ctx.cache.has(k) for rd in chain[1:] for k in rd.keys)
    rows = procedures.rows(exp, "smoke", Context(data_dir=ctx.data_dir, cache_root=ctx.cache_root))
    assert len(rows) == 12 and len(calls) == 12  # the dense runs were not trained again


def _killed_in_run(n, exp, ctx, monkeypatch):
    """Walk the experiment, killed (KeyboardInterrupt) as its n-th training run starts."""
    real, calls = inline.train, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(inline, "train", dies)
    with pytest.raises(KeyboardInterrupt):
        procedures.rows(exp, "smoke", ctx)


def load(root, key):
    return torch.load(root / "runs" / key / "tensors.pt", weights_only=True)


def test_runs_trained_one_at_a_time_are_saved_as_each_finishes(tmp_path, data_dir, monkeypatch):
    """A group killed in its second run keeps its first: nothing trained is held back to the group's end."""
    exp, ctx = _setup(tmp_path, data_dir)
    _killed_in_run(2, exp, ctx, monkeypatch)
    assert len(list((tmp_path / "cache" / "runs").glob("*/metrics.json"))) == 1


LENET_TOML = """
section = "T"
title = "t"

[experiments.lt]
procedure = "ticket"
dataset = "mnist"
model = "fc"
base = {width = 300, hidden = "300,100", init = "glorot_normal", optimizer = "adam", lr = 0.0012, batch_size = 60, steps = 20, train_subset = 600, test_subset = 200, schedule = "constant"}
ticket = {fractions = [0.8, 0.64, 0.512], scope = "layer", output_rate = 0.5, controls = ["reinit"], control_fractions = [0.513]}
smoke = {seeds = [0, 1]}
"""


def test_a_chain_with_the_output_layer_at_half_rate_plans_the_overall_fraction_left(tmp_path):
    """Frankle & Carbin's rule (ticket.output_rate 0.5): rows show Pm, the overall fraction of
    prunable weights left, rounded as the source's axes (3 rounds: 51.3%); the lineage, and so
    the keys, carry output_rate; the control fraction may name Pm. The default chain's keys are
    pinned by the tests above (output_rate 1 enters no key)."""
    p = tmp_path / "t.toml"
    p.write_text(textwrap.dedent(LENET_TOML))
    exp = spec.load(p).experiments["lt"]
    t = exp.resolved("smoke")["ticket"]
    [cfgs] = seed_groups(expand(exp, "smoke", "cpu"))
    chain = ticket_chain(t, cfgs)
    hand = [(round(235_200 * 0.8 ** k) + round(30_000 * 0.8 ** k) + round(1000 * 0.9 ** k)) / 266_200
            for k in (1, 2, 3)]
    assert [(rd.variant, rd.remaining) for rd in chain] == [
        ("dense", 1.0), ("ticket", round(hand[0], 3)), ("ticket", round(hand[1], 3)), ("ticket", 0.513),
        ("reinit", 0.513)]
    assert [rd.exact for rd in chain[1:]] == [hand[0], hand[1], hand[2], hand[2]]
    assert [rd.fraction for rd in chain[1:]] == [0.8, 0.64, 0.512, 0.512]
    assert chain[3].fractions == (("net.5.weight", pytest.approx(0.9 ** 3)),)
    assert all(e["output_rate"] == 0.5 for rd in chain[1:] for e in rd.extras)
    default = ticket_chain({**t, "output_rate": 1.0, "control_fractions": [0.512]}, cfgs)
    assert all("output_rate" not in e for rd in default[1:] for e in rd.extras)
    assert not set(default[1].keys) & set(chain[1].keys)


def test_output_rate_needs_layer_scope(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(textwrap.dedent(LENET_TOML).replace('scope = "layer", ', ""))
    with pytest.raises(spec.SpecError, match="output_rate"):
        spec.load(p)
