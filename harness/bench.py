"""Speed benchmarks, each a ratio against a baseline measured in the same run.

1. The training step (`main`): the eager one-at-a-time path against the grouped path (S
seeds as one grouped network, networks.Grouped) and, on CUDA, the grouped step captured as a CUDA
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

import dataclasses
import math
import time

import torch

from .paper import data, models, optimise
from .paper.config import RunConfig
from .paper.graphs import GraphedStep, graphable
from .paper.networks import Eager, Grouped
from .runs.expand import training_cost
from .runs.provenance import device_name

CASES = [("cnn", 32, 32), ("cnn", 32, 128), ("cnn", 32, 1024), ("mlp", 4096, 128)]
QUICK = [("cnn", 4, 32), ("cnn", 8, 16), ("cnn", 8, 32), ("cnn", 4, 128), ("cnn", 8, 128),
         ("mlp", 128, 32), ("mlp", 256, 32), ("mlp", 64, 128), ("mlp", 512, 128)]
SHAPES = {"mlp": (1, 28, 28), "cnn": (3, 32, 32)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(net, cfg, xb, yb, steps, device, graphed=False) -> float:
    opt = optimise.optimizer(cfg, list(net.params.values()), device)
    if graphed:  # the batch is already static: the captured step reads it in place
        run = GraphedStep(lambda idx: optimise.step(net, opt, xb, yb, {}), (1,), device)
        dummy = torch.zeros(1, dtype=torch.long, device=device)
        one = lambda: run(dummy)  # noqa: E731
        for _ in range(run.warmup + 1):  # warm-up steps, then capture and one replay
            one()
    else:
        one = lambda: optimise.step(net, opt, xb, yb, {})  # noqa: E731
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


def _batch(family, batch, seeds, device, shape=None):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(seeds, batch, *(shape or SHAPES[family]), generator=g).to(device),
            torch.randint(0, 10, (seeds, batch), generator=g).to(device))


def _compiled(net):
    net._forward = torch.compile(net._forward)
    return net


def bench_case(family, width, batch, seeds, steps, device, compile=False, channels_last=None) -> dict:
    cfg = RunConfig(dataset="bench", model=family, width=width, batch_size=batch, lr=0.01)
    xb, yb = _batch(family, batch, seeds, device)
    grouped_net = lambda: Grouped(_built(family, width, seeds), device, channels_last)  # noqa: E731

    def one_at_a_time(layout):
        return sum(_time(Eager([m], device, layout), cfg, xb[i:i + 1], yb[i:i + 1], steps, device)
                   for i, m in enumerate(_built(family, width, seeds)))
    _peak_mib(device)
    eager = one_at_a_time(channels_last)
    mem = {"eager": _peak_mib(device)}
    nchw = one_at_a_time(False) if family == "cnn" and channels_last is not False else math.nan
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
            "nchw": samples / nchw, "nchw_ratio": eager / nchw,
            "graphed": samples / graphed, "compiled": samples / compiled, "grouped_ratio": eager / grouped,
            "graphed_ratio": eager / graphed, "compiled_ratio": eager / compiled, "peak_mib": mem}


def step_seconds(family, width, batch, seeds, optimizer, device, steps=5, arch=None) -> dict:
    """What the training loop runs for one shape, timed: "step", seconds of one optimiser step of
    `seeds` models together (Grouped, or Eager for one model; on CUDA replayed as a CUDA graph
    where graphs.graphable allows, as `--cuda-graphs auto` does with --gpu), and "eval", seconds
    to evaluate one sample for all of them (losses.evaluate's chunks of 1000). `arch`: a run's
    configuration whose architecture is timed (models.for_config: fc's hidden sizes, BatchNorm,
    its dataset's input shape) in place of `family` at `width` on the bench's inputs."""
    device = torch.device(device)
    cfg = (RunConfig(dataset="bench", model=family, width=width, batch_size=batch, optimizer=optimizer)
           if arch is None else dataclasses.replace(arch, batch_size=batch, optimizer=optimizer))
    xb, yb = _batch(family, batch, seeds, device, None if arch is None else data.DATASETS[arch.dataset].train_shape[1:])
    built = _built(family, width, seeds) if arch is None else [models.for_config(arch) for _ in range(seeds)]
    net = (Grouped if seeds > 1 else Eager)(built, device)
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
    run's share of its group's optimiser steps at its shape's measured step time, plus the samples
    of its evaluation passes (test, validation, final: training_cost's "eval_samples") at the
    measured time per sample. `timings` memoises step_seconds per shape. Left out: loading data,
    instruments, sharpness measured in training, the ragged last batch of an epoch (timed as a
    full one) and the first steps' warm-up and graph capture."""
    total = 0.0
    for c in cfgs:
        info = data.DATASETS[c.dataset]
        shape = (c.model, c.width, c.batch_size or c.train_subset or info.train_shape[0], seeds, c.optimizer)
        fc = c.model == "fc"
        if fc:  # fc: its hidden sizes and BatchNorm make the shape, not the width
            shape += (c.hidden, c.batchnorm, c.dataset)
        if shape not in timings:
            timings[shape] = step_seconds(*shape[:5], device, arch=c if fc else None)
            print(f"  measured {c.model} {c.hidden if fc else f'w={c.width}'} bs={shape[2]} x{seeds} {c.optimizer}: "
                  f"{1e3 * timings[shape]['step']:.2f} ms/step", flush=True)
        t = timings[shape]
        cost = training_cost(c)
        total += (cost["steps"] * t["step"] + cost["eval_samples"] * t["eval"]) / seeds
    return total


def main(device="cpu", seeds=5, steps=30, quick=False, compile=False, cudnn_benchmark=False, nchw=False) -> list:
    """`cudnn_benchmark`: let cuDNN time its algorithms (torch.backends.cudnn.benchmark) for every
    path; `nchw`: every path without channels-last activations (see models.has_conv). A CNN case
    also times the eager path in NCHW (column "nchw", its ratio to the eager path's default
    layout, channels-last), unless `nchw`."""
    device = torch.device(device)
    if cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    rows = []
    print(f"device: {device_name(device)}; torch {torch.__version__}; {seeds} seeds; {steps} timed steps per model; "
          f"cudnn.benchmark {torch.backends.cudnn.benchmark}; CNN activations {'NCHW' if nchw else 'channels-last'}; "
          f"{torch.get_num_threads()} threads; training samples/s (all models together); ratios against eager one-at-a-time")
    extra = f"{'compiled':>10}{'ratio':>8}" if compile else ""
    print(f"{'case':<22}{'eager':>10}{'nchw':>10}{'ratio':>8}{'grouped':>10}{'ratio':>8}{'graphed':>10}{'ratio':>8}{extra}"
          f"   peak MiB (eager/grouped/graphed{'/compiled' if compile else ''})")
    for family, width, batch in (QUICK if quick else CASES):
        r = bench_case(family, width, batch, seeds, steps, device, compile, False if nchw else None)
        rows.append(r)
        mem = " / ".join(f"{v:.0f}" for v in r["peak_mib"].values())
        extra = f"{r['compiled']:>10.0f}{r['compiled_ratio']:>7.2f}x" if compile else ""
        print(f"{r['case']:<22}{r['eager']:>10.0f}{r['nchw']:>10.0f}{r['nchw_ratio']:>7.2f}x"
              f"{r['grouped']:>10.0f}{r['grouped_ratio']:>7.2f}x"
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


# ------------------------------------------------------------------------------------- smoke tier

def matmul_rate(device="cpu", n: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of a float32 n x n matmul on `device`, the best of repeated timings (about `seconds`
    in all): the arithmetic rate the training FLOPs are held against."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best, end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < end:
        _sync(device)
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        _sync(device)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


def loop_overhead(device="cpu", batch: int = 32, rows: int = 3200, epochs: int = 3, optimizer: str = "sgd",
                  seeds: int = 1) -> float:
    """Seconds per optimiser step of the training loop (train._fit: batch indexing, the step, the
    epoch's test evaluation and bookkeeping) on an MLP of width 1 on random MNIST-shaped rows,
    where the arithmetic is negligible: what every step costs beyond its FLOPs, timed on a second
    pass (the first includes one-off warm-up). `seeds` > 1: that many seeds trained together as
    one grouped network (the time is per grouped step)."""
    from .paper.data import Split
    from .paper.train import train, train_seeds
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(rows, 1, 28, 28, generator=g), torch.randint(0, 10, (rows,), generator=g),
                  torch.rand(100, 1, 28, 28, generator=g), torch.randint(0, 10, (100,), generator=g))
    cfgs = [RunConfig(dataset="mnist", model="mlp", width=1, batch_size=batch, epochs=epochs, optimizer=optimizer,
                      seed=s, device=str(device)) for s in range(seeds)]
    for _ in range(2):  # timed on the second pass; the first warms up (lazy imports, first calls: about 1 s)
        t = time.perf_counter()
        res = train_seeds(cfgs, split) if seeds > 1 else [train(cfgs[0], split)]
    return (time.perf_counter() - t) / res[0].steps


def _load() -> str:
    import os
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def mnist_full_rate(device="cpu", seeds=5, steps=20) -> dict:
    """Training GFLOP/s of the full tier's MNIST MLP step (dd_mlp's widest common shape: width 512,
    batch 128, SGD), eager one model at a time and `seeds` seeds grouped: 3x the forward FLOPs per
    sample (models.forward_flops) x batch x models / measured step seconds (step_seconds)."""
    flops = 3 * models.forward_flops("mlp", 512) * 128
    out = {}
    for name, s in (("eager", 1), ("grouped", seeds)):
        out[name] = flops * s / step_seconds("mlp", 512, 128, s, "sgd", device, steps=steps)["step"]
    return out


def smoke(tier="smoke", data_dir=None, claims_dir="claims", device="cpu", seed_batching="auto",
          experiment_ids=None, threads=None) -> dict:
    """The smoke tier's training, per experiment, in this process into a fresh temporary run cache
    (every group as the inline executor trains it; a run two experiments share counts for the first),
    each against its FLOP floor: its training FLOPs (runs.expand.training_cost, as `plan` counts
    them) at the float32 matmul rate measured in the same run. Also the training loop's time per
    step on a width-1 MLP (its per-step overhead), and the full tier's MNIST step rate (mnist_full_rate).
    `threads`: torch's intra-op threads (default: torch's, one per core). `seed_batching`: as pytest's --seed-batching
    (auto: runs.context.Context.seeds_together's rule). Prints a table; returns the figures."""
    import tempfile
    from pathlib import Path

    from .claims import spec
    from .execute import planner
    from .execute.executors import settings, train_group
    from .runs import cache
    from .runs.context import Context
    every = [e for p in sorted(Path(claims_dir).glob("*.toml")) for e in spec.load(p).experiments.values()
             if tier in e.tiers]
    unknown = sorted(set(experiment_ids or ()) - {planner.exp_id(e) for e in every})
    if unknown:
        raise SystemExit(f"bench: no {tier}-tier experiment {', '.join(unknown)} in {claims_dir}; "
                         f"known: {', '.join(planner.exp_id(e) for e in every)}")
    exps = [e for e in every if experiment_ids is None or planner.exp_id(e) in experiment_ids]
    if threads:
        torch.set_num_threads(threads)
    rate = matmul_rate(device)
    overhead = loop_overhead(device)
    mnist = mnist_full_rate(device)
    print(f"device: {device_name(torch.device(device))}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average {_load()}; seed batching {seed_batching}")
    print(f"float32 matmul (1024^3): {rate / 1e9:.1f} GFLOP/s; training-loop overhead (MLP w=1, batch 32, "
          f"eager SGD): {1e3 * overhead:.2f} ms/step")
    print(f"full-tier MNIST step (mlp w=512, batch 128, SGD): eager {mnist['eager'] / 1e9:.1f} GFLOP/s "
          f"({mnist['eager'] / rate:.2f} of matmul), 5 seeds grouped {mnist['grouped'] / 1e9:.1f} GFLOP/s "
          f"({mnist['grouped'] / rate:.2f})")
    out = {"rate": rate, "overhead_s": overhead, "mnist_full": mnist, "experiments": {}}
    batch = {"on": True, "off": False, "auto": None}[seed_batching]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device=device, data_dir=data_dir, cache_root=tmp, batch_seeds=batch)
        plan = planner.pending([(e, tier) for e in exps], cache.RunCache(ctx.cache.root), ctx.device)
        print(f"{'experiment':<32}{'groups':>7}{'runs':>6}{'steps':>9}{'GFLOP':>9}{'floor s':>9}{'train s':>9}"
              f"{'x floor':>9}{'ms/step':>9}")
        for i, g in enumerate(plan):
            owner = g.experiments[0]
            row = out["experiments"].setdefault(owner, {"groups": 0, "runs": 0, "steps": 0, "flops": 0.0,
                                                         "seconds": 0.0})
            t = time.perf_counter()
            train_group(settings(ctx), g, i, lambda e: None)
            row["seconds"] += time.perf_counter() - t
            row["groups"] += 1
            row["runs"] += len(g.keys)
            row["steps"] += g.steps
            row["flops"] += g.flops
        total = {"groups": 0, "runs": 0, "steps": 0, "flops": 0.0, "seconds": 0.0}
        for owner, row in list(out["experiments"].items()) + [("total", total)]:
            if owner != "total":
                for k in total:
                    total[k] += row[k]
            floor = row["flops"] / rate
            print(f"{owner:<32}{row['groups']:>7}{row['runs']:>6}{row['steps']:>9,}{row['flops'] / 1e9:>9.1f}"
                  f"{floor:>9.1f}{row['seconds']:>9.1f}{row['seconds'] / floor:>8.1f}x"
                  f"{1e3 * row['seconds'] / max(row['steps'], 1):>9.2f}", flush=True)
        out["total"] = total
    print(f"load average at the end: {_load()} (steps: optimiser steps over all runs; ms/step: training "
          "seconds per run step, a grouped step counting once per seed)")
    return out
