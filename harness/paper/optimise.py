"""One optimiser step for every model of a network, and the optimiser and schedule it takes.

The paper's protocol (Section IV-D): SGD with momentum 0.9 or Adam (betas 0.9/0.999), no weight
decay, cosine annealing over the run. Optional binary masks are enforced after every step (their
gradients are zeroed before it, so momentum never pushes a pruned weight).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import autocast, per_sample_loss


def optimizer(cfg, params, device="cpu"):
    """Adam as PyTorch ships it, its multi-tensor (foreach) implementation on every device (the
    default on CUDA; on a CPU PyTorch would loop over the parameters in Python, with the same
    results bit for bit: tools/same_training.py); SGD fused (one kernel for all parameters) and
    reading its learning rate from a float32 tensor on the device, which the schedule fills in
    place each epoch: the step then never syncs with the host and a CUDA graph can capture it (see
    graphs.GraphedStep)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0, foreach=True)
    lr = torch.tensor(cfg.lr, dtype=torch.float32, device=device)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=0.0, fused=True)


def lr_to_device(opt, device):
    """A loaded optimiser state brings its tensor learning rate back on the CPU."""
    for g in opt.param_groups:
        for k in ("lr", "initial_lr"):
            if isinstance(g.get(k), torch.Tensor):
                g[k] = g[k].to(device)


def schedule(cfg, opt):
    """The learning-rate schedule of a run, or None ("constant"): cosine annealing over the epochs,
    stepped at each epoch end (T_max = epochs), or over the steps where `steps` is set (stepped
    after each one, T_max = steps)."""
    if cfg.schedule != "cosine":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps or cfg.epochs)


def step(net, opt, xb, yb, masks: dict, amp: bool = False, loss: str = "ce") -> tuple:
    """One optimiser step for every model of `net` on its own mini-batch (xb: [models, b, ...]).
    Masked weights get zero gradient and are re-zeroed after the step. Returns (logits, losses).
    The loss is cross-entropy, or `loss` (see per_sample_loss), averaged over the mini-batch."""
    with autocast(xb.device, amp):
        out = net(xb)
    if loss == "ce":
        losses = F.cross_entropy(out.flatten(0, 1).float(), yb.flatten(), reduction="none") \
            .view(len(out), -1).mean(1)
    else:
        losses = per_sample_loss(out.float(), yb, loss).mean(1)
    for p in net.params.values():  # opt.zero_grad(set_to_none=True) without its per-call bookkeeping
        p.grad = None
    losses.sum().backward()
    for k, m in masks.items():
        net.params[k].grad.mul_(m)
    opt.step()
    if masks:
        with torch.no_grad():
            for k, m in masks.items():
                net.params[k].mul_(m)
    return out, losses
