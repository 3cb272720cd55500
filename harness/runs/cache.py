"""Run cache: one folder per run, named by a stable hash of its fully resolved configuration.

Key: sha256 of canonical JSON of {schema, config fields that differ from their defaults, extra}.
Leaving defaults out means a new field added with a default does not change old keys (as in
open_lth); bump SCHEMA when a default's *meaning* changes so that old runs are not reused.
A run's key names what is trained (configuration, data, seed), not where: the fields in
KEYLESS_FIELDS (the device) are left out, as open_lth keeps its platform out of a run's hash, so
a run trained on a GPU is reused on a CPU and the other way round (--refresh retrains). The
device stays in each entry's metrics.json ("config", "provenance"). Entries made before it left
the keys (a GPU's runs then had keys of their own: `legacy_run_key`) are re-keyed by `migrate`
(a cache, in place: `python -m harness migrate`) and by `import_exports` (exports); CPU runs'
keys never named the device and are unchanged.

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
from that of the data file in use is not reused (runs/inline.py, `cached`: made again, with a warning
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

from ..paper.train import RunConfig

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
    stem = f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside, n = path.with_name(stem), 1
    while aside.exists():  # the same entry set aside twice within a second by one process
        aside, n = path.with_name(f"{stem}-{n}"), n + 1
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


# ----------------------------------------------------------------------------------- migration
# Entries made before the device left the keys (legacy_run_key) are re-keyed. A run entry's
# metrics.json holds its config and extra, so its old key is recomputed and compared with its
# folder name (verified) before it moves; a ticket round's extra names its parent's key, which
# is re-keyed too (parents first). A measurement entry holds neither, so its old key is found
# from the runs': for every re-keyed run and every candidate (instrument, options) the claim
# files can ask for (see `python -m harness migrate`), the legacy key of that measurement.


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
    cands = {json.dumps(_canonical([i, o]), sort_keys=True): (i, o) for i, o in candidates}
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


@dataclasses.dataclass
class Checkpoint:
    """Mid-run progress of a training group, saved atomically at epoch ends (at most every
    `every` seconds) so that a killed run resumes where it was: weights and buffers, optimiser and
    schedule state, the batch-order generators, histories and the step count. Resuming gives the
    same result as an uninterrupted run (bit for bit on the CPU; tests/test_train.py)."""
    path: object
    every: float = 60.0
    deadline: float | None = None  # time.monotonic() after which training saves and stops (OutOfTime)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def load(self):
        """The saved state, or None (none saved; a damaged file is set aside, see set_aside)."""
        return load_torch(Path(self.path))

    def save(self, state: dict):
        atomic_write(Path(self.path), lambda f: torch.save(state, f))

    def remove(self):
        Path(self.path).unlink(missing_ok=True)
