"""Experiments: expand a TOML experiment into runs, train (or take from the cache) each run,
apply the instruments it asks for, and return a long table with one row per (configuration, seed).

Row: {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
      "key": cache key, "diverged": bool, "metrics": {name: float}}

Training results and each instrument's measurement are cached separately (an instrument added
later does not retrain). The lottery-ticket procedure chains runs: every pruning round's key
includes its parent's key, so the whole chain is content-addressed. The seeds of one
configuration form a group that trains together when Context.batch_seeds is set; a group's
missing runs are trained, cached ones are reused, so an interrupted experiment resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field

import torch

from . import cache as cache_mod
from . import data as data_mod
from . import measure, models, prune
from .spec import Experiment, perturb_metric
from .train import Checkpoint, RunConfig, graphable, model_from_state, train, train_seeds


class NotCached(RuntimeError):
    """A run is not in the cache and training is not allowed (report re-rendering)."""


@dataclass
class Context:
    device: str = "cpu"
    data_dir: str | None = None
    cache_root: str | None = None
    refresh: bool = False
    allow_train: bool = True
    batch_seeds: bool = False  # train the seeds of a configuration together (train.train_seeds)
    cuda_graphs: bool = False  # replay the SGD step as a CUDA graph (train.GraphedStep)
    checkpoint_every: float = 60.0  # seconds between mid-run checkpoints (at epoch ends)
    log: object = None
    progress: object = None  # called with the jobs about to train; returns a per-epoch callback or None
    _splits: dict = field(default_factory=dict)
    _tables: dict = field(default_factory=dict)
    _refreshed: set = field(default_factory=set)
    run_seconds: dict = field(default_factory=dict)  # experiment name -> seconds spent training here

    def __post_init__(self):
        self.cache = cache_mod.RunCache(cache_mod.default_root(self.cache_root))

    def say(self, msg):
        if self.log:
            self.log(msg)

    def split(self, cfg: RunConfig) -> data_mod.Split:
        k = (cfg.dataset, cfg.train_subset, cfg.test_subset, cfg.subset_seed, cfg.device)
        if k not in self._splits:
            self._splits[k] = data_mod.load_split(cfg.dataset, cfg.train_subset, cfg.test_subset,
                                                  cfg.subset_seed, self.data_dir, cfg.device)
        return self._splits[k]


def expand(exp: Experiment, tier: str, device: str) -> list[RunConfig]:
    """Every run of an experiment in a tier: (configs x grid) points, each for every seed."""
    r = exp.resolved(tier)
    names = list(r["grid"])
    points = [{**r["base"], **c, **dict(zip(names, values))}
              for c in (r["configs"] or [{}])
              for values in itertools.product(*(r["grid"][n] for n in names))]
    return [RunConfig(dataset=exp.dataset, model=exp.model, seed=s, device=device, **p)
            for p in points for s in r["seeds"]]


def _varying(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    for k in ("dataset", "model", "seed", "device"):
        d.pop(k)
    return d


@dataclass
class Job:
    """One training run: its config, cache extra (lottery lineage), mask and initial state."""
    cfg: RunConfig
    extra: dict | None = None
    masks: dict | None = None
    init_state: dict | None = None

    @property
    def key(self) -> str:
        return cache_mod.run_key(self.cfg, self.extra)


def _train_group(ctx: Context, jobs: list) -> list:
    """(key, metrics) for runs that differ only in seed; the ones not cached yet are trained, as
    one seed-batched network when ctx.batch_seeds is set, else one at a time."""
    keys = [j.key for j in jobs]
    with contextlib.ExitStack() as locks:
        for key in sorted(set(keys)):  # sorted: two workers never wait on each other in a cycle
            locks.enter_context(ctx.cache.lock(key))
        if ctx.refresh:
            for key in set(keys) - ctx._refreshed:
                ctx.cache.invalidate(key)
                ctx._refreshed.add(key)
        todo = [j for j in jobs if not ctx.cache.has(j.key)]
        if todo and not ctx.allow_train:
            j = todo[0]
            raise NotCached(f"run {j.key} ({_varying(j.cfg)}, seed {j.cfg.seed}) is not in the cache")
        if todo:
            ctx.say(f"train {len(todo)} run(s): {_varying(todo[0].cfg)} {todo[0].extra or ''}")
            split = ctx.split(todo[0].cfg)
            together = ctx.batch_seeds and len(todo) > 1
            groups = [todo] if together else [[j] for j in todo]
            progress = ctx.progress(todo) if ctx.progress else None
            checkpoints = [Checkpoint(ctx.cache.checkpoint_path([j.key for j in g]), ctx.checkpoint_every)
                           for g in groups]
            if ctx.refresh:  # start over: no resuming from an old checkpoint either
                for ck in checkpoints:
                    ck.remove()
            if together:
                results = train_seeds([j.cfg for j in todo], split, [j.masks for j in todo],
                                      [j.init_state for j in todo], checkpoint=checkpoints[0],
                                      graphed=ctx.cuda_graphs, progress=progress)
            else:
                results = [train(j.cfg, split, masks=j.masks, init_state=j.init_state, checkpoint=ck,
                                 graphed=ctx.cuda_graphs, progress=progress) for j, ck in zip(todo, checkpoints)]
            for j, res in zip(todo, results):
                metrics = {"config": j.cfg.to_dict(), "extra": j.extra, "final": res.final,
                           "history": res.history, "diverged": res.diverged, "steps": res.steps,
                           "wall_s": res.wall_s, "torch": torch.__version__,
                           "trainer": "seed-batched" if together else "single",
                           "cuda_graph": ctx.cuda_graphs and j.cfg.device == "cuda" and graphable(j.cfg)}
                tensors = {"theta0": res.theta0, "thetaT": res.thetaT}
                if j.masks:
                    tensors["masks"] = {k: v.bool() for k, v in j.masks.items()}
                ctx.cache.save(j.key, metrics, tensors)
        return [(key, ctx.cache.load_metrics(key)) for key in keys]


def _tensors(ctx: Context, key: str, purpose: str) -> dict:
    """A cached run's weights; a metrics-only cache (see `python -m harness export`) has none."""
    out = ctx.cache.load_tensors(key)
    if not out:
        raise NotCached(f"run {key} has metrics but no tensors (a metrics-only cache), which are needed {purpose}")
    return out


def _measure_cached(ctx: Context, run_key: str, cfg: RunConfig, instrument: str, opts: dict) -> dict:
    key = cache_mod.run_key(cfg, {"measure_of": run_key, "instrument": instrument, "options": opts})
    with ctx.cache.lock(key):
        if ctx.refresh and key not in ctx._refreshed:
            ctx.cache.invalidate(key)
            ctx._refreshed.add(key)
        if not ctx.cache.has(key):
            if not ctx.allow_train:
                raise NotCached(f"measurement {instrument} of run {run_key} is not in the cache")
            tensors = _tensors(ctx, run_key, f"to take its {instrument} measurement")
            ctx.cache.save(key, _measure(ctx, cfg, instrument, opts, tensors))
        return ctx.cache.load_metrics(key)


def _measure(ctx, cfg, instrument, opts, tensors) -> dict:
    if instrument == "movement":
        names = measure.param_names(models.build(cfg.model, cfg.width))
        return measure.relative_movement(tensors["theta0"], tensors["thetaT"], names)
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


def _row(ctx, exp, r, cfg, key, metrics, fields=None) -> dict:
    final = dict(metrics["final"])
    row_metrics = {**final, "steps": metrics["steps"], "wall_s": metrics["wall_s"],
                   "epochs_run": len(metrics["history"]),
                   "params": models.count_params(models.build(cfg.model, cfg.width))}
    if not metrics["diverged"]:
        for inst, opts in r["instruments"].items():
            m = _measure_cached(ctx, key, cfg, inst, opts)
            if inst == "movement":
                row_metrics["movement"] = m["total"]
            elif inst == "hessian":
                row_metrics["hessian_top"] = m["value"]
                row_metrics["hessian_residual"] = m["residual"]
            else:
                for s in opts["sigmas"]:
                    row_metrics[perturb_metric(s)] = m["sigmas"][repr(float(s))]["mean"]
    return {"config": {**_varying(cfg), **(fields or {})}, "seed": cfg.seed, "key": key,
            "diverged": bool(metrics["diverged"]), "metrics": row_metrics}


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
    return _ticket_chain(ctx, exp, r, cfgs, live=True)


def _ticket_chain(ctx, exp, r, cfgs, live: bool) -> list:
    t = r["ticket"]
    names = list(models.prunable(models.build(cfgs[0].model, cfgs[0].width), t["include_output"]))
    retrain = [dataclasses.replace(c, epochs=t["retrain_epochs"] or c.epochs) for c in cfgs]
    rows = []

    def tensors(key):
        return _tensors(ctx, key, f"to go on with the ticket chain of {exp.file}: {exp.name!r}")

    def group(variant, f, jobs):
        if not live and not all(ctx.cache.has(j.key) for j in jobs):
            raise _Incomplete
        out = _train_group(ctx, jobs)
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


def seed_groups(cfgs: list) -> list:
    """Runs grouped by everything but the seed, in order."""
    groups = {}
    for c in cfgs:
        groups.setdefault(dataclasses.replace(c, seed=0), []).append(c)
    return list(groups.values())


def training_runs(exp: Experiment, tier: str, device: str = "cuda") -> list[RunConfig]:
    """Every training run an experiment needs in a tier, ticket rounds and controls included
    (a ticket round has its parent's settings but `retrain_epochs`): for cost estimates."""
    if exp.procedure == "count":
        return []
    cfgs = expand(exp, tier, device)
    if exp.procedure == "train":
        return cfgs
    t = exp.resolved(tier)["ticket"]
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


def train_planned_group(ctx: Context, group) -> None:
    """Train one planned group (harness.planner.Group) into the cache: a seed group's runs, or a
    whole lottery-ticket chain walked as `run` walks it. The seam between the executors
    (harness/executors.py, which call this in their workers) and the claims, which then find the
    runs cached in `run`."""
    if group.exp is None:
        _train_group(ctx, [Job(c) for c in group.cfgs])
    else:
        _ticket_rows(ctx, group.exp, group.exp.resolved(group.tier), list(group.cfgs))


def run(exp: Experiment, tier: str, ctx: Context) -> list[dict]:
    """All rows of an experiment in a tier (memoised per context)."""
    memo = (exp.file, exp.name, tier)
    if memo in ctx._tables:
        return ctx._tables[memo]
    start = time.perf_counter()
    r = exp.resolved(tier)
    rows = []
    for cfgs in seed_groups(expand(exp, tier, ctx.device)):
        if exp.procedure == "count":
            for cfg in cfgs:
                n = models.count_params(models.build(cfg.model, cfg.width))
                rows.append({"config": _varying(cfg), "seed": cfg.seed, "key": None, "diverged": False,
                             "metrics": {"params": n}})
        elif exp.procedure == "train":
            for cfg, (key, metrics) in zip(cfgs, _train_group(ctx, [Job(c) for c in cfgs])):
                rows.append(_row(ctx, exp, r, cfg, key, metrics))
        else:
            rows.extend(_ticket_rows(ctx, exp, r, cfgs))
    ctx.run_seconds[exp.name] = time.perf_counter() - start
    ctx._tables[memo] = rows
    return rows
