"""Command line.

`python -m harness report` re-evaluates every claim from the run cache (no training; claims whose
runs are missing are reported as errors) and re-renders the report.
`python -m harness bench` times the training step, eager one-at-a-time vs seed-batched.
`python -m harness plan` lists what a tier trains: runs, optimiser steps and FLOPs per experiment;
`plan --pending` lists the training groups not yet in the run cache (harness/planner.py).
`python -m harness export` packs the cache's results (metrics, no tensors) into one small tar.gz."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import cache, experiments, planner, report, spec
from .plugin import claim_result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="re-render the report from cached runs, without training")
    r.add_argument("--claims", default="claims", help="folder of claim TOML files")
    r.add_argument("--tier", choices=spec.TIERS, action="append", help="tier(s) to include (default: both)")
    r.add_argument("--run-cache", default=None, help="run cache folder (as for pytest)")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default="cpu", help="device the cached runs were trained on (cpu or cuda)")
    r.add_argument("--out", default="build/report")
    b = sub.add_parser("bench", help="training-step speed: eager one-at-a-time vs seed-batched")
    b.add_argument("--device", default="cpu")
    b.add_argument("--seeds", type=int, default=5)
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--quick", action="store_true", help="small models (for a CPU)")
    pl = sub.add_parser("plan", help="runs, optimiser steps and training FLOPs per experiment of a tier")
    pl.add_argument("--claims", default="claims", help="folder of claim TOML files")
    pl.add_argument("--tier", choices=spec.TIERS, default="full")
    pl.add_argument("--pending", action="store_true",
                    help="list the training groups not yet in the run cache: keys, settings, estimated cost")
    pl.add_argument("--run-cache", default=None, help="run cache folder (as for pytest; with --pending)")
    pl.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="device the runs train on (part of their keys; default: cuda for full, cpu for smoke)")
    e = sub.add_parser("export", help="the cache's results (metrics.json files, no tensors) as one tar.gz")
    e.add_argument("--run-cache", default=None, help="run cache folder (as for pytest)")
    e.add_argument("--out", default="build/results-cache.tar.gz")
    args = p.parse_args(argv)
    if args.command == "export":
        n = cache.RunCache(cache.default_root(args.run_cache)).export_metrics(args.out)
        print(f"{n} entries -> {args.out} (extract with: tar -xzf {args.out} -C CACHE_ROOT)")
        return 0
    if args.command == "plan" and args.pending:
        selection = [(exp, args.tier) for path in sorted(Path(args.claims).glob("*.toml"))
                     for exp in spec.load(path).experiments.values() if args.tier in exp.tiers]
        device = args.device or ("cuda" if args.tier == "full" else "cpu")
        for line in planner.describe(planner.pending(selection, cache.RunCache(cache.default_root(args.run_cache)), device)):
            print(line)
        return 0
    if args.command == "plan":
        plan(args.claims, args.tier)
        return 0
    if args.command == "bench":
        from . import bench
        bench.main(args.device, args.seeds, args.steps, args.quick)
        return 0

    start = time.time()
    ctx = experiments.Context(device=args.device, data_dir=args.data_dir, cache_root=args.run_cache,
                              allow_train=False)
    results = []
    for path in sorted(Path(args.claims).glob("*.toml")):
        cf = spec.load(path)
        for claim in cf.claims:
            for tier in claim.tiers:
                if args.tier is None or tier in args.tier:
                    results.append(claim_result(claim, tier, claim.experiment, cf, ctx))
    json_path, html_path = report.write(results, args.out, time.time() - start, args.device)
    print(f"{len(results)} claims; report: {html_path}; results: {json_path}")
    return 0


def plan(claims_dir, tier) -> list:
    """One row per experiment of the tier: training runs (a run shared with an experiment listed
    earlier counts there only), optimiser steps summed over runs and over seed groups (a seed
    group steps once for all its seeds), and training PFLOP (conv/linear layers, see
    models.forward_flops). Instruments are not included."""
    seen, rows = set(), []
    for path in sorted(Path(claims_dir).glob("*.toml")):
        for exp in spec.load(path).experiments.values():
            if tier not in exp.tiers or exp.procedure == "count":
                continue
            runs = []
            for cfg in experiments.training_runs(exp, tier):
                key = cache.run_key(cfg) if exp.procedure == "train" else None  # ticket rounds are unique
                if key is None or key not in seen:
                    seen.add(key)
                    runs.append(cfg)
            costs = [experiments.training_cost(c) for c in runs]
            steps = sum(c["steps"] for c in costs)
            rows.append({"experiment": f"{path.name}:{exp.name}", "runs": len(runs), "steps": steps,
                         "group_steps": steps / len(exp.resolved(tier)["seeds"]),
                         "pflop": sum(c["flops"] for c in costs) / 1e15})
    print(f"{tier} tier: training runs, optimiser steps (all runs; per seed group), training PFLOP")
    print(f"{'experiment':<36}{'runs':>6}{'steps':>12}{'group steps':>13}{'PFLOP':>9}")
    for r in rows + [{"experiment": "total", **{k: sum(r[k] for r in rows)
                                                 for k in ("runs", "steps", "group_steps", "pflop")}}]:
        print(f"{r['experiment']:<36}{r['runs']:>6}{r['steps']:>12,}{r['group_steps']:>13,.0f}{r['pflop']:>9.2f}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
