"""Command line.

`python -m harness report` re-evaluates every claim from the run cache (no training; claims whose
runs are missing are reported as errors) and re-renders the report.
`python -m harness bench` times the training step, eager one-at-a-time vs seed-batched."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import experiments, report, spec
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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
