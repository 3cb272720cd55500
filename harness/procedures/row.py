"""A row: the one place a trained run and its measurements become a row of an experiment's table.

    {"config": {run settings that vary, plus remaining/variant for tickets}, "seed": int,
     "key": cache key, "diverged": bool, "metrics": {name: float}, "provenance": {...}, "data": {...}}

A run that diverged is not measured. Each of the experiment's instruments (instruments.py) is taken
on the run's cached weights, or read from the cache (harness/runs/inline.py: measured), and
tabulated into the row's metrics.
"""
from __future__ import annotations

import math

from ..paper import models
from ..runs import inline
from ..runs.expand import varying
from ..runs.strict_json import number
from . import instruments


def make(ctx, exp, r, cfg, key, metrics, fields=None) -> dict:
    """The row of the run `key` (configuration `cfg`, its cached `metrics`) of experiment `exp` as
    resolved (`r`), measured by its instruments; `fields`: what the row's config adds (a ticket
    round's remaining and variant)."""
    final = {k: number(v) for k, v in metrics["final"].items()}
    # diverged also where the training losses stayed finite but the final weights' are not
    diverged = bool(metrics["diverged"]) or not all(math.isfinite(final[k]) for k in ("train_loss", "test_loss"))
    row_metrics = {**final, "steps": metrics["steps"], "wall_s": metrics["wall_s"],
                   "epochs_run": len(metrics["history"]),
                   "params": models.count_params(models.for_config(cfg))}
    if not diverged:
        for inst, opts in r["instruments"].items():
            m = inline.measured(ctx, key, cfg, inst, instruments.measurement_options(inst, opts),
                                lambda weights, inst=inst, opts=opts: instruments.take(ctx, cfg, inst, opts, weights))
            row_metrics.update(instruments.tabulate(inst, opts, m))
    return {"config": {**varying(cfg), **(fields or {})}, "seed": cfg.seed, "key": key,
            "diverged": diverged, "metrics": row_metrics, "provenance": metrics.get("provenance"),
            "data": metrics.get("data")}
