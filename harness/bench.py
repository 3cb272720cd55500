"""Speed benchmark of the training step: the eager one-at-a-time path against the seed-batched
path (S models as one vmapped network), measured in the same process on the same device.

    python -m harness bench [--device cuda] [--seeds 5] [--steps 30]

Prints, per case, per-model samples/s of each path, their ratio, and peak GPU memory. Ratios are
the point: absolute numbers depend on the machine. Data are random tensors already on the device
(the real loop indexes tensors on the device too), so no input pipeline is timed.
"""
from __future__ import annotations

import time

import torch

from . import models
from .train import Eager, Stacked, _optimizer, RunConfig, step

CASES = [("cnn", 32, 32), ("cnn", 32, 128), ("cnn", 32, 1024), ("mlp", 4096, 128)]
QUICK = [("cnn", 8, 32), ("cnn", 8, 128), ("mlp", 512, 128)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(net, cfg, xb, yb, steps, device) -> float:
    opt = _optimizer(cfg, list(net.params.values()))
    step(net, opt, xb, yb, {})  # warm-up (allocations, kernel selection)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step(net, opt, xb, yb, {})
    _sync(device)
    return time.perf_counter() - t


def bench_case(family, width, batch, seeds, steps, device) -> dict:
    shape = (1, 28, 28) if family == "mlp" else (3, 32, 32)
    cfg = RunConfig(dataset="bench", model=family, width=width, batch_size=batch, lr=0.01)
    g = torch.Generator().manual_seed(0)
    xb = torch.randn(seeds, batch, *shape, generator=g).to(device)
    yb = torch.randint(0, 10, (seeds, batch), generator=g).to(device)
    built = []
    for s in range(seeds):
        torch.manual_seed(s)
        built.append(models.build(family, width))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    eager = sum(_time(Eager([m], device), cfg, xb[i:i + 1], yb[i:i + 1], steps, device)
                for i, m in enumerate(built))
    mem_eager = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batched = _time(Stacked(built, device), cfg, xb, yb, steps, device)
    mem_batched = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    samples = steps * batch  # per model
    return {"case": f"{family} w={width} bs={batch}", "eager": samples * seeds / eager,
            "batched": samples * seeds / batched, "ratio": eager / batched,
            "mem_eager_mib": mem_eager, "mem_batched_mib": mem_batched}


def main(device="cpu", seeds=5, steps=30, quick=False) -> list:
    device = torch.device(device)
    rows = []
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {seeds} seeds; {steps} timed steps per model")
    print(f"{'case':<22}{'eager samples/s':>17}{'batched samples/s':>19}{'ratio':>8}{'peak MiB (eager/batched)':>27}")
    for family, width, batch in (QUICK if quick else CASES):
        r = bench_case(family, width, batch, seeds, steps, device)
        rows.append(r)
        print(f"{r['case']:<22}{r['eager']:>17.0f}{r['batched']:>19.0f}{r['ratio']:>7.2f}x"
              f"{r['mem_eager_mib']:>14.0f} / {r['mem_batched_mib']:<10.0f}", flush=True)
    return rows
