"""Experiments: expand a TOML experiment into runs, train (or take from the cache) each run,
apply the instruments it asks for, and return a long table with one row per (configuration, seed).

Row: {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
      "key": cache key, "diverged": bool, "metrics": {name: float}}

Training results and each instrument's measurement are cached separately (an instrument added
later does not retrain). The lottery-ticket procedure chains runs: every pruning round's key
includes its parent's key, so the whole chain is content-addressed. The seeds of one
configuration form a group that trains together when Context.batch_seeds is set; a group's
missing runs are trained, cached ones are reused, so an interrupted experiment resumes. A cached
entry is reused only if it is readable and was made from the data file in use (see `_cached`).
An experiment runs under one of its readings (spec.Reading, default the primary): the reading's
overrides change the runs' configurations (so their keys) or the instruments' options.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from . import cache as cache_mod
from . import data as data_mod
from . import measure, models, provenance, prune
from .spec import Experiment, Reading, measurement_options, perturb_metric
from .train import Checkpoint, OutOfTime, RunConfig, graphable, model_from_state, train, train_seeds


class NotCached(RuntimeError):
    """A run is not in the cache and training is not allowed (report re-rendering)."""


class OutOfBudget(NotCached):
    """A run was not trained because the time budget (--time-budget) would be exceeded."""


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
    deadline: float | None = None  # time.monotonic() by which training stops (see check_budget)
    log: object = None
    progress: object = None  # called with the jobs about to train; returns a per-epoch callback or None
    _splits: dict = field(default_factory=dict)
    _tables: dict = field(default_factory=dict)
    _refreshed: set = field(default_factory=set)
    run_seconds: dict = field(default_factory=dict)  # experiment name -> seconds spent training here
    _speed: dict = field(default_factory=dict)  # model family -> [seconds, training FLOPs] trained here

    def __post_init__(self):  # a context that may not train only reads the cache
        self.cache = cache_mod.RunCache(cache_mod.default_root(self.cache_root), read_only=not self.allow_train)

    def say(self, msg):
        if self.log:
            self.log(msg)

    def check_budget(self, cfgs: list, what: str) -> None:
        """Under a time budget, refuse (OutOfBudget) to start training `cfgs` when the time is
        spent, or when their estimated cost exceeds what is left. The estimate is the runs'
        training FLOPs at the speed measured on this family's groups trained so far in this
        process; before the first group of a family there is none, and the group starts (it then
        stops at an epoch end when the time runs out, its checkpoint saved: train.OutOfTime)."""
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        seconds, flops = self._speed.get(cfgs[0].model, (0.0, 0))
        need = seconds / flops * sum(training_cost(c)["flops"] for c in cfgs) if flops else 0.0
        if left <= 0 or need > left:
            raise OutOfBudget(f"not run: {what} needs about {need:.0f} s of training, "
                              f"{max(left, 0):.0f} s of the time budget are left")

    def fingerprint(self, dataset: str) -> dict | None:
        return data_mod.fingerprint(dataset, self.data_dir)

    def split(self, cfg: RunConfig) -> data_mod.Split:
        k = (cfg.dataset, cfg.train_subset, cfg.test_subset, cfg.subset_seed, cfg.device, cfg.input_norm)
        if k not in self._splits:
            self._splits[k] = data_mod.load_split(cfg.dataset, cfg.train_subset, cfg.test_subset,
                                                  cfg.subset_seed, self.data_dir, cfg.device, cfg.input_norm)
        return self._splits[k]


def expand(exp: Experiment, tier: str, device: str, reading: Reading | None = None) -> list[RunConfig]:
    """Every run of an experiment in a tier (under a reading, default the primary): (configs x
    grid) points, each for every seed; the run settings a reading fixes override every point."""
    r = exp.resolved(tier, reading)
    names = list(r["grid"])
    points = [{**r["base"], **c, **dict(zip(names, values)), **r["fixed"]}
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


RUN_FIELDS = ("final", "history", "diverged", "steps", "wall_s")  # what a run's metrics.json must hold


def _cached(ctx: Context, key: str, cfg: RunConfig, required=()) -> dict | None:
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


def _num(value) -> float:
    """A number read from a metrics.json: null (a non-finite value, see cache.jsonable) is NaN."""
    return math.nan if value is None else value


def _train_group(ctx: Context, jobs: list) -> list:
    """(key, metrics) for runs that differ only in seed; the ones not cached yet are trained, as
    one grouped network when ctx.batch_seeds is set, else one at a time."""
    keys = [j.key for j in jobs]
    with contextlib.ExitStack() as locks:
        for key in sorted(set(keys)):  # sorted: two workers never wait on each other in a cycle
            locks.enter_context(ctx.cache.lock(key))
        if ctx.refresh:
            for key in set(keys) - ctx._refreshed:
                ctx.cache.invalidate(key)
                ctx._refreshed.add(key)
        todo = [j for j in jobs if _cached(ctx, j.key, j.cfg, RUN_FIELDS) is None]
        if todo and not ctx.allow_train:
            j = todo[0]
            raise NotCached(f"run {j.key} ({_varying(j.cfg)}, seed {j.cfg.seed}) is not in the cache")
        if todo:
            ctx.check_budget([j.cfg for j in todo], f"{len(todo)} run(s) of {_varying(todo[0].cfg)}")
            ctx.say(f"train {len(todo)} run(s): {_varying(todo[0].cfg)} {todo[0].extra or ''}")
            split = ctx.split(todo[0].cfg)
            started = time.perf_counter()
            together = ctx.batch_seeds and len(todo) > 1
            groups = [todo] if together else [[j] for j in todo]
            progress = ctx.progress(todo) if ctx.progress else None
            checkpoints = [Checkpoint(ctx.cache.checkpoint_path([j.key for j in g]), ctx.checkpoint_every,
                                      ctx.deadline) for g in groups]
            if ctx.refresh:  # start over: no resuming from an old checkpoint either
                for ck in checkpoints:
                    ck.remove()
            try:
                if together:
                    results = train_seeds([j.cfg for j in todo], split, [j.masks for j in todo],
                                          [j.init_state for j in todo], checkpoint=checkpoints[0],
                                          graphed=ctx.cuda_graphs, progress=progress)
                else:
                    results = [train(j.cfg, split, masks=j.masks, init_state=j.init_state, checkpoint=ck,
                                     graphed=ctx.cuda_graphs, progress=progress) for j, ck in zip(todo, checkpoints)]
            except OutOfTime as e:
                raise OutOfBudget(f"not run: {e}") from None
            speed = ctx._speed.setdefault(todo[0].cfg.model, [0.0, 0])
            speed[0] += time.perf_counter() - started
            speed[1] += sum(training_cost(j.cfg)["flops"] for j in todo)
            for j, res in zip(todo, results):
                metrics = {"config": j.cfg.to_dict(), "extra": j.extra, "final": res.final,
                           "history": res.history, "diverged": res.diverged, "steps": res.steps,
                           "wall_s": res.wall_s, "torch": torch.__version__,
                           "trainer": "grouped" if together else "single",
                           "cuda_graph": ctx.cuda_graphs and j.cfg.device == "cuda" and graphable(j.cfg)}
                metrics["provenance"] = provenance.record(j.cfg.device, amp=j.cfg.amp, trainer=metrics["trainer"],
                                                          cuda_graph=metrics["cuda_graph"])
                tensors = {"theta0": res.theta0, "thetaT": res.thetaT}
                if j.masks:
                    tensors["masks"] = {k: v.bool() for k, v in j.masks.items()}
                metrics["data"] = ctx.fingerprint(j.cfg.dataset)
                ctx.cache.save(j.key, metrics, tensors)
        return [(key, ctx.cache.load_metrics(key)) for key in keys]


def _tensors(ctx: Context, key: str, purpose: str) -> dict:
    """A cached run's weights; a metrics-only cache (see `python -m harness export`) has none."""
    out = ctx.cache.load_tensors(key)
    if not out:
        d = ctx.cache.dir(key)
        raise NotCached(f"run {key} has metrics but no weights ({d / 'tensors.pt'} missing: this cache "
                        f"holds results only, as `python -m harness export` writes them); they are needed "
                        f"{purpose}. To go on, point --run-cache at the cache that holds the weights, or "
                        f"delete {d} so that the run is trained again")
    return out


def _measure_cached(ctx: Context, run_key: str, cfg: RunConfig, instrument: str, opts: dict) -> dict:
    key = cache_mod.run_key(cfg, {"measure_of": run_key, "instrument": instrument,
                                  "options": measurement_options(instrument, opts)})
    with ctx.cache.lock(key):
        if ctx.refresh and key not in ctx._refreshed:
            ctx.cache.invalidate(key)
            ctx._refreshed.add(key)
        if _cached(ctx, key, cfg) is None:
            if not ctx.allow_train:
                raise NotCached(f"measurement {instrument} of run {run_key} is not in the cache")
            if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
                raise OutOfBudget(f"not run: the time budget is spent before the {instrument} measurement")
            tensors = _tensors(ctx, run_key, f"to take its {instrument} measurement")
            out = _measure(ctx, cfg, instrument, opts, tensors)
            ctx.cache.save(key, {**out, "data": ctx.fingerprint(cfg.dataset),
                                 "provenance": provenance.record(cfg.device)})
        return ctx.cache.load_metrics(key)


def _measure(ctx, cfg, instrument, opts, tensors) -> dict:
    if instrument == "movement":
        names = measure.param_names(models.build(cfg.model, cfg.width))
        return movement(tensors["theta0"], tensors["thetaT"], names, opts["definition"])
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


def movement(theta0: dict, thetaT: dict, names: list, definition: str = "all") -> dict:
    """Relative parameter movement (measure.relative_movement) by one of the definitions the
    paper's eq. 1 admits: "all" parameters as one vector (weights and biases), "weights" only
    (the weight tensors as one vector), or "layer_mean", the mean over weight tensors of each
    one's own ratio. `total` holds the chosen value."""
    if definition != "all":
        names = [n for n in names if n.endswith("weight")]
    out = measure.relative_movement(theta0, thetaT, names)
    if definition == "layer_mean":
        out["total"] = sum(out["per_layer"].values()) / len(out["per_layer"])
    elif definition not in ("all", "weights"):
        raise ValueError(f"movement definition {definition!r}: expected all, weights or layer_mean")
    return out


def _row(ctx, exp, r, cfg, key, metrics, fields=None) -> dict:
    final = {k: _num(v) for k, v in metrics["final"].items()}
    # diverged also where the training losses stayed finite but the final weights' are not
    diverged = bool(metrics["diverged"]) or not all(math.isfinite(final[k]) for k in ("train_loss", "test_loss"))
    row_metrics = {**final, "steps": metrics["steps"], "wall_s": metrics["wall_s"],
                   "epochs_run": len(metrics["history"]),
                   "params": models.count_params(models.build(cfg.model, cfg.width))}
    if not diverged:
        for inst, opts in r["instruments"].items():
            m = _measure_cached(ctx, key, cfg, inst, opts)
            if inst == "movement":
                row_metrics["movement"] = _num(m["total"])
            elif inst == "hessian":
                row_metrics["hessian_top"] = _num(m["value"])
                row_metrics["hessian_residual"] = _num(m["residual"])
            else:
                for s in opts["sigmas"]:
                    row_metrics[perturb_metric(s)] = _num(m["sigmas"][repr(float(s))]["mean"])
    return {"config": {**_varying(cfg), **(fields or {})}, "seed": cfg.seed, "key": key,
            "diverged": diverged, "metrics": row_metrics, "provenance": metrics.get("provenance")}


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
    ctx.check_budget(_chain_runs(r["ticket"], cfgs), f"the ticket chain of {exp.name!r}")
    return _ticket_chain(ctx, exp, r, cfgs, live=True)


def _ticket_chain(ctx, exp, r, cfgs, live: bool) -> list:
    t = r["ticket"]
    names = list(models.prunable(models.build(cfgs[0].model, cfgs[0].width), t["include_output"]))
    retrain = [dataclasses.replace(c, epochs=t["retrain_epochs"] or c.epochs) for c in cfgs]
    rows = []

    def tensors(key):
        return _tensors(ctx, key, f"to go on with the ticket chain of {exp.file}: {exp.name!r}")

    def group(variant, f, jobs):
        if not live and not all(_cached(ctx, j.key, j.cfg, RUN_FIELDS) for j in jobs):
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


def training_runs(exp: Experiment, tier: str, device: str = "cuda", reading: Reading | None = None) -> list[RunConfig]:
    """Every training run an experiment needs in a tier (under a reading, default the primary),
    ticket rounds and controls included (a ticket round has its parent's settings but
    `retrain_epochs`; the dense runs come first): for cost estimates."""
    if exp.procedure == "count":
        return []
    cfgs = expand(exp, tier, device, reading)
    if exp.procedure == "train":
        return cfgs
    return _chain_runs(exp.resolved(tier, reading)["ticket"], cfgs)


def _chain_runs(t: dict, cfgs: list) -> list[RunConfig]:
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


def train_planned_group(ctx: Context, group) -> None:
    """Train one planned group (harness.planner.Group) into the cache: a seed group's runs, or a
    whole lottery-ticket chain walked as `run` walks it. The seam between the executors
    (harness/executors.py, which call this in their workers) and the claims, which then find the
    runs cached in `run`."""
    if group.exp is None:
        _train_group(ctx, [Job(c) for c in group.cfgs])
    else:
        _ticket_rows(ctx, group.exp, group.exp.resolved(group.tier, group.reading), list(group.cfgs))


def run(exp: Experiment, tier: str, ctx: Context, reading: Reading | None = None) -> list[dict]:
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
        rows = _rows(exp, tier, ctx, reading)
    except cache_mod.DamagedEntry:
        rows = _rows(exp, tier, ctx, reading)
    ctx.run_seconds[name] = time.perf_counter() - start
    ctx._tables[memo] = rows
    return rows


def _rows(exp: Experiment, tier: str, ctx: Context, reading: Reading | None) -> list[dict]:
    r = exp.resolved(tier, reading)
    rows = []
    for cfgs in seed_groups(expand(exp, tier, ctx.device, reading)):
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
    return rows
