import textwrap

import pytest

from harness.claims import spec

GOOD = """
section = "X"
title = "Test"

[experiments.e]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {epochs = 1}
grid = {width = [8, 16]}
smoke = {seeds = [0]}

[[claims]]
id = "c1"
statement = "s"
paper = "p"
experiment = "e"
check = {type = "value", metric = "train_acc", where = {width = 8}}
[claims.smoke]
expect = {min = 90.0, why = "because"}
"""


def load(tmp_path, text):
    p = tmp_path / "claims.toml"
    p.write_text(textwrap.dedent(text))
    return spec.load(p), p


def bad(tmp_path, old, new, *fragments):
    assert old in GOOD, old
    p = tmp_path / "bad.toml"
    p.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(spec.SpecError) as e:
        spec.load(p)
    msg = str(e.value)
    assert str(p) in msg, msg
    for f in fragments:
        assert f in msg, msg


def test_good_file_parses(tmp_path):
    cf, _ = load(tmp_path, GOOD)
    assert cf.claims[0].tiers["smoke"]["check"]["where"] == {"width": 8}
    assert cf.experiments["e"].resolved("smoke")["base"] == {"epochs": 1}


def test_malformed_toml(tmp_path):
    bad(tmp_path, 'title = "Test"', 'title = "Test', "malformed TOML")


def test_unknown_key(tmp_path):
    bad(tmp_path, 'statement = "s"', 'statement = "s"\nstatment = "typo"', "claim 'c1'", "'statment'", "unknown key")


def test_missing_field(tmp_path):
    bad(tmp_path, 'paper = "p"\n', '', "claim 'c1'", "'paper'", "missing")


def test_wrong_type(tmp_path):
    bad(tmp_path, "base = {epochs = 1}", 'base = {epochs = "one"}', "experiment 'e'", "'base.epochs'", "expected int")
    bad(tmp_path, "min = 90.0", 'min = "ninety"', "claim 'c1'", "'smoke.expect.min'")


def test_unknown_experiment_metric_check_and_where_field(tmp_path):
    bad(tmp_path, 'experiment = "e"', 'experiment = "nope"', "claim 'c1'", "'experiment'", "unknown experiment 'nope'")
    bad(tmp_path, 'metric = "train_acc"', 'metric = "train_accuracy"', "claim 'c1'", "'check.metric'", "unknown metric")
    bad(tmp_path, 'type = "value"', 'type = "approx"', "claim 'c1'", "'check.type'", "unknown check 'approx'")
    bad(tmp_path, "where = {width = 8}", "where = {depth = 8}", "claim 'c1'", "'check.where.depth'")
    bad(tmp_path, 'model = "mlp"', 'model = "resnet"', "experiment 'e'", "'model'")
    bad(tmp_path, 'procedure = "train"', 'procedure = "finetune"', "experiment 'e'", "'procedure'")


def test_ticket_options_are_checked(tmp_path):
    text = GOOD.replace('procedure = "train"', 'procedure = "ticket"')
    bad_text = text.replace("base = {epochs = 1}", 'base = {epochs = 1}\nticket = {controls = ["shuffle"]}')
    p = tmp_path / "t.toml"
    p.write_text(bad_text)
    with pytest.raises(spec.SpecError, match=r"'ticket.controls': unknown control 'shuffle'"):
        spec.load(p)
    p.write_text(text.replace("base = {epochs = 1}", 'base = {epochs = 1}\nticket = {fractions = [0.5, 1.5]}'))
    with pytest.raises(spec.SpecError, match=r"'ticket.fractions': 1.5"):
        spec.load(p)


def test_expectation_needs_a_why_and_a_band(tmp_path):
    bad(tmp_path, 'expect = {min = 90.0, why = "because"}', "expect = {min = 90.0}", "'smoke.expect.why'", "missing")
    bad(tmp_path, 'expect = {min = 90.0, why = "because"}', 'expect = {target = 90.0, why = "b"}', "abs_tol")


def test_claim_tier_needs_the_experiment_tier(tmp_path):
    bad(tmp_path, "[claims.smoke]", "[claims.full]", "claim 'c1'", "'full'", "no 'full' tier")


def test_instrument_metrics_become_known(tmp_path):
    text = GOOD.replace('model = "mlp"', 'model = "mlp"\nmeasure = ["hessian", "perturbation", "movement"]')
    cf, _ = load(tmp_path, text)
    m = cf.experiments["e"].metrics("smoke")
    assert {"hessian_top", "movement", "perturb_0.01", "perturb_0.0005"} <= m


def test_every_claim_file_in_the_repo_is_valid():
    from pathlib import Path
    files = sorted((Path(__file__).resolve().parent.parent / "claims").glob("*.toml"))
    assert files
    for f in files:
        assert spec.load(f).claims


def test_validates_says_what_a_calibration_checks(tmp_path):
    cf, _ = load(tmp_path, GOOD.replace('title = ', 'source = "A, B 2020"\nvalidates = "the counting"\ntitle = ', 1))
    assert (cf.source, cf.validates) == ("A, B 2020", "the counting")
    bad(tmp_path, 'title = ', 'validates = "the counting"\ntitle = ', "validates", "set `source` too")
