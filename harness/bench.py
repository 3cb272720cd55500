"""Speed benchmarks, each a ratio against a baseline measured in the same run.

1. The training step (`main`): the eager one-at-a-time path against the grouped path (S
seeds as one grouped network, train.Grouped) and, on CUDA, the grouped step captured as a CUDA
graph and replayed (the fast path), measured in the same process on the same device.

    python -m harness bench [--device cuda] [--seeds 5] [--steps 30] [--compile] [--cudnn-benchmark] [--nchw]

Prints, per case, the training samples/s of each path (all models together), their ratios to
the eager path, and peak GPU memory. Ratios are the point: absolute numbers depend on the
machine. Data are random tensors already on the device (the real loop indexes tensors on the
device too), so no input pipeline is timed. `--compile` (CUDA only, opt-in: it is not part of
the training path) adds a column with the grouped forward compiled by torch.compile inside the
captured step. `--cudnn-benchmark` and `--nchw` (grouped activations not channels-last) are
there to measure those two settings: run the bench with and without.

`step_seconds` times the step the training loop would run for one (family, width, batch, seeds)
shape; `python -m harness plan` multiplies it by a tier's steps for a wall-time estimate.

2. The executors (`executors`): training the smoke tier's MNIST seed groups inline, one after
another in this process, against the local executor's worker processes.

    python -m harness bench --executors [--workers 2] [--data-dir DIR] [--device cuda]
"""
from __future__ import annotations

import math
import time

import torch

from .paper import data, models
from .paper.train import Eager, GraphedStep, Grouped, RunConfig, _optimizer, graphable, step
from .runs.expand import training_cost
from .runs.provenance import device_name

CASES = [("cnn", 32, 32), ("cnn", 32, 128), ("cnn", 32, 1024), ("mlp", 4096, 128)]
QUICK = [("cnn", 8, 32), ("cnn", 8, 128), ("mlp", 512, 128)]
SHAPES = {"mlp": (1, 28, 28), "cnn": (3, 32, 32)}


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


def _built(family, width, seeds):
    out = []
    for s in range(seeds):
        torch.manual_seed(s)
        out.append(models.build(family, width))
    return out


def _batch(family, batch, seeds, device):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(seeds, batch, *SHAPES[family], generator=g).to(device),
            torch.randint(0, 10, (seeds, batch), generator=g).to(device))


def _compiled(net):
    net._forward = torch.compile(net._forward)
    return net


def bench_case(family, width, batch, seeds, steps, device, compile=False, channels_last=None) -> dict:
    cfg = RunConfig(dataset="bench", model=family, width=width, batch_size=batch, lr=0.01)
    xb, yb = _batch(family, batch, seeds, device)
    grouped_net = lambda: Grouped(_built(family, width, seeds), device, channels_last)  # noqa: E731
    _peak_mib(device)
    eager = sum(_time(Eager([m], device), cfg, xb[i:i + 1], yb[i:i + 1], steps, device)
                for i, m in enumerate(_built(family, width, seeds)))
    mem = {"eager": _peak_mib(device)}
    grouped = _time(grouped_net(), cfg, xb, yb, steps, device)
    mem["grouped"] = _peak_mib(device)
    graphed = compiled = math.nan
    if device.type == "cuda":
        graphed = _time(grouped_net(), cfg, xb, yb, steps, device, graphed=True)
        mem["graphed"] = _peak_mib(device)
        if compile:
            net = _compiled(grouped_net())
            compiled = _time(net, cfg, xb, yb, steps, device, graphed=True)
            mem["compiled"] = _peak_mib(device)
    samples = steps * batch * seeds  # all models together
    return {"case": f"{family} w={width} bs={batch}", "eager": samples / eager, "grouped": samples / grouped,
            "graphed": samples / graphed, "compiled": samples / compiled, "grouped_ratio": eager / grouped,
            "graphed_ratio": eager / graphed, "compiled_ratio": eager / compiled, "peak_mib": mem}


def step_seconds(family, width, batch, seeds, optimizer, device, steps=5) -> dict:
    """What the training loop runs for one shape, timed: "step", seconds of one optimiser step of
    `seeds` models together (Grouped, or Eager for one model; on CUDA replayed as a CUDA graph
    where train.graphable allows, as `--cuda-graphs auto` does with --gpu), and "eval", seconds
    to evaluate one sample for all of them (train._evaluate's chunks of 1000)."""
    device = torch.device(device)
    cfg = RunConfig(dataset="bench", model=family, width=width, batch_size=batch, optimizer=optimizer)
    xb, yb = _batch(family, batch, seeds, device)
    net = (Grouped if seeds > 1 else Eager)(_built(family, width, seeds), device)
    graphed = device.type == "cuda" and graphable(cfg)
    train_s = _time(net, cfg, xb, yb, steps, device, graphed=graphed) / steps
    x = xb.flatten(0, 1)[:1000]
    net.train(False)
    with torch.no_grad():
        net.eval_forward(x)  # warm-up
        _sync(device)
        t = time.perf_counter()
        net.eval_forward(x)
        _sync(device)
    return {"step": train_s, "eval": (time.perf_counter() - t) / len(x)}


def wall_seconds(cfgs, seeds, device, timings) -> float:
    """Estimated seconds to train the runs `cfgs` (in groups of `seeds` seeds) on `device`: each
    run's share of its group's optimiser steps at its shape's measured step time, plus its
    per-epoch test and final train+test evaluation at the measured time per sample. `timings`
    memoises step_seconds per shape. Left out: loading data, instruments, the ragged last batch
    of an epoch (timed as a full one) and the first steps' warm-up and graph capture."""
    total = 0.0
    for c in cfgs:
        info = data.DATASETS[c.dataset]
        n, m = c.train_subset or info.train_shape[0], c.test_subset or info.test_shape[0]
        shape = (c.model, c.width, c.batch_size or n, seeds, c.optimizer)
        if shape not in timings:
            timings[shape] = step_seconds(*shape, device)
            print(f"  measured {c.model} w={c.width} bs={shape[2]} x{seeds} {c.optimizer}: "
                  f"{1e3 * timings[shape]['step']:.2f} ms/step", flush=True)
        t = timings[shape]
        total += (training_cost(c)["steps"] * t["step"] + (c.epochs * m + n + m) * t["eval"]) / seeds
    return total


def main(device="cpu", seeds=5, steps=30, quick=False, compile=False, cudnn_benchmark=False, nchw=False) -> list:
    """`cudnn_benchmark`: let cuDNN time its algorithms (torch.backends.cudnn.benchmark) for every
    path; `nchw`: the grouped paths without channels-last activations (see train.Grouped)."""
    device = torch.device(device)
    if cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    rows = []
    print(f"device: {device_name(device)}; torch {torch.__version__}; {seeds} seeds; {steps} timed steps per model; "
          f"cudnn.benchmark {torch.backends.cudnn.benchmark}; grouped activations {'NCHW' if nchw else 'channels-last on CUDA'}; "
          "training samples/s (all models together); ratios against eager one-at-a-time")
    extra = f"{'compiled':>10}{'ratio':>8}" if compile else ""
    print(f"{'case':<22}{'eager':>10}{'grouped':>10}{'ratio':>8}{'graphed':>10}{'ratio':>8}{extra}"
          f"   peak MiB (eager/grouped/graphed{'/compiled' if compile else ''})")
    for family, width, batch in (QUICK if quick else CASES):
        r = bench_case(family, width, batch, seeds, steps, device, compile, False if nchw else None)
        rows.append(r)
        mem = " / ".join(f"{v:.0f}" for v in r["peak_mib"].values())
        extra = f"{r['compiled']:>10.0f}{r['compiled_ratio']:>7.2f}x" if compile else ""
        print(f"{r['case']:<22}{r['eager']:>10.0f}{r['grouped']:>10.0f}{r['grouped_ratio']:>7.2f}x"
              f"{r['graphed']:>10.0f}{r['graphed_ratio']:>7.2f}x{extra}   {mem}", flush=True)
    if device.type != "cuda":
        print("(graphed = grouped step replayed as a CUDA graph, compiled = torch.compile'd forward in it: "
              "CUDA only; nan on this device)")
    return rows


# ------------------------------------------------------------------------------------- executors

def executors(experiment_ids: list, tier: str, workers: int, data_dir=None, claims_dir="claims", device="cpu") -> dict:
    """Wall time of training the groups of `experiment_ids` ("file.toml:name") one after another in
    this process (what the inline executor does) against `run_local` with `workers` workers, each
    into a fresh temporary cache, in the same run. Prints and returns both and their ratio, with
    the CPU seconds each used (on a shared machine, the share of the cores it got). On CUDA both
    train as `--gpu` does (seed-batched, CUDA graphs), the workers sharing the visible GPUs."""
    import tempfile
    from pathlib import Path

    from .claims import spec
    from .runs import cache
    from .runs.context import Context
    from .execute import planner
    from .execute.executors import run_local, settings, train_group
    exps = {planner.exp_id(e): e for p in sorted(Path(claims_dir).glob("*.toml")) for e in spec.load(p).experiments.values()}
    selection = [(exps[i], tier) for i in experiment_ids]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("inline", "local"):
            ctx = Context(device=device, data_dir=data_dir, cache_root=f"{tmp}/{name}",
                          batch_seeds=device == "cuda", cuda_graphs=device == "cuda")
            plan = planner.pending(selection, cache.RunCache(ctx.cache.root), ctx.device)
            start, cpu = time.perf_counter(), _cpu_seconds()
            if name == "inline":
                for i, g in enumerate(plan):
                    train_group(settings(ctx), g, i, lambda e: None)
            elif run_local(plan, settings(ctx), workers):
                raise RuntimeError("a group failed in the local executor")
            out[name], out[f"{name}_cpu"] = time.perf_counter() - start, _cpu_seconds() - cpu
    print(f"{len(plan)} groups, {sum(len(g.keys) for g in plan)} runs of {', '.join(experiment_ids)} [{tier}]: "
          f"{device}: inline {out['inline']:.1f} s ({out['inline_cpu']:.1f} CPU s), local with {workers} workers "
          f"{out['local']:.1f} s ({out['local_cpu']:.1f} CPU s), ratio {out['inline'] / out['local']:.2f}x")
    return out


def _cpu_seconds() -> float:
    import resource
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
