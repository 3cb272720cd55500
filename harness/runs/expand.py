"""Expansion: an experiment of a claim file, in a tier and under a reading, as the runs it trains.

`expand` gives every run (configuration x grid point x seed) as a RunConfig; `seed_groups` groups
runs that differ only in seed (the unit trained together); `ticket_chain` plans a lottery-ticket
chain from its dense runs (every round and control, each run's configuration, lineage and key,
from configurations alone); `training_runs` adds a ticket chain's rounds and controls;
`training_cost` estimates a run's optimiser steps and FLOPs. Shared by the planner (what is still
to train: harness/execute/planner.py) and the procedures (harness/procedures: rows from runs; the
ticket chain is trained by walking its plan, so the planner's keys are the keys it trains).
An experiment is read through `exp.resolved(tier, reading)` only (harness/claims/spec.py).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from ..paper import data as data_mod
from ..paper import models, prune
from ..paper.config import RunConfig
from ..paper.train import steps_per_epoch
from .keys import run_key


def expand(exp, tier: str, device: str, reading=None, reads=None) -> list[RunConfig]:
    """Every run of an experiment in a tier (under a reading, default the primary): (configs x
    grid) points, each for every seed; the run settings a reading fixes override every point.
    `reads` (None: every run): only the runs one of these check selectors may read (`may_read`);
    a point is kept or left out with all its seeds."""
    r = exp.resolved(tier, reading)
    names = list(r["grid"])
    points = [{**r["base"], **c, **dict(zip(names, values)), **r["fixed"]}
              for c in (r["configs"] or [{}])
              for values in itertools.product(*(r["grid"][n] for n in names))]
    runs = [RunConfig(dataset=exp.dataset, model=exp.model, seed=s, device=device, **p)
            for p in points for s in r["seeds"]]
    return runs if reads is None else [c for c in runs if any(may_read(w, c, exp.procedure) for w in reads)]


def matches(config: dict, where: dict) -> bool:
    """Whether a row's configuration `config` agrees with a check selector `where` ({setting:
    value, or [values] for any of them}; numbers compared with a relative tolerance of 1e-9)."""
    for k, v in where.items():
        c = config.get(k)
        if isinstance(v, list):  # membership: where = {width = [32, 64]}
            if not any(matches({k: c}, {k: x}) for x in v):
                return False
        elif isinstance(v, (int, float)) and isinstance(c, (int, float)) and not isinstance(v, bool):
            if not math.isclose(c, v, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif c != v:
            return False
    return True


# The settings a ticket chain's later rounds change from its dense runs (retrain_epochs, a control's
# fresh initialisation): a selector naming them may read a round of any chain.
ROUND_SETTINGS = ("epochs", "init_seed")


def may_read(where: dict, cfg: RunConfig, procedure: str = "train") -> bool:
    """Whether a check selector `where` may read the rows of the run `cfg` (of a ticket
    experiment: of the chain it starts): it `matches` the run on every setting it names that the
    run has. A name that is no run setting (a ticket round's `remaining` or `variant`) picks among
    the rows one run leads to, so it is not decided here; a ticket chain is kept whole."""
    row = varying(cfg)
    skip = ROUND_SETTINGS if procedure == "ticket" else ()
    return matches(row, {k: v for k, v in where.items() if k in row and k not in skip})


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


def training_runs(exp, tier: str, device: str = "cuda", reading=None, reads=None) -> list[RunConfig]:
    """Every training run an experiment needs in a tier (under a reading, default the primary;
    `reads`: for those check selectors, see `expand`), ticket rounds and controls included (a
    ticket round has its parent's settings but `retrain_epochs`; the dense runs come first): for
    cost estimates."""
    if exp.procedure == "count":
        return []
    cfgs = expand(exp, tier, device, reading, reads)
    if exp.procedure == "train":
        return cfgs
    return chain_runs(exp.resolved(tier, reading)["ticket"], cfgs)


def chain_runs(t: dict, cfgs: list) -> list[RunConfig]:
    """The training runs of ticket chains started from the dense runs `cfgs` (ticket options `t`),
    as costed: the dense runs, then each later round's runs with their retrained settings."""
    return cfgs + retrained(t, cfgs) * (len(ticket_chain(t, cfgs)) - 1)


def retrained(t: dict, cfgs: list) -> list[RunConfig]:
    """The settings a ticket round retrains its dense runs `cfgs` with: `retrain_epochs` epochs
    (0: the dense run's own)."""
    return [dataclasses.replace(c, epochs=t["retrain_epochs"] or c.epochs) for c in cfgs]


@dataclass(frozen=True)
class Round:
    """One round of a ticket chain, trained as one group (its runs differ only in seed): the dense
    runs, a pruning round ("ticket") or a control at a fraction. `extras` are the runs' lineage
    as it enters their keys (None for the dense runs): the parent's key, remaining, variant, scope
    and include_output (and output_rate where it is not 1)."""
    variant: str  # "dense", "ticket", or a control: "reinit", "random", "init_magnitude"
    remaining: float  # the fraction of prunable weights left (1.0: dense), as rows show it
    cfgs: tuple
    extras: tuple
    fraction: float = 1.0  # the schedule's fraction: magnitude_mask's `fraction`
    fractions: tuple = ()  # ((name, fraction), ...): per-tensor fractions (the output layer's)
    exact: float = 1.0  # the fraction of prunable weights the masks keep, exactly (row metric pm)

    @property
    def keys(self) -> list:
        return [run_key(c, e) for c, e in zip(self.cfgs, self.extras)]


def ticket_chain(t: dict, cfgs: list) -> list[Round]:
    """The plan of one seed group's lottery-ticket chain (ticket options `t`, dense runs `cfgs`),
    from configurations and lineage alone, in the order it trains: the dense runs; then per
    remaining fraction a pruning round, whose runs' parents are the previous round's (the dense
    runs first), followed at the control fractions by one round per control. Every round after
    the dense one retrains (`retrained`); the "reinit" control trains from a fresh initialisation
    (init_seed = seed + reinit_seed_offset).
    `output_rate` (default 1: every layer at the schedule's fraction, the chain and its keys as
    before the option): the output layer pruned at that multiple of the per-round rate
    (prune.output_fractions; layer scope); its rounds' `remaining` is then the overall fraction of
    prunable weights left, rounded to 3 decimals (Frankle & Carbin's axes: 0.513, 0.211, 0.036),
    and a control fraction names either that or the schedule's fraction."""
    sizes = {k: w.numel() for k, w in models.prunable(models.for_config(cfgs[0]), t["include_output"]).items()}
    rate = t.get("output_rate", 1.0)
    outs = prune.output_fractions(t["fractions"], rate)
    output = list(sizes)[-1] if rate != 1 else None
    rounds = [Round("dense", 1.0, tuple(cfgs), (None,) * len(cfgs))]
    retrain, parents = tuple(retrained(t, cfgs)), rounds[0].keys
    for f, fo in zip(t["fractions"], outs):
        extras = tuple({"parent": p, "remaining": f, "variant": "ticket", "scope": t["scope"],
                        "include_output": t["include_output"], **({"output_rate": rate} if rate != 1 else {})}
                       for p in parents)
        per = ((output, fo),) if rate != 1 else ()
        if t["scope"] == "layer":
            exact = prune.overall_remaining(sizes, f, dict(per))
        else:
            total = sum(sizes.values())
            exact = prune.keep_count(total, f) / total
        shown = round(exact, 3) if rate != 1 else f
        rounds.append(Round("ticket", shown, retrain, extras, f, per, exact))
        parents = rounds[-1].keys
        if not any(math.isclose(f, c) or math.isclose(shown, c) for c in t["control_fractions"]):
            continue
        for control in t["controls"]:
            runs = retrain if control != "reinit" else tuple(
                dataclasses.replace(c, init_seed=c.seed + t["reinit_seed_offset"]) for c in retrain)
            rounds.append(Round(control, shown, runs, tuple({**e, "variant": control} for e in extras), f, per, exact))
    return rounds


def measurements(steps: int, every: int) -> int:
    """How often a measurement made at step 0, every `every` steps and at the last step (once, where
    that is one of the `every`) is made over `steps` steps (the validation split, sharpness)."""
    return 1 + steps // every + (steps % every != 0)


def training_cost(cfg: RunConfig) -> dict:
    """Optimiser steps, FLOPs and evaluated samples of one run, in the conv and linear layers
    (models.forward_flops): 3x the forward cost per training sample (forward + backward), and 1x
    per sample of every evaluation pass the run's settings make (paper/train.py's loop): the test
    set every `test_every` epochs (none under `steps`), the validation split at step 0, every
    `eval_every` steps and at the end, the final train and test evaluation, and with a
    validation split the test set once more on the early-stopping weights. Sharpness measured
    during training adds its Hessian-vector products (each about twice a gradient: 6x the forward
    cost per sample, `sharpness_iters` of them per measurement). "eval_samples": the samples the
    evaluation passes take, for a wall-time estimate (bench.wall_seconds)."""
    info = data_mod.DATASETS[cfg.dataset]
    n = (cfg.train_subset or info.train_shape[0]) - cfg.val_size
    m = cfg.test_subset or info.test_shape[0]
    f = models.config_flops(cfg)
    if cfg.steps:
        steps, trained, tests = cfg.steps, cfg.steps * (cfg.batch_size or n), 0
    else:
        steps, trained = cfg.epochs * steps_per_epoch(n, cfg.batch_size), cfg.epochs * n
        tests = cfg.epochs // cfg.test_every if cfg.test_every else 0  # per-epoch test evaluations
    evaluated = tests * m + n + m
    if cfg.val_size:
        evaluated += measurements(steps, cfg.eval_every) * cfg.val_size + m
    flops = 3 * f * trained + f * evaluated
    if cfg.sharpness_every:
        rows = min(cfg.sharpness_samples or n, n)
        flops += measurements(steps, cfg.sharpness_every) * cfg.sharpness_iters * 6 * f * rows
    return {"steps": steps, "flops": flops, "eval_samples": evaluated}
