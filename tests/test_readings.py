"""Readings of the paper's lost or ambiguous parameters (spec.py): TOML schema and its errors,
expansion into distinct runs, primary keys pinned to their values before readings existed, MNIST
input scaling, movement definitions, pytest selection and node ids, the three-way
classification and the fit."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.runs.keys import run_key
from harness.paper import data
from harness.claims import report, spec
from harness.__main__ import main, plan_readings
from harness.claims.items import node_suffix
from harness.runs.expand import expand
from harness.paper import measure
from harness.procedures import instruments
from harness.claims import readings

CLAIMS = Path(__file__).resolve().parent.parent / "claims"


def experiment(file, name):
    return spec.load(CLAIMS / file, with_claims=False).experiments[name]


def keys(exp, tier, reading=None):
    return {run_key(c) for c in expand(exp, tier, "cuda", reading)}


# Cache keys of primary runs. The device is not part of a key, so these are also the keys the
# CPU runs have had since before readings were added (commit 8463b7d); the cuda keys of then
# (under which the committed H100 part was made) are pinned as legacy keys in test_migrate.py.
# The smoke keys were re-pinned when the smoke tables set test_every = 0 (issue 28: the test set
# at the end only), which changes those runs' settings and so their keys (before:
# f6f4d2dfe59536b95aceb0c9 and eaa37e2a56c2d6ff9e16b3e7).
PINNED = [("ntk.toml", "ntk_mlp", "full", "408ad14ba75d721183a809bd"),
          ("ntk.toml", "ntk_mlp", "smoke", "266c33c4756215fd494fcc7b"),
          ("double_descent.toml", "dd_mlp", "full", "0ce822928043d53fc65a3a12"),
          ("double_descent.toml", "dd_mlp", "smoke", "e3976588201d4abd7a76ef52"),
          ("double_descent.toml", "dd_cnn", "full", "06f69f894a274a86ce369bf3"),
          ("batch_size.toml", "bs_sweep", "full", "a3b6f4c55959b669d6328f99"),
          ("lottery.toml", "ticket", "full", "e39cedd3e688b60f156000ab")]


@pytest.mark.parametrize("file,name,tier,key", PINNED)
def test_primary_run_keys_are_unchanged(file, name, tier, key):
    exp = experiment(file, name)
    primary = exp.readings(tier)[0]
    assert primary.is_primary and primary.name == "primary"
    for reading in (None, primary):
        assert run_key(expand(exp, tier, "cuda", reading)[0]) == key


def test_primary_movement_measurement_key_is_unchanged():
    exp = experiment("ntk.toml", "ntk_mlp")
    cfg = expand(exp, "full", "cuda")[0]
    opts = instruments.measurement_options("movement", exp.resolved("full")["instruments"]["movement"])
    extra = {"measure_of": run_key(cfg), "instrument": "movement", "options": opts}
    assert run_key(cfg, extra) == "eebb5e95d62c05a4347b75f3"
    assert instruments.measurement_options("movement", {"definition": "weights"}) == {"definition": "weights"}


def test_readings_expand_into_distinct_runs():
    exp = experiment("double_descent.toml", "dd_cnn")
    readings = exp.readings("full")
    assert len(readings) == 5 * 6 and len({r.name for r in readings}) == 30
    sets = [keys(exp, "full", r) for r in readings]
    assert all(len(s) == 6 * 5 for s in sets)
    assert len(set().union(*sets)) == 30 * 30  # no two readings share a run
    r = next(r for r in readings if r.name == "train_subset=5000,epochs=80")
    cfgs = expand(exp, "full", "cuda", r)
    assert {(c.train_subset, c.epochs) for c in cfgs} == {(5000, 80)}
    assert sorted({c.width for c in cfgs}) == [4, 8, 16, 32, 64, 96]


def test_input_norm_reading_changes_only_the_scaling():
    exp = experiment("ntk.toml", "ntk_mlp")
    (r,) = [r for r in exp.readings("smoke") if r.name == "input_norm=standard"]
    a, b = expand(exp, "smoke", "cpu"), expand(exp, "smoke", "cpu", r)
    assert [c.input_norm for c in b] == ["standard"] * len(a)
    assert [c.__class__(**{**c.__dict__, "input_norm": "default"}) for c in b] == a
    assert not keys(exp, "smoke") & keys(exp, "smoke", r)


def test_a_measurement_reading_reuses_the_primary_runs():
    exp = experiment("ntk.toml", "ntk_mlp")
    (r,) = [r for r in exp.readings("full") if r.name == "movement=layer_mean"]
    assert keys(exp, "full", r) == keys(exp, "full")
    assert exp.resolved("full", r)["instruments"]["movement"] == {"definition": "layer_mean"}


def test_custom_reading_sets_configs_and_listed_combinations():
    bs = experiment("batch_size.toml", "bs_sweep")
    (lin,) = [r for r in bs.readings("full") if r.name == "lr_rule=linear"]
    lrs = {c.batch_size: c.lr for c in expand(bs, "full", "cuda", lin) if c.optimizer == "sgd"}
    assert lrs == {32: 0.0025, 64: 0.005, 128: 0.01, 256: 0.02, 512: 0.04, 1024: 0.08, 2048: 0.16, 5000: 0.001}
    ticket = experiment("lottery.toml", "ticket")
    names = [r.name for r in ticket.readings("full")]
    assert names == ["primary", "width=16", "width=64", "scope=layer", "include_output=false",
                     "scope=layer,include_output=false"]
    assert ticket.readings("smoke") == ticket.readings("full")[:1]  # no smoke readings declared
    r = ticket.readings("full")[-1]
    t = ticket.resolved("full", r)["ticket"]
    assert (t["scope"], t["include_output"]) == ("layer", False)
    assert dict(r.values) == {"width": 32, "scope": "layer", "include_output": False}


def test_every_declared_experiment_primary_matches_and_smoke_subset_is_mnist_only():
    smoke = {}
    for path in sorted(CLAIMS.glob("*.toml")):
        for exp in spec.load(path, with_claims=False).experiments.values():
            if "smoke" in exp.tiers and len(exp.readings("smoke")) > 1:
                smoke[exp.name] = [r.name for r in exp.readings("smoke")[1:]]
                assert exp.dataset == "mnist"
    assert smoke == {"ntk_mlp": ["movement=weights", "movement=layer_mean", "input_norm=standard",
                                 "input_norm=standard,movement=weights",
                                 "input_norm=standard,movement=layer_mean"]}


def test_selection_and_node_ids():
    exp = experiment("ntk.toml", "ntk_mlp")
    assert [r.name for r in readings.select(exp, "full", [])] == ["primary"]
    assert len(readings.select(exp, "full", ["all"])) == 24
    matched = set()
    picked = readings.select(exp, "full", ["epochs=20", "input_norm=standard"], matched)
    assert [r.name for r in picked] == ["primary", "input_norm=standard", "epochs=20", "epochs=20,input_norm=standard"]
    assert matched == {"epochs=20", "input_norm=standard"}
    assert node_suffix("full", picked[0]) == "full"
    assert node_suffix("full", picked[2]) == "full|epochs=20"


# ------------------------------------------------------------------------- schema errors

GOOD = """
section = "X"
title = "Test"

[experiments.e]
procedure = "train"
dataset = "mnist"
model = "mlp"
measure = ["movement"]
base = {epochs = 60}
grid = {width = [8, 16]}
full = {seeds = [0]}
smoke = {seeds = [0]}
[experiments.e.readings.epochs]
paper = "60-80"
values = [{value = 60, primary = true, why = "low end"}, {value = 80, why = "high end", smoke = true}]
[experiments.e.readings.rule]
paper = "words"
values = [{value = "a", primary = true, why = "w"}, {value = "b", why = "w", set = {base = {lr = 0.1}}}]
"""


def load(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return spec.load(p)


def test_good_readings_parse(tmp_path):
    exp = load(tmp_path, GOOD).experiments["e"]
    assert [r.name for r in exp.readings("full")] == ["primary", "rule=b", "epochs=80", "epochs=80,rule=b"]
    assert [r.name for r in exp.readings("smoke")] == ["primary", "epochs=80"]
    (b,) = [r for r in exp.readings("full") if r.name == "rule=b"]
    assert {c.lr for c in expand(exp, "full", "cpu", b)} == {0.1}


@pytest.mark.parametrize("old,new,fragment", [
    ('primary = true, why = "low end"', 'why = "low end"', "'readings.epochs.values': mark exactly one"),
    ('{value = 80, why = "high end", smoke = true}', '{value = 80, smoke = true}', "'readings.epochs.values[1].why': missing"),
    ('{value = 80, why', '{value = "80", why', "'readings.epochs.values[1].value': expected int"),
    ('{value = 60, primary', '{value = 70, primary', "'readings.epochs.values': primary 70 is not what the full tier runs today"),
    ('{value = "b", why = "w", set = {base = {lr = 0.1}}}', '{value = "b", why = "w"}', "'readings.rule.values[1].set': missing"),
    ('set = {base = {lr = 0.1}}', 'set = {seeds = [1]}', "'readings.rule.values[1].set.seeds': unknown key"),
    ('[experiments.e.readings.epochs]', '[experiments.e.readings.epochs]\nfield = "ticket.scope"', "'readings.epochs.field'"),
    ('[experiments.e.readings.epochs]', '[experiments.e.readings.width]\nfield = "width"\npaper = "w"\nvalues = [{value = 8, primary = true, why = "w"}, {value = 16, why = "w"}]\n[experiments.e.readings.epochs]', "'readings.width': 'width' is swept by the grid"),
    ('paper = "60-80"\n', '', "'readings.epochs.paper': missing"),
    ('[experiments.e.readings.rule]', '[experiments.e.readings.input_norm]\npaper = "p"\nvalues = [{value = "default", primary = true, why = "w"}, {value = "zca", why = "w"}]\n[experiments.e.readings.rule]', "'readings.input_norm.values[1].value': 'zca'"),
    ('[experiments.e.readings.rule]', '[experiments.e.readings.mv]\nfield = "instruments.movement.definition"\npaper = "p"\nvalues = [{value = "all", primary = true, why = "w"}, {value = "some", why = "w"}]\n[experiments.e.readings.rule]', "'readings.mv.values[1].value': 'some'"),
    ('[experiments.e.readings.epochs]', '[experiments.e.readings]\ncombine = [{epochs = 70}]\n[experiments.e.readings.epochs]', "'readings.combine[0].epochs': 70 is not one of its declared values"),
    ('[experiments.e.readings.epochs]', '[experiments.e.readings]\ncombine = [{lr = 0.1}]\n[experiments.e.readings.epochs]', "'readings.combine[0].lr': not a declared reading"),
    ('base = {epochs = 60}', 'base = {epochs = 60}\ninstruments = {movement = {definition = "some"}}', "'instruments.movement.definition': 'some'"),
])
def test_bad_readings_name_file_experiment_and_field(tmp_path, old, new, fragment):
    assert old in GOOD, old
    with pytest.raises(spec.SpecError) as e:
        load(tmp_path, GOOD.replace(old, new, 1))
    msg = str(e.value)
    assert "r.toml" in msg and "experiment 'e'" in msg and fragment in msg, msg


# ------------------------------------------------------------------------- instruments and data

def test_movement_definitions_exact():
    t0 = {"a.weight": torch.tensor([3.0, 4.0]), "a.bias": torch.tensor([0.0, 5.0]),
          "b.weight": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    tT = {"a.weight": torch.tensor([3.0, 7.0]), "a.bias": torch.tensor([0.0, 5.0]),
          "b.weight": torch.tensor([[2.0, 0.0], [0.0, 0.0]])}
    names = list(t0)
    # all: sqrt(9 + 1) / sqrt(25 + 25 + 1); weights: sqrt(10) / sqrt(26); layer_mean: (3/5 + 1) / 2
    assert measure.movement(t0, tT, names)["total"] == pytest.approx(math.sqrt(10 / 51))
    assert measure.movement(t0, tT, names, "weights")["total"] == pytest.approx(math.sqrt(10 / 26))
    assert measure.movement(t0, tT, names, "layer_mean")["total"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="movement definition 'x'"):
        measure.movement(t0, tT, names, "x")


def test_mnist_input_norm_and_cifar_per_channel_normalisation():
    x = np.array([[[0, 255]]], dtype=np.uint8).repeat(2, 0)
    assert data._to_tensor("mnist", x, "cpu").flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    std = data._to_tensor("mnist", x, "cpu", input_norm="standard").flatten()
    assert std[:2].tolist() == pytest.approx([-0.1307 / 0.3081, (1 - 0.1307) / 0.3081])
    # CIFAR-10: 'normalized using per-channel means and standard deviations' (IV-A)
    mean, sd = data.DATASETS["cifar10"].norms["default"]
    assert mean == (0.4914, 0.4822, 0.4465) and sd == (0.2470, 0.2435, 0.2616)
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 128, 0
    t = data._to_tensor("cifar10", img, "cpu")
    assert t.shape == (1, 3, 2, 2)
    for c, v in enumerate((255, 128, 0)):
        # float32 rounding of v / 255 and of the mean (inputs in [0, 1]) divided by sd: an error on
        # the scale of eps / sd whatever the value, which for v = 128 (0.502 - 0.482) is near zero
        # (observed 0.3 eps / sd); a wrong channel's statistics are off by >= 0.01
        torch.testing.assert_close(t[0, c], torch.full((2, 2), (v / 255 - mean[c]) / sd[c]),
                                   rtol=0, atol=8 * torch.finfo(torch.float32).eps / sd[c])
    with pytest.raises(data.DataError, match="input_norm 'standard' for cifar10"):
        data._to_tensor("cifar10", img, "cpu", input_norm="standard")


def test_normalisation_values_are_the_training_set_statistics(data_dir):
    x = data.load_arrays("mnist", data_dir)["x_train"].astype(np.float64) / 255
    mean, sd = data.DATASETS["mnist"].norms["standard"]
    assert x.mean() == pytest.approx(mean[0], abs=1e-4) and x.std() == pytest.approx(sd[0], abs=1e-4)
    x = data.load_arrays("cifar10", data_dir)["x_train"][::10].astype(np.float64) / 255  # (rows sorted by class)
    mean, sd = data.DATASETS["cifar10"].norms["default"]
    assert x.mean(axis=(0, 1, 2)) == pytest.approx(mean, abs=0.01)
    assert x.std(axis=(0, 1, 2)) == pytest.approx(sd, abs=0.01)


# ------------------------------------------------------------------------- report: classification, fit

def result(id, reading, verdict, value=None, paper=None, expect=None, tier="full", experiment="e"):
    return {"id": id, "file": "claims/x.toml", "section": "V-X", "title": "T", "tier": tier, "order": 0,
            "experiment": experiment, "verdict": verdict, "paper_value": paper,
            "expect": expect or {"target": paper or 0.0, "abs_tol": 1.0, "why": "w"},
            "measured": None if value is None else {"value": value, "std": 0.1, "ci": [value - 1, value + 1], "n": 5},
            "detail": "d", "reading_id": reading, "reading_values": {}, "statement": "s", "paper": "p",
            "expected": "e", "why": "w", "check": {"type": "value", "metric": "m"}, "disagreements": [],
            "reading": "", "experiment_notes": "", "table": []}


def test_three_way_classification():
    assert readings.classify({"primary": "pass", "epochs=20": "pass"})["sentence"] == \
        "holds under every reading tried (2)"
    c = readings.classify({"primary": "fail", "epochs=20": "pass", "epochs=80": "diverged", "epochs=30": "error"})
    assert c["class"] == "some" and c["holding"] == ["epochs=20"] and len(c["tried"]) == 3
    assert c["sentence"] == "holds only under some readings (1 of 3): epochs=20"
    c = readings.classify({"primary": "fail", "epochs=20": "diverged"})
    assert c["class"] == "none" and c["sentence"] == "fails under every reading tried (2)"
    assert readings.classify({"primary": "pass", "epochs=20": "error"})["class"] is None

    results = [result("a", "primary", "pass", 1.0, 1.0), result("a", "r1", "pass", 1.5, 1.0),
               result("b", "primary", "fail", 5.0, 1.0), result("b", "r1", "fail", 4.0, 1.0),
               result("c", "primary", "fail", 3.0, 1.0), result("c", "r1", "pass", 1.2, 1.0)]
    doc = report.build(results, 1.0)
    assert [c["id"] for c in doc["claims"]] == ["a", "b", "c"] and doc["totals"] == {"pass": 1, "fail": 2}
    cls = {k: v["class"] for k, v in doc["readings"]["claims"].items()}
    assert cls == {"claims/x.toml::a[full]": "every", "claims/x.toml::b[full]": "none",
                   "claims/x.toml::c[full]": "some"}
    s = doc["readings"]["sections"]["V-X T"]
    assert s["sentence"] == ("of 3 claims checked under several readings: 1 hold under every reading tried, "
                             "1 hold only under some, 1 fail under every reading tried")
    assert s["none"] == ["claims/x.toml::b[full]"] and s["some"] == ["claims/x.toml::c[full]"]
    html = report.render(doc)
    assert "fails under every reading tried (2)" in html and "holds only under some readings (1 of 2): r1" in html


def test_fit_ranks_by_squared_misses_in_tolerance_units():
    exp = {"target": 10.0, "rel_tol": 0.1, "why": "w"}  # tolerance 1.0
    results = [result("a", "primary", "fail", 12.0, 10.0, exp), result("b", "primary", "pass", 1.0, 1.0),
               result("a", "r1", "pass", 10.5, 10.0, exp), result("b", "r1", "pass", 1.5, 1.0),
               result("a", "r2", "pass", 10.0, 10.0, exp),  # r2 lacks claim b: ranks after complete ones
               result("w", "primary", "pass"), result("a", "r3", "error")]  # no paper value / not tried: left out
    rows = readings.fit(results)
    assert [(r["reading"], r["n"], r["missing"]) for r in rows] == [("r1", 2, 0), ("primary", 2, 0), ("r2", 1, 1)]
    assert rows[0]["sum_sq"] == pytest.approx(0.5) and rows[1]["sum_sq"] == pytest.approx(4.0)
    assert rows[1]["primary"] and rows[1]["passes"] == 1
    # compared on the claims every reading has (claim a only), r2 is closest: 0 against 0.25 and 4
    assert {r["reading"]: r["shared_sum_sq"] for r in rows} == pytest.approx({"r1": 0.25, "primary": 4.0, "r2": 0.0})
    assert {r["shared_n"] for r in rows} == {1}
    # a min/max expectation: the tolerance is the distance from the paper value to the bound
    r = result("i", "primary", "fail", 99.0, 100.0, {"min": 99.95, "why": "w"})
    assert readings.tolerance_units(r) == pytest.approx(-20.0)


def test_an_instrument_reading_is_checked_only_for_claims_that_read_the_instrument():
    cf = spec.load(CLAIMS / "ntk.toml")
    by = {c.id: c for c in cf.claims}
    exp = by["movement-w32"].experiment
    every = [r.name for r in readings.select(exp, "full", ["all"])]
    mine = [r.name for r in readings.select(exp, "full", ["all"], claim=by["movement-w32"])]
    acc = [r.name for r in readings.select(exp, "full", ["all"], claim=by["test-acc-w32"])]
    assert mine == every and "epochs=30,movement=weights" in every
    assert acc == [n for n in every if "movement=" not in n]  # they would repeat the readings without them
    rep = readings.repeated(by["test-acc-w32"].tiers["full"]["check"], exp, "full")
    assert rep["epochs=30,movement=weights"] == "epochs=30" and rep["movement=layer_mean"] == "primary"
    # the fit counts a left-out claim as under the reading it repeats
    exp_ = {"target": 10.0, "rel_tol": 0.1, "why": "w"}
    results = [result("a", "primary", "fail", 12.0, 10.0, exp_), result("a", "r1", "pass", 10.0, 10.0, exp_),
               result("b", "primary", "pass", 1.0, 1.0), result("b", "r1", "pass", 1.0, 1.0),
               result("b", "r1,mv", "pass", 1.5, 1.0)]
    rows = {r["reading"]: r for r in readings.fit(results, {("claims/x.toml", "a"): {"r1,mv": "r1"}})}
    assert rows["r1,mv"]["n"] == 2 and rows["r1,mv"]["missing"] == 0
    assert rows["r1,mv"]["sum_sq"] == pytest.approx(0.25, rel=1e-9)
    assert readings.fit(results)[-1]["reading"] == "r1,mv"  # without it: a claim missing


def test_plan_lists_readings_beyond_the_primary_runs(capsys):
    seen = keys(experiment("ntk.toml", "ntk_mlp"), "full") | keys(experiment("batch_size.toml", "bs_sweep"), "full")
    rows = plan_readings(CLAIMS, "full", seen)
    by = {(r["experiment"], r["reading"]): r for r in rows}
    assert by[("ntk.toml:ntk_mlp", "movement=weights")]["runs"] == 0  # a measurement, no training
    assert by[("ntk.toml:ntk_mlp", "epochs=20")]["runs"] == 40
    assert by[("batch_size.toml:bs_sweep", "lr_rule=linear")]["runs"] == 3 * 5  # bs32, 64, 2048 change
    assert "readings total" in capsys.readouterr().out


# ------------------------------------------------------------------------- end to end (pytest + fit)

TINY = """
section = "T"
title = "Readings"

[experiments.tiny]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 256, test_subset = 256, width = 16, epochs = 2, batch_size = 32, lr = 0.05}
smoke = {seeds = [0, 1]}
[experiments.tiny.readings.input_norm]
paper = "MNIST: 'converted to tensors'"
values = [{value = "default", primary = true, why = "[0, 1]"}, {value = "standard", why = "0.1307 / 0.3081", smoke = true}]
[experiments.tiny.readings.epochs]
paper = "60-80"
values = [{value = 2, primary = true, why = "short"}, {value = 1, why = "shorter", smoke = true}]

[[claims]]
id = "learns"
statement = "learns"
paper = "above chance"
paper_value = 13274.0
experiment = "tiny"
check = {type = "value", metric = "params", where = {width = 16}}
[claims.smoke]
expect = {target = 13274.0, rel_tol = 0.01, why = "the plumbing: the same under every reading, decided with two seeds"}

[[claims]]
id = "two-epochs"
statement = "trained for two epochs"
paper = "2"
experiment = "tiny"
check = {type = "value", metric = "epochs_run", where = {width = 16}}
[claims.smoke]
expect = {target = 2.0, abs_tol = 0.0, why = "fails under the epochs=1 reading, by construction"}
"""


def test_pytest_readings_end_to_end(pytester, data_dir, tmp_path, capsys):
    pytester.mkdir("claims")
    (pytester.path / "claims" / "t.toml").write_text(TINY)
    args = ["--data-dir", str(data_dir), "--run-cache", str(tmp_path / "cache"), "--report", str(tmp_path / "rep")]
    r = pytester.runpytest("claims", "--collect-only", "-q", "--readings", "nope=1", *args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "--readings nope=1" in r.stderr.str()
    r = pytester.runpytest("claims/t.toml::learns[smoke|epochs=1]", "--collect-only", "-q", *args)
    assert "1 test collected" in r.stdout.str()  # a reading's node id is found without --readings
    r = pytester.runpytest("claims/t.toml::learns[smoke|epochs=2]", "--collect-only", "-q", *args)
    err = r.stderr.str()  # no such reading (epochs=2 is the primary's): pytest's error lists the claim's node ids
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "not found" in err
    assert ("node ids of claims/t.toml::learns are learns[smoke], learns[smoke|epochs=1], "
            "learns[smoke|input_norm=standard], learns[smoke|input_norm=standard,epochs=1]") in err
    r = pytester.runpytest("claims/t.toml::learn[smoke]", "claims/t.toml::two-epochs[smoke]", "--collect-only", "-q", *args)
    err = r.stderr.str()  # only the argument that names nothing gets a line
    assert "claims/t.toml has no claim 'learn'; its claims: learns, two-epochs" in err
    assert "node ids of claims/t.toml::two-epochs" not in err
    r = pytester.runpytest("claims", "-v", "--readings", "all", *args)
    r.assert_outcomes(passed=6, xfailed=2)  # a reading that does not reproduce a claim is a finding
    assert "t.toml::two-epochs[smoke|epochs=1] XFAIL" in r.stdout.str()
    for node in ("learns[smoke]", "learns[smoke|input_norm=standard]", "learns[smoke|epochs=1]",
                 "learns[smoke|input_norm=standard,epochs=1]"):
        assert f"t.toml::{node} PASSED" in r.stdout.str(), node
    doc = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert [c["reading_id"] for c in doc["claims"]] == ["primary", "primary"]
    assert doc["claims"][0]["reading_values"] == {"input_norm": "default", "epochs": 2}
    assert doc["readings"]["training_seconds_total"] > 0
    rd = doc["readings"]["claims"]["claims/t.toml::learns[smoke]"]
    assert [row["reading"] for row in rd["rows"]][0] == "primary" and len(rd["rows"]) == 4
    assert rd["sentence"] == "holds under every reading tried (4)"
    two = doc["readings"]["claims"]["claims/t.toml::two-epochs[smoke]"]
    assert two["sentence"] == "holds only under some readings (2 of 4): primary, input_norm=standard"
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "holds under every reading tried (4)" in html and "holds only under some readings (2 of 4)" in html
    assert "Readings: of 2 claims checked under several readings: 1 hold under every" in html
    assert two["declared"]["epochs"]["values"][1] == {"value": 1, "why": "shorter"}
    assert "0.1307 / 0.3081" in html  # each reading's reason is shown
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "runs").glob("*/metrics.json")]
    assert sorted((m["config"]["input_norm"], m["config"]["epochs"]) for m in metrics) == \
        sorted([("default", 2), ("standard", 2), ("default", 1), ("standard", 1)] * 2)
    capsys.readouterr()
    assert main(["fit", "tiny", "--tier", "smoke", "--claims", str(pytester.path / "claims"),
                 "--run-cache", str(tmp_path / "cache"), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    ranked = [line.split()[1] for line in out.splitlines() if line[:4].strip().isdigit()]
    assert "tiny [smoke]: 4 readings" in out and sorted(ranked) == sorted(
        ["primary", "input_norm=standard", "epochs=1", "input_norm=standard,epochs=1"])
    assert main(["fit", "nothing", "--tier", "smoke", "--claims", str(pytester.path / "claims")]) == 2


def test_a_session_that_selects_only_readings_reports_them_with_their_primaries(pytester, data_dir, tmp_path):
    """Issue 24: only non-primary node ids selected; the report shows each claim with its primary
    (not run in this session, or judged from the cache) and counts the reading checks."""
    pytester.mkdir("claims")
    (pytester.path / "claims" / "t.toml").write_text(TINY)
    args = ["--data-dir", str(data_dir), "--run-cache", str(tmp_path / "cache"), "--report", str(tmp_path / "rep")]
    r = pytester.runpytest("claims/t.toml::learns[smoke|epochs=1]", "claims/t.toml::two-epochs[smoke|epochs=1]",
                           *args)
    r.assert_outcomes(passed=1, xfailed=1)
    doc = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert {(c["id"], c["verdict"]) for c in doc["claims"]} == {("learns", "not run"), ("two-epochs", "not run")}
    assert all(c["in_session"] is False and c["detail"].startswith("not run in this session") for c in doc["claims"])
    assert doc["reading_totals"] == {"pass": 1, "fail": 1}
    assert set(doc["readings"]["claims"]) == {"claims/t.toml::learns[smoke]", "claims/t.toml::two-epochs[smoke]"}
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Under other readings, 2 checks: 1 pass, 1 fail." in html
    # once the primary's runs are cached, the same selection judges it from the cache
    pytester.runpytest("claims/t.toml::learns[smoke]", *args).assert_outcomes(passed=1)
    pytester.runpytest("claims/t.toml::learns[smoke|epochs=1]", *args).assert_outcomes(passed=1)
    doc = json.loads((tmp_path / "rep" / "results.json").read_text())
    [c] = doc["claims"]
    assert (c["id"], c["verdict"], c["in_session"]) == ("learns", "pass", False)
    assert doc["readings"]["claims"]["claims/t.toml::learns[smoke]"]["sentence"] == "holds under every reading tried (2)"


def test_an_inconclusive_reading_neither_holds_nor_fails():
    c = readings.classify({"primary": "pass", "epochs=20": "inconclusive"})
    assert c["class"] == "undecided" and c["undecided"] == ["epochs=20"]
    assert c["sentence"] == "undecided: holds under 1, fails under 0 of 2 readings tried; inconclusive under 1: epochs=20"
    c = readings.classify({"primary": "inconclusive", "epochs=20": "fail"})
    assert c["class"] == "undecided" and c["sentence"].startswith("holds under none of 2 readings tried")
    c = readings.classify({"primary": "pass", "epochs=20": "fail", "epochs=80": "inconclusive"})
    assert c["class"] == "some" and c["sentence"].endswith("; inconclusive under 1: epochs=80")
    assert readings.classify({"primary": "pass", "epochs=20": "pass"})["class"] == "every"
