import os

import numpy as np
import pytest
import torch

from harness.paper import data


def _write(path, **over):
    arrays = {"x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.uint8),
              "x_test": np.zeros((10000, 28, 28), np.uint8), "y_test": np.zeros(10000, np.uint8)}
    arrays.update(over)
    np.savez(path / "mnist.npz", **arrays)


def test_missing_file_names_directory_file_and_remedy(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load_arrays("mnist", tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "mnist.npz") in msg and "--data-dir" in msg and "HARNESS_DATA_DIR" in msg


def test_wrong_shape_and_dtype_are_named(tmp_path):
    _write(tmp_path, x_train=np.zeros((60000, 28, 27), np.uint8))
    with pytest.raises(data.DataError, match=r"x_train has shape \(60000, 28, 27\)"):
        data.load_arrays("mnist", tmp_path, download=False)
    _write(tmp_path, y_test=np.zeros(10000, np.int64))
    with pytest.raises(data.DataError, match="y_test has dtype int64"):
        data.load_arrays("mnist", tmp_path, download=False)
    _write(tmp_path, y_train=np.full(60000, 12, np.uint8))
    with pytest.raises(data.DataError, match="label 12"):
        data.load_arrays("mnist", tmp_path, download=False)


def test_a_file_is_read_once_per_process_and_again_when_it_changes(tmp_path):
    _write(tmp_path)
    a = data.load_arrays("mnist", tmp_path, download=False)
    assert data.load_arrays("mnist", tmp_path, download=False) is a  # memoised, not read again
    with pytest.raises(ValueError, match="read-only"):
        a["x_train"][0, 0, 0] = 1  # shared between callers: nobody may change them
    f = data.fingerprint("mnist", tmp_path)
    _write(tmp_path, y_test=np.ones(10000, np.uint8))  # same size, new contents and mtime
    st = (tmp_path / "mnist.npz").stat()
    os.utime(tmp_path / "mnist.npz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    b = data.load_arrays("mnist", tmp_path, download=False)
    assert b is not a and int(b["y_test"].sum()) == 10000
    assert data.fingerprint("mnist", tmp_path)["sha256"] != f["sha256"]


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "env"))
    assert data.data_dir(tmp_path / "opt") == tmp_path / "opt"
    assert data.data_dir() == tmp_path / "env"
    monkeypatch.delenv("HARNESS_DATA_DIR")
    assert data.data_dir().parts[-2:] == ("harness", "data")


def test_stratified_subset_is_seeded_and_keeps_class_proportions():
    labels = np.repeat(np.arange(10), [600, 700, 500, 800, 400, 900, 300, 1000, 200, 600])
    a = data.stratified_subset(labels, 1000, seed=3)
    assert len(a) == 1000 and len(set(a)) == 1000
    assert np.array_equal(a, data.stratified_subset(labels, 1000, seed=3))
    assert not np.array_equal(a, data.stratified_subset(labels, 1000, seed=4))
    counts = np.bincount(labels[a], minlength=10)
    expected = np.bincount(labels, minlength=10) * 1000 / len(labels)
    assert np.all(np.abs(counts - expected) < 1)


def test_stratified_subset_does_not_depend_on_row_order():
    labels = np.repeat(np.arange(10), 50)
    a = data.stratified_subset(labels, 100, seed=0)
    assert np.bincount(labels[a]).tolist() == [10] * 10


def test_real_datasets_load_validated_and_normalised(data_dir):
    s = data.load_split("mnist", 1000, 500, root=data_dir)
    assert s.x_train.shape == (1000, 1, 28, 28) and s.x_test.shape == (500, 1, 28, 28)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert 0.0 <= float(s.x_train.min()) and float(s.x_train.max()) <= 1.0
    full = np.bincount(data.load_arrays("mnist", data_dir)["y_train"], minlength=10)
    assert np.all(np.abs(torch.bincount(s.y_train).numpy() - full * 1000 / full.sum()) < 1)
    c = data.load_split("cifar10", 2000, root=data_dir)
    assert c.x_train.shape == (2000, 3, 32, 32) and torch.bincount(c.y_train).tolist() == [200] * 10
    mean = c.x_train.mean(dim=(0, 2, 3))
    assert torch.all(mean.abs() < 0.1), mean  # per-channel normalised
