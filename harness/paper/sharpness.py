"""The sharpness of a training trajectory (RunConfig.sharpness_every = k): the top Hessian
eigenvalue of the training loss measured at step 0, every k steps and at the end of a run
(`Sharpness`, called by the training loop at its step boundaries), recorded as "sharpness":
[[step, value], ...] in the epoch records and summarised in the final metrics (`summary`).

The measurement (`top_eigenvalue`) is measure.py's power iteration on exact Hessian-vector
products, on the run's loss ("ce" or "mse") over its training rows (or the first
`sharpness_samples`); `sharpness_warm` starts each from the model's previous top eigenvector.
"""
from __future__ import annotations

import copy
import math

import torch

from . import measure
from .losses import per_sample_loss

SHARPNESS_CHUNK = 1000  # rows per chunk of a sharpness measurement's double backward
SHARPNESS_FRACTIONS = (0.1, 0.5, 1.0)  # sharpness_ratio_<f> in the final metrics: see summary
SHARPNESS_KEYS = ("sharpness_final", "sharpness_max", "sharpness_ratio_max", "eos_step", "sharpness_ratio_post_median",
                  *(f"sharpness_ratio_{f:g}" for f in SHARPNESS_FRACTIONS))


def top_eigenvalue(model, x, y, loss: str = "ce", iters: int = 20, chunk: int = 1000, seed: int = 0,
                   tol: float = 0.0, start: torch.Tensor | None = None) -> dict:
    """Top (largest-magnitude) eigenvalue of the Hessian of the mean training loss `loss` on
    (x, y) with respect to all parameters, BatchNorm in eval mode, float32, on a copy of `model`,
    by power iteration (at most `iters` products; `tol` as measure.power_iteration's).
    Cold (`start` None): "ce" is measure.hessian_top_eigenvalue itself; "mse" the same power
    iteration (measure.power_iteration, the same seeded start vector) on exact Hessian-vector
    products (measure.make_hvp) of the mean of per_sample_loss(..., "mse"). Warm: the iteration
    starts from `start` (e.g. the previous measurement's vector, as the top eigenvector moves
    little between nearby steps), the same update and stopping rule.
    Returns value, residual, iterations, bn_mode, n_samples and, but for cold "ce", vector."""
    if loss == "ce" and start is None:
        return measure.hessian_top_eigenvalue(model, x, y, iters=iters, tol=tol, chunk=chunk, seed=seed)
    work = copy.deepcopy(model).float().eval()
    params = list(work.parameters())
    device = params[0].device
    x, y, n = x.to(device=device, dtype=torch.float32), y.to(device), len(x)

    hvp = measure.make_hvp(work, x, y, chunk, lambda out, yb: per_sample_loss(out, yb, loss).mean())
    template = torch.empty(sum(p.numel() for p in params), dtype=torch.float32, device=device)
    res = measure.power_iteration(hvp, template, iters=iters, tol=tol, seed=seed, start=start)
    return {"value": float(res["value"]), "residual": float(res["residual"]),
            "iterations": int(res["iterations"]), "bn_mode": "eval", "n_samples": n, "vector": res["vector"]}


class Sharpness:
    """The training loop's sharpness measurements, model by model (diverged ones skipped), at the
    step boundaries `due` says. `grouped_model`: a model of a networks.Grouped network, copied to
    load each model's state into; None measures an Eager network's own model (on a copy)."""

    def __init__(self, cfg, x, y, n_models: int, total_steps: int, grouped_model=None):
        self.cfg, self.total_steps = cfg, total_steps
        self.template = None if grouped_model is None else copy.deepcopy(grouped_model).to(cfg.device)
        rows = slice(0, cfg.sharpness_samples or None)
        self.x, self.y = x[rows], y[rows]
        self.vectors = [None] * n_models  # per model: the last top-eigenvector estimate (sharpness_warm)

    def due(self, step: int, at_end: bool) -> bool:
        return step % self.cfg.sharpness_every == 0 or at_end

    def take(self, net, run):
        """Measure every live model of `net` and note it in the trajectory `run` at its step."""
        cfg = self.cfg
        states = net.states() if self.template is not None else None
        for j in run.live():
            if states is None:
                model = net.model
            else:
                self.template.load_state_dict(states[j])
                model = self.template
            start = None
            if cfg.sharpness_warm:  # the first from measure.power_iteration's seeded start vector
                start = self.vectors[j] if self.vectors[j] is not None else torch.randn(
                    sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
            res = top_eigenvalue(model, self.x, self.y, cfg.loss, cfg.sharpness_iters, SHARPNESS_CHUNK,
                                 tol=cfg.sharpness_tol, start=start)
            if cfg.sharpness_warm:
                self.vectors[j] = res["vector"]
            run.note(j, "sharpness", [run.steps, res["value"]])

    def saved(self) -> dict:
        """What a checkpoint keeps of it: the warm start vectors (on the CPU)."""
        return {"vectors": [None if v is None else v.cpu() for v in self.vectors]} if self.cfg.sharpness_warm else {}

    def restore(self, saved: dict):
        if self.cfg.sharpness_warm:
            self.vectors = [None if v is None else v.to(self.cfg.device) for v in saved["vectors"]]

    def final(self, net, run, split, final_states) -> list:
        """Per model, the summary of its measurements (NaN for a diverged model)."""
        return [{k: math.nan for k in SHARPNESS_KEYS} if diverged
                else summary([p for r in history for p in r.get("sharpness", ())], self.cfg.lr, self.total_steps)
                for history, diverged in zip(run.histories, run.diverged)]


def summary(points: list, lr: float, total_steps: int) -> dict:
    """Final metrics from [(step, sharpness), ...] (measured at step 0, every k steps and at the
    end): sharpness at the end and its maximum; `sharpness_ratio_<f>`: sharpness / (2 / lr) (the
    stability threshold of gradient descent at that learning rate) at the last measurement made at
    or before fraction f of training (f = 0.1, 0.5, 1.0); its maximum; `eos_step`: the first
    measured step where the sharpness reached 2 / lr (NaN if it never did);
    `sharpness_ratio_post_median`: the median ratio over the measurements from eos_step on (NaN if
    none; the lower of the two middle ones for an even count), Cohen et al.'s "hovers right at, or
    just above, 2/eta". The ratio is GD's stability threshold only for plain (full-batch) GD."""
    if not points:
        return {k: float("nan") for k in SHARPNESS_KEYS}
    threshold = 2.0 / lr
    values = [v for _, v in points]
    out = {"sharpness_final": values[-1], "sharpness_max": max(values),
           "sharpness_ratio_max": max(values) / threshold,
           "eos_step": next((float(s) for s, v in points if v >= threshold), float("nan"))}
    post = sorted(v for s, v in points if s >= out["eos_step"])  # (empty where eos_step is NaN)
    out["sharpness_ratio_post_median"] = post[(len(post) - 1) // 2] / threshold if post else float("nan")
    for f in SHARPNESS_FRACTIONS:
        at = [v for s, v in points if s <= f * total_steps + 1e-9]
        out[f"sharpness_ratio_{f:g}"] = at[-1] / threshold if at else float("nan")
    return out
