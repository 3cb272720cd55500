"""What the report says each experiment trains and costs: its plan from its claim file (runs,
optimiser steps, PFLOP, the readings beyond the primary and what they add), the command that runs
it, and per experiment[tier] its claims' verdicts and what is missing. An experiment trains the
configurations its claims read (`claim_reads`; harness/runs/expand.py: may_read), as the planner
plans them."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from . import checks, readings


def claim_reads(claims, tier: str, ids=None) -> dict:
    """{"file.toml:experiment": the check selectors of its claims in `tier`} (checks.union: None
    where one reads every configuration), for the claims with an id in `ids` (None: every one): the
    configurations a tier (or that selection of claims) trains."""
    out = {}
    for claim in claims:
        if tier in claim.tiers and (ids is None or claim.id in ids):
            exp = claim.experiment
            out.setdefault(f"{Path(exp.file).name}:{exp.name}", []).append(checks.reads(claim.tiers[tier]["check"]))
    return {k: checks.union(v) for k, v in out.items()}


def _load_claim_files(results: list) -> dict:
    """{file: ClaimFile or None} for the files the results name (None where it cannot be read, e.g.
    results built elsewhere): the report reads the experiments' procedure, plan and readings there."""
    from . import spec
    out = {}
    for f in dict.fromkeys(r["file"] for r in results):
        try:
            out[f] = spec.load(f, with_claims=False)
        except Exception:
            out[f] = None
    return out


def _cost(cfgs) -> dict:
    from ..runs.expand import training_cost
    costs = [training_cost(c) for c in cfgs]
    return {"runs": len(cfgs), "steps": sum(c["steps"] for c in costs), "pflop": sum(c["flops"] for c in costs) / 1e15}


def command(file: str, tier: str, readings_sel: tuple = ()) -> str:
    """The pytest command that trains (what is missing of) a claim file's experiments in a tier and
    checks their claims; with `readings_sel`, under those readings (NAME=VALUE pairs)."""
    gpu = " --gpu" if tier == "full" else ""
    return (f"pytest {file} -m {tier}{gpu}"
            + "".join(f" --readings {r}" for r in readings_sel))


def primary_keys(exp, tier: str, reads=None) -> set:
    """The run keys of an experiment's primary (dense) runs in a tier (`reads`: of the
    configurations those check selectors read, None: all): what its readings may share."""
    from ..runs import keys as run_keys
    from ..runs import expand as ex
    return set() if exp.procedure == "count" else {run_keys.run_key(c) for c in ex.expand(exp, tier, "cuda", None, reads)}


def reading_runs(exp, tier: str, seen: set, reads=None, selection=("all",)) -> list:
    """[(reading, its training runs not yet counted)] for every reading of `exp` in `tier` beyond the
    primary: a run counts once, however many readings or experiments share it (`seen`: the run keys
    counted so far, the primaries' included; the runs counted here are added). A ticket's pruning
    rounds have no key of their own and always count; a reading that only changes an instrument
    option trains nothing new. `reads`: the configurations those check selectors read (None: all);
    `selection`: the readings listed (as --readings: 'all', or NAME=VALUE pairs). The one rule of a
    reading's cost, for the report and `python -m harness plan`."""
    from ..runs import keys as run_keys
    from ..runs import expand as ex
    out = []
    if exp.procedure == "count":
        return out
    for reading in readings.select(exp, tier, list(selection))[1:]:
        dense = len(ex.expand(exp, tier, "cuda", reading, reads))
        runs = []
        for i, cfg in enumerate(ex.training_runs(exp, tier, reading=reading, reads=reads)):
            key = run_keys.run_key(cfg) if exp.procedure == "train" or i < dense else None
            if key is None or key not in seen:
                seen.add(key)
                runs.append(cfg)
        out.append((reading, runs))
    return out


def experiment_plan(exp, file: str, tier: str, seen: set | None = None, reads=None) -> dict:
    """What an experiment trains in a tier, from its claim file: procedure, runs, optimiser steps
    and PFLOP (harness.runs.expand, as `python -m harness plan`; `reads`: of the configurations
    those check selectors read, None: all), and per declared reading beyond the primary the runs
    it adds (`reading_runs`: counted once, with `seen` the run keys counted already, by default
    this experiment's primary's), their cost and the command that runs it."""
    from ..runs import expand as ex
    out = {"procedure": exp.procedure, "model": exp.model, "dataset": exp.dataset, "notes": exp.notes,
           "command": command(file, tier), "readings": []}
    if exp.procedure == "count":
        return {**out, "runs": 0, "steps": 0, "pflop": 0.0}
    out.update(_cost(ex.training_runs(exp, tier, reads=reads)))
    for reading, new in reading_runs(exp, tier, primary_keys(exp, tier, reads) if seen is None else seen, reads):
        pairs = tuple(f"{p}={readings.format_value(v)}" for p, v in reading.changed)
        out["readings"].append({"name": reading.name, **_cost(new), "command": command(file, tier, pairs)})
    return out


def _reads(r: dict):
    """The selectors a result's check reads (None: every configuration, also where it has none)."""
    try:
        return checks.reads(r["check"])
    except Exception:  # results built elsewhere, without a check the kinds know
        return None


_MISSING = re.compile(r"(\d+) of (\d+) (?:dense )?runs missing")


def experiments(results: list, files: dict, measured_s: dict) -> dict:
    """Per experiment[tier]: its claims' verdicts, training-free or not, what is missing and what
    it costs, the command, its readings (declared, tried or not) and the training time measured
    with its runs (`measured_s`, {experiment[tier]: seconds})."""
    out, seen, reads = {}, set(), {}
    for r in results:  # the configurations each experiment[tier]'s claims read
        reads.setdefault(f"{r['experiment']}[{r['tier']}]", []).append(_reads(r))
    reads = {k: checks.union(v) for k, v in reads.items()}
    for r in results:  # every primary's runs first: a reading's run that one of them trains is not new
        cf = files.get(r["file"])
        exp = cf.experiments.get(r["experiment"]) if cf else None
        if exp is not None and r["tier"] in exp.tiers:
            try:
                seen |= primary_keys(exp, r["tier"], reads[f"{r['experiment']}[{r['tier']}]"])
            except Exception:  # (experiment_plan below says so)
                pass
    for r in results:
        key = f"{r['experiment']}[{r['tier']}]"
        e = out.get(key)
        if e is None:
            cf = files.get(r["file"])
            exp = cf.experiments.get(r["experiment"]) if cf else None
            plan = None
            if exp is not None:
                try:
                    plan = experiment_plan(exp, r["file"], r["tier"], seen, reads[key])
                except Exception:  # a plan the expansion cannot cost: the report still renders
                    plan = None
            procedure = r.get("procedure") or (plan or {}).get("procedure") or \
                ("count" if r["check"].get("metric") == "params" else "train")
            e = out[key] = {"key": key, "experiment": r["experiment"], "tier": r["tier"], "file": r["file"],
                            "section": r["section"], "procedure": procedure,
                            "training_free": procedure == "count", "plan": plan,
                            "command": (plan or {}).get("command") or command(r["file"], r["tier"]),
                            "verdicts": Counter(), "claims": [], "missing": None,
                            "measured_s": measured_s.get(key),
                            "notes": r.get("experiment_notes") or "", "tried": {},
                            "reads": None if reads[key] is None else list(reads[key]),
                            "declared": r.get("readings_declared") or {},
                            # reading values beyond what the paper states: {"epochs=20": what it states}
                            "outside": {f"{p.name}={readings.format_value(v['value'])}": v["outside"]
                                        for p in (exp.reading_params.values() if exp is not None else ())
                                        for v in p.values if v.get("outside")}}
        e["verdicts"][r["verdict"]] += 1
        e["claims"].append(r["anchor"])
        if r["verdict"] == "not run":
            m = _MISSING.search(r.get("detail", ""))
            if m and int(m.group(2)) >= (e["missing"] or {}).get("of", 0):  # the claim reading the most
                e["missing"] = {"runs": int(m.group(1)), "of": int(m.group(2))}
    for e in out.values():
        e["verdicts"] = dict(e["verdicts"])
        plan = e["plan"]
        if plan and e["missing"]:
            share = e["missing"]["runs"] / e["missing"]["of"] if e["missing"]["of"] else 1.0
            e["missing"]["pflop"] = plan["pflop"] * share  # exact when every run is missing
            e["missing"]["all"] = e["missing"]["runs"] == e["missing"]["of"]
    return out


def pflop_text(pflop: float) -> str:
    return f"{pflop:,.2f} PFLOP" if pflop < 10 else f"{pflop:,.0f} PFLOP"



def missing_total(exps: dict, files: dict) -> dict:
    """What the experiments with claims not run still train, every run counted once however many
    experiments share it (a control that reuses a sweep's runs adds none), a ticket chain's pruning
    rounds counted as runs as their PFLOP are: {'runs', 'pflop', 'shared'} (shared: the runs two
    waiting experiments both list). Each experiment's `missing` gains 'trains' (its runs to train,
    pruning rounds included), 'new' (those no earlier row lists) and 'shared_with'. An experiment
    missing only some of its runs adds its own estimate (which of them are missing is not known)."""
    from ..runs import keys as run_keys
    from ..runs import expand as ex
    seen, runs, pflop, listed = {}, 0, 0.0, 0
    for e in exps.values():
        m = e.get("missing")
        if not m or not e["verdicts"].get("not run"):
            continue
        cf = files.get(e["file"])
        exp = cf.experiments.get(e["experiment"]) if cf else None
        if exp is None or not m.get("all"):
            m.update(trains=m["runs"], new=m["runs"], shared_with=[])
            listed, runs, pflop = listed + m["runs"], runs + m["runs"], pflop + m.get("pflop", 0.0)
            continue
        reads = None if e.get("reads") is None else tuple(e["reads"])
        dense, trains, new, shared = len(ex.expand(exp, e["tier"], "cuda", None, reads)), 0, 0, set()
        for i, cfg in enumerate(ex.training_runs(exp, e["tier"], reads=reads)):
            key = run_keys.run_key(cfg) if exp.procedure == "train" or i < dense else None
            trains += 1
            if key is not None and key in seen:
                shared.add(seen[key])
                continue
            if key is not None:
                seen[key] = e["experiment"]
            new += 1
            pflop += ex.training_cost(cfg)["flops"] / 1e15
        m.update(trains=trains, new=new, shared_with=sorted(shared))
        listed, runs = listed + trains, runs + new
    return {"runs": runs, "pflop": pflop, "shared": listed - runs}


def gpu_estimates(exps: dict, devices: dict) -> dict:
    """{experiment[tier]: {'s', 'rate'}}: the training time of each experiment's missing runs,
    estimated from the throughput measured on a GPU (PFLOP per second of recorded training time)
    by an experiment of the same model and dataset whose primary runs were all trained on one GPU
    (`devices`: {experiment[tier]: its primary runs' devices}); labelled as an estimate."""
    rates = {}
    for k, e in exps.items():
        plan, dev = e.get("plan") or {}, sorted(devices.get(k) or [])
        if e.get("measured_s") and plan.get("pflop") and len(dev) == 1 and not dev[0].startswith("cpu") \
                and not e.get("missing"):
            rates.setdefault((plan["model"], plan["dataset"]), {
                "pflop_s": plan["pflop"] / e["measured_s"], "experiment": e["experiment"], "device": dev[0],
                "text": f"{e['experiment']}'s measured rate: {pflop_text(plan['pflop'])} in {e['measured_s']:,.0f} s "
                        f"on {dev[0]}"})
    out = {}
    for k, e in exps.items():
        plan, m = e.get("plan") or {}, e.get("missing") or {}
        rate = rates.get((plan.get("model"), plan.get("dataset")))
        if rate and m.get("pflop"):
            out[k] = {"s": m["pflop"] / rate["pflop_s"], "rate": rate["text"], "device": rate["device"]}
    return out


def duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"
