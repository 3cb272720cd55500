"""What a claim file is parsed into (spec.load): its experiments (Experiment: what to train and
measure, and as what it runs in a tier under a reading: `resolved`; its readings and the metrics
its rows carry), its claims (Claim) and the file itself (ClaimFile).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

from . import readings
from ..procedures import SHARPNESS_KEYS, VAL_KEYS
from .schema import CONFIG_FIELDS, INSTRUMENT_DEFAULTS, INSTRUMENTS, TICKET_DEFAULTS, TICKET_FIELDS


@dataclass
class Experiment:
    name: str
    file: str
    procedure: str
    dataset: str
    model: str
    measure: list
    base: dict
    grid: dict
    configs: list
    instruments: dict
    ticket: dict
    plot: dict
    notes: str
    tiers: dict  # tier -> {"seeds": [...], overrides}
    reading_params: dict = field(default_factory=dict)  # parameter name -> ReadingParam
    combine: typing.Any = "grid"  # "grid" or a list of {parameter: value}

    def resolved(self, tier: str, reading: "readings.Reading | None" = None) -> dict:
        """The experiment as it runs in `tier` (under `reading`, default the primary): seeds,
        base, grid, configs, instruments, ticket, and `fixed`, the run settings a reading sets
        in every point."""
        t = self.tiers[tier]
        own = {"base": self.base, "grid": self.grid, "configs": self.configs, "instruments": self.instruments,
               "ticket": self.ticket}
        layers = [own, t] + (readings.layers(self, reading) if reading else [])
        fixed = {}
        out = {"seeds": list(t["seeds"]), "base": {}, "grid": {}, "configs": [], "ticket": dict(TICKET_DEFAULTS),
               "instruments": {k: dict(INSTRUMENT_DEFAULTS[k]) for k in self.measure}}
        for layer in layers:
            out["base"].update(layer.get("base", {}))
            out["ticket"].update(layer.get("ticket", {}))
            for k in ("grid", "configs"):
                if k in layer:
                    out[k] = layer[k]
            for k, opts in layer.get("instruments", {}).items():
                if k in out["instruments"]:
                    out["instruments"][k].update(opts)
            fixed.update(layer.get("fixed", {}))
        out["fixed"] = fixed
        return out

    def readings(self, tier: str) -> list:
        """The readings run in `tier`, the primary first (see the schema, spec.py)."""
        return readings.expand(self, tier)

    def metrics(self, tier: str) -> set:
        if self.procedure == "count":
            return {"params"}
        out = {"params", "train_acc", "test_acc", "train_loss", "test_loss", "gen_gap", "steps",
               "wall_s", "epochs_run"}
        for inst, opts in self.resolved(tier)["instruments"].items():
            out |= set(INSTRUMENTS[inst].metrics(opts))
        # final metrics of run settings: the validation split's, sharpness during training
        # (harness/paper/validation.py, sharpness.py)
        runs = self.resolved(tier)
        points = [{**runs["base"], **c, **runs["fixed"]} for c in (runs["configs"] or [{}])]
        if any(p.get("val_size", 0) for p in points) or any(runs["grid"].get("val_size", [0])):
            out |= set(VAL_KEYS)
        if any(p.get("sharpness_every", 0) for p in points) or any(runs["grid"].get("sharpness_every", [0])):
            out |= set(SHARPNESS_KEYS)
        if self.procedure == "ticket":
            out.add("pm")  # the exact % of prunable weights left (harness/procedures/ticket.py)
        return out

    def fields(self) -> set:
        return CONFIG_FIELDS | (TICKET_FIELDS if self.procedure == "ticket" else set())


@dataclass
class Claim:
    id: str
    file: str
    section: str
    statement: str
    paper: str
    paper_value: typing.Any
    experiment: Experiment
    check: dict
    tiers: dict  # tier -> {"check": merged check, "expect": {...}}
    disagreements: list = field(default_factory=list)
    reading: str = ""
    headline: bool = False  # the source puts it first (its abstract or the section's lead sentence)
    depends_on: str = ""  # the id of a headline claim of the same file that this one presupposes


@dataclass
class ClaimFile:
    path: str
    section: str
    title: str
    experiments: dict
    claims: list
    source: str = ""  # another paper's results, reproduced to calibrate the harness (empty: this paper)
    validates: str = ""  # with source: what in the harness the calibration checks
