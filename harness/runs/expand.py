"""Expansion: an experiment of a claim file, in a tier and under a reading, as the runs it trains.

`expand` gives every run (configuration x grid point x seed) as a RunConfig; `seed_groups` groups
runs that differ only in seed (the unit trained together); `training_runs` adds a ticket chain's
rounds and controls; `training_cost` estimates a run's optimiser steps and FLOPs. Shared by the
planner (what is still to train) and the procedures (harness/procedures: rows from runs).
An experiment is read through `exp.resolved(tier, reading)` only (harness/claims/spec.py).
"""
from __future__ import annotations

import dataclasses
import itertools
import math

from ..paper import data as data_mod
from ..paper import models
from ..paper.train import RunConfig


def expand(exp, tier: str, device: str, reading=None) -> list[RunConfig]:
    """Every run of an experiment in a tier (under a reading, default the primary): (configs x
    grid) points, each for every seed; the run settings a reading fixes override every point."""
    r = exp.resolved(tier, reading)
    names = list(r["grid"])
    points = [{**r["base"], **c, **dict(zip(names, values)), **r["fixed"]}
              for c in (r["configs"] or [{}])
              for values in itertools.product(*(r["grid"][n] for n in names))]
    return [RunConfig(dataset=exp.dataset, model=exp.model, seed=s, device=device, **p)
            for p in points for s in r["seeds"]]


def varying(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    for k in ("dataset", "model", "seed", "device"):
        d.pop(k)
    return d


def seed_groups(cfgs: list) -> list:
    """Runs grouped by everything but the seed, in order."""
    groups = {}
    for c in cfgs:
        groups.setdefault(dataclasses.replace(c, seed=0), []).append(c)
    return list(groups.values())


def training_runs(exp, tier: str, device: str = "cuda", reading=None) -> list[RunConfig]:
    """Every training run an experiment needs in a tier (under a reading, default the primary),
    ticket rounds and controls included (a ticket round has its parent's settings but
    `retrain_epochs`; the dense runs come first): for cost estimates."""
    if exp.procedure == "count":
        return []
    cfgs = expand(exp, tier, device, reading)
    if exp.procedure == "train":
        return cfgs
    return chain_runs(exp.resolved(tier, reading)["ticket"], cfgs)


def chain_runs(t: dict, cfgs: list) -> list[RunConfig]:
    """The training runs of ticket chains started from the dense runs `cfgs` (ticket options `t`)."""
    retrain = [dataclasses.replace(c, epochs=t["retrain_epochs"] or c.epochs) for c in cfgs]
    with_controls = sum(any(math.isclose(f, c) for c in t["control_fractions"]) for f in t["fractions"])
    return cfgs + retrain * (len(t["fractions"]) + with_controls * len(t["controls"]))


def training_cost(cfg: RunConfig) -> dict:
    """Optimiser steps and conv/linear FLOPs of one run: 3x the forward cost per training sample
    (forward + backward), plus the per-epoch test evaluation and the final train+test evaluation."""
    info = data_mod.DATASETS[cfg.dataset]
    n = cfg.train_subset or info.train_shape[0]
    m = cfg.test_subset or info.test_shape[0]
    bs = cfg.batch_size or n
    f = models.forward_flops(cfg.model, cfg.width)
    steps_per_epoch = n // bs + (1 if n % bs >= 2 else 0)  # a last batch of one is skipped
    return {"steps": cfg.epochs * steps_per_epoch, "flops": cfg.epochs * (3 * f * n + f * m) + f * (n + m)}
