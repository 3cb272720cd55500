"""The inline executor: train a group of runs into the run cache, or take them from it.

A group is the runs of one configuration that differ only in seed (trained together as one grouped
network where Context.seeds_together says so, else one at a time). Under the cache's per-key locks, a
group's runs already cached are reused, `--refresh` invalidates them once per session, the missing
ones train (resuming from their epoch checkpoint, see runs/checkpoint.py) within the time budget
(Context.check_budget), and each is saved with its metrics, weights, provenance and the
fingerprint of the data it was trained on. A cached entry is reused only if it is readable and was
made from the data file in use (`cached`). Measurements of a trained run (`measured`) are cached
the same way, under a key naming the run, the instrument and its options.

The claims call this lazily (the default `inline` executor: a claim trains what it misses); the
other executors (harness/execute/executors.py) call it in their workers, through the procedures'
registry (harness/procedures), before the claims run.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass

import torch

from ..paper.config import RunConfig
from ..paper.graphs import graphable
from ..paper.train import OutOfTime, train, train_seeds
from . import provenance
from .checkpoint import Checkpoint
from .context import Context, NotCached, OutOfBudget
from .expand import training_cost, varying
from . import keys


@dataclass
class Job:
    """One training run: its config, cache extra (lottery lineage), mask and initial state."""
    cfg: RunConfig
    extra: dict | None = None
    masks: dict | None = None
    init_state: dict | None = None

    @property
    def key(self) -> str:
        return keys.run_key(self.cfg, self.extra)


RUN_FIELDS = ("final", "history", "diverged", "steps", "wall_s")  # what a run's metrics.json must hold


def cached(ctx: Context, key: str, cfg: RunConfig, required=()) -> dict | None:
    """A cache entry's metrics if it may be reused: complete and readable (a damaged entry is set
    aside, see cache.RunCache.load_metrics), and made from the data file in use now. An entry
    that recorded another file's fingerprint is not reused (a warning names both); one made by
    older code, which recorded none, is."""
    m = ctx.cache.load_metrics(key, required)
    now = ctx.fingerprint(cfg.dataset) if m and isinstance(m.get("data"), dict) else None
    if now and m["data"].get("sha256") != now["sha256"]:
        warnings.warn(f"cache entry {ctx.cache.dir(key)} was made from data {m['data']}, but the "
                      f"{cfg.dataset} file in use is {now}: not reused", stacklevel=2)
        return None
    return m


def train_group(ctx: Context, jobs: list) -> list:
    """(key, metrics) for runs that differ only in seed; the ones not cached yet are trained, as
    one grouped network where ctx.seeds_together says so, else one at a time."""
    wanted = [j.key for j in jobs]
    with contextlib.ExitStack() as locks:
        for key in sorted(set(wanted)):  # sorted: two workers never wait on each other in a cycle
            locks.enter_context(ctx.cache.lock(key))
        if ctx.refresh:
            for key in set(wanted) - ctx._refreshed:
                ctx.cache.invalidate(key)
                ctx._refreshed.add(key)
        todo = [j for j in jobs if cached(ctx, j.key, j.cfg, RUN_FIELDS) is None]
        if todo and not ctx.allow_train:
            j = todo[0]
            raise NotCached(f"run {j.key} ({varying(j.cfg)}, seed {j.cfg.seed}) is not in the cache")
        if todo:
            ctx.check_budget([j.cfg for j in todo], f"{len(todo)} run(s) of {varying(todo[0].cfg)}")
            ctx.say(f"train {len(todo)} run(s): {varying(todo[0].cfg)} {todo[0].extra or ''}")
            split = ctx.split(todo[0].cfg)
            together = ctx.seeds_together(todo[0].cfg) and len(todo) > 1
            groups = [todo] if together else [[j] for j in todo]
            progress = ctx.progress(todo) if ctx.progress else None
            checkpoints = [Checkpoint(ctx.cache.checkpoint_path([j.key for j in g]), ctx.checkpoint_every,
                                      ctx.deadline) for g in groups]
            if ctx.refresh:  # start over: no resuming from an old checkpoint either
                for ck in checkpoints:
                    ck.remove()
            for group, ck in zip(groups, checkpoints):  # each saved as soon as it is trained
                started = time.perf_counter()
                try:
                    if together:
                        results = train_seeds([j.cfg for j in group], split, [j.masks for j in group],
                                              [j.init_state for j in group], checkpoint=ck,
                                              graphed=ctx.cuda_graphs, progress=progress)
                    else:
                        results = [train(group[0].cfg, split, masks=group[0].masks, init_state=group[0].init_state,
                                         checkpoint=ck, graphed=ctx.cuda_graphs, progress=progress)]
                except OutOfTime as e:
                    raise OutOfBudget(f"not run: {e}") from None
                speed = ctx._speed.setdefault(group[0].cfg.model, [0.0, 0])
                speed[0] += time.perf_counter() - started
                speed[1] += sum(training_cost(j.cfg)["flops"] for j in group)
                for j, res in zip(group, results):
                    _save(ctx, j, res, "grouped" if together else "single")
        return [(key, ctx.cache.load_metrics(key)) for key in wanted]


def _save(ctx: Context, j: Job, res, trainer: str) -> None:
    """A trained run into the cache: metrics, provenance, the data's fingerprint, and weights."""
    metrics = {"config": j.cfg.to_dict(), "extra": j.extra, "final": res.final,
               "history": res.history, "diverged": res.diverged, "steps": res.steps,
               "wall_s": res.wall_s, "torch": torch.__version__, "trainer": trainer,
               "cuda_graph": ctx.cuda_graphs and j.cfg.device == "cuda" and graphable(j.cfg)}
    metrics["provenance"] = provenance.record(j.cfg.device, amp=j.cfg.amp, trainer=trainer,
                                              cuda_graph=metrics["cuda_graph"])
    tensors = {"theta0": res.theta0, "thetaT": res.thetaT}
    if j.masks:
        tensors["masks"] = {k: v.bool() for k, v in j.masks.items()}
    metrics["data"] = ctx.fingerprint(j.cfg.dataset)
    ctx.cache.save(j.key, metrics, tensors)


def tensors(ctx: Context, key: str, purpose: str) -> dict:
    """A cached run's weights; a metrics-only cache (see `python -m harness export`) has none."""
    out = ctx.cache.load_tensors(key)
    if not out:
        d = ctx.cache.dir(key)
        raise NotCached(f"run {key} has metrics but no weights ({d / 'tensors.pt'} missing: this cache "
                        f"holds results only, as `python -m harness export` writes them); they are needed "
                        f"{purpose}. To go on, point --run-cache at the cache that holds the weights, or "
                        f"delete {d} so that the run is trained again")
    return out


def measured(ctx: Context, run_key: str, cfg: RunConfig, instrument: str, options: dict, compute) -> dict:
    """The measurement `instrument` (with `options`, as they enter its key) of the cached run
    `run_key`: from the cache, or `compute(weights)` on the run's tensors, then cached."""
    key = keys.run_key(cfg, {"measure_of": run_key, "instrument": instrument, "options": options})
    with ctx.cache.lock(key):
        if ctx.refresh and key not in ctx._refreshed:
            ctx.cache.invalidate(key)
            ctx._refreshed.add(key)
        if cached(ctx, key, cfg) is None:
            if not ctx.allow_train:
                raise NotCached(f"measurement {instrument} of run {run_key} is not in the cache")
            if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
                raise OutOfBudget(f"not run: the time budget is spent before the {instrument} measurement")
            out = compute(tensors(ctx, run_key, f"to take its {instrument} measurement"))
            ctx.cache.save(key, {**out, "data": ctx.fingerprint(cfg.dataset),
                                 "provenance": provenance.record(cfg.device)})
        return ctx.cache.load_metrics(key)
