"""A claim's result: its experiment's rows (through the procedures' registry), the check
evaluated on them, and the record the report, results.json and the pytest item show. Shared by the
pytest plugin and `python -m harness report`.
"""
from __future__ import annotations

import traceback
from pathlib import Path

from .. import procedures
from ..procedures import DataError
from ..runs.keys import run_key
from ..runs.cache import DamagedEntry
from ..runs.context import Context, NotCached, OutOfBudget
from ..runs.expand import expand
from . import checks, figures, readings, spec, stats
from .kinds import kind


def file_label(path) -> str:
    """How a claim file is named: relative to the invocation directory where it is under it
    (claims/FILE.toml in the project), else its absolute path."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def claim_result(claim, tier, exp, cf, ctx, reading=None) -> dict:
    """Run the claim's experiment (cached) under a reading (default the primary) and evaluate its
    check: the record the report shows, with `reading_id` ("primary" or the reading's name) and
    `reading_values` (the value of every parameter the experiment declares readings for)."""
    reading = reading or exp.readings(tier)[0]
    t = claim.tiers[tier]
    base = {"id": claim.id, "file": file_label(claim.file), "order": cf.claims.index(claim),
            "section": claim.section, "title": cf.title, "source": cf.source, "validates": cf.validates,
            "headline": claim.headline,
            "depends_on": claim.depends_on,
            "tier": tier, "statement": claim.statement, "paper": claim.paper,
            "paper_value": claim.paper_value, "experiment": exp.name, "procedure": exp.procedure, "check": t["check"],
            "expect": t["expect"], "expected": checks.describe(t["check"], t["expect"]),
            "why": t["expect"]["why"], "disagreements": claim.disagreements,
            "reading": claim.reading, "experiment_notes": exp.notes,
            "reading_id": reading.name, "reading_values": dict(reading.values)}
    if reading.is_primary and exp.reading_params:  # what the report shows beside the readings' rows
        base["readings_declared"] = {p.name: {"paper": p.paper, "values": [
            {k: v[k] for k in ("value", "why", "primary") if k in v} for v in p.values]}
            for p in exp.reading_params.values()}
    reads = checks.reads(t["check"])  # only the configurations the check reads train or are read
    try:
        rows = procedures.rows(exp, tier, ctx, reading, reads)
        out = checks.evaluate(t["check"], t["expect"], rows)
        if kind(t["check"]).family:  # decided on the p adjusted within the tier's family of such claims (Welch)
            out = checks.evaluate(t["check"], t["expect"], rows,
                                  adjusted_p=_adjusted_p(claim, tier, ctx, out["measured"]["p"]))
    except NotCached as e:
        return {**base, "verdict": "not run", "measured": None, "detail": _not_run(exp, tier, ctx, reading, e, reads),
                "table": []}
    except (DataError, checks.SelectionError) as e:
        return {**base, "verdict": "error", "measured": None, "detail": str(e), "table": []}
    except Exception as e:  # a fault of the harness or of the cache: an error verdict, never a missing row
        tail = "" if isinstance(e, DamagedEntry) else "\n" + "".join(traceback.format_exception(e)[-4:-1]).rstrip()
        return {**base, "verdict": "error", "measured": None, "table": [],
                "detail": f"{type(e).__name__}: {e}{tail}"}
    out["plot"] = figures.experiment_series(exp, rows) if exp.plot else None
    out["experiment_seconds"] = ctx.run_seconds.get(
        exp.name if reading.is_primary else f"{exp.name}[{reading.name}]")
    # training time recorded with each run (per model; a seed group's wall time is split evenly),
    # so a report assembled from runs trained in several sessions still says what they cost
    out["run_wall_s"] = {row["key"]: row["metrics"]["wall_s"] for row in rows
                         if row["key"] and "wall_s" in row["metrics"]}
    out["run_provenance"] = {row["key"]: _with_data(row) for row in rows if row["key"]}
    return {**base, **out}


def _adjusted_p(claim, tier, ctx, p) -> stats.FamilyP | None:
    """Holm's adjusted p of a Welch claim whose raw p is `p`, within its family: every Welch claim
    declared in `tier` in the claim files beside it, whichever a command selected. The other
    members' p come from the run cache under their primary reading, read only (nothing trains
    for them). A member whose runs are not cached is unknown: the adjusted p is then bounded from
    both sides (stats.holm_range: the unknowns' p at 0 and at 1), and the claim is decided only
    where the whole range decides (kinds/welch.py), so that no decision taken with part of the
    family turns once it is complete."""
    judge = getattr(ctx, "_family_judge", None)
    if judge is None:  # one read-only context per session: its tables and the p it found are memoised
        judge = ctx._family_judge = Context(device=ctx.device, data_dir=ctx.data_dir,
                                            cache_root=str(ctx.cache.root), allow_train=False)
        judge._files, judge._ps = {}, {}
    ps, mine, own = [], None, (Path(claim.file).resolve(), claim.id)
    for path in sorted(Path(claim.file).parent.glob("*.toml")):
        if path not in judge._files:
            judge._files[path] = (path.resolve(), spec.load(path))
        resolved, cf = judge._files[path]
        for c in cf.claims:
            t = c.tiers.get(tier)
            if not t or t["check"]["type"] != claim.tiers[tier]["check"]["type"]:
                continue
            if (resolved, c.id) == own:
                mine = len(ps)
                ps.append(p)
                continue
            if (resolved, c.id, tier) not in judge._ps:  # (a p once found stands: runs are not taken out of a cache)
                try:
                    other = checks.evaluate(t["check"], t["expect"], procedures.rows(
                        c.experiment, tier, judge, reads=checks.reads(t["check"])))
                    if other["verdict"] != "diverged":
                        judge._ps[resolved, c.id, tier] = other["measured"]["p"]
                except (NotCached, DataError, checks.SelectionError, DamagedEntry):
                    pass
            ps.append(judge._ps.get((resolved, c.id, tier)))
    if mine is None or p is None or p != p:  # (no p of its own, a group of one seed: no test to adjust)
        return None
    low, high = stats.holm_range(ps)[mine]
    missing = sum(q is None or q != q for q in ps)
    return stats.FamilyP(low, high, missing, len(ps))


def _with_data(row):
    """A row's provenance with the data file it was trained on (name and the start of its sha256),
    where the run recorded it (runs made before the project recorded it have neither)."""
    prov, data = row.get("provenance"), row.get("data")
    if not isinstance(data, dict) or not data.get("sha256"):
        return prov
    return {**(prov or {}), "data": f"{data.get('file')} sha256 {data['sha256'][:16]}"}


def _not_run(exp, tier, ctx, reading, err, reads=None) -> str:
    """'not run (k of N runs missing)': the runs of `exp` in `tier` that the claim reads (`reads`,
    its check's selectors) absent from the cache (for a ticket experiment its dense runs, the start
    of the chain); all present means a measurement or a later ticket round is missing, and the
    NotCached message says which. Under a time budget (runs.context.OutOfBudget) the budget's
    message follows."""
    keys = [run_key(c) for c in expand(exp, tier, ctx.device, reading, reads)]
    missing = sum(not ctx.cache.has(k) for k in keys)
    runs = "dense runs" if exp.procedure == "ticket" else "runs"
    if missing:
        budget = f": {err}" if isinstance(err, OutOfBudget) else ""
        return f"not run ({missing} of {len(keys)} {runs} missing){budget}"
    if exp.procedure == "ticket":
        return f"not run (ticket chain not complete: {err})"
    return f"not run (all {len(keys)} runs cached, but: {err})"


def with_primaries(results: list, ctx) -> list:
    """`results` plus, for every claim checked only under other readings, its primary reading's
    result judged from the run cache (read only: `ctx` may not train), as `python -m harness
    report` does; where its runs are not cached, "not run", saying it was not run in this session.
    These results carry "in_session": False."""
    have = {(r["file"], r["id"], r["tier"]) for r in results if readings.reading_id(r) == readings.PRIMARY}
    out, files = list(results), {}
    for r in results:
        key = (r["file"], r["id"], r["tier"])
        if key in have:
            continue
        have.add(key)
        cf = files.get(r["file"]) or files.setdefault(r["file"], spec.load(r["file"]))
        claim = next(c for c in cf.claims if c.id == r["id"])
        primary = claim_result(claim, r["tier"], claim.experiment, cf, ctx)
        if primary["verdict"] == "not run":
            primary["detail"] = f"not run in this session (only other readings were selected); {primary['detail']}"
        out.append({**primary, "in_session": False})
    return out


def family_key(r: dict) -> tuple:
    """A result's identity within a session: (file, id, tier, reading)."""
    return r["file"], r["id"], r["tier"], readings.reading_id(r)


def decide_families(results: list, ctx) -> list:
    """The final pass over a session's family claims (Welch: decided on a Holm-adjusted p): once
    every claim selected has run, each family claim that has a measurement is judged again from
    the run cache (read only: `ctx` may not train), so that a member that ran before the rest of its
    family did is decided on the family as it now stands, as `python -m harness report` decides it
    on the same cache. A result judged here carries "final_pass": True; the others are returned
    as they were."""
    out, files = [], {}
    for r in results:
        if r.get("measured") is None or not kind(r["check"]).family:
            out.append(r)
            continue
        cf = files.get(r["file"]) or files.setdefault(r["file"], spec.load(r["file"]))
        claim = next(c for c in cf.claims if c.id == r["id"])
        exp = claim.experiment
        reading = next(x for x in exp.readings(r["tier"]) if x.name == readings.reading_id(r))
        again = claim_result(claim, r["tier"], exp, cf, ctx, reading)
        out.append({**again, "experiment_seconds": r.get("experiment_seconds"), "final_pass": True,
                    **({"in_session": r["in_session"]} if "in_session" in r else {})})
    return out
