"""The ticket procedure: lottery tickets by iterative magnitude pruning with rewinding, and their
controls, one chain per seed group.

A chain is planned from configurations and lineage alone (harness/runs/expand.py: ticket_chain:
its rounds, controls, and each run's configuration, lineage and key), and trained by walking that
plan here, deriving each round's masks and initial weights from the rounds before it; the planner
(harness/execute/planner.py) takes the chain's keys from the same plan, so the keys it plans are
the keys trained.
"""
from __future__ import annotations

from ..paper import models, prune
from ..runs import inline
from ..runs.expand import chain_runs, expand, seed_groups, ticket_chain
from ..runs.inline import RUN_FIELDS, Job, cached, train_group
from . import row


def procedure(exp, tier: str, ctx, reading) -> list:
    """Each seed group's ticket chain (see chain_rows)."""
    r = exp.resolved(tier, reading)
    return [x for cfgs in seed_groups(expand(exp, tier, ctx.device, reading))
            for x in chain_rows(ctx, exp, r, cfgs)]


def chain_rows(ctx, exp, r, cfgs) -> list:
    """Iterative magnitude pruning for a group of seeds: dense runs, then one round per remaining
    fraction, each pruned from the previous round's trained weights, rewound to the dense theta_0
    and retrained with the mask enforced; plus the controls at the chosen fractions. Each round
    trains all seeds together (one group). Run keys depend on configurations and lineage only (the
    chain's plan), so a chain whose runs are all cached is read by keys alone, needing none of
    their tensors (a metrics-only cache, brought back from another machine by `python -m harness
    export`). Otherwise it is walked with the tensors, training what is missing."""
    chain = ticket_chain(r["ticket"], cfgs)
    if not ctx.refresh and all(cached(ctx, k, c, RUN_FIELDS) for rd in chain for k, c in zip(rd.keys, rd.cfgs)):
        return _walk(ctx, exp, r, chain, live=False)  # (--refresh retrains every run: not by keys alone)
    # A chain cannot resume in another session without its weights: start it only when the whole
    # chain (every round and control, cached rounds included: an over-estimate) fits the budget.
    ctx.check_budget(chain_runs(r["ticket"], cfgs), f"the ticket chain of {exp.name!r}")
    return _walk(ctx, exp, r, chain, live=True)


def _walk(ctx, exp, r, chain, live: bool) -> list:
    """The rows of the planned `chain`, round by round; `live`: with the runs' tensors, to make each
    round's masks and initial weights and train what is missing (else every run is cached)."""
    t = r["ticket"]
    dense = chain[0].cfgs
    names = list(models.prunable(models.for_config(dense[0]), t["include_output"]))
    theta0, masks, out = None, [None] * len(dense), []

    def tensors(key):
        return inline.tensors(ctx, key, f"to go on with the ticket chain of {exp.file}: {exp.name!r}")

    for rd in chain:
        if not live:
            jobs = [Job(c, e) for c, e in zip(rd.cfgs, rd.extras)]
        elif rd.variant == "dense":
            jobs = [Job(c) for c in rd.cfgs]
        else:
            if rd.variant == "ticket":  # pruned from the parent's trained weights
                trained = [tensors(e["parent"])["thetaT"] for e in rd.extras]
                masks = [prune.magnitude_mask({n: w[n] for n in names}, rd.fraction, current=m, scope=t["scope"],
                                              fractions=dict(rd.fractions))
                         for w, m in zip(trained, masks)]
            jobs = [_job(exp, t, names, rd, c, e, m, th) for c, e, m, th in zip(rd.cfgs, rd.extras, masks, theta0)]
        trained_now = train_group(ctx, jobs)
        fields = {"remaining": rd.remaining, "variant": rd.variant}
        if rd.variant == "reinit":  # one configuration across seeds: init_seed = seed + offset
            fields["init_seed"] = f"seed+{t['reinit_seed_offset']}"
        rows = [row.make(ctx, exp, r, j.cfg, k, m, fields) for j, (k, m) in zip(jobs, trained_now)]
        for x in rows:  # the exact fraction of prunable weights left, in % (Frankle & Carbin's Pm)
            x["metrics"]["pm"] = 100.0 * rd.exact
        out.extend(rows)
        if live and rd.variant == "dense":
            theta0 = [tensors(k)["theta0"] for k, _ in trained_now]
    return out


def _job(exp, t, names, rd, cfg, extra, mask, theta0) -> Job:
    """A pruned round's run: its mask (`mask`: this seed's current ticket mask) and its initial
    weights (`theta0`: the dense run's, rewound), by the round's variant."""
    if rd.variant == "ticket":
        return Job(cfg, extra, mask, prune.apply_mask(theta0, mask))
    if rd.variant == "reinit":  # the paper's control: same mask, a fresh random initialisation
        return Job(cfg, extra, mask)
    if rd.variant == "random":  # review: random pruning at the same per-layer sparsity
        cm = prune.random_mask(mask, seed=cfg.seed)
    elif rd.variant == "init_magnitude":  # review: one-shot magnitude pruning at initialisation
        cm = prune.magnitude_mask({n: theta0[n] for n in names}, rd.fraction, scope=t["scope"],
                                  fractions=dict(rd.fractions))
    else:
        raise ValueError(f"{exp.file}: experiment {exp.name!r}: field 'ticket.controls': "
                         f"unknown control {rd.variant!r}")
    return Job(cfg, extra, cm, prune.apply_mask(theta0, cm))
