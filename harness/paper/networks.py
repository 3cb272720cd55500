"""The networks a run trains, behind one interface for the training loop: `Eager`, one model called
directly, and `Grouped`, the S models of runs that differ only in their seed as ONE network (each
model on its own mini-batch, each update the one it would get alone).

Both take a leading model axis ([S, b, ...] -> [S, b, classes]; S = 1 for Eager), expose their
parameters by name (`params`, the tensors the optimiser steps), lay out stacked per-model tensors
(`pack`: masks, states), switch train / eval mode (`train`), evaluate one batch shared by every
model (`eval_forward`) and give and take the models' states in the standard layout (`states`,
`load_states`). `kind` names the layout of their optimiser state in a checkpoint.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import cpu_state, has_conv, to_channels_last


class Eager:
    """One model, called directly: the plain one-at-a-time PyTorch path. Tensors carry a leading
    model axis of size 1 so that the training loop is the same for both paths. A convolutional
    model's weights and activations are channels-last unless `channels_last` is False
    (models.has_conv); its states (`states`) are in the standard layout all the same."""

    kind = "single"

    def __init__(self, models_, device, channels_last: bool | None = None):
        (self.model,) = models_
        self.model.to(device)
        self.channels_last = has_conv(self.model) if channels_last is None else channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # ReLUs in place, as in Grouped: no layer before a ReLU keeps its output for backward, so
        # the values are the same, in 0.8-0.95x the time at the CNN's batch 128-500 (issue 28)
        for m in self.model.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = True
        self.params = dict(self.model.named_parameters())

    @staticmethod
    def pack(per_model: list) -> dict:
        (d,) = per_model
        return dict(d)

    def train(self, on: bool):
        self.model.train(on)

    def __call__(self, xb):  # [1, b, ...] -> [1, b, classes]
        return self.model(to_channels_last(xb[0]) if self.channels_last else xb[0]).unsqueeze(0)

    def eval_forward(self, x):  # [b, ...] -> [1, b, classes]
        return self.model(to_channels_last(x) if self.channels_last else x).unsqueeze(0)

    def states(self) -> list:
        return [cpu_state(self.model)]

    def load_states(self, states: list):
        self.model.load_state_dict(states[0])


class Grouped:
    """S models of one architecture (models.MLP or models.CNN, differing only in their weights) as
    ONE network: forward maps [S, b, ...] to [S, b, classes], each model on its own mini-batch.
    Every state entry is held as the stack of the S models' tensors ([S, ...], see `pack`), and
    the forward reads them as one layer: a convolution is a grouped convolution (groups=S) over
    the models' concatenated channels (model s owns channels s*c..(s+1)*c), BatchNorm (no affine
    parameters, as in the paper) normalises those S*c channels, so each channel's batch and
    running statistics are exactly its own model's (a fully connected model's BatchNorm1d, with
    its scale and shift, likewise over the S*c features); pooling and ReLU act per channel; Flatten
    gives each model its own (c, h, w) vector; a linear layer is one batched matmul (baddbmm),
    computed as W @ x^T so that each weight's gradient comes out in the weight's own layout (as x @ W^T
    it came out transposed and was copied back at every step: a grouped MLP of width 256 ran a
    third slower).
    SGD and Adam act elementwise on the stacked parameters, so each model's update is the one it
    would get alone (tests/test_grouped.py). `channels_last` (default: on; see models.has_conv) lays
    the activations out channels-last.

    This replaced a torch.func vmap version of the same S models: issue 11's measurements on one
    H100 had a hand-written network of this form (grouped convolutions, S*c-channel BatchNorm,
    baddbmm heads, step in a CUDA graph) beat the vmap one at every batch size (9.5x / 3.9x /
    2.0x eager at batch 32 / 128 / 1024 against vmap's 5.9x / 1.6x / 0.76x; vmap's BatchNorm
    batching rule was the cost), and channels-last +2% / +9% / +21%. This class itself has not
    been timed on a GPU yet: `python -m harness bench --device cuda`."""

    kind = "grouped"

    def __init__(self, models_, device, channels_last: bool | None = None):
        base, self.n = models_[0], len(models_)
        self.channels_last = True if channels_last is None else channels_last
        self.keys = list(base.state_dict())
        packed = self.pack([m.state_dict() for m in models_])
        names = {k for k, _ in base.named_parameters()}
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in packed.items() if k in names}
        self.buffers = {k: v.detach().to(device) for k, v in packed.items() if k not in names}
        self.layers = [(name, m) for name, m in base.named_modules() if not list(m.children())]
        for name, m in self.layers:
            if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.Tanh, nn.MaxPool2d, nn.Flatten,
                                  nn.Linear)) \
                    or isinstance(m, nn.BatchNorm2d) and (m.affine or m.momentum is None) \
                    or isinstance(m, nn.BatchNorm1d) and m.momentum is None \
                    or isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
                raise TypeError(f"Grouped: layer {name!r} ({m}) has no grouped form")
        self.training = True

    @staticmethod
    def pack(per_model: list) -> dict:
        """Per-model dicts of tensors (parameters, buffers, masks) -> the grouped layout."""
        return {k: torch.stack([d[k] for d in per_model]) for k in per_model[0]}

    def train(self, on: bool):
        self.training = on

    def __call__(self, xb):  # [S, b, ...] -> [S, b, classes]
        return self._forward(xb, shared=False)

    def eval_forward(self, x):  # [b, ...], the same batch for every model -> [S, b, classes]
        return self._forward(x, shared=True)

    def _forward(self, x, shared: bool):
        p, buf, n = self.params, self.buffers, self.n
        channels = False  # False: [S, b, ...] (or [b, ...] if shared); True: [b, S*c, h, w]
        for name, m in self.layers:
            if isinstance(m, nn.Conv2d):
                if not channels:
                    x = x.repeat(1, n, 1, 1) if shared else x.transpose(0, 1).flatten(1, 2)
                    if self.channels_last:  # later layers keep the layout of their input
                        x = x.contiguous(memory_format=torch.channels_last)
                    channels = True
                x = F.conv2d(x, p[f"{name}.weight"].flatten(0, 1), p[f"{name}.bias"].flatten(), m.stride,
                             m.padding, m.dilation, groups=n)
            elif isinstance(m, nn.BatchNorm2d):  # running statistics updated in place, per channel
                x = F.batch_norm(x, buf[f"{name}.running_mean"].view(-1), buf[f"{name}.running_var"].view(-1),
                                 training=self.training, momentum=m.momentum, eps=m.eps)
                if self.training:
                    buf[f"{name}.num_batches_tracked"].add_(1)
            elif isinstance(m, nn.BatchNorm1d):  # [S, b, c] as [b, S*c]: each model's c features its own
                s_, b_, c_ = x.shape
                x = F.batch_norm(x.transpose(0, 1).reshape(b_, s_ * c_), buf[f"{name}.running_mean"].view(-1),
                                 buf[f"{name}.running_var"].view(-1), p[f"{name}.weight"].view(-1),
                                 p[f"{name}.bias"].view(-1), training=self.training, momentum=m.momentum,
                                 eps=m.eps).view(b_, s_, c_).transpose(0, 1)
                if self.training:
                    buf[f"{name}.num_batches_tracked"].add_(1)
            elif isinstance(m, nn.ReLU):
                x = F.relu(x, inplace=True)  # no layer here keeps its output for backward
            elif isinstance(m, nn.Tanh):
                x = torch.tanh(x)  # (its backward needs its output: not in place)
            elif isinstance(m, nn.MaxPool2d):
                x = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            elif isinstance(m, nn.Flatten):
                if channels:  # [b, S*c, h, w] -> [S, b, c*h*w], each model's own (c, h, w) order
                    x = x.reshape(x.shape[0], n, -1).transpose(0, 1)
                    channels = False
                else:
                    x = x.flatten(1).expand(n, -1, -1) if shared else x.flatten(2)
            else:  # Linear: [S, b, in] -> [S, b, out] as (W [S, out, in] @ x^T [S, in, b] + [S, out, 1])^T
                x = torch.baddbmm(p[f"{name}.bias"].unsqueeze(2), p[f"{name}.weight"], x.transpose(1, 2)).transpose(1, 2)
        return x

    def states(self) -> list:
        merged = {**self.params, **self.buffers}
        return [{k: merged[k][i].detach().to("cpu", copy=True) for k in self.keys} for i in range(self.n)]

    def load_states(self, states: list):
        packed = self.pack(states)
        with torch.no_grad():
            for k, t in {**self.params, **self.buffers}.items():
                t.copy_(packed[k])
