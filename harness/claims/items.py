"""Claim files as pytest collects them (ClaimsFile) and a claim checked in one tier under one
reading as a test item (ClaimItem, `claims/FILE.toml::CLAIM_ID[TIER]` or `[TIER|READING]`): its
verdict made a test outcome, the text a failed claim shows (failure_text), and what the planner is
to train for the collected items (to_plan).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..execute import planner
from ..procedures import DataError
from . import checks, readings, spec
from .results import claim_result, file_label
from .session import state


class ClaimFailed(Exception):
    def __init__(self, result):
        super().__init__(result["detail"])
        self.result = result


class ClaimsFile(pytest.File):
    def collect(self):
        try:
            cf = spec.load(self.path)
        except spec.SpecError as e:
            raise self.CollectError(str(e)) from None
        st = state(self.config)
        for claim in cf.claims:
            exp = claim.experiment
            for tier in claim.tiers:
                for reading in readings.select(exp, tier, st.readings, st.readings_matched, claim):
                    yield ClaimItem.from_parent(self, name=f"{claim.id}[{node_suffix(tier, reading)}]",
                                                claim=claim, tier=tier, experiment=exp, claim_file=cf,
                                                reading=reading)


def node_ids_hint(args) -> str:
    """For a node id FILE.toml::CLAIM[...] on the command line that pytest found nothing for: the
    node ids that claim has (every tier and reading), or the file's claims where it has no such
    claim. Arguments that name an existing node id (or a whole claim) get no line; empty where none
    is left."""
    lines = []
    for arg in args:
        path, sep, node = arg.partition("::")
        if not sep or not path.endswith(".toml") or not Path(path).is_file():
            continue
        claim_id = node.split("[")[0]
        try:
            cf = spec.load(path)
        except spec.SpecError:
            continue  # its collection error says why
        claim = next((c for c in cf.claims if c.id == claim_id), None)
        if claim is None:
            lines.append(f"harness: {path} has no claim {claim_id!r}; its claims: {', '.join(c.id for c in cf.claims)}")
            continue
        ids = [f"{claim.id}[{node_suffix(tier, r)}]" for tier in claim.tiers
               for r in readings.select(claim.experiment, tier, ["all"], claim=claim)]
        if node == claim_id or node in ids:
            continue  # found: not the argument pytest complains about
        lines.append(f"harness: the node ids of {path}::{claim.id} are {', '.join(ids)} (a reading's "
                     "name leaves out the values it shares with the primary reading)")
    return "\n".join(lines)


def node_suffix(tier: str, reading) -> str:
    """TIER for the primary reading (the node ids of today), TIER|READING for another."""
    return tier if reading.is_primary else f"{tier}|{reading.name}"


class NotTrained(Exception):
    """An executor failed to train runs a claim needs."""


class ClaimItem(pytest.Item):
    def __init__(self, *, claim, tier, experiment, claim_file, reading, **kw):
        super().__init__(**kw)
        self.claim, self.tier, self.exp, self.claim_file = claim, tier, experiment, claim_file
        self.reading = reading
        self.reads = checks.reads(claim.tiers[tier]["check"])  # the configurations it reads
        self.add_marker(getattr(pytest.mark, tier))
        if not reading.is_primary:
            self.add_marker(pytest.mark.readings)
        # grouped by the experiment's own file, so that users of FILE.toml:NAME share a worker
        self.add_marker(pytest.mark.xdist_group(f"{file_label(experiment.file)}:{experiment.name}:"
                                                f"{node_suffix(tier, reading)}"))

    def runtest(self):
        st = state(self.config)
        failed = st.failed.get((planner.exp_id(self.exp), self.tier))
        if failed:
            raise NotTrained(f"not run: the {self.config.getoption('--executor')} executor failed to train "
                             f"runs of experiment {self.exp.name!r}: {failed}")
        try:
            result = claim_result(self.claim, self.tier, self.exp, self.claim_file, st.ctx, self.reading)
        finally:  # an experiment's runs train within the claim that first needs them
            if st.inline:
                st.inline.finish()
        self.user_properties.append(("harness_claim", json.dumps(result, default=float)))
        self.user_properties.append(("harness_verdict", result["verdict"]))
        if result["verdict"] == "not run":
            pytest.skip(result["detail"])
        if result["verdict"] == "inconclusive":
            return  # neither pass nor fail: reported with its own word (pytest_report_teststatus)
        if result["verdict"] in ("fail", "diverged") and not self.reading.is_primary:
            # the claim's verdict is the primary reading's; another reading that does not
            # reproduce it is a finding (the report's readings table), not a failed test
            pytest.xfail(f"does not hold under reading {self.reading.name}: {result['detail']}")
        if result["verdict"] != "pass":
            raise ClaimFailed(result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ClaimFailed):
            return failure_text(excinfo.value.result)
        if isinstance(excinfo.value, (DataError, spec.SpecError, NotTrained)):
            return f"{self.claim.file}: claim {self.claim.id!r}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.claim.id}[{node_suffix(self.tier, self.reading)}]"


def failure_text(r: dict) -> str:
    """What a failed claim shows: its verdict and statement, the paper's words, measured against
    expected, and why the tolerance."""
    reading = readings.reading_id(r)
    suffix = r["tier"] if reading == readings.PRIMARY else f"{r['tier']}|{reading}"
    lines = [f"claim {r['id']} [{suffix}] {r['verdict'].upper()}: {r['statement']}",
             f"  paper:    {r['paper']}",
             f"  measured: {r['detail']}",
             f"  expected: {json.dumps({k: v for k, v in r['expect'].items() if k != 'why'})}",
             f"  why:      {r['why']}"]
    lines += [f"  paper disagreement: {d}" for d in r["disagreements"]]
    return "\n".join(lines)


def to_plan(items) -> list:
    """The planner's selection: (experiment, tier, reading, reads) per experiment, tier and reading
    of the claim items, `reads` the selectors of their checks together (checks.union: None where
    one reads every configuration), so that only the configurations they read are planned."""
    out, reads = {}, {}
    for item in items:
        if isinstance(item, ClaimItem):
            key = (planner.exp_id(item.exp), item.tier, item.reading.name)
            out.setdefault(key, (item.exp, item.tier, item.reading))
            reads.setdefault(key, []).append(item.reads)
    return [(*v, checks.union(reads[k])) for k, v in out.items()]
