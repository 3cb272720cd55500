"""Speed benchmark of the training step: the eager one-at-a-time path against the seed-batched
path (S models as one vmapped network) and, on CUDA, the seed-batched step captured as a CUDA
graph and replayed (the fast path), measured in the same process on the same device.

    python -m harness bench [--device cuda] [--seeds 5] [--steps 30]

Prints, per case, the training samples/s of each path (all models together), their ratios to
the eager path, and peak GPU memory. Ratios are the point: absolute numbers depend on the
machine. Data are random tensors already on the device (the real loop indexes tensors on the
device too), so no input pipeline is timed.
"""
from __future__ import annotations

import math
import time

import torch

from . import models
from .train import Eager, GraphedStep, RunConfig, Stacked, _optimizer, step

CASES = [("cnn", 32, 32), ("cnn", 32, 128), ("cnn", 32, 1024), ("mlp", 4096, 128)]
QUICK = [("cnn", 8, 32), ("cnn", 8, 128), ("mlp", 512, 128)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(net, cfg, xb, yb, steps, device, graphed=False) -> float:
    opt = _optimizer(cfg, list(net.params.values()), device)
    if graphed:  # the batch is already static: the captured step reads it in place
        run = GraphedStep(lambda idx: step(net, opt, xb, yb, {}), (1,), device)
        dummy = torch.zeros(1, dtype=torch.long, device=device)
        one = lambda: run(dummy)  # noqa: E731
        for _ in range(run.warmup + 1):  # warm-up steps, then capture and one replay
            one()
    else:
        one = lambda: step(net, opt, xb, yb, {})  # noqa: E731
        one()  # warm-up (allocations, kernel selection)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return time.perf_counter() - t


def _peak_mib(device):
    if device.type != "cuda":
        return float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    return peak


def bench_case(family, width, batch, seeds, steps, device) -> dict:
    shape = (1, 28, 28) if family == "mlp" else (3, 32, 32)
    cfg = RunConfig(dataset="bench", model=family, width=width, batch_size=batch, lr=0.01)
    g = torch.Generator().manual_seed(0)
    xb = torch.randn(seeds, batch, *shape, generator=g).to(device)
    yb = torch.randint(0, 10, (seeds, batch), generator=g).to(device)

    def built():
        out = []
        for s in range(seeds):
            torch.manual_seed(s)
            out.append(models.build(family, width))
        return out
    _peak_mib(device)
    eager = sum(_time(Eager([m], device), cfg, xb[i:i + 1], yb[i:i + 1], steps, device)
                for i, m in enumerate(built()))
    mem = {"eager": _peak_mib(device)}
    batched = _time(Stacked(built(), device), cfg, xb, yb, steps, device)
    mem["batched"] = _peak_mib(device)
    graphed = math.nan
    if device.type == "cuda":
        graphed = _time(Stacked(built(), device), cfg, xb, yb, steps, device, graphed=True)
        mem["graphed"] = _peak_mib(device)
    samples = steps * batch * seeds  # all models together
    return {"case": f"{family} w={width} bs={batch}", "eager": samples / eager, "batched": samples / batched,
            "graphed": samples / graphed, "batched_ratio": eager / batched, "graphed_ratio": eager / graphed,
            "peak_mib": mem}


def main(device="cpu", seeds=5, steps=30, quick=False) -> list:
    device = torch.device(device)
    rows = []
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {seeds} seeds; {steps} timed steps per model; "
          "training samples/s (all models together); ratios against eager one-at-a-time")
    print(f"{'case':<22}{'eager':>10}{'batched':>10}{'ratio':>8}{'graphed':>10}{'ratio':>8}"
          f"   peak MiB (eager/batched/graphed)")
    for family, width, batch in (QUICK if quick else CASES):
        r = bench_case(family, width, batch, seeds, steps, device)
        rows.append(r)
        mem = " / ".join(f"{v:.0f}" for v in r["peak_mib"].values())
        print(f"{r['case']:<22}{r['eager']:>10.0f}{r['batched']:>10.0f}{r['batched_ratio']:>7.2f}x"
              f"{r['graphed']:>10.0f}{r['graphed_ratio']:>7.2f}x   {mem}", flush=True)
    if device.type != "cuda":
        print("(graphed: CUDA only; nan on this device)")
    return rows
