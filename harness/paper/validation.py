"""The validation split of a run (RunConfig.val_size > 0 with eval_every = k) and early stopping.

`val_size` training rows are held out (uniformly at random, seeded by subset_seed, the same for
every seed; data.holdout: `hold_out`). The training loop evaluates them at step 0, every k steps
and at the end (`Validation`, called at its step boundaries), recorded as "val": [[step, loss,
acc%], ...] in the epoch record the evaluation fell in. Each model's weights at its least
validation loss (the first step of it) are kept in memory; the final metrics add val_loss /
val_acc (final weights), early_stop_step, early_stop_val_loss and early_stop_test_loss / _acc (the
test set evaluated once, at the end, on those weights).
"""
from __future__ import annotations

import math

import torch

from . import data, losses
from .config import derive_seed

VAL_KEYS = ("val_loss", "val_acc", "early_stop_step", "early_stop_val_loss", "early_stop_test_loss",
            "early_stop_test_acc")


def hold_out(cfg, x, y) -> tuple:
    """(x, y) without the run's validation rows, and those rows: (x, y, x_val, y_val)."""
    kept, held = (torch.from_numpy(i).to(x.device)
                  for i in data.holdout(len(x), cfg.val_size, derive_seed(cfg.subset_seed, "validation")))
    return x[kept], y[kept], x[held], y[held]


class Validation:
    """The training loop's validation of every live model at the step boundaries `due` says, and
    each model's best weights so far."""

    def __init__(self, cfg, x_val, y_val, n_models: int):
        self.cfg, self.x, self.y = cfg, x_val, y_val
        self.best = [(math.inf, -1)] * n_models  # per model: (least validation loss, its step)
        self.best_states = [None] * n_models

    def due(self, step: int, at_end: bool) -> bool:
        return step % self.cfg.eval_every == 0 or at_end

    def take(self, net, run):
        """Evaluate the validation split on every model of `net`, note it in the trajectory `run` at
        its step, and keep the weights of a model whose loss is its least yet."""
        val_loss, val_acc = losses.evaluate(net, self.x, self.y, amp=self.cfg.amp, loss_fn=self.cfg.loss)
        net.train(True)
        states = None
        for j in run.live():
            run.note(j, "val", [run.steps, val_loss[j], val_acc[j]])
            if val_loss[j] < self.best[j][0]:  # (the first step of the least loss; NaN never is)
                states = states or net.states()
                self.best[j], self.best_states[j] = (val_loss[j], run.steps), states[j]

    def saved(self) -> dict:
        """What a checkpoint keeps of it."""
        return {"best": self.best, "best_states": self.best_states}

    def restore(self, saved: dict):
        self.best, self.best_states = [tuple(b) for b in saved["best"]], saved["best_states"]

    def final(self, net, run, split, final_states) -> list:
        """Per model, the last validation and the early-stopping metrics: the test set evaluated on
        its best weights (loaded into `net`). NaN for a diverged model."""
        last = [h[-1]["val"][-1] if h and h[-1].get("val") else [0, math.nan, math.nan] for h in run.histories]
        net.load_states([b if b is not None else s for b, s in zip(self.best_states, final_states)])
        es_loss, es_acc = losses.evaluate(net, split.x_test, split.y_test, amp=self.cfg.amp, loss_fn=self.cfg.loss)
        out = []
        for j, diverged in enumerate(run.diverged):
            found = not diverged and self.best_states[j] is not None
            out.append({k: math.nan for k in VAL_KEYS} if diverged else
                       {"val_loss": last[j][1], "val_acc": last[j][2],
                        "early_stop_step": float(self.best[j][1]) if found else math.nan,
                        "early_stop_val_loss": self.best[j][0] if found else math.nan,
                        "early_stop_test_loss": es_loss[j] if found else math.nan,
                        "early_stop_test_acc": es_acc[j] if found else math.nan})
        return out
