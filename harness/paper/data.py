"""Datasets: MNIST and CIFAR-10 as validated uint8 npz files, seeded stratified subsets, and
whole splits held on the target device as float tensors (no DataLoader in the training loop).

Where the data lives: an explicit option > $HARNESS_DATA_DIR > ~/.cache/harness/data.
A missing file is downloaded through torchvision and written as the same npz; offline, the
error names the directory, the file expected and how to provide it. `fingerprint` identifies the
file a run was trained on (recorded with the run, see cache.py).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataError(RuntimeError):
    """A dataset is missing or malformed."""


@dataclass(frozen=True)
class DatasetInfo:
    train_shape: tuple  # shape of x_train, the number of rows included
    test_shape: tuple
    norms: dict  # input_norm (RunConfig) -> (per-channel mean, per-channel std), in [0, 1] units


# Input scaling is the run setting `input_norm`; "default" is the reading taken for each dataset.
# MNIST: the paper says only "converted to tensors" (torchvision ToTensor), i.e. pixels scaled to
# [0, 1] ("default": mean 0, std 1 leaves them unchanged); "standard" standardises with the
# training set's mean and std (0.1307 / 0.3081), the other common reading.
# CIFAR-10: "normalized using per-channel means and standard deviations" (stated), with the
# training set's values; it has no other reading for this paper.
# "feature" (CIFAR-10, for Cohen et al. 2021's cifar10-5k): every feature (pixel x channel)
# centred and divided by its own mean and standard deviation (population, ddof 0) over the whole
# training split, computed before any subset is taken and applied to the test split too
# (locuslab/edge-of-stability src/cifar.py). Its entry is None: the statistics come from the data.
FEATURE_NORM = "feature"
DATASETS = {
    "mnist": DatasetInfo((60000, 28, 28), (10000, 28, 28),
                         {"default": ((0.0,), (1.0,)), "standard": ((0.1307,), (0.3081,))}),
    "cifar10": DatasetInfo((50000, 32, 32, 3), (10000, 32, 32, 3),
                           {"default": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                            FEATURE_NORM: None}),
}
SUBSETS = ("stratified", "first")  # how train_subset / test_subset rows are chosen (RunConfig.subset)
NUM_CLASSES = 10


def data_dir(option: str | os.PathLike | None = None) -> Path:
    if option:
        return Path(option).expanduser()
    if os.environ.get("HARNESS_DATA_DIR"):
        return Path(os.environ["HARNESS_DATA_DIR"]).expanduser()
    return Path("~/.cache/harness/data").expanduser()


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def validate(name: str, arrays: dict, path: Path) -> None:
    info = _info(name)
    expect = {"x_train": info.train_shape, "y_train": info.train_shape[:1],
              "x_test": info.test_shape, "y_test": info.test_shape[:1]}
    for key, shape in expect.items():
        if key not in arrays:
            raise DataError(f"{path}: array {key!r} missing (has {sorted(arrays)})")
        a = arrays[key]
        if a.dtype != np.uint8:
            raise DataError(f"{path}: {key} has dtype {a.dtype}, expected uint8")
        if tuple(a.shape) != tuple(shape):
            raise DataError(f"{path}: {key} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    for key in ("y_train", "y_test"):
        if arrays[key].max() >= NUM_CLASSES:
            raise DataError(f"{path}: {key} has label {int(arrays[key].max())}, expected 0..9")


def _download(name: str, path: Path) -> None:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    with tempfile.TemporaryDirectory() as tmp:
        splits = [cls(tmp, train=t, download=True) for t in (True, False)]
    arrays = {}
    for split, ds in zip(("train", "test"), splits):
        arrays[f"x_{split}"] = np.asarray(ds.data, dtype=np.uint8)
        arrays[f"y_{split}"] = np.asarray(ds.targets, dtype=np.uint8)
    validate(name, arrays, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_arrays(name: str, root: str | os.PathLike | None = None, download: bool = True) -> dict:
    """The four uint8 arrays of a dataset, validated."""
    _info(name)
    path = data_dir(root) / f"{name}.npz"
    if not path.exists():
        error = None
        if download:
            try:
                _download(name, path)
            except Exception as e:  # offline, or torchvision's mirror is down
                error = e
        if not path.exists():
            raise DataError(
                f"dataset {name!r} not found: expected {path} in data directory {path.parent}. "
                f"Provide it with --data-dir DIR or HARNESS_DATA_DIR=DIR, where DIR holds {name}.npz "
                f"(uint8 arrays x_train, y_train, x_test, y_test)"
                + (f"; download failed: {error}" if error else ""))
    arrays = _read(path)
    validate(name, arrays, path)
    return arrays


_ARRAYS = {}  # (resolved path, size, mtime) -> the arrays of that npz file; the last two read
_FINGERPRINTS = {}  # the same key -> fingerprint


def _memo_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _read(path: Path) -> dict:
    """The arrays of an npz file, read once per process (memoised by path, size and modification
    time, the last two files read; CIFAR-10's takes 1-2 s to decompress). Callers share them, so
    they are read-only: callers index them (a copy)."""
    memo = _memo_key(path)
    if memo not in _ARRAYS:
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception as e:
            raise DataError(f"{path}: cannot read as npz: {e}") from e
        for a in arrays.values():
            a.flags.writeable = False  # shared: a caller that wrote to them would change every later split
        while len(_ARRAYS) >= 2:  # MNIST and CIFAR-10; older files (tests' scratch ones) let go
            _ARRAYS.pop(next(iter(_ARRAYS)))
        _ARRAYS[memo] = arrays
    return _ARRAYS[memo]


def fingerprint(name: str, root: str | os.PathLike | None = None) -> dict | None:
    """{"file", "size", "sha256"} of a dataset's npz file, or None where it is absent. The hash is
    of the arrays (name, dtype, shape and bytes of each), not of the file's bytes, so the same data
    written by another numpy or zlib has the same fingerprint. It is taken once per file per
    process, from the arrays `_read` keeps for load_arrays (about 0.3 s for CIFAR-10's)."""
    path = data_dir(root) / f"{name}.npz"
    memo = _memo_key(path)
    if memo is None:
        return None
    if memo not in _FINGERPRINTS:
        h = hashlib.sha256()
        arrays = _read(path)
        for k in sorted(arrays):
            a = np.ascontiguousarray(arrays[k])
            h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.data)
        _FINGERPRINTS[memo] = {"file": path.name, "size": memo[1], "sha256": h.hexdigest()}
    return _FINGERPRINTS[memo]


def input_size(name: str) -> int:
    """Values per image (MNIST 784, CIFAR-10 3072): a fully connected model's input size."""
    n = 1
    for d in _info(name).train_shape[1:]:
        n *= d
    return n


def holdout(n: int, k: int, seed: int) -> tuple:
    """Split rows 0..n-1 into (kept, held_out) index arrays: `k` rows drawn uniformly at random,
    without replacement, by a permutation seeded with `seed` (a validation split held out of the
    training set); both sorted, so the training rows keep their order."""
    if not 0 <= k < n:
        raise DataError(f"a held-out split of {k} rows asked from {n} training rows (need 0 <= k < n)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n rows with class proportions kept (largest remainder), drawn by a seeded
    permutation within each class; sorted, so the result does not depend on draw order."""
    labels = np.asarray(labels)
    if n > len(labels):
        raise DataError(f"subset of {n} asked from {len(labels)} rows")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    rest = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    subset: str = "stratified"  # how its subsets were chosen (SUBSETS); train checks it against the run's


def _layout(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t.unsqueeze(1)  # NHWC -> NCHW; N1HW


def feature_stats(x: np.ndarray, chunk: int = 5000) -> tuple:
    """Per-feature mean and standard deviation (ddof 0) of uint8 images scaled to [0, 1], in the
    N x C x H x W layout (float64 accumulation, `chunk` rows at a time)."""
    total, sq = 0.0, 0.0
    for i in range(0, len(x), chunk):
        t = _layout(torch.from_numpy(x[i:i + chunk].astype(np.float64)).div_(255.0))
        total = total + t.sum(0)
        sq = sq + t.square().sum(0)
    mean = total / len(x)
    return mean.float(), (sq / len(x) - mean.square()).clamp_min(0).sqrt().float()


def _to_tensor(name: str, x: np.ndarray, device, dtype=torch.float32, input_norm="default",
               stats=None) -> torch.Tensor:
    info = _info(name)
    if input_norm not in info.norms:
        raise DataError(f"input_norm {input_norm!r} for {name}: expected one of {sorted(info.norms)}")
    x = x if x.flags.writeable else x.copy()  # a whole split is a view of the read-only arrays
    t = _layout(torch.from_numpy(x).to(device=device, dtype=dtype).div_(255.0))
    if info.norms[input_norm] is None:  # per feature, from the whole training split (`stats`)
        mean, std = (s.to(device=device, dtype=dtype).unsqueeze(0) for s in stats)
        return (t - mean) / std
    mean, std = info.norms[input_norm]
    mean = torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1)
    return (t - mean) / std


def subset_rows(labels: np.ndarray, k: int | None, subset: str = "stratified", seed: int = 0):
    """The rows of a subset of k (0 or None: all rows, a slice): stratified_subset, or "first":
    the first k rows in the file's order. "first" is refused where those rows miss a class that
    the file has: a file sorted by class (this project's cifar10.npz is, its source having lost the
    original batch order, see its PROVENANCE.md) would give a subset of one class."""
    if not k:
        return slice(None)
    if k > len(labels):
        raise DataError(f"subset of {k} asked from {len(labels)} rows")
    if subset == "stratified":
        return stratified_subset(labels, k, seed)
    if subset != "first":
        raise DataError(f"subset {subset!r}: expected one of {list(SUBSETS)}")
    missing = sorted(set(np.unique(labels).tolist()) - set(np.unique(labels[:k]).tolist()))
    if missing:
        raise DataError(f"subset 'first': the first {k} rows miss classes {missing} (is the file sorted "
                        "by class? the original order is then lost): use subset 'stratified'")
    return slice(0, k)


def load_split(name: str, train_subset: int | None = None, test_subset: int | None = None,
               subset_seed: int = 0, root=None, device="cpu", input_norm: str = "default",
               subset: str = "stratified") -> Split:
    """Normalised float32 tensors on `device` (scaling: DATASETS[name].norms[input_norm]):
    images as N x C x H x W, labels as int64. `subset`: "stratified" (stratified_subset, seeded by
    subset_seed) or "first" (the first rows in the file's order, as Cohen et al.'s cifar10-5k)."""
    if subset not in SUBSETS:
        raise DataError(f"subset {subset!r}: expected one of {list(SUBSETS)}")
    a = load_arrays(name, root)
    itr = subset_rows(a["y_train"], train_subset, subset, subset_seed)
    ite = subset_rows(a["y_test"], test_subset, subset, subset_seed)
    info = _info(name)
    stats = feature_stats(a["x_train"]) if info.norms.get(input_norm, ()) is None else None
    return Split(
        _to_tensor(name, a["x_train"][itr], device, input_norm=input_norm, stats=stats),
        torch.from_numpy(a["y_train"][itr].astype(np.int64)).to(device),
        _to_tensor(name, a["x_test"][ite], device, input_norm=input_norm, stats=stats),
        torch.from_numpy(a["y_test"][ite].astype(np.int64)).to(device),
        subset,
    )


def split_for(cfg, root=None) -> Split:
    """The split a run's configuration (config.RunConfig) trains on."""
    return load_split(cfg.dataset, cfg.train_subset, cfg.test_subset, cfg.subset_seed, root, cfg.device,
                      cfg.input_norm, cfg.subset)
