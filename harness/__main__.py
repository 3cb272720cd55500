"""Command line.

`python -m harness report` re-evaluates every claim from the run cache (no training; claims whose
runs are missing are reported as "not run") and re-renders the report. It only reads the cache
(or, with --exports DIR, the committed exports in DIR). Exit status, as pytest's: 0 no claim fails
or errors ("not run" claims and other readings' findings do not count), 1 some fail, diverge or
are errors, 2 nothing to report (no claim files, or no run cache at --run-cache) or a malformed
claim file.
`python -m harness bench` times the training step, eager one-at-a-time vs grouped seeds; with
`--executors`, the inline executor against the local one (harness/bench.py).
`python -m harness plan` lists what a tier trains: runs, optimiser steps and FLOPs per experiment,
and estimates its wall time on this machine's GPU (see `plan`); `plan --pending` lists the training
groups not yet in the run cache (harness/execute/planner.py).
`python -m harness export` packs the cache's results (metrics, no tensors; the resume records of
lottery-ticket chains' last rounds) into one tar.gz (exit status 2 where the cache holds none).
`python -m harness fit EXPERIMENT` ranks an experiment's readings (harness/claims/readings.py) by how well they
match the paper's numbers together, from the run cache (no training).
`python -m harness migrate` re-keys, in place, a run cache made before the device left the run
keys (runs/migrate.py; exports are re-keyed as they are imported, runs/exports.py)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .claims import plans, readings, report, spec
from .claims.results import claim_result, file_label
from .procedures.instruments import measurement_options
from .execute import planner
from .runs import cache, expand, exports, keys, provenance
from .runs import migrate as migration
from .runs.context import Context


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="re-render the report from cached runs, without training")
    r.add_argument("--claims", default="claims", help="folder of claim TOML files")
    r.add_argument("--tier", choices=spec.TIERS, action="append", help="tier(s) to include (default: both)")
    r.add_argument("--run-cache", default=None, help="run cache folder (as for pytest)")
    r.add_argument("--exports", default=None, metavar="DIR",
                   help="report from the exports (*.tar.gz) in DIR instead of a run cache, e.g. reports/full/parts")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default="cpu", help="device the cached runs were trained on (cpu or cuda)")
    r.add_argument("--out", default="build/report")
    r.add_argument("--readings", action="append", default=[], metavar="all|NAME=VALUE",
                   help="also report the claims under these readings (as for pytest)")
    f = sub.add_parser("fit", help="rank an experiment's readings by their fit to the paper's numbers (from the cache)")
    f.add_argument("experiment", help="experiment name, e.g. dd_cnn")
    f.add_argument("--claims", default="claims", help="folder of claim TOML files")
    f.add_argument("--tier", choices=spec.TIERS, default="full")
    f.add_argument("--run-cache", default=None, help="run cache folder (as for pytest)")
    f.add_argument("--exports", default=None, metavar="DIR",
                   help="rank from the exports (*.tar.gz) in DIR instead of a run cache, e.g. reports/full/parts")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--device", default="cpu", help="device the cached runs were trained on (cpu or cuda)")
    b = sub.add_parser("bench", help="training-step speed: eager one-at-a-time vs grouped seeds")
    b.add_argument("--device", default="cpu")
    b.add_argument("--seeds", type=int, default=5)
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--quick", action="store_true", help="small models (for a CPU)")
    b.add_argument("--compile", action="store_true", help="add a torch.compile column (CUDA only)")
    b.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark on")
    b.add_argument("--nchw", action="store_true", help="CNN activations NCHW on every path, not channels-last")
    b.add_argument("--executors", action="store_true",
                   help="instead: the smoke tier's MNIST seed groups trained inline against the local executor")
    b.add_argument("--smoke", action="store_true",
                   help="instead: train the smoke tier (or --experiment ...) into a fresh temporary cache, each "
                        "experiment's seconds against its FLOP floor at the matmul rate measured in the same run")
    b.add_argument("--seed-batching", choices=("auto", "on", "off"), default="auto",
                   help="with --smoke: as pytest's --seed-batching")
    b.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own, one per core)")
    b.add_argument("--workers", type=int, default=2, help="with --executors: local worker processes")
    b.add_argument("--experiment", action="append", help="with --executors or --smoke: FILE.toml:NAME (repeatable; --executors' default: "
                   "double_descent.toml:dd_mlp and ntk.toml:ntk_mlp, 6 seed groups in the smoke tier)")
    b.add_argument("--tier", choices=spec.TIERS, default="smoke", help="with --executors or --smoke")
    b.add_argument("--data-dir", default=None, help="with --executors or --smoke")
    b.add_argument("--claims", default="claims", help="with --executors or --smoke: folder of claim TOML files")
    pl = sub.add_parser("plan", help="runs, optimiser steps and FLOPs (training and evaluation) per experiment of a tier, "
                                     "for the configurations its claims read")
    pl.add_argument("--claims", default="claims", help="folder of claim TOML files")
    pl.add_argument("--tier", choices=spec.TIERS, default="full")
    pl.add_argument("--estimate", choices=("auto", "on", "off"), default="auto",
                    help="estimate the wall time from measured step times (auto: only where a CUDA GPU "
                         "is present; on: also on a CPU, where the large CNN steps take minutes)")
    pl.add_argument("--pending", action="store_true",
                    help="list the training groups not yet in the run cache: keys, settings, estimated cost")
    pl.add_argument("--run-cache", default=None, help="run cache folder (as for pytest; with --pending)")
    pl.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="device the runs train on (default: cuda for full, cpu for smoke)")
    pl.add_argument("--claim", action="append", default=None, metavar="ID",
                    help="only what these claims read (repeatable; default: every claim of the tier)")
    pl.add_argument("--readings", action="append", default=None, metavar="all|NAME=VALUE",
                    help="the readings listed, as for pytest (default: all); with --pending, the readings planned "
                         "beside the primary (default: none)")
    e = sub.add_parser("export", help="the cache's results (metrics.json files, no tensors; ticket chains' resume records) as one tar.gz")
    e.add_argument("--run-cache", default=None, help="run cache folder (as for pytest)")
    e.add_argument("--out", default="build/results-cache.tar.gz")
    e.add_argument("--max-mib", type=float, default=None,
                   help="volumes of at most this many MiB (before compression): OUT, then NAME-2.tar.gz, ...")
    m = sub.add_parser("migrate", help="re-key, in place, a run cache made before the device left the run keys")
    m.add_argument("--run-cache", default=None, help="run cache folder (as for pytest)")
    m.add_argument("--claims", default="claims", help="folder of claim TOML files (the measurements to look for)")
    args = p.parse_args(argv)
    if args.command == "migrate":
        return migrate(args)
    if args.command == "export":
        root = cache.default_root(args.run_cache)
        if not _has_runs(root):
            return 2
        max_bytes = int(args.max_mib * 2**20) if args.max_mib else None
        n = cache.RunCache(root, read_only=True).export_metrics(args.out, max_bytes)
        for f in n.files:
            mib = f.stat().st_size / 2**20
            print(f"{f}: {mib:.1f} MiB (extract with: tar -xzf {shlex.quote(str(f))} -C CACHE_ROOT)")
            if mib > 16:  # lottery-ticket resume records of wide networks' dense rounds can reach that
                print(f"note: {mib:.1f} MiB is more than a lent device returns in one file (16 MiB): use --max-mib 15")
        print(f"{n} entries in {len(n.files)} file(s)")
        return 0
    if args.command == "plan" and args.pending:
        exps, reads = _claimed(args.claims, args.tier, args.claim)
        selection = [(exp, args.tier, reading, reads[planner.exp_id(exp)]) for exp in exps
                     for reading in readings.select(exp, args.tier, args.readings or [])]
        device = args.device or ("cuda" if args.tier == "full" else "cpu")
        for line in planner.describe(planner.pending(selection, cache.RunCache(cache.default_root(args.run_cache)), device)):
            print(line)
        return 0
    if args.command == "plan":
        plan(args.claims, args.tier, estimate=args.estimate, claims=args.claim, selection=args.readings or ["all"])
        return 0
    if args.command == "fit":
        return _from_exports(args, fit)
    if args.command == "bench":
        from . import bench
        if args.smoke:
            bench.smoke(args.tier, args.data_dir, args.claims, args.device, args.seed_batching, args.experiment, args.threads)
            return 0
        if args.executors:
            bench.executors(args.experiment or ["double_descent.toml:dd_mlp", "ntk.toml:ntk_mlp"], args.tier,
                            args.workers, args.data_dir, args.claims, args.device)
            return 0
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        bench.main(args.device, args.seeds, args.steps, args.quick, args.compile, args.cudnn_benchmark, args.nchw)
        return 0

    start = time.time()
    return _from_exports(args, lambda a: main_report(a, start))


def _from_exports(args, command) -> int:
    """`command(args)`, on the run cache, or with --exports DIR on a temporary cache holding the
    exports in DIR (re-keyed where they were made when run keys named the device)."""
    if not args.exports:
        return command(args)
    try:
        candidates = measurement_candidates(args.claims)
    except spec.SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as root:
        taken = exports.import_exports(args.exports, root, candidates)
        for part, n in taken.items():
            print(f"{part}: {n} entries")
        if taken.migration.runs or taken.migration.measurements or taken.migration.unverified:
            print(f"entries made when run keys named the device: {taken.migration.summary()}")
        args.run_cache, args.exports = root, None
        return command(args)


def main_report(args, start) -> int:
    try:
        files = [spec.load(path) for path in sorted(Path(args.claims).glob("*.toml"))]
    except spec.SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    todo = [(claim, tier, cf, reading) for cf in files for claim in cf.claims for tier in claim.tiers
            if args.tier is None or tier in args.tier
            for reading in readings.select(claim.experiment, tier, args.readings, claim=claim)]
    if not todo:
        print(f"error: no claims found in {args.claims}/*.toml (tiers: {args.tier or 'all'}); "
              "name the folder with --claims", file=sys.stderr)
        return 2
    if not _has_runs(cache.default_root(args.run_cache)):
        return 2
    ctx = Context(device=args.device, data_dir=args.data_dir, cache_root=args.run_cache,
                              allow_train=False)
    results = [claim_result(claim, tier, claim.experiment, cf, ctx, reading) for claim, tier, cf, reading in todo]
    json_path, html_path = report.write(results, args.out, time.time() - start, args.device)
    primary = [r for r in results if readings.reading_id(r) == readings.PRIMARY]
    bad = sum(r["verdict"] in ("fail", "diverged", "error") for r in primary)
    not_run = sum(r["verdict"] == "not run" for r in primary)
    print(f"{len(primary)} claims ({len(results) - len(primary)} more under other readings), {bad} failed or errors, "
          f"{not_run} not run; report: {html_path}; results: {json_path}")
    return 1 if bad else 0


def measurement_candidates(claims_dir) -> list:
    """Every (instrument, options) pair a measurement of the experiments in `claims_dir` is keyed
    by: each experiment x tier x reading's resolved instruments, their options as
    procedures/instruments.py: measurement_options keys them; for finding measurements made under the old keys
    (migration.plan_migration)."""
    out = {}
    for path in sorted(Path(claims_dir).glob("*.toml")):
        for exp in spec.load(path, with_claims=False).experiments.values():
            for tier in exp.tiers:
                for reading in readings.expand(exp, tier):
                    for inst, opts in exp.resolved(tier, reading)["instruments"].items():
                        options = measurement_options(inst, opts)
                        out.setdefault(json.dumps([inst, options], sort_keys=True), (inst, options))
    return list(out.values())


def migrate(args) -> int:
    """`python -m harness migrate`: migration.migrate on the run cache, with the claim files' measurements."""
    root = cache.default_root(args.run_cache)
    if not _has_runs(root):
        return 2
    try:
        done = migration.migrate(root, measurement_candidates(args.claims))
    except (spec.SpecError, migration.ReadOnlyCache) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{root}: {done.summary()}")
    for what, items in (("already present", [f"{o} -> {n}" for o, n in done.present]),
                        ("unmatched", done.unmatched), ("not verified", [f"{k}: {why}" for k, why in done.unverified])):
        for line in items[:20]:
            print(f"  {what}: {line}")
        if len(items) > 20:
            print(f"  ... and {len(items) - 20} more {what}")
    return 0


def _has_runs(root: Path) -> bool:
    """Whether `root` is a run cache with entries; if not, says so (a mistyped --run-cache)."""
    if any(root.glob("runs/*/metrics.json")):
        return True
    print(f"error: no run cache entries in {root} (expected {root / 'runs'}/KEY/metrics.json); "
          "name the cache with --run-cache DIR or HARNESS_CACHE_DIR", file=sys.stderr)
    return False


def _claimed(claims_dir, tier, ids=None) -> tuple:
    """([the experiments of `tier` that its claims read, in file order], {experiment id: the
    configurations they read}: plans.claim_reads) for the claims with an id in `ids` (None: all)."""
    files = [spec.load(path) for path in sorted(Path(claims_dir).glob("*.toml"))]
    reads = plans.claim_reads([c for cf in files for c in cf.claims], tier, ids)
    exps = [exp for cf in files for exp in cf.experiments.values()
            if tier in exp.tiers and exp.procedure != "count" and planner.exp_id(exp) in reads]
    return exps, reads


def plan(claims_dir, tier, estimate="off", claims=None, selection=("all",)) -> list:
    """One row per experiment of the tier that its claims (`claims`: those ids only) read, for the
    configurations they read (harness/runs/expand.py: may_read): training runs (a run shared with
    an experiment listed earlier counts there only), optimiser steps summed over runs and over
    seed groups (a seed group steps once for all its seeds), and PFLOP (conv/linear layers, see
    models.forward_flops: training, and the evaluation passes the runs' settings make,
    expand.training_cost). Instruments are not included. With `estimate` ("on"; "auto": where a CUDA GPU
    is present), also the estimated training minutes on this machine's GPU (else its CPU), from
    a few measured grouped steps of each distinct (family, width, batch, seeds) shape (see
    bench.wall_seconds). Then the readings `selection` lists (plan_readings)."""
    import torch
    from . import bench
    device = "cuda" if torch.cuda.is_available() else "cpu"
    estimate = estimate == "on" or estimate == "auto" and device == "cuda"
    seen, rows, timings = set(), [], {}
    if estimate:
        print(f"measuring the training step of each shape on {provenance.device_name(device)} ...", flush=True)
    exps, reads = _claimed(claims_dir, tier, claims)
    for exp in exps:
        runs = []
        for cfg in expand.training_runs(exp, tier, reads=reads[planner.exp_id(exp)]):
            key = keys.run_key(cfg) if exp.procedure == "train" else None  # ticket rounds are unique
            if key is None or key not in seen:
                seen.add(key)
                runs.append(cfg)
        costs = [expand.training_cost(c) for c in runs]
        steps, seeds = sum(c["steps"] for c in costs), len(exp.resolved(tier)["seeds"])
        rows.append({"experiment": planner.exp_id(exp), "runs": len(runs), "steps": steps,
                     "group_steps": steps / seeds, "pflop": sum(c["flops"] for c in costs) / 1e15,
                     "minutes": bench.wall_seconds(runs, seeds, device, timings) / 60 if estimate else 0.0})
    print(f"{tier} tier{'' if claims is None else ' (claims ' + ', '.join(claims) + ')'}: training runs of the "
          "configurations the claims read, optimiser steps (all runs; per seed group), PFLOP (training and evaluation)"
          + (f", ESTIMATED training minutes on {provenance.device_name(device)}" if estimate else ""))
    print(f"{'experiment':<36}{'runs':>6}{'steps':>12}{'group steps':>13}{'PFLOP':>9}"
          + (f"{'est. min':>10}" if estimate else ""))
    for r in rows + [{"experiment": "total", **{k: sum(r[k] for r in rows)
                                                 for k in ("runs", "steps", "group_steps", "pflop", "minutes")}}]:
        print(f"{r['experiment']:<36}{r['runs']:>6}{r['steps']:>12,}{r['group_steps']:>13,.0f}{r['pflop']:>9.2f}"
              + (f"{r['minutes']:>10.1f}" if estimate else ""))
    if estimate:
        print("(an estimate: measured step and evaluation times x the plan's steps and samples; data loading, "
              "instruments and warm-up are not included)")
    else:
        print(f"(no wall-time estimate: no CUDA GPU here; --estimate on measures on this {device}, where the "
              "large CNN steps take minutes)")
    plan_readings(claims_dir, tier, seen, claims, selection)
    return rows


def plan_readings(claims_dir, tier, seen, claims=None, selection=("all",)) -> list:
    """The cost of the readings (harness/claims/readings.py) beyond the primary tier that
    `selection` lists (as --readings), printed after plan's table: per experiment and reading, the
    training runs of the configurations its claims (`claims`: those ids only) read not already
    counted (`seen`: the primary's run keys; the rule is harness.claims.plans.reading_runs': a run
    shared by several readings or experiments counts once, a ticket's pruning rounds are all new),
    optimiser steps and PFLOP (training and evaluation). A reading that only changes an instrument
    option trains nothing."""
    rows = []
    exps, reads = _claimed(claims_dir, tier, claims)
    for exp in exps:  # every primary's runs (a ticket's dense runs are keyed too)
        seen |= plans.primary_keys(exp, tier, reads[planner.exp_id(exp)])
    for exp in exps:
        for reading, runs in plans.reading_runs(exp, tier, seen, reads[planner.exp_id(exp)], selection):
            costs = [expand.training_cost(c) for c in runs]
            rows.append({"experiment": planner.exp_id(exp), "reading": reading.name, "runs": len(runs),
                         "steps": sum(c["steps"] for c in costs),
                         "pflop": sum(c["flops"] for c in costs) / 1e15})
    if not rows:
        return rows
    print(f"\nreadings of the {tier} tier (pytest --readings), beyond the runs above: training runs, optimiser steps, "
          "PFLOP (training and evaluation)")
    print(f"{'experiment':<36}{'reading':<52}{'runs':>6}{'steps':>12}{'PFLOP':>9}")
    by_exp = {}
    for r in rows:
        print(f"{r['experiment']:<36}{r['reading']:<52}{r['runs']:>6}{r['steps']:>12,}{r['pflop']:>9.3f}")
        e = by_exp.setdefault(r["experiment"], {"readings": 0, "runs": 0, "steps": 0, "pflop": 0.0})
        e["readings"] += 1
        for k in ("runs", "steps", "pflop"):
            e[k] += r[k]
    print(f"{'per experiment':<36}{'(readings)':<52}")
    for name, e in by_exp.items():
        print(f"{name:<36}{e['readings']:<52}{e['runs']:>6}{e['steps']:>12,}{e['pflop']:>9.3f}")
    total = {k: sum(e[k] for e in by_exp.values()) for k in ("readings", "runs", "steps", "pflop")}
    print(f"{'readings total':<36}{total['readings']:<52}{total['runs']:>6}{total['steps']:>12,}{total['pflop']:>9.3f}")
    return rows


def fit(args) -> int:
    """Print the readings of one experiment ranked by readings.fit, from the cache (no training)."""
    ctx = Context(device=args.device, data_dir=args.data_dir, cache_root=args.run_cache,
                              allow_train=False)
    results, declared, repeats = [], None, {}
    for path in sorted(Path(args.claims).glob("*.toml")):
        cf = spec.load(path)
        for claim in cf.claims:
            exp = claim.experiment
            if exp.name != args.experiment or args.tier not in claim.tiers:
                continue
            declared = exp.readings(args.tier)
            repeats[(file_label(claim.file), claim.id)] = readings.repeated(claim.tiers[args.tier]["check"], exp, args.tier)
            for reading in readings.select(exp, args.tier, ["all"], claim=claim):
                results.append(claim_result(claim, args.tier, exp, cf, ctx, reading))
    if declared is None:
        print(f"no claim of the {args.tier} tier uses an experiment named {args.experiment!r}", file=sys.stderr)
        return 2
    rows = readings.fit(results, repeats)
    errors = sum(r["verdict"] == "error" for r in results)
    print(f"{args.experiment} [{args.tier}]: {len(declared)} readings; ranked by the sum of squared misses "
          f"(measured - paper) / tolerance over the claims with a numeric paper value"
          + (f"; {errors} claim results not in the cache" if errors else ""))
    print(f"{'rank':>4}  {'reading':<44}{'claims':>7}{'sum sq':>10}{'rms':>8}{'pass':>6}{'missing':>9}")
    for i, r in enumerate(rows, 1):
        print(f"{i:>4}  {r['reading']:<44}{r['n']:>7}"
              f"{r['sum_sq']:>10.3g}{r['rms']:>8.3g}{r['passes']:>6}{r['missing']:>9}")
    if not rows:
        print("no reading has a claim with a numeric paper value in the cache")
    elif any(r["missing"] for r in rows) and rows[0]["shared_n"]:
        best = sorted(rows, key=lambda r: (r["shared_sum_sq"], r["reading"]))
        print(f"On the {rows[0]['shared_n']} claims every reading has (some lack others): "
              + ", ".join(f"{r['reading']} {r['shared_sum_sq']:.3g}" for r in best))
    print("The primary reading stays the one chosen from the paper's text (see the readings in the claim file).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
