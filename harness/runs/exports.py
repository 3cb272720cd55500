"""Imports of exports: results trained elsewhere (`python -m harness export` writes them, one
tar.gz of metrics.json files per part) into a cache root, for reporting; entries made before the
device left the keys are re-keyed on the way (runs/migrate.py).
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

from .cache import atomic_write
from .migrate import Migration, plan_migration


def import_exports(parts_dir, root, candidates=()) -> dict:
    """Extract every export (`python -m harness export`) in `parts_dir` (*.tar.gz, in name order)
    into the cache root `root`, for reporting from results trained elsewhere. Only
    runs/<key>/metrics.json members are taken; a key already present (from an earlier part, or
    an earlier import) is kept. An export may have a part file beside it, `<name>.provenance.json`
    (a dict of the fields of provenance.record): it is recorded in that part's entries that carry
    no provenance of their own (runs made before the project recorded it), with "source" naming
    the file. Entries made before the device left the keys land under their new keys (see
    `plan_migration`; `candidates`: the measurements' (instrument, options) to look for); within
    a part, entries already under their new key go first (they win over re-keyed ones), so
    importing again changes nothing. Returns {part name: entries taken}, with the migration's
    counts as its `migration` attribute (a Migration)."""
    parts_dir, root = Path(parts_dir), Path(root)
    parts = sorted(parts_dir.glob("*.tar.gz"))
    if not parts:
        raise FileNotFoundError(f"{parts_dir}: no exports (*.tar.gz) to import")
    entries, origin = {}, {}  # key -> metrics, part name (the first part holding a key wins)
    for part in parts:
        name = part.name[:-len(".tar.gz")]
        side = parts_dir / f"{name}.provenance.json"
        part_prov = {**json.loads(side.read_text()), "source": side.name} if side.exists() else None
        with tarfile.open(part, "r:gz") as tar:
            for member in tar.getmembers():
                bits = Path(member.name).parts
                if not (member.isfile() and len(bits) == 3 and bits[0] == "runs" and bits[2] == "metrics.json"
                        and bits[1] != ".."):
                    continue
                if bits[1] in entries:
                    continue
                metrics = json.loads(tar.extractfile(member).read())
                if part_prov and isinstance(metrics, dict) and not metrics.get("provenance"):
                    metrics["provenance"] = part_prov
                entries[bits[1]], origin[bits[1]] = metrics, part.name
    plan = plan_migration(entries, candidates)
    moves = {m.old: m for m in plan.moves}
    done = Migration(current=plan.current, unmatched=plan.unmatched, unverified=plan.unverified)
    taken = Imported({part.name: 0 for part in parts})
    rank = {part.name: i for i, part in enumerate(parts)}
    order = sorted(entries, key=lambda k: (rank[origin[k]], k in moves))
    for key in order:
        move = moves.get(key)
        metrics = move.metrics if move and move.metrics is not None else plan.fixes.get(key, entries[key])
        dest = root / "runs" / (move.new if move else key) / "metrics.json"
        if dest.exists():
            if move:
                done.present.append((move.old, move.new))
            continue
        text = json.dumps(metrics, indent=1, sort_keys=True).encode()
        atomic_write(dest, lambda f: f.write(text))
        taken[origin[key]] += 1
        if move:
            done.count(move)
    taken.migration = done
    return taken


class Imported(dict):
    """{part name: entries taken}, and `migration`: what was re-keyed on the way (a Migration)."""
    migration: "Migration"
