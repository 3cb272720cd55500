"""Run cache: one folder per run, named by a stable hash of its fully resolved configuration.

Key: sha256 of canonical JSON of {schema, config fields that differ from their defaults, extra}.
Leaving defaults out means a new field added with a default does not change old keys (as in
open_lth); bump SCHEMA when a default's *meaning* changes so that old runs are not reused.
A run's key names what is trained (configuration, data, seed), not where: the fields in
KEYLESS_FIELDS (the device) are left out, as open_lth keeps its platform out of a run's hash, so
a run trained on a GPU is reused on a CPU and the other way round (--refresh retrains). The
device stays in each entry's metrics.json ("config", "provenance"). CPU runs' keys never named
the device and are unchanged; a GPU's runs had keys of their own (`legacy_run_key`).

Layout: <root>/runs/<key>/tensors.pt (state dicts, masks) and metrics.json (small, readable).
Each file is written to a temporary name and renamed into place, tensors first and metrics.json
last: metrics.json is the completion marker, so a run killed half-way leaves no entry a reader
would take. Runs in training keep a checkpoint in <root>/checkpoints/ (train.Checkpoint), so a
rerun resumes a killed run from its last saved epoch. Tensors load with torch.load(weights_only=True).
metrics.json is strict JSON: a non-finite number (a diverged run's loss) is written as null, and
readers take null where a number is expected as NaN (see `jsonable`). Files get the umask's
permissions, so a cache can be shared between users or kept by CI.

A per-key file lock makes parallel workers (pytest-xdist) wait for one another instead of
training the same run twice. Reading needs no write access: a cache opened read-only (report
re-rendering), or one whose lock files cannot be created (a read-only mount), is read without
locks, which is safe because an entry appears complete or not at all.

A damaged entry (metrics.json that is not a JSON object with the fields its reader needs, or a
tensors.pt or checkpoint that does not load) is set aside, renamed to NAME.damaged-TIMESTAMP with
a warning naming it, and is then absent, so it is trained again; a read-only cache leaves it in
place and raises DamagedEntry naming it.

Data: the metrics.json of a run (and of a measurement) records the fingerprint of the data it was
made from ("data": file name, size, sha256 of the arrays; see data.fingerprint). It is not part of
the key (keys stay those of the runs already cached); an entry whose recorded fingerprint differs
from that of the data file in use is not reused (experiments._cached: made again, with a warning
naming both), one recorded without a fingerprint (by older code) is.
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
import time
import warnings
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


# Run settings that say where a run trains, not what: not part of its key (see the top).
KEYLESS_FIELDS = ("device",)


def _hash(fields: dict, extra: dict | None) -> str:
    payload = {"schema": SCHEMA, "config": fields}
    if extra:
        payload["extra"] = extra
    text = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def run_key(config, extra: dict | None = None) -> str:
    """The cache key of a run (`extra`: its lineage, e.g. a ticket round's parent key), or of a
    measurement (`extra`: {"measure_of": run key, "instrument", "options"}). The device is not
    part of it."""
    return _hash({k: v for k, v in non_default_fields(config).items() if k not in KEYLESS_FIELDS}, extra)


def legacy_run_key(config, extra: dict | None = None) -> str:
    """The pre-change key: as run_key was before the device left the keys (every non-default
    field, device included). Only for finding entries made under it (`migrate`); for a CPU run
    (the default device) it equals run_key."""
    return _hash(non_default_fields(config), extra)


class DamagedEntry(RuntimeError):
    """A cache entry or checkpoint cannot be read. Raised where it could not be set aside (a
    read-only cache), and by load_tensors after setting its entry aside (to be trained again)."""


class DamagedWarning(UserWarning):
    """A cache entry or checkpoint could not be read and was set aside, to be trained again."""


def jsonable(value):
    """`value` as strict JSON takes it: non-finite floats (NaN, inf: a diverged run) become None,
    written as null; other numbers that are not int or float (numpy, tensor scalars) become
    floats. Used for metrics.json and results.json."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def dumps(value, **kw) -> str:
    """Strict JSON text of `value` (see `jsonable`)."""
    return json.dumps(jsonable(value), allow_nan=False, **kw)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: others could not read a shared cache
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


def set_aside(path: Path, problem, read_only: bool = False, file: Path | None = None) -> None:
    """Move a damaged file, or the entry folder holding the damaged `file`, out of the way
    (PATH.damaged-TIMESTAMP) with a warning, so that it is absent and is made again; raise
    DamagedEntry where it cannot be moved."""
    what = f"{file or path}: cannot be read ({type(problem).__name__}: {problem})"
    if read_only:
        raise DamagedEntry(f"{what}; the cache is read-only here, so it is left in place")
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another worker set it aside first
    except OSError as e:
        raise DamagedEntry(f"{what}; could not set it aside ({e})") from problem
    warnings.warn(f"{what}; set aside as {aside} and made again", DamagedWarning, stacklevel=3)


def load_torch(path: Path):
    """A torch file (weights_only), or None where it is missing or damaged (then set aside)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as e:
        set_aside(path, e)
        return None


class RunCache:
    """`read_only`: the cache is only read (no locks, nothing renamed or written)."""

    def __init__(self, root, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only

    def dir(self, key: str) -> Path:
        return self.root / "runs" / key

    def has(self, key: str, required=()) -> bool:
        return self.load_metrics(key, required) is not None

    def load_metrics(self, key: str, required=()) -> dict | None:
        """A complete entry's metrics, or None; an entry whose metrics.json is not a JSON object
        with the `required` fields is damaged: set aside (it is then absent)."""
        path = self.dir(key) / "metrics.json"
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            metrics = json.loads(text)
            if not isinstance(metrics, dict):
                raise ValueError(f"not a JSON object: {text[:40]!r}")
            missing = [f for f in required if f not in metrics]
            if missing:
                raise ValueError(f"fields {missing} missing")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            set_aside(self.dir(key), e, self.read_only, path)
            return None
        return metrics

    def load_tensors(self, key: str) -> dict:
        """A run's tensors; {} where the entry has none (a metrics-only cache). A damaged
        tensors.pt sets its entry aside and raises DamagedEntry, naming it."""
        path = self.dir(key) / "tensors.pt"
        if not path.exists():
            return {}
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            set_aside(self.dir(key), e, self.read_only, path)
            raise DamagedEntry(f"{path}: cannot be read ({type(e).__name__}: {e}); its entry was set "
                               "aside, to be trained again") from e

    def save(self, key: str, metrics: dict, tensors: dict | None = None) -> None:
        d = self.dir(key)
        if tensors:
            atomic_write(d / "tensors.pt", lambda f: torch.save(tensors, f))
        text = dumps(metrics, indent=1, sort_keys=True).encode()
        atomic_write(d / "metrics.json", lambda f: f.write(text))

    def export_metrics(self, out) -> int:
        """Write every completed entry's metrics.json (runs and measurements, no tensors) to the
        tar.gz `out`, as runs/<key>/metrics.json: a small copy of the results that another
        machine extracts into its cache root (`tar -xzf out -C ROOT`) to report, or to go on
        without retraining what is done. Returns the number of entries."""
        paths = sorted(p for p in self.root.glob("runs/*/metrics.json") if ".damaged-" not in p.parent.name)
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
        """Exclusive lock on one key while its entry may be written. A read-only cache takes none;
        a lock file that cannot be written (another user's) is locked through a read-only handle;
        where none can be created (a read-only mount) nothing can be written, so none is needed."""
        f = None
        if not self.read_only:
            path = self.root / "locks" / f"{key}.lock"
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
            for mode in ("a", "r"):
                with contextlib.suppress(OSError):
                    f = open(path, mode)
                    break
        if f is None:
            yield
            return
        with f:
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
