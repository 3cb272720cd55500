"""Run cache: one folder per run, named by its key (runs/keys.py).

Layout: <root>/runs/<key>/tensors.pt (state dicts, masks) and metrics.json (small, readable); a
run of a lottery-ticket chain may also hold resume.pt, the compact record a later round needs to
go on from it (harness/procedures/ticket.py), which exports carry for the chain's last rounds.
Each file is written to a temporary name and renamed into place, tensors first and metrics.json
last: metrics.json is the completion marker, so a run killed half-way leaves no entry a reader
would take. Runs in training keep a checkpoint in <root>/checkpoints/ (runs/checkpoint.py), so a
rerun resumes a killed run from its last saved epoch. Tensors load with torch.load(weights_only=True).
metrics.json is strict JSON (runs/strict_json.py): a non-finite number (a diverged run's loss) is
written as null, and readers take null where a number is expected as NaN. Files get the umask's
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
import fcntl
import hashlib
import json
import os
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .strict_json import dumps


def default_root(option=None) -> Path:
    if option:
        return Path(option).expanduser()
    return Path(os.environ.get("HARNESS_CACHE_DIR", "~/.cache/harness/runs")).expanduser()


class DamagedEntry(RuntimeError):
    """A cache entry or checkpoint cannot be read. Raised where it could not be set aside (a
    read-only cache), and by load_tensors after setting its entry aside (to be trained again)."""


class DamagedWarning(UserWarning):
    """A cache entry or checkpoint could not be read and was set aside, to be trained again."""


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


class Exported(int):
    """The number of entries an export holds, with `files`: the volumes written (Paths)."""
    files: list


def volume_name(out, i: int) -> Path:
    """The i-th volume of the export `out` (1: `out` itself; 2: NAME-2.tar.gz beside it)."""
    out = Path(out)
    if i == 1:
        return out
    stem = out.name[:-len(".tar.gz")] if out.name.endswith(".tar.gz") else out.name
    return out.with_name(f"{stem}-{i}.tar.gz")


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

    def load_tensors(self, key: str, name: str = "tensors.pt") -> dict:
        """A run's tensors (`name` "resume.pt": its resume record); {} where the entry has none
        (a metrics-only cache). A damaged file sets its entry aside and raises DamagedEntry,
        naming it."""
        path = self.dir(key) / name
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

    def save_resume(self, key: str, record: dict) -> None:
        """A completed run's resume record (resume.pt: tensors, dicts, strings)."""
        atomic_write(self.dir(key) / "resume.pt", lambda f: torch.save(record, f))

    def export_metrics(self, out, max_bytes: int | None = None) -> "Exported":
        """Write every completed entry's metrics.json (runs and measurements, no tensors) to the
        tar.gz `out`, as runs/<key>/metrics.json: a small copy of the results that another
        machine extracts into its cache root (`tar -xzf out -C ROOT`) to report, or to go on
        without retraining what is done. Also each lottery-ticket chain's frontier: the
        resume.pt of every completed run that no other run's resume record continues (no entry
        with a resume.pt names it as its lineage's "parent"), so that a chain stopped part-way
        goes on from its last round on another machine. `max_bytes`: files are packed into
        volumes of at most that many bytes before compression (one file larger than that alone),
        `out` then `volume_name(out, 2)`, ... (a lent device returns files of at most 16 MiB).
        Returns the number of entries, with the files written as its `files` attribute."""
        paths = sorted(p for p in self.root.glob("runs/*/metrics.json") if ".damaged-" not in p.parent.name)
        done = {p.parent.name for p in paths}
        resumes = {p.parent.name: p for p in self.root.glob("runs/*/resume.pt") if p.parent.name in done}
        parents = set()
        for k in resumes:
            extra = (self.load_metrics(k) or {}).get("extra") or {}
            if isinstance(extra, dict) and extra.get("parent"):
                parents.add(extra["parent"])
        paths += sorted(p for k, p in resumes.items() if k not in parents)
        volumes = [[]]
        for p in paths:
            if max_bytes and volumes[-1] and sum(q.stat().st_size for q in volumes[-1] + [p]) > max_bytes:
                volumes.append([])
            volumes[-1].append(p)
        exported = Exported(len(done))
        exported.files = [volume_name(out, i + 1) for i in range(len(volumes))]
        for path, members in zip(exported.files, volumes):
            atomic_write(path, lambda f, members=members: _tar(f, members, self.root))
        return exported

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
