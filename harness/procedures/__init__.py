"""The registry of procedures: how an experiment of a claim file becomes a table of rows.

  count   the paper's models' parameter counts; nothing trains
  train   every configuration's seeds trained (or taken from the run cache), then measured by the
          experiment's instruments
  ticket  lottery tickets: iterative magnitude pruning chains with rewinding, and their controls

`rows(exp, tier, ctx, reading)` dispatches to PROCEDURES[exp.procedure] and memoises the table in
the context; `train_group` trains one planned group (a seed group, or a whole ticket chain) for the
executors; `chain_keys` walks a ticket chain by keys alone for the planner. Every row is made by
`_row`, the one place a run and its measurements become a row:

    {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
     "key": cache key, "diverged": bool, "metrics": {name: float}, "provenance": {...}}

Training results and each instrument's measurement are cached separately (an instrument added later
does not retrain; harness/runs/inline.py). A ticket chain's every pruning round's key includes its
parent's key, so the whole chain is content-addressed. An experiment runs under one of its readings
(default the primary): the reading's overrides change the runs' configurations (so their keys) or
the instruments' options, all through `exp.resolved(tier, reading)`.

This is the one door of the paper's ML that the claims engine (harness/claims) uses: besides the
procedures it names what a claim file may set and measure (run settings, datasets, models,
instruments), below.

May import: harness.runs (to expand experiments into runs and to train and cache them) and
harness.paper. Never harness.execute or harness.claims, which stand above it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import torch

from ..runs import cache as cache_mod
from ..runs import inline
from ..runs.context import Context
from ..runs.expand import chain_runs, expand, seed_groups, varying
from ..runs.inline import RUN_FIELDS, Job, cached, train_group as train_seed_group
from ..paper import data as data_mod
from ..paper import measure, models, prune
from ..paper.train import model_from_state

# What a claim file may name (harness/claims/schema.py validates against these).
from ..paper.data import DATASETS, DataError
from ..paper.measure import INSTRUMENT_DEFAULTS, INSTRUMENTS, MOVEMENT_DEFINITIONS, measurement_options, perturb_metric
from ..paper.models import MODELS
from ..paper.train import RunConfig

__all__ = ["PROCEDURES", "rows", "train_group", "chain_keys",  # the procedures
           "RunConfig", "DATASETS", "DataError", "MODELS", "INSTRUMENTS", "INSTRUMENT_DEFAULTS",
           "MOVEMENT_DEFINITIONS", "measurement_options", "perturb_metric"]  # the vocabulary


def rows(exp, tier: str, ctx: Context, reading=None) -> list[dict]:
    """All rows of an experiment in a tier, under a reading (default the primary); memoised per
    context. ctx.run_seconds is keyed by the experiment's name, plus [reading] if not primary.
    A damaged tensors.pt met on the way has had its entry set aside: the experiment is walked
    once more, to train it again."""
    name = exp.name if reading is None or reading.is_primary else f"{exp.name}[{reading.name}]"
    memo = (exp.file, name, tier)
    if memo in ctx._tables:
        return ctx._tables[memo]
    start = time.perf_counter()
    try:
        table = PROCEDURES[exp.procedure](exp, tier, ctx, reading)
    except cache_mod.DamagedEntry:
        table = PROCEDURES[exp.procedure](exp, tier, ctx, reading)
    ctx.run_seconds[name] = time.perf_counter() - start
    ctx._tables[memo] = table
    return table


def _count(exp, tier: str, ctx: Context, reading) -> list:
    """Parameter counts, one row per configuration and seed; nothing trains."""
    return [{"config": varying(cfg), "seed": cfg.seed, "key": None, "diverged": False,
             "metrics": {"params": models.count_params(models.build(cfg.model, cfg.width))}}
            for cfg in expand(exp, tier, ctx.device, reading)]


def _train(exp, tier: str, ctx: Context, reading) -> list:
    """Each seed group trained (or taken from the cache), then measured."""
    r, rows = exp.resolved(tier, reading), []
    for cfgs in seed_groups(expand(exp, tier, ctx.device, reading)):
        for cfg, (key, metrics) in zip(cfgs, train_seed_group(ctx, [Job(c) for c in cfgs])):
            rows.append(_row(ctx, exp, r, cfg, key, metrics))
    return rows


def _ticket(exp, tier: str, ctx: Context, reading) -> list:
    """Each seed group's ticket chain (see _ticket_rows)."""
    r = exp.resolved(tier, reading)
    return [row for cfgs in seed_groups(expand(exp, tier, ctx.device, reading))
            for row in _ticket_rows(ctx, exp, r, cfgs)]


PROCEDURES = {"count": _count, "train": _train, "ticket": _ticket}


def train_group(ctx: Context, group) -> None:
    """Train one planned group (harness.planner.Group) into the cache: a seed group's runs, or a
    whole lottery-ticket chain walked as `run` walks it. The seam between the executors
    (harness/execute/executors.py, which call this in their workers) and the claims, which then find the
    runs cached in `rows`."""
    if group.exp is None:
        train_seed_group(ctx, [Job(c) for c in group.cfgs])
    else:
        _ticket_rows(ctx, group.exp, group.exp.resolved(group.tier, group.reading), list(group.cfgs))


def _num(value) -> float:
    """A number read from a metrics.json: null (a non-finite value, see runs/strict_json.py) is NaN."""
    return math.nan if value is None else value


def _row(ctx, exp, r, cfg, key, metrics, fields=None) -> dict:
    final = {k: _num(v) for k, v in metrics["final"].items()}
    # diverged also where the training losses stayed finite but the final weights' are not
    diverged = bool(metrics["diverged"]) or not all(math.isfinite(final[k]) for k in ("train_loss", "test_loss"))
    row_metrics = {**final, "steps": metrics["steps"], "wall_s": metrics["wall_s"],
                   "epochs_run": len(metrics["history"]),
                   "params": models.count_params(models.build(cfg.model, cfg.width))}
    if not diverged:
        for inst, opts in r["instruments"].items():
            m = inline.measured(ctx, key, cfg, inst, measurement_options(inst, opts),
                                lambda weights, inst=inst, opts=opts: _take(ctx, cfg, inst, opts, weights))
            if inst == "movement":
                row_metrics["movement"] = _num(m["total"])
            elif inst == "hessian":
                row_metrics["hessian_top"] = _num(m["value"])
                row_metrics["hessian_residual"] = _num(m["residual"])
            else:
                for s in opts["sigmas"]:
                    row_metrics[perturb_metric(s)] = _num(m["sigmas"][repr(float(s))]["mean"])
    return {"config": {**varying(cfg), **(fields or {})}, "seed": cfg.seed, "key": key,
            "diverged": diverged, "metrics": row_metrics, "provenance": metrics.get("provenance"),
            "data": metrics.get("data")}


def _take(ctx, cfg, instrument, opts, tensors) -> dict:
    """Apply `instrument` with `opts` to a trained run's weights (`tensors`: theta0, thetaT)."""
    if instrument == "movement":
        names = measure.param_names(models.build(cfg.model, cfg.width))
        return measure.movement(tensors["theta0"], tensors["thetaT"], names, opts["definition"])
    split = ctx.split(cfg)
    idx = torch.from_numpy(data_mod.stratified_subset(split.y_train.cpu().numpy(),
                                                      min(opts["samples"], len(split.y_train)), opts["seed"]))
    idx = idx.to(split.x_train.device)
    x, y = split.x_train[idx], split.y_train[idx]
    model = model_from_state(cfg, tensors["thetaT"])
    start = time.perf_counter()
    if instrument == "hessian":
        out = measure.hessian_top_eigenvalue(model, x, y, iters=opts["iters"], tol=opts["tol"],
                                             chunk=opts["chunk"], dtype=getattr(torch, opts["dtype"]),
                                             seed=opts["seed"])
    else:
        out = measure.perturbation_sharpness(model, x, y, sigmas=opts["sigmas"], draws=opts["draws"],
                                             seed=opts["seed"])
    out["wall_s"] = time.perf_counter() - start
    return out


class _Incomplete(Exception):
    """A ticket chain has a run that is not cached yet (see _ticket_rows)."""


def _ticket_rows(ctx, exp, r, cfgs) -> list:
    """Iterative magnitude pruning for a group of seeds: dense runs, then one round per remaining
    fraction, each pruned from the previous round's trained weights, rewound to the dense theta_0
    and retrained with the mask enforced; plus the controls at the chosen fractions. Each round
    trains all seeds together (one group). Run keys depend on configurations and lineage only, so
    the chain is first walked by keys alone: a chain whose runs are all cached needs none of
    their tensors (a metrics-only cache, brought back from another machine by `python -m harness
    export`). Otherwise it is walked again with the tensors, training what is missing."""
    if not ctx.refresh:  # (--refresh retrains every run: the key-only walk must not)
        try:
            return _ticket_chain(ctx, exp, r, cfgs, live=False)
        except _Incomplete:
            pass
    # A chain cannot resume in another session without its weights: start it only when the whole
    # chain (every round and control, cached rounds included: an over-estimate) fits the budget.
    ctx.check_budget(chain_runs(r["ticket"], cfgs), f"the ticket chain of {exp.name!r}")
    return _ticket_chain(ctx, exp, r, cfgs, live=True)


def _ticket_chain(ctx, exp, r, cfgs, live: bool) -> list:
    t = r["ticket"]
    names = list(models.prunable(models.build(cfgs[0].model, cfgs[0].width), t["include_output"]))
    retrain = [dataclasses.replace(c, epochs=t["retrain_epochs"] or c.epochs) for c in cfgs]
    rows = []

    def tensors(key):
        return inline.tensors(ctx, key, f"to go on with the ticket chain of {exp.file}: {exp.name!r}")

    def group(variant, f, jobs):
        if not live and not all(cached(ctx, j.key, j.cfg, RUN_FIELDS) for j in jobs):
            raise _Incomplete
        out = train_seed_group(ctx, jobs)
        fields = {"remaining": f, "variant": variant}
        if variant == "reinit":  # one configuration across seeds: init_seed = seed + offset
            fields["init_seed"] = f"seed+{t['reinit_seed_offset']}"
        rows.extend(_row(ctx, exp, r, j.cfg, k, m, fields) for j, (k, m) in zip(jobs, out))
        return [k for k, _ in out]

    parents = group("dense", 1.0, [Job(c) for c in cfgs])
    theta0 = [tensors(k)["theta0"] if live else None for k in parents]
    masks = [None] * len(cfgs)
    for f in t["fractions"]:
        if live:
            trained = [tensors(k)["thetaT"] for k in parents]
            masks = [prune.magnitude_mask({n: w[n] for n in names}, f, current=m, scope=t["scope"])
                     for w, m in zip(trained, masks)]
        extras = [{"parent": p, "remaining": f, "variant": "ticket", "scope": t["scope"],
                   "include_output": t["include_output"]} for p in parents]
        parents = group("ticket", f, [Job(c, e, m, prune.apply_mask(th, m) if live else None)
                                      for c, e, m, th in zip(retrain, extras, masks, theta0)])
        if not any(math.isclose(f, c) for c in t["control_fractions"]):
            continue
        for control in t["controls"]:
            jobs = []
            for c, e, m, th in zip(retrain, extras, masks, theta0):
                e = {**e, "variant": control}
                if control == "reinit":  # the paper's control: same mask, a fresh random initialisation
                    jobs.append(Job(dataclasses.replace(c, init_seed=c.seed + t["reinit_seed_offset"]), e, m))
                    continue
                if control == "random":  # review: random pruning at the same per-layer sparsity
                    cm = prune.random_mask(m, seed=c.seed) if live else None
                elif control == "init_magnitude":  # review: one-shot magnitude pruning at initialisation
                    cm = prune.magnitude_mask({n: th[n] for n in names}, f, scope=t["scope"]) if live else None
                else:
                    raise ValueError(f"{exp.file}: experiment {exp.name!r}: field 'ticket.controls': "
                                     f"unknown control {control!r}")
                jobs.append(Job(c, e, cm, prune.apply_mask(th, cm) if live else None))
            group(control, f, jobs)
    return rows


class _KeysOnly:
    """A stand-in run cache for walking a ticket chain by keys alone: every run reads as cached
    with a diverged record (so no row is measured and no tensor is loaded), and every key asked
    for is recorded, in chain order."""

    def __init__(self):
        self.keys = []

    def has(self, key):
        if key not in self.keys:
            self.keys.append(key)
        return True

    def lock(self, key):
        return contextlib.nullcontext()

    def load_metrics(self, key, required=()):
        self.has(key)
        return {"final": {"train_loss": float("nan"), "test_loss": float("nan")}, "history": [],
                "diverged": True, "steps": 0, "wall_s": 0.0}


def chain_keys(exp, tier: str, cfgs: list, reading=None) -> list:
    """Every run key of one seed group's ticket chain, from configurations and lineage alone
    (_ticket_chain walked with live=False, as for a metrics-only cache)."""
    ctx = Context(allow_train=False)
    ctx.cache = _KeysOnly()
    _ticket_chain(ctx, exp, exp.resolved(tier, reading), cfgs, live=False)
    return ctx.cache.keys
