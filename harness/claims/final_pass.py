"""The pytest side of the final pass over family claims (results.decide_families): a Welch claim
that ran before the rest of its family was judged on a bounded Holm-adjusted p and may have been
inconclusive ("family incomplete"); once every selected claim has run (in the controlling process,
under xdist too), it is judged again from the run cache, and its test report is restated with the
new verdict, so that pytest's summary line, its list of failures and inconclusive claims, its exit
status, the report it writes and `python -m harness report` on the same cache agree claim by claim.
"""
from __future__ import annotations

import json

import pytest

from . import readings
from .results import decide_families, family_key


def category(result: dict) -> tuple:
    """(the terminal reporter's category, the report's outcome) of a claim's result, as the claim
    item reports it (items.ClaimItem.runtest): a fail under another reading than the primary is
    an xfail, 'not run' a skip."""
    v, primary = result["verdict"], readings.reading_id(result) == readings.PRIMARY
    if v == "inconclusive":
        return "inconclusive", "passed"
    if v == "pass":
        return "passed", "passed"
    if v == "not run":
        return "skipped", "skipped"
    if v in ("fail", "diverged") and not primary:
        return "xfailed", "skipped"
    return "failed", "failed"


def run(session, results: list, reports: dict, ctx, failure_text) -> tuple:
    """Judge the family claims of `results` again (read-only `ctx`), restate the pytest report
    (`reports`: family_key -> TestReport) of every claim whose verdict changed, and return (the new
    results, the restated [(node id, old verdict, new result)]). `failure_text(result)` is the
    text a failed claim shows (items.ClaimItem.repr_failure's)."""
    new = decide_families(results, ctx)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    restated = []
    for old, r in zip(results, new):
        rep = reports.get(family_key(old))
        if rep is None or old["verdict"] == r["verdict"]:
            continue
        before, _ = category(old)
        after, outcome = category(r)
        rep.outcome = outcome
        rep.user_properties = [(k, v) for k, v in rep.user_properties if k not in ("harness_claim", "harness_verdict")]
        rep.user_properties += [("harness_claim", json.dumps(r, default=float)), ("harness_verdict", r["verdict"])]
        rep.longrepr = failure_text(r) if outcome == "failed" else None
        if after == "xfailed":
            rep.wasxfail = f"does not hold under reading {readings.reading_id(r)}: {r['detail']}"
        if tr is not None:
            if rep in tr.stats.get(before, []):
                tr.stats[before].remove(rep)
            tr.stats.setdefault(after, []).append(rep)
        if outcome == "failed":
            session.testsfailed += 1
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        restated.append((rep.nodeid, old["verdict"], r))
    return new, restated


def summary(terminalreporter, restated: list) -> None:
    """The claims the final pass restated, each with its verdict before and after."""
    if not restated:
        return
    terminalreporter.section("family claims decided once their whole family had run")
    for nodeid, before, r in restated:
        terminalreporter.write_line(f"{r['verdict'].upper()} (was {before}) {nodeid}: {r['detail']}")
