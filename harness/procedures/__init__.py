"""The registry of procedures: how an experiment of a claim file becomes a table of rows.

  count   the paper's models' parameter counts; nothing trains
  train   every configuration's seeds trained (or taken from the run cache), then measured by the
          experiment's instruments
  ticket  lottery tickets: iterative magnitude pruning chains with rewinding, and their controls

`rows(exp, tier, ctx, reading, reads)` dispatches each seed group (the runs of one configuration,
with `reads` only those a claim reads) to PROCEDURES[exp.procedure](exp, tier, ctx, reading, cfgs)
and memoises its rows in the context; `train_group` trains one planned group (a seed group, or a
whole ticket chain) for the executors. The ticket procedure is ticket.py: it walks the chain's plan (runs/expand.py:
ticket_chain), the plan the planner takes the chain's keys from. Every row is made by row.py's
`make`, the one place a run and its measurements become a row:

    {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
     "key": cache key, "diverged": bool, "metrics": {name: float}, "provenance": {...}}

The instruments an experiment measures are the registry of instruments (instruments.py: each
one record of its options, cache key, metrics, and how it is taken and read). Training results and
each instrument's measurement are cached separately (an instrument added later does not retrain;
harness/runs/inline.py). A ticket chain's every pruning round's key includes its
parent's key, so the whole chain is content-addressed. An experiment runs under one of its readings
(default the primary): the reading's overrides change the runs' configurations (so their keys) or
the instruments' options, all through `exp.resolved(tier, reading)`.

This package is the one door of the paper's ML that the claims engine (harness/claims) uses:
besides the procedures it names what a claim file may set and measure (run settings, datasets,
models, instruments), below.

May import: harness.runs (to expand experiments into runs and to train and cache them) and
harness.paper. Never harness.execute or harness.claims, which stand above it.
"""
from __future__ import annotations

import time

from ..paper import models
from ..runs import cache as cache_mod
from ..runs.context import Context
from ..runs.expand import expand, seed_groups, varying
from ..runs.inline import Job, train_group as train_seed_group
from . import ticket
from . import row

# What a claim file may name (harness/claims/schema.py validates against these).
from ..paper.data import DATASETS, DataError
from ..paper.models import MODELS
from ..paper.config import RunConfig
from ..paper.sharpness import SHARPNESS_KEYS  # the final metrics of run settings: sharpness, validation
from ..paper.validation import VAL_KEYS
from .instruments import INSTRUMENT_DEFAULTS, INSTRUMENTS, measurement_options, perturb_metric

__all__ = ["PROCEDURES", "rows", "train_group",  # the procedures
           "RunConfig", "SHARPNESS_KEYS", "VAL_KEYS", "DATASETS", "DataError", "MODELS", "INSTRUMENTS", "INSTRUMENT_DEFAULTS",
           "measurement_options", "perturb_metric"]  # the vocabulary


def rows(exp, tier: str, ctx: Context, reading=None, reads=None) -> list[dict]:
    """The rows of an experiment in a tier, under a reading (default the primary): with `reads`
    (a claim's check selectors, see runs.expand.may_read), of the configurations they may read
    only, the others neither trained nor read; None: every configuration. Memoised per seed
    group and context, so a later claim that reads more configurations makes only those.
    ctx.run_seconds (keyed by the experiment's name, plus [reading] if not primary) adds the
    seconds spent making rows. A damaged tensors.pt met on the way has had its entry set aside:
    the group is walked once more, to train it again."""
    name = exp.name if reading is None or reading.is_primary else f"{exp.name}[{reading.name}]"
    out, start, made = [], time.perf_counter(), False
    for cfgs in seed_groups(expand(exp, tier, ctx.device, reading, reads)):
        memo = (exp.file, name, tier, tuple(cfgs))
        if memo not in ctx._tables:
            made = True
            try:
                ctx._tables[memo] = PROCEDURES[exp.procedure](exp, tier, ctx, reading, cfgs)
            except cache_mod.DamagedEntry:
                ctx._tables[memo] = PROCEDURES[exp.procedure](exp, tier, ctx, reading, cfgs)
        out.extend(ctx._tables[memo])
    if made:
        ctx.run_seconds[name] = ctx.run_seconds.get(name, 0.0) + time.perf_counter() - start
    return out


def _count(exp, tier: str, ctx: Context, reading, cfgs) -> list:
    """Parameter counts, one row per seed of one configuration; nothing trains."""
    return [{"config": varying(cfg), "seed": cfg.seed, "key": None, "diverged": False,
             "metrics": {"params": models.count_params(models.for_config(cfg))}}
            for cfg in cfgs]


def _train(exp, tier: str, ctx: Context, reading, cfgs) -> list:
    """A seed group trained (or taken from the cache), then measured."""
    r = exp.resolved(tier, reading)
    return [row.make(ctx, exp, r, cfg, key, metrics)
            for cfg, (key, metrics) in zip(cfgs, train_seed_group(ctx, [Job(c) for c in cfgs]))]


PROCEDURES = {"count": _count, "train": _train, "ticket": ticket.procedure}


def train_group(ctx: Context, group) -> None:
    """Train one planned group (harness.execute.planner.Group) into the cache: a seed group's runs,
    or a whole lottery-ticket chain walked as `rows` walks it. The seam between the executors
    (harness/execute/executors.py, which call this in their workers) and the claims, which then
    find the runs cached in `rows`."""
    if group.exp is None:
        train_seed_group(ctx, [Job(c) for c in group.cfgs])
    else:
        ticket.chain_rows(ctx, group.exp, group.exp.resolved(group.tier, group.reading), list(group.cfgs))
