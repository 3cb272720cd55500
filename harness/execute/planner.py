"""Planning: which training work the selected claims still need, before any of it runs.

This is the first of three stages:
  planner      expands the selected (experiment, tier, reading, reads) items into run groups with
               their cache keys and estimated cost (harness/runs/expand.py), and keeps those with a
               run missing from the cache (pure, cheap: no training, no tensors loaded);
  executors    train the pending groups into the run cache (harness/execute/executors.py: local worker
               processes, or a SLURM job array through submitit), each group through the
               procedures' registry (harness/procedures: train_group);
  claims       read their rows (procedures.rows), training lazily only what is still missing: the
               `inline` executor (harness/runs/inline.py) is exactly that.

Only the configurations the selected claims read are planned: an item's `reads` are its claims'
check selectors (None: every configuration; harness/runs/expand.py: may_read), and a configuration
is kept or left out with all its seeds. A later selection that reads more plans only the runs
still missing from the cache (the run keys do not depend on the selection).

A group is the unit of training work: the seeds of one configuration of a "train" experiment, or
one seed group's whole lottery-ticket chain (dense runs, every pruning round, the controls), which
is sequential and therefore one job. A run needed by two experiments is planned once, in the group
of the experiment listed first (a ticket chain keeps all its runs, since it walks them in order;
the cache's per-run lock then keeps a run shared with a seed group from being trained twice). Groups come in the order of the selection, then of the
experiment's configurations, so a plan is stable. A group is pending when any of its runs is not
cached; a pending seed group carries only its missing runs. Instrument measurements are not
planned: they are taken where the claims read the rows.

Cost: expand.training_cost (optimiser steps, and FLOPs of training and of the evaluation passes
the runs' settings make) of the runs still to train; a partly
cached ticket chain is costed as the whole chain times the fraction of its runs missing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..runs.expand import expand, retrained, seed_groups, ticket_chain, training_cost
from ..runs.keys import non_default_fields, run_key


@dataclass(frozen=True)
class Group:
    """One unit of training work: plain data (configs and keys, no tensors), so it pickles to a
    worker process or a SLURM job."""
    experiments: tuple  # "file.toml:name" of every selected experiment that needs it, first the owner
    tier: str
    cfgs: tuple  # RunConfigs: the seed group's runs still to train, or a ticket chain's dense runs
    keys: tuple  # cache keys of every run the group trains (a ticket chain: all its rounds)
    steps: int  # estimated optimiser steps, summed over runs
    flops: float  # estimated training FLOPs
    exp: object = None  # the parsed.Experiment of a ticket chain (walked to train it); None: seed group
    reading: object = None  # the readings.Reading the ticket chain is walked under (None: the primary)

    @property
    def kind(self) -> str:
        return "seeds" if self.exp is None else "ticket chain"

    def summary(self) -> str:
        """Dataset, model, the settings that differ from RunConfig's defaults, and the seeds."""
        c = non_default_fields(self.cfgs[0])
        fields = " ".join(f"{k}={v}" for k, v in c.items() if k not in ("dataset", "model", "seed", "device"))
        seeds = ",".join(str(c.seed) for c in self.cfgs)
        return f"{self.cfgs[0].dataset}/{self.cfgs[0].model} {fields} seeds {seeds}"


def exp_id(exp) -> str:
    return f"{Path(exp.file).name}:{exp.name}"


def _cost(cfgs) -> tuple:
    costs = [training_cost(c) for c in cfgs]
    return sum(c["steps"] for c in costs), float(sum(c["flops"] for c in costs))


def groups(selection, device: str) -> list[Group]:
    """Every training group of the selected (parsed.Experiment, tier[, readings.Reading[, reads]])
    items (no reading, or None: the primary; no reads, or None: every configuration, else the
    check selectors of the claims that read it), deduplicated by run key, whether cached or not."""
    out, owner = [], {}  # owner: run key -> index of the group that trains it
    for exp, tier, *rest in selection:
        reading = rest[0] if rest else None
        reads = rest[1] if len(rest) > 1 else None
        if exp.procedure == "count":
            continue
        for cfgs in seed_groups(expand(exp, tier, device, reading, reads)):
            if exp.procedure == "ticket":
                t = exp.resolved(tier, reading)["ticket"]
                chain = ticket_chain(t, cfgs)  # the plan the ticket procedure walks to train it
                keys = list(dict.fromkeys(k for rd in chain for k in rd.keys))
                if all(k in owner for k in keys):  # the same chain, selected twice
                    continue
                (s0, f0), (s1, f1) = _cost(cfgs), _cost(retrained(t, cfgs))
                rounds = len(chain) - 1
                new = Group((exp_id(exp),), tier, tuple(cfgs), tuple(keys), s0 + rounds * s1, f0 + rounds * f1, exp,
                            reading)
            else:
                keyed = [(run_key(c), c) for c in cfgs]
                shared = {owner[k] for k, _ in keyed if k in owner}
                for i in shared:
                    if exp_id(exp) not in out[i].experiments:
                        out[i] = dataclasses.replace(out[i], experiments=out[i].experiments + (exp_id(exp),))
                keyed = [(k, c) for k, c in keyed if k not in owner]
                if not keyed:
                    continue
                steps, flops = _cost([c for _, c in keyed])
                new = Group((exp_id(exp),), tier, tuple(c for _, c in keyed), tuple(k for k, _ in keyed),
                            steps, flops)
            for k in new.keys:
                owner[k] = len(out)
            out.append(new)
    return out


def pending(selection, cache, device: str, refresh: bool = False) -> list[Group]:
    """The groups of `selection` with a run missing from `cache` (a runs.cache.RunCache); with
    `refresh`, every group. A pending seed group keeps only its missing runs."""
    out = []
    for g in groups(selection, device):
        missing = [k for k in g.keys if refresh or not cache.has(k)]
        if not missing:
            continue
        if g.exp is None and len(missing) < len(g.keys):
            cfgs = [c for c, k in zip(g.cfgs, g.keys) if k in missing]
            steps, flops = _cost(cfgs)
            g = dataclasses.replace(g, cfgs=tuple(cfgs), keys=tuple(missing), steps=steps, flops=flops)
        elif len(missing) < len(g.keys):
            share = len(missing) / len(g.keys)
            g = dataclasses.replace(g, steps=round(g.steps * share), flops=g.flops * share)
        out.append(g)
    return out


def describe(plan: list[Group]) -> list[str]:
    """The plan as text: one line per group (experiments, kind, runs, settings, cost) and its keys."""
    runs = sum(len(g.keys) for g in plan)
    lines = [f"pending: {len(plan)} group(s), {runs} run(s), {sum(g.steps for g in plan):,} optimiser steps, "
             f"{sum(g.flops for g in plan) / 1e12:.4g} TFLOP"]
    for i, g in enumerate(plan):
        lines.append(f"[{i + 1}] {', '.join(g.experiments)} [{g.tier}] {g.kind}, {len(g.keys)} run(s): "
                     f"{g.summary()}; {g.steps:,} steps, {g.flops / 1e12:.4g} TFLOP")
        lines.append(f"    keys: {' '.join(g.keys)}")
    return lines

