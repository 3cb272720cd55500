"""Experiments: expand a TOML experiment into runs, train (or take from the cache) each run,
apply the instruments it asks for, and return a long table with one row per (configuration, seed).

Row: {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
      "key": cache key, "diverged": bool, "metrics": {name: float}}

Training results and each instrument's measurement are cached separately (an instrument added
later does not retrain). The lottery-ticket procedure chains runs: every pruning round's key
includes its parent's key, so the whole chain is content-addressed.
"""
from __future__ import annotations

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
from .train import RunConfig, model_from_state, train


class NotCached(RuntimeError):
    """A run is not in the cache and training is not allowed (report re-rendering)."""


@dataclass
class Context:
    device: str = "cpu"
    data_dir: str | None = None
    cache_root: str | None = None
    refresh: bool = False
    allow_train: bool = True
    log: object = None
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


def _train_cached(ctx: Context, cfg: RunConfig, extra=None, masks=None, init_state=None) -> tuple:
    """(key, metrics, tensors-loader) for one training run, trained at most once."""
    key = cache_mod.run_key(cfg, extra)
    with ctx.cache.lock(key):
        if ctx.refresh and key not in ctx._refreshed:
            ctx.cache.invalidate(key)
            ctx._refreshed.add(key)
        if not ctx.cache.has(key):
            if not ctx.allow_train:
                raise NotCached(f"run {key} ({_varying(cfg)}, seed {cfg.seed}) is not in the cache")
            ctx.say(f"train {cfg.model} width={cfg.width} bs={cfg.batch_size} seed={cfg.seed} {extra or ''}")
            res = train(cfg, ctx.split(cfg), masks=masks, init_state=init_state)
            metrics = {"config": cfg.to_dict(), "extra": extra, "final": res.final,
                       "history": res.history, "diverged": res.diverged, "steps": res.steps,
                       "wall_s": res.wall_s, "torch": torch.__version__}
            tensors = {"theta0": res.theta0, "thetaT": res.thetaT}
            if masks:
                tensors["masks"] = {k: v.bool() for k, v in masks.items()}
            ctx.cache.save(key, metrics, tensors)
        metrics = ctx.cache.load_metrics(key)
    return key, metrics


def _measure_cached(ctx: Context, run_key: str, cfg: RunConfig, instrument: str, opts: dict) -> dict:
    key = cache_mod.run_key(cfg, {"measure_of": run_key, "instrument": instrument, "options": opts})
    with ctx.cache.lock(key):
        if ctx.refresh and key not in ctx._refreshed:
            ctx.cache.invalidate(key)
            ctx._refreshed.add(key)
        if not ctx.cache.has(key):
            if not ctx.allow_train:
                raise NotCached(f"measurement {instrument} of run {run_key} is not in the cache")
            tensors = ctx.cache.load_tensors(run_key)
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


def _ticket_rows(ctx, exp, r, cfg) -> list:
    """Iterative magnitude pruning for one seed: dense run, then one round per remaining fraction,
    each pruned from the previous round's trained weights, rewound to the dense theta_0 and
    retrained with the mask enforced; plus the controls at the chosen fractions."""
    t = r["ticket"]
    retrain = dataclasses.replace(cfg, epochs=t["retrain_epochs"] or cfg.epochs)
    key, metrics = _train_cached(ctx, cfg)
    rows = [_row(ctx, exp, r, cfg, key, metrics, {"remaining": 1.0, "variant": "dense"})]
    theta0 = ctx.cache.load_tensors(key)["theta0"]
    template = models.build(cfg.model, cfg.width)
    names = list(models.prunable(template, t["include_output"]))
    parent, trained, mask = key, ctx.cache.load_tensors(key)["thetaT"], None
    for f in t["fractions"]:
        mask = prune.magnitude_mask({n: trained[n] for n in names}, f, current=mask, scope=t["scope"])
        extra = {"parent": parent, "remaining": f, "variant": "ticket", "scope": t["scope"],
                 "include_output": t["include_output"]}
        k, m = _train_cached(ctx, retrain, extra, masks=mask, init_state=prune.apply_mask(theta0, mask))
        rows.append(_row(ctx, exp, r, retrain, k, m, {"remaining": f, "variant": "ticket"}))
        parent, trained = k, ctx.cache.load_tensors(k)["thetaT"]
        if not any(math.isclose(f, c) for c in t["control_fractions"]):
            continue
        for control in t["controls"]:
            ccfg, cmask, init = retrain, mask, None
            if control == "reinit":  # the paper's control: same mask, a fresh random initialisation
                ccfg = dataclasses.replace(retrain, init_seed=cfg.seed + t["reinit_seed_offset"])
            elif control == "random":  # review: random pruning at the same per-layer sparsity
                cmask = prune.random_mask(mask, seed=cfg.seed)
                init = prune.apply_mask(theta0, cmask)
            elif control == "init_magnitude":  # review: one-shot magnitude pruning at initialisation
                cmask = prune.magnitude_mask({n: theta0[n] for n in names}, f, scope=t["scope"])
                init = prune.apply_mask(theta0, cmask)
            else:
                raise ValueError(f"{exp.file}: experiment {exp.name!r}: field 'ticket.controls': "
                                 f"unknown control {control!r}")
            ck, cm = _train_cached(ctx, ccfg, {**extra, "variant": control}, masks=cmask, init_state=init)
            rows.append(_row(ctx, exp, r, ccfg, ck, cm, {"remaining": f, "variant": control}))
    return rows


def run(exp: Experiment, tier: str, ctx: Context) -> list[dict]:
    """All rows of an experiment in a tier (memoised per context)."""
    memo = (exp.file, exp.name, tier)
    if memo in ctx._tables:
        return ctx._tables[memo]
    start = time.perf_counter()
    r = exp.resolved(tier)
    rows = []
    for cfg in expand(exp, tier, ctx.device):
        if exp.procedure == "count":
            n = models.count_params(models.build(cfg.model, cfg.width))
            rows.append({"config": _varying(cfg), "seed": cfg.seed, "key": None, "diverged": False,
                         "metrics": {"params": n}})
        elif exp.procedure == "train":
            key, metrics = _train_cached(ctx, cfg)
            rows.append(_row(ctx, exp, r, cfg, key, metrics))
        else:
            rows.extend(_ticket_rows(ctx, exp, r, cfg))
    ctx.run_seconds[exp.name] = time.perf_counter() - start
    ctx._tables[memo] = rows
    return rows
