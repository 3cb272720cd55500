"""A row: the one place a trained run and its measurements become a row of an experiment's table.

    {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
     "key": cache key, "diverged": bool, "metrics": {name: float}, "provenance": {...}, "data": {...}}

A run that diverged is not measured. Each instrument's measurement is taken on the run's cached
weights, or read from the cache (harness/runs/inline.py: measured).
"""
from __future__ import annotations

import math
import time

import torch

from ..paper import data as data_mod
from ..paper import measure, models
from ..paper.measure import measurement_options, perturb_metric
from ..paper.train import model_from_state
from ..runs import inline
from ..runs.expand import varying


def _num(value) -> float:
    """A number read from a metrics.json: null (a non-finite value, see runs/strict_json.py) is NaN."""
    return math.nan if value is None else value


def make(ctx, exp, r, cfg, key, metrics, fields=None) -> dict:
    """The row of the run `key` (configuration `cfg`, its cached `metrics`) of experiment `exp` as
    resolved (`r`), measured by its instruments; `fields`: what the row's config adds (a ticket
    round's remaining and variant)."""
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
