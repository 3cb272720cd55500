"""The scaled tier's claim files (claims/*.toml, `[... .scaled]` sections): the paper's GPU
experiments at a CPU's scale, for the claims whose statement survives the change of scale."""
from pathlib import Path

import pytest

from harness.claims import spec
from harness.runs import expand as ex
from harness.runs.keys import run_key

CLAIMS = Path(__file__).resolve().parents[1] / "claims"
FILES = [spec.load(p) for p in sorted(CLAIMS.glob("*.toml"))]
SCALED = [(f, e) for f in FILES for e in f.experiments.values() if "scaled" in e.tiers]
SCALED_CLAIMS = [c for f in FILES for c in f.claims if "scaled" in c.tiers]


def test_scaled_tier_exists_and_covers_the_gpu_sections():
    assert {Path(f.path).name for f, _ in SCALED} == {"batch_size.toml", "sharpness.toml", "lottery.toml",
                                                       "controls.toml"}
    assert len(SCALED_CLAIMS) >= 20


@pytest.mark.parametrize("f,exp", SCALED, ids=lambda x: getattr(x, "name", ""))
def test_scaled_experiment_states_its_scale_and_trains_less_than_the_paper(f, exp):
    t = exp.tiers["scaled"]
    assert t.get("scale"), f"{exp.name}: a scaled tier says how it departs from the paper's scale"
    assert len(t["seeds"]) >= 5, "five seeds at least: the verdicts are statistics over seeds"
    cost = {tier: sum(ex.training_cost(c)["flops"] for c in ex.expand(exp, tier, "cpu"))
            for tier in ("scaled", "full")}
    assert 0 < cost["scaled"] < cost["full"] / 10
    # its runs are its own: no scaled run is a full-tier run under another name
    assert not {run_key(c) for c in ex.expand(exp, "scaled", "cpu")} & {run_key(c) for c in ex.expand(exp, "full", "cpu")}


@pytest.mark.parametrize("claim", SCALED_CLAIMS, ids=lambda c: c.id)
def test_scaled_claim_tests_a_statement_not_the_papers_number(claim):
    """A claim tied to the paper's absolute numbers gets no scaled section: no scaled expectation
    targets the paper's value, and each says why its statement carries over."""
    t = claim.tiers["scaled"]
    assert "scaled" in claim.experiment.tiers
    assert not ("target" in t["expect"] and claim.paper_value is not None
                and t["expect"]["target"] == claim.paper_value), claim.id
    assert len(t["expect"]["why"]) > 40


def test_ci_leaves_the_scaled_tier_out():
    readme = (CLAIMS.parent / "README.md").read_text()
    ci = (CLAIMS.parent / ".ci" / "run").read_text()
    for text in (readme, ci):
        assert 'pytest tests claims -m "not full and not scaled"' in text
