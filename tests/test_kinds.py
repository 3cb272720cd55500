"""Check kinds are one unit each (harness/claims/kinds/): a kind registered from outside the engine
(here, from this test module) is parsed, evaluated and shown in the report with no engine edit."""
import json
import math

import pytest

from harness.claims import checks, kinds, report, spec
from harness.claims.kinds.common import Kind, _fmt, _values, outcome
from harness.claims.results import claim_result
from harness.runs import cache, keys
from harness.runs.context import Context
from harness.runs.expand import expand


class Spread(Kind):
    """A toy kind: the largest minus the smallest seed's value at one configuration, at most `max`."""
    name = "spread"
    words = "seed spread"
    expect_fields = {"max"}

    def validate(self, expect, fail):
        if "max" not in expect:
            fail(".max", "missing")

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        from harness.claims import stats
        vals = _values(sel[0], check["metric"])
        spread = max(vals) - min(vals)
        est = stats.Estimate(spread, math.nan, (spread, spread), len(vals), "exact")
        verdict = "pass" if spread <= expect["max"] else "fail"
        return outcome(verdict, est, max(spread - expect["max"], 0.0), None, "",
                       f"{check['metric']} seed spread = {_fmt(est)}; expected <= {expect['max']:g}")

    def explain(self, r):
        return f"largest minus smallest seed: {r['measured']['value']:g}"


CLAIMS = """
section = "V-E"
title = "Toy"

[experiments.toy]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {width = 16, train_subset = 256, epochs = 1, batch_size = 16, lr = 0.01}
smoke = {seeds = [0, 1, 2]}

[[claims]]
id = "tight"
statement = "Seeds agree within 1 pp"
paper = "-"
experiment = "toy"
check = {type = "spread", metric = "test_acc"}
[claims.smoke]
expect = {max = 1.0, why = "w"}

[[claims]]
id = "very-tight"
statement = "Seeds agree within 0.1 pp"
paper = "-"
experiment = "toy"
check = {type = "spread", metric = "test_acc"}
[claims.smoke]
expect = {max = 0.1, why = "w"}
"""


@pytest.fixture
def spread_kind():
    kinds.register(Spread())
    yield
    del kinds.KINDS["spread"]


def test_a_kind_registered_from_a_test_gets_a_verdict_and_a_card(spread_kind, tmp_path):
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "toy.toml").write_text(CLAIMS)
    cf = spec.load(claims / "toy.toml")
    rc = cache.RunCache(tmp_path / "cache")
    for cfg in expand(cf.experiments["toy"], "smoke", "cpu"):
        acc = [90.0, 90.5, 90.3][cfg.seed]
        final = {"train_acc": 100.0, "test_acc": acc, "train_loss": 0.01, "test_loss": 0.3, "gen_gap": 100 - acc}
        rc.save(keys.run_key(cfg), {"config": cfg.to_dict(), "extra": None, "final": final, "history": [final],
                                     "diverged": False, "steps": 16, "wall_s": 1.5})
    ctx = Context(cache_root=str(tmp_path / "cache"), allow_train=False)
    results = [claim_result(c, "smoke", c.experiment, cf, ctx) for c in cf.claims]
    assert [(r["id"], r["verdict"]) for r in results] == [("tight", "pass"), ("very-tight", "fail")]
    assert results[1]["measured"]["value"] == pytest.approx(0.5)
    assert results[1]["detail"].endswith("; misses by 0.4")
    json_path, html_path = report.write(results, tmp_path / "out", wall_s=1.0)
    doc, html = json.loads(json_path.read_text()), html_path.read_text()
    assert {c["id"]: c["verdict"] for c in doc["claims"]} == {"tight": "pass", "very-tight": "fail"}
    card = html[html.index('id="toy-very-tight-smoke"'):]
    card = card[:card.index("</article>")]
    assert "<code>spread</code> of <code>test_acc</code>" in card
    assert "largest minus smallest seed: 0.5" in card and "at most 0.1 %" in card  # its explanation, its band


def test_an_unregistered_kind_is_a_spec_error(tmp_path):
    (tmp_path / "toy.toml").write_text(CLAIMS)
    with pytest.raises(spec.SpecError, match="unknown check 'spread'"):
        spec.load(tmp_path / "toy.toml")


def test_a_kinds_own_validation_names_the_field(spread_kind, tmp_path):
    (tmp_path / "toy.toml").write_text(CLAIMS.replace("expect = {max = 0.1, ", "expect = {"))
    with pytest.raises(spec.SpecError, match=r"claim 'very-tight': field 'smoke.expect.max': missing"):
        spec.load(tmp_path / "toy.toml")


def test_the_registry_holds_every_kind_the_claim_files_use():
    assert set(kinds.KINDS) == {"value", "all", "ratio", "difference", "monotonic", "loglog_slope", "welch"}
    assert checks.describe({"type": "value", "metric": "params"}, {"target": 5.0, "abs_tol": 0.0}) == "= 5"
