"""The training losses and the evaluation of a network with them.

`loss` "ce" is cross-entropy on the logits; "mse" is 0.5 * sum over classes of (f(x) - onehot(y))^2
(Cohen et al.'s SquaredLoss); both averaged over the rows. Accuracy is the argmax either way.
Mixed precision (bf16 autocast, RunConfig.amp) is an explicit opt-in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "mse")


def per_sample_loss(out, y, loss: str = "ce"):
    """Loss of each row: out [..., classes] (logits / outputs), y [...] class indices -> [...].
    "ce": cross-entropy; "mse": 0.5 * sum over classes of (out - onehot(y))^2."""
    if loss == "mse":
        return 0.5 * (out - F.one_hot(y, out.shape[-1]).to(out.dtype)).pow(2).sum(-1)
    return F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none").view(y.shape)


def autocast(device, amp):
    """bf16 autocast on `device` where `amp`, else nothing."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp)


@torch.no_grad()
def evaluate(net, x, y, chunk: int = 1000, amp: bool = False, loss_fn: str = "ce") -> tuple:
    """Per model of `net` (networks.Eager or Grouped): (mean loss list, accuracy-in-% list), eval
    mode, one host sync. The loss is cross-entropy, or `loss_fn` (see per_sample_loss)."""
    net.train(False)
    loss, correct = 0, 0
    for i in range(0, len(x), chunk):
        with autocast(x.device, amp):
            out = net.eval_forward(x[i:i + chunk]).float()
        yb = y[i:i + chunk]
        if loss_fn == "ce":
            loss = loss + F.cross_entropy(out.flatten(0, 1), yb.repeat(len(out)), reduction="none") \
                .view(len(out), -1).double().sum(1)
        else:
            loss = loss + per_sample_loss(out, yb.expand(len(out), -1), loss_fn).double().sum(1)
        correct = correct + (out.argmax(-1) == yb).sum(1)
    return (loss / len(x)).tolist(), (100.0 * correct.double() / len(x)).tolist()
