"""The registry of instruments: what a claim file's `measure` may name, each declared in one record.

An instrument's record says
  options   each option with its default, its type in a claim file and what values it allows;
  keyless   options left out of its measurement's cache key at these values (options added after
            full-tier results existed: as runs/keys.py leaves default run settings out of a key);
  metrics   the row metrics it yields under given options, in order;
  take      how it is taken on a trained run's weights (theta0, thetaT), on the run's data split;
  read      the values of those metrics from a measurement (as cached), in the same order.

The measuring itself is the paper's ML (harness/paper/measure.py). A measurement is cached under
a key naming the run, the instrument and `measurement_options` (harness/runs/inline.py: measured),
so an instrument added later does not retrain. Adding an instrument: one record here, its line in
INSTRUMENTS, and an example measurement in tests/test_instruments.py (CONTRIBUTING.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..paper import data as data_mod
from ..paper import measure, models
from ..paper.models import model_from_state
from ..runs.strict_json import number


@dataclass(frozen=True)
class Option:
    """One option of an instrument: its default, the type a claim file gives it in (a list: of
    numbers), and the values allowed (`ok`, for a list each element's; `allowed` says which)."""
    default: object
    type: type
    ok: Callable = lambda v: True
    allowed: str = "any"


@dataclass(frozen=True)
class Instrument:
    name: str
    options: dict  # option name -> Option
    metrics: Callable  # (options) -> [metric name, ...]
    take: Callable  # (ctx, cfg, options, tensors) -> measurement (a dict, cached as it is)
    read: Callable  # (measurement, options) -> [value of each metric, ...]
    keyless: dict = field(default_factory=dict)

    @property
    def defaults(self) -> dict:
        return {k: o.default for k, o in self.options.items()}


def _training_sample(ctx, cfg, opts):
    """The trained model and `samples` stratified training rows (seeded by `seed`) it is measured on."""
    split = ctx.split(cfg)
    idx = torch.from_numpy(data_mod.stratified_subset(split.y_train.cpu().numpy(),
                                                      min(opts["samples"], len(split.y_train)), opts["seed"]))
    idx = idx.to(split.x_train.device)
    return split.x_train[idx], split.y_train[idx]


def _timed(measurement, *args, **kw) -> dict:
    start = time.perf_counter()
    out = measurement(*args, **kw)
    out["wall_s"] = time.perf_counter() - start
    return out


SAMPLES = Option(1000, int, lambda v: v >= 1, ">= 1")
SEED = Option(0, int, lambda v: v >= 0, ">= 0")


def _hessian(ctx, cfg, opts, tensors) -> dict:
    x, y = _training_sample(ctx, cfg, opts)
    return _timed(measure.hessian_top_eigenvalue, model_from_state(cfg, tensors["thetaT"]), x, y,
                  iters=opts["iters"], tol=opts["tol"], chunk=opts["chunk"], dtype=getattr(torch, opts["dtype"]),
                  seed=opts["seed"])


HESSIAN = Instrument(
    "hessian",
    options={"samples": SAMPLES,
             "iters": Option(30, int, lambda v: v >= 1, ">= 1"),
             "tol": Option(0.0, float, lambda v: v >= 0, ">= 0"),
             "chunk": Option(250, int, lambda v: v >= 1, ">= 1"),
             "seed": SEED,
             "dtype": Option("float32", str, lambda v: v in ("float32", "float64"), "'float32' or 'float64'")},
    metrics=lambda opts: ["hessian_top", "hessian_residual"],
    take=_hessian,
    read=lambda m, opts: [m["value"], m["residual"]])


def perturb_metric(sigma) -> str:
    """Metric name of the mean relative training-loss change at noise level sigma."""
    return f"perturb_{float(sigma):g}"


def _perturbation(ctx, cfg, opts, tensors) -> dict:
    x, y = _training_sample(ctx, cfg, opts)
    return _timed(measure.perturbation_sharpness, model_from_state(cfg, tensors["thetaT"]), x, y,
                  sigmas=opts["sigmas"], draws=opts["draws"], seed=opts["seed"])


PERTURBATION = Instrument(
    "perturbation",
    options={"samples": SAMPLES,
             "sigmas": Option(list(measure.DEFAULT_SIGMAS), list, lambda v: v > 0, "a number > 0"),
             "draws": Option(5, int, lambda v: v >= 1, ">= 1"),
             "seed": SEED},
    metrics=lambda opts: [perturb_metric(s) for s in opts["sigmas"]],
    take=_perturbation,
    read=lambda m, opts: [m["sigmas"][repr(float(s))]["mean"] for s in opts["sigmas"]])


def _movement(ctx, cfg, opts, tensors) -> dict:
    names = measure.param_names(models.for_config(cfg))
    return measure.movement(tensors["theta0"], tensors["thetaT"], names, opts["definition"])


MOVEMENT = Instrument(
    "movement",
    options={"definition": Option("all", str, lambda v: v in measure.MOVEMENT_DEFINITIONS,
                                  f"one of {list(measure.MOVEMENT_DEFINITIONS)}")},
    metrics=lambda opts: ["movement"],
    take=_movement,
    read=lambda m, opts: [m["total"]],
    keyless={"definition": "all"})  # (added after the full tier's movement measurements existed)


def keskar_metric(epsilon, subspace=0) -> str:
    """Metric name of Keskar et al.'s sharpness at box half-width `epsilon` in the full space
    (subspace 0) or a random `subspace`-dimensional one."""
    return f"keskar_{float(epsilon):g}" + (f"_sub{int(subspace)}" if subspace else "")


def _keskar(ctx, cfg, opts, tensors) -> dict:
    x, y = _training_sample(ctx, cfg, opts)
    model = model_from_state(cfg, tensors["thetaT"])
    return {keskar_metric(e, s): _timed(measure.keskar_sharpness, model, x, y, epsilon=e, iters=opts["iters"],
                                        subspace=s, seed=opts["seed"])
            for s in opts["subspaces"] for e in opts["epsilons"]}


KESKAR = Instrument(
    "keskar",
    options={"samples": SAMPLES,
             "epsilons": Option([1e-3, 5e-4], list, lambda v: v > 0, "a number > 0"),
             "subspaces": Option([0], list, lambda v: v >= 0 and v == int(v), "an integer >= 0 (0: the full space)"),
             "iters": Option(10, int, lambda v: v >= 1, ">= 1"),
             "seed": SEED},
    metrics=lambda opts: [keskar_metric(e, s) for s in opts["subspaces"] for e in opts["epsilons"]],
    take=_keskar,
    read=lambda m, opts: [m[keskar_metric(e, s)]["value"] for s in opts["subspaces"] for e in opts["epsilons"]])


INSTRUMENTS = {i.name: i for i in (HESSIAN, PERTURBATION, MOVEMENT, KESKAR)}

# The defaults of every instrument's options, as claim files and readings start from them.
INSTRUMENT_DEFAULTS = {name: i.defaults for name, i in INSTRUMENTS.items()}
MOVEMENT_DEFINITIONS = measure.MOVEMENT_DEFINITIONS


def measurement_options(instrument: str, opts: dict) -> dict:
    """An instrument's options as they enter its measurement's cache key (its keyless options left
    out at their keyless values)."""
    keyless = INSTRUMENTS[instrument].keyless
    return {k: v for k, v in opts.items() if not (k in keyless and v == keyless[k])}


def take(ctx, cfg, instrument: str, opts: dict, tensors: dict) -> dict:
    """Take `instrument` with `opts` on a trained run's weights (`tensors`: theta0, thetaT)."""
    return INSTRUMENTS[instrument].take(ctx, cfg, opts, tensors)


def tabulate(instrument: str, opts: dict, measurement: dict) -> dict:
    """The row metrics of a measurement: {metric: value}, a null (a non-finite value) as NaN."""
    i = INSTRUMENTS[instrument]
    return {k: number(v) for k, v in zip(i.metrics(opts), i.read(measurement, opts))}
