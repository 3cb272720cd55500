"""Run cache: one folder per run, named by a stable hash of its fully resolved configuration.

Key: sha256 of canonical JSON of {schema, config fields that differ from their defaults, extra}.
Leaving defaults out means a new field added with a default does not change old keys (as in
open_lth); bump SCHEMA when a default's *meaning* changes so that old runs are not reused.

Layout: <root>/runs/<key>/tensors.pt (state dicts, masks) and metrics.json (small, readable).
Each file is written to a temporary name and renamed into place, tensors first and metrics.json
last: metrics.json is the completion marker, so a run killed half-way leaves no entry a reader
would take. Runs in training keep a checkpoint in <root>/checkpoints/ (train.Checkpoint), so a
rerun resumes a killed run from its last saved epoch. Tensors load with torch.load(weights_only=True).
A per-key file lock makes parallel workers (pytest-xdist) wait for one another instead of
training the same run twice.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import tarfile
import tempfile
from pathlib import Path

import torch

SCHEMA = 1


def default_root(option=None) -> Path:
    if option:
        return Path(option).expanduser()
    return Path(os.environ.get("HARNESS_CACHE_DIR", "~/.cache/harness/runs")).expanduser()


def _canonical(value):
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def non_default_fields(config) -> dict:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            out[f.name] = value
    return out


def run_key(config, extra: dict | None = None) -> str:
    payload = {"schema": SCHEMA, "config": non_default_fields(config)}
    if extra:
        payload["extra"] = extra
    text = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _tar(f, paths, root):
    with tarfile.open(fileobj=f, mode="w:gz") as tar:
        for p in paths:
            tar.add(p, arcname=str(p.relative_to(root)))


class RunCache:
    def __init__(self, root):
        self.root = Path(root)

    def dir(self, key: str) -> Path:
        return self.root / "runs" / key

    def has(self, key: str) -> bool:
        return (self.dir(key) / "metrics.json").exists()

    def load_metrics(self, key: str) -> dict | None:
        path = self.dir(key) / "metrics.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def load_tensors(self, key: str) -> dict:
        path = self.dir(key) / "tensors.pt"
        if not path.exists():
            return {}
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, key: str, metrics: dict, tensors: dict | None = None) -> None:
        d = self.dir(key)
        if tensors:
            atomic_write(d / "tensors.pt", lambda f: torch.save(tensors, f))
        text = json.dumps(metrics, indent=1, sort_keys=True, default=float).encode()
        atomic_write(d / "metrics.json", lambda f: f.write(text))

    def export_metrics(self, out) -> int:
        """Write every completed entry's metrics.json (runs and measurements, no tensors) to the
        tar.gz `out`, as runs/<key>/metrics.json: a small copy of the results that another
        machine extracts into its cache root (`tar -xzf out -C ROOT`) to report, or to go on
        without retraining what is done. Returns the number of entries."""
        paths = sorted(self.root.glob("runs/*/metrics.json"))
        atomic_write(Path(out), lambda f: _tar(f, paths, self.root))
        return len(paths)

    def checkpoint_path(self, keys: list) -> Path:
        """Where a training group (runs trained together) keeps its mid-run checkpoint."""
        name = hashlib.sha256(",".join(sorted(keys)).encode()).hexdigest()[:24]
        return self.root / "checkpoints" / f"{name}.pt"

    def invalidate(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir(key) / "metrics.json").unlink()

    @contextlib.contextmanager
    def lock(self, key: str):
        path = self.root / "locks" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def import_exports(parts_dir, root) -> dict:
    """Extract every export (`python -m harness export`) in `parts_dir` (*.tar.gz, in name order)
    into the cache root `root`, for reporting from results trained elsewhere. Only
    runs/<key>/metrics.json members are taken; a key already present (from an earlier part) is
    kept. An export may have a part file beside it, `<name>.provenance.json` (a dict of the
    fields of provenance.record): it is recorded in that part's entries that carry no provenance
    of their own (runs made before the project recorded it), with "source" naming the file.
    Returns {part name: entries taken}."""
    parts_dir, root = Path(parts_dir), Path(root)
    parts = sorted(parts_dir.glob("*.tar.gz"))
    if not parts:
        raise FileNotFoundError(f"{parts_dir}: no exports (*.tar.gz) to import")
    taken = {}
    for part in parts:
        name = part.name[:-len(".tar.gz")]
        side = parts_dir / f"{name}.provenance.json"
        part_prov = {**json.loads(side.read_text()), "source": side.name} if side.exists() else None
        taken[part.name] = 0
        with tarfile.open(part, "r:gz") as tar:
            for member in tar.getmembers():
                bits = Path(member.name).parts
                if not (member.isfile() and len(bits) == 3 and bits[0] == "runs" and bits[2] == "metrics.json"):
                    continue
                dest = root / member.name
                if dest.exists():
                    continue
                metrics = json.loads(tar.extractfile(member).read())
                if part_prov and not metrics.get("provenance"):
                    metrics["provenance"] = part_prov
                atomic_write(dest, lambda f: f.write(json.dumps(metrics, indent=1, sort_keys=True).encode()))
                taken[part.name] += 1
    return taken
