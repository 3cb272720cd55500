"""Train a few smoke-sized configurations with this checkout's harness/paper (its train.py) and with
the one at another git revision, in the same process, and compare: trained weights (the largest
absolute difference, relative to the largest absolute weight of that tensor), final metrics and
the per-epoch history, plus the seconds each took (interleaved, best of `--repeats`, as a ratio).

    python tools/same_training.py [--before REV] [--data-dir DIR] [--tol 1e-5] [--repeats 2]

REV (default HEAD): its whole harness/paper package (`git archive REV harness/paper`, unpacked in a
temporary folder) is imported as a package of its own, `_paper_before` (the paper's modules import
only one another, relatively; tests/test_layout.py), so that every module of REV's training runs,
however the package is split into files; RunConfig is taken from its config.py, or from its
train.py where it has none (REVs before issue 46). The cases cover the eager and the grouped
trainer, SGD and Adam, masks, MNIST MLPs and CIFAR-10 CNNs, and the measurements inside the loop (a
validation split, sharpness cold and warm, a count of steps, test_every). Exit 1 when a weight
differs by more than `tol` of its tensor's scale, a metric by more than `tol` relative (accuracies
by more than one sample), or a history's keys differ; a case whose weights, final metrics and
histories are the same bit for bit says "bit-identical". Used to show that a speed change to the
training loop leaves its results as they were, up to float rounding.
"""
import argparse
import dataclasses
import importlib
import importlib.util
import io
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness.paper import data, models  # noqa: E402
from harness.paper.config import RunConfig  # noqa: E402

MNIST = dict(dataset="mnist", model="mlp", train_subset=500, test_subset=500, batch_size=32, epochs=3)
CIFAR = dict(dataset="cifar10", model="cnn", width=4, train_subset=300, test_subset=300, batch_size=32, epochs=2)
CASES = [  # (name, configs (one: eager; several: grouped), masked)
    ("mlp w=32 sgd eager", [RunConfig(width=32, **MNIST)], False),
    ("mlp w=32 sgd eager masked", [RunConfig(width=32, **MNIST)], True),
    ("mlp w=32 adam eager", [RunConfig(width=32, optimizer="adam", lr=1e-3, **MNIST)], False),
    ("mlp w=32 sgd grouped x3", [RunConfig(width=32, seed=s, **MNIST) for s in range(3)], False),
    ("mlp w=32 adam grouped x2 masked", [RunConfig(width=32, optimizer="adam", lr=1e-3, seed=s, **MNIST)
                                         for s in range(2)], True),
    ("cnn w=4 sgd eager", [RunConfig(**CIFAR)], False),
    ("cnn w=4 sgd grouped x2 masked", [RunConfig(seed=s, **CIFAR) for s in range(2)], True),
    ("cnn w=4 adam grouped x2", [RunConfig(optimizer="adam", lr=1e-3, seed=s, **CIFAR) for s in range(2)], False),
    # the run settings measured inside the loop: validation, sharpness, a count of steps, test_every
    ("mlp w=16 sgd eager val sharp steps", [RunConfig(**{**MNIST, "width": 16, "steps": 40, "val_size": 100,
                                                        "eval_every": 6, "sharpness_every": 15, "sharpness_iters": 4})],
     False),
    ("mlp w=16 gd grouped x2 mse warm", [RunConfig(**{**MNIST, "width": 16, "seed": s, "batch_size": 0, "momentum": 0.0,
                                                     "schedule": "constant", "lr": 0.05, "epochs": 5, "loss": "mse",
                                                     "sharpness_every": 2, "sharpness_iters": 4, "sharpness_warm": True,
                                                     "sharpness_samples": 200}) for s in range(2)], False),
    ("mlp w=16 sgd grouped x2 val masked", [RunConfig(**{**MNIST, "width": 16, "seed": s, "val_size": 100,
                                                        "eval_every": 7, "test_every": 2}) for s in range(2)], True),
]


def trainer(package: str):
    """The training entry points of a harness/paper package imported as `package`."""
    train = importlib.import_module(f"{package}.train")
    try:
        config = importlib.import_module(f"{package}.config")
    except ModuleNotFoundError:  # (before issue 46, RunConfig lived in train.py)
        config = train
    return types.SimpleNamespace(RunConfig=config.RunConfig, train=train.train, train_seeds=train.train_seeds)


def load_before(rev: str):
    """REV's harness/paper package, unpacked from git and imported as `_paper_before`."""
    tar = subprocess.run(["git", "archive", rev, "harness/paper"], capture_output=True, check=True).stdout
    root = tempfile.mkdtemp()
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(root)
    folder = os.path.join(root, "harness", "paper")
    spec = importlib.util.spec_from_file_location("_paper_before", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return trainer("_paper_before")


def masks_for(cfg):
    torch.manual_seed(1234 + cfg.seed)
    model = models.for_config(cfg)
    return {k: (torch.rand_like(p) > 0.5).float() for k, p in model.named_parameters() if p.ndim > 1}


def run(mod, cfgs, split, masked):
    cfgs = [mod.RunConfig(**dataclasses.asdict(c)) for c in cfgs]
    masks = [masks_for(c) for c in cfgs] if masked else None
    t = time.perf_counter()
    if len(cfgs) == 1:
        res = [mod.train(cfgs[0], split, masks=masks[0] if masks else None)]
    else:
        res = mod.train_seeds(cfgs, split, masks=masks)
    return res, time.perf_counter() - t


def compare(a, b, tol) -> tuple:
    """(what differs beyond `tol`, the largest weight difference, whether every weight, final
    metric and history record is the same bit for bit, key order included)."""
    bad, worst = [], 0.0
    exact = all(ra.thetaT.keys() == rb.thetaT.keys() and all(torch.equal(ra.thetaT[k], rb.thetaT[k]) for k in ra.thetaT)
                and repr(ra.final) == repr(rb.final) and repr(ra.history) == repr(rb.history) and ra.steps == rb.steps
                for ra, rb in zip(a, b))
    for j, (ra, rb) in enumerate(zip(a, b)):
        for k in ra.thetaT:
            x, y = ra.thetaT[k].double(), rb.thetaT[k].double()
            scale = max(x.abs().max().item(), 1e-12)
            d = (x - y).abs().max().item() / scale if x.numel() else 0.0
            worst = max(worst, d)
            if d > tol:
                bad.append(f"model {j} {k}: max |diff| {d:.2e} of its scale")
        for k in ra.final:
            u, v = ra.final[k], rb.final[k]
            lim = 100.0 / 300 + 1e-9 if k.endswith("acc") or k == "gen_gap" else tol * max(abs(u), 1.0)
            if not (math.isnan(u) and math.isnan(v)) and abs(u - v) > lim:
                bad.append(f"model {j} final {k}: {u} vs {v}")
        if [sorted(r) for r in ra.history] != [sorted(r) for r in rb.history] or ra.steps != rb.steps:
            bad.append(f"model {j}: history records or steps differ")
    return bad, worst, exact


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="HEAD")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", default="", help="only the cases whose name contains this")
    args = p.parse_args(argv)
    before, after = load_before(args.before), trainer("harness.paper")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; before = {args.before}, after = the working tree")
    failed = 0
    for name, cfgs, masked in [c for c in CASES if args.only in c[0]]:
        split = data.split_for(cfgs[0], args.data_dir)
        times = {"before": math.inf, "after": math.inf}
        results = {}
        for _ in range(args.repeats):  # interleaved
            for label, mod in (("before", before), ("after", after)):
                results[label], t = run(mod, cfgs, split, masked)
                times[label] = min(times[label], t)
        bad, worst, exact = compare(results["before"], results["after"], args.tol)
        failed += bool(bad)
        print(f"{name:<34} weights max rel diff {worst:.1e}; after/before time {times['after'] / times['before']:.2f} "
              f"({times['before']:.2f} s -> {times['after']:.2f} s) {'OK' if not bad else 'DIFFERENT'}"
              f"{' (bit-identical)' if exact else ''}", flush=True)
        for line in bad[:5]:
            print("   ", line)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
