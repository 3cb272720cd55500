"""The one-off migration of run cache entries made before the device left the keys (runs/keys.py:
legacy_run_key) to their keys: a cache in place (`migrate`, `python -m harness migrate`), or the
entries of exports as they are imported (runs/exports.py, through `plan_migration`).

Entries made before the device left the keys (legacy_run_key) are re-keyed. A run entry's
metrics.json holds its config and extra, so its old key is recomputed and compared with its
folder name (verified) before it moves; a ticket round's extra names its parent's key, which
is re-keyed too (parents first). A measurement entry holds neither, so its old key is found
from the runs': for every re-keyed run and every candidate (instrument, options) the claim
files can ask for (see `python -m harness migrate`), the legacy key of that measurement.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from ..paper.config import RunConfig
from .cache import RunCache, atomic_write
from .keys import canonical, legacy_run_key, run_key
from .strict_json import dumps


class ReadOnlyCache(PermissionError):
    """A cache to migrate in place cannot be written."""


@dataclasses.dataclass
class Move:
    old: str
    new: str
    kind: str  # "run" or "measurement"
    metrics: dict | None = None  # a ticket round's metrics with its parent's new key in its extra, else None


@dataclasses.dataclass
class Plan:
    moves: list  # Move: runs, parents before children, then measurements
    fixes: dict = dataclasses.field(default_factory=dict)  # key -> metrics: a current run whose extra names its parent's old key
    current: int = 0  # entries already under their keys (CPU runs and their measurements, or migrated before)
    unmatched: list = dataclasses.field(default_factory=list)  # keys of entries that match nothing
    unverified: list = dataclasses.field(default_factory=list)  # (key, why): run entries left alone


@dataclasses.dataclass
class Migration:
    runs: int = 0  # run entries re-keyed
    measurements: int = 0  # measurement entries re-keyed
    current: int = 0
    present: list = dataclasses.field(default_factory=list)  # (old, new): the new key was taken; kept
    unmatched: list = dataclasses.field(default_factory=list)
    unverified: list = dataclasses.field(default_factory=list)

    def count(self, move: Move) -> None:
        if move.kind == "run":
            self.runs += 1
        else:
            self.measurements += 1

    def summary(self) -> str:
        return (f"{self.runs} runs migrated, {self.measurements} measurements migrated, {self.current} entries "
                f"already under their keys, {len(self.present)} already present (the entry under the new key "
                f"kept), {len(self.unmatched)} unmatched, {len(self.unverified)} not verified (left in place)")


def _run_config(fields: dict):
    return RunConfig(**fields)


def _parent(metrics):
    extra = metrics.get("extra")
    return extra.get("parent") if isinstance(extra, dict) else None


def _with_parent(extra, parent):
    return extra if parent is None or extra["parent"] == parent else {**extra, "parent": parent}


def plan_migration(entries: dict, candidates=()) -> Plan:
    """How the entries {key: metrics} made before the device left the keys move to their keys.
    A run entry (metrics with a "config") is verified where its key is the legacy_run_key of its
    config and extra (it then moves to its run_key, a parent named in its extra re-keyed first)
    or is already its run_key (current); otherwise, or where it is a legacy ticket round whose
    parent is not among `entries` (its new key is then unknown), it stays, reported unverified.
    A measurement entry (no "config") moves where its key is the legacy key of a verified run's
    measurement under one of `candidates`, pairs (instrument, options as
    paper/measure.py: measurement_options keys them); one that is no verified run's under any candidate is
    unmatched. Nothing is deleted."""
    cands = {json.dumps(canonical([i, o]), sort_keys=True): (i, o) for i, o in candidates}
    runs = {k: m for k, m in entries.items() if isinstance(m, dict) and isinstance(m.get("config"), dict)}
    plan = Plan([])
    known = {}  # either key of a verified run -> (legacy key, new key)
    verified = []  # (config, legacy key, new key)

    def resolve(key, strict):
        """("legacy" | "current", (config, legacy key, new key, metrics to write or None)),
        ("unverified", why), or None (strict: its parent is not verified yet)."""
        m = runs[key]
        try:
            cfg = _run_config(m["config"])
        except (TypeError, ValueError) as e:
            return "unverified", f"its config is not a run's of this code ({e})"
        extra, parent = m.get("extra"), _parent(m)
        if parent is not None and parent not in known:
            if strict:
                return None
            if key == run_key(cfg, extra):  # made under the new keys; its parent is not here
                return "current", (cfg, key, key, None)
            return "unverified", f"its parent {parent} is not here, so its new key is unknown"
        old_p, new_p = known.get(parent, (None, None))
        old, new = legacy_run_key(cfg, _with_parent(extra, old_p)), run_key(cfg, _with_parent(extra, new_p))
        fixed = _with_parent(extra, new_p)
        metrics = None if fixed is extra else {**m, "extra": fixed}
        if key == new:
            return "current", (cfg, old, new, metrics)
        if key == old:
            return "legacy", (cfg, old, new, metrics)
        return "unverified", "its name is neither key of its config and extra"

    pending = sorted(runs)
    while pending:
        done = [(key, out) for key in pending if (out := resolve(key, True)) is not None]
        if not done:  # every one left waits for a parent that is not verified: decide one without it
            first = next((k for k in pending if _parent(runs[k]) not in pending), pending[0])
            done = [(first, resolve(first, False))]
        for key, (status, detail) in done:
            pending.remove(key)
            if status == "unverified":
                plan.unverified.append((key, detail))
                continue
            cfg, old, new, metrics = detail
            known[old] = known[new] = (old, new)
            verified.append((cfg, old, new))
            if status == "legacy":
                plan.moves.append(Move(key, new, "run", metrics))
            else:
                plan.current += 1
                if metrics is not None:  # moved by a migration cut short before its extra was rewritten
                    plan.fixes[key] = metrics
    others = {k for k in entries if k not in runs}
    matched = set()
    for cfg, old, new in verified:
        for i, o in cands.values():
            old_m = legacy_run_key(cfg, {"measure_of": old, "instrument": i, "options": o})
            new_m = run_key(cfg, {"measure_of": new, "instrument": i, "options": o})
            if new_m in others and new_m not in matched:
                matched.add(new_m)
                plan.current += 1
            if old_m in others and old_m not in matched:
                matched.add(old_m)
                plan.moves.append(Move(old_m, new_m, "measurement"))
    plan.unmatched = sorted(others - matched)
    return plan


def _entries(runs_dir: Path) -> dict:
    out = {}
    for path in sorted(runs_dir.glob("*/metrics.json")):
        if ".damaged-" in path.parent.name:
            continue
        try:
            out[path.parent.name] = json.loads(path.read_bytes())
        except ValueError:
            out[path.parent.name] = None  # unreadable: matches nothing, left alone
    return out


def migrate(root, candidates=()) -> Migration:
    """Re-key, in place, the entries of the cache at `root` made before the device left the keys
    (see plan_migration): each entry folder is renamed atomically to its new key (a ticket round's
    metrics.json then rewritten with its parent's new key), under the locks of both keys. An entry
    whose new key is already taken is kept where it is (the entry under the new key wins);
    nothing is deleted. Running it again changes nothing; one cut short is finished by the next.
    Raises ReadOnlyCache where the cache cannot be written."""
    runs_dir = Path(root) / "runs"
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no run cache entries here")
    try:
        fd, probe = tempfile.mkstemp(dir=runs_dir, prefix=".migrate-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ReadOnlyCache(f"{runs_dir}: the cache cannot be written ({e}), so it cannot be migrated in "
                            "place; copy it somewhere writable, or report from it with --exports") from e
    plan = plan_migration(_entries(runs_dir), candidates)
    done = Migration(current=plan.current, unmatched=plan.unmatched, unverified=plan.unverified)
    rc = RunCache(root)

    def write(key, metrics):
        text = dumps(metrics, indent=1, sort_keys=True).encode()
        atomic_write(rc.dir(key) / "metrics.json", lambda f: f.write(text))

    for key, metrics in plan.fixes.items():
        with rc.lock(key):
            write(key, metrics)
    for move in plan.moves:
        with contextlib.ExitStack() as locks:
            for key in sorted((move.old, move.new)):
                locks.enter_context(rc.lock(key))
            if (rc.dir(move.new) / "metrics.json").exists():
                done.present.append((move.old, move.new))
                continue
            try:  # atomic; a folder at the new key without metrics.json (a killed run) must be empty
                os.rename(rc.dir(move.old), rc.dir(move.new))
            except OSError as e:
                done.unverified.append((move.old, f"not moved to {move.new}: {e}"))
                continue
            if move.metrics is not None:
                write(move.new, move.metrics)
            done.count(move)
    return done
