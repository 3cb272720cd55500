"""The training step captured once as a CUDA graph and replayed (GraphedStep), for the runs whose
step can be (graphable): a step's Python and kernel-launch cost is then paid at capture only.
"""
from __future__ import annotations

import torch


def graphable(cfg) -> bool:
    """Whether a run's step may be captured: SGD without amp (Adam and autocast stay uncaptured)."""
    return cfg.optimizer == "sgd" and not cfg.amp


class GraphedStep:
    """Runs `fn(idx)` (one training step on the mini-batch rows `idx`) for every full mini-batch,
    captured once as a CUDA graph and replayed: a step's Python and kernel-launch cost is paid at
    capture only. The indices pass through a static buffer; everything else the step touches
    (weights, BatchNorm buffers, momentum, the learning-rate tensor, the accumulators) stays at
    fixed addresses and is updated in place. As CUDA graphs require, the first `warmup` steps run
    eagerly on a side stream (they are real steps, and they create the momentum buffers); the
    next step is captured, then replayed, and so is every later one. On a CPU the step is called
    directly, so the bookkeeping around it is the same on both devices."""

    def __init__(self, fn, shape, device, warmup: int = 3):
        self.fn, self.warmup, self.calls, self.graph = fn, warmup, 0, None
        self.idx = torch.zeros(shape, dtype=torch.long, device=device)
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, idx):
        self.idx.copy_(idx)
        if not self.cuda:
            self.fn(self.idx)
        elif self.graph is None and self.calls < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(self.idx)
            torch.cuda.current_stream().wait_stream(side)
        else:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.fn(self.idx)
            self.graph.replay()
        self.calls += 1
