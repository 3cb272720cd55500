"""The vocabulary of claim files: tiers, procedures, the run settings a file may set with their
allowed ranges (an instrument's options and theirs are its record in the registry of instruments,
harness/procedures/instruments.py), and SpecError with the helpers that name the file, the item
and the field of every error (harness/claims/spec.py parses claims, harness/claims/readings.py
readings, with these). What the paper's ML offers (run settings, datasets, models, instruments)
comes from the procedures' registry, harness/procedures; the check types, with their fields and
expectations, from harness/claims/kinds/.
"""
from __future__ import annotations

import dataclasses
import math

from ..procedures import DATASETS, INSTRUMENT_DEFAULTS, INSTRUMENTS, MODELS, PROCEDURES, RunConfig

__all__ = ["DATASETS", "INSTRUMENT_DEFAULTS", "INSTRUMENTS", "MODELS", "PROCEDURES", "RunConfig"]  # (from the registry, for spec and readings)

# smoke: a small version of every experiment for CI; scaled: the paper's GPU experiments at the
# largest scale a 2-core CPU trains in hours, pre-registered, its verdicts kept apart from the
# paper's (claims whose statement survives the change of scale only); full: the paper's protocol.
TIERS = ("smoke", "scaled", "full")


HARNESS_SET = {"dataset", "model", "seed", "device"}  # RunConfig fields the harness fills in


RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


CONFIG_FIELDS = set(RUN_FIELDS) - HARNESS_SET


TICKET_FIELDS = {"remaining", "variant"}


TICKET_DEFAULTS = {"fractions": [0.7, 0.5, 0.3, 0.2, 0.1, 0.05], "retrain_epochs": 0,
                   "scope": "global", "include_output": True,
                   "controls": ["reinit", "random", "init_magnitude"], "control_fractions": [0.1],
                   "reinit_seed_offset": 1000,
                   "output_rate": 1.0}  # the output layer pruned at this multiple of the per-round rate
                                        # (Frankle & Carbin: 0.5; layer scope; 1: as every other layer)


RUN_RANGES = {  # run setting -> (allowed, what is allowed); subsets are bounded by the split (_run_ranges)
    "width": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "subset_seed": (lambda v: v >= 0, ">= 0"),
    "lr": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "batch_size": (lambda v: v >= 0, ">= 0 (0: full batch)"),
    "init_seed": (lambda v: v >= -1, ">= 0, or -1 (the run's seed)"),
    "optimizer": (lambda v: v in ("sgd", "adam"), "'sgd' or 'adam'"),
    "schedule": (lambda v: v in ("cosine", "constant"), "'cosine' or 'constant'"),
    "activation": (lambda v: v in ("relu", "tanh"), "'relu' or 'tanh'"),
    "init": (lambda v: v in ("default", "glorot_normal"), "'default' or 'glorot_normal'"),
    "loss": (lambda v: v in ("ce", "mse"), "'ce' or 'mse'"),
    "steps": (lambda v: v >= 0, ">= 0 (0: `epochs` decide)"),
    "val_size": (lambda v: v >= 0, ">= 0"),
    "eval_every": (lambda v: v >= 0, ">= 0"),
    "sharpness_every": (lambda v: v >= 0, ">= 0"),
    "sharpness_iters": (lambda v: v >= 1, ">= 1"),
    "sharpness_samples": (lambda v: v >= 0, ">= 0 (0: all training rows)"),
    "sharpness_tol": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "subset": (lambda v: v in ("stratified", "first"), "'stratified' or 'first'"),
    "test_every": (lambda v: v >= 0, ">= 0 (0: the test set at the end only)"),
}


EXPECT_RANGES = {
    "abs_tol": (lambda v: v >= 0, ">= 0"),
    "rel_tol": (lambda v: v >= 0, ">= 0"),
    "slack": (lambda v: v >= 0, ">= 0"),
    "alpha": (lambda v: 0 < v < 1, "in (0, 1)"),
}


class SpecError(ValueError):
    """A claim file is malformed; the message names the file, the item and the field."""


def _err(path, where, fld, msg):
    return SpecError(f"{path}: {where}: field {fld!r}: {msg}")


def _keys(table, allowed, required, path, where, prefix=""):
    if not isinstance(table, dict):
        raise _err(path, where, prefix.rstrip(".") or "(table)", f"expected a table, got {type(table).__name__}")
    for k in table:
        if k not in allowed:
            raise _err(path, where, prefix + k, f"unknown key; allowed: {sorted(allowed)}")
    for k in required:
        if k not in table:
            raise _err(path, where, prefix + k, "missing")


def _typed(value, expected, path, where, fld):
    ok = {str: isinstance(value, str), bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          list: isinstance(value, list), dict: isinstance(value, dict)}[expected]
    if not ok:
        raise _err(path, where, fld, f"expected {expected.__name__}, got {type(value).__name__} ({value!r})")
    return value
