import dataclasses
import json
import os

import pytest
import torch

from harness.runs import cache
from harness.runs.keys import legacy_run_key, run_key
from harness.paper.config import RunConfig

CFG = RunConfig(dataset="mnist", model="mlp", width=8)


def test_key_is_stable_and_sensitive():
    assert run_key(CFG) == run_key(RunConfig(dataset="mnist", model="mlp", width=8))
    assert run_key(CFG) != run_key(dataclasses.replace(CFG, seed=1))
    assert run_key(CFG) != run_key(CFG, {"variant": "ticket"})
    # a pinned value: changing the hash scheme silently would orphan every cached run
    assert run_key(CFG) == "8ae7e4f59117040fb2f196ae"


def test_the_device_is_not_part_of_a_key():
    gpu = dataclasses.replace(CFG, device="cuda")
    extra = {"measure_of": run_key(CFG), "instrument": "movement", "options": {}}
    assert run_key(gpu) == run_key(CFG) == "8ae7e4f59117040fb2f196ae"  # a CPU key is unchanged
    assert run_key(gpu, extra) == run_key(CFG, extra)
    assert run_key(dataclasses.replace(gpu, amp=True)) != run_key(CFG)  # bf16 is what is trained
    # the pre-change key: the device was in it where it was not the default
    assert legacy_run_key(CFG) == run_key(CFG) and legacy_run_key(CFG, extra) == run_key(CFG, extra)
    assert legacy_run_key(gpu) == "545e178dfda50c98f5d2714a" != run_key(gpu)  # run_key before the change


def test_adding_a_defaulted_field_keeps_old_keys():
    @dataclasses.dataclass(frozen=True)
    class Extended(RunConfig):
        new_knob: float = 0.5

    old = run_key(CFG)
    assert run_key(Extended(dataset="mnist", model="mlp", width=8)) == old
    assert run_key(Extended(dataset="mnist", model="mlp", width=8, new_knob=0.7)) != old


def test_hit_miss_and_tensor_roundtrip(tmp_path):
    c = cache.RunCache(tmp_path)
    k = run_key(CFG)
    assert not c.has(k) and c.load_metrics(k) is None
    t = {"theta0": {"w": torch.arange(4.0)}}
    c.save(k, {"acc": 99.5}, t)
    assert c.has(k) and c.load_metrics(k) == {"acc": 99.5}
    assert torch.equal(c.load_tensors(k)["theta0"]["w"], torch.arange(4.0))


def test_a_run_killed_between_writes_leaves_no_entry(tmp_path, monkeypatch):
    c = cache.RunCache(tmp_path)
    k = run_key(CFG)
    real_replace = os.replace
    calls = []

    def dying_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("metrics.json"):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        c.save(k, {"acc": 1.0}, {"theta0": {"w": torch.ones(2)}})
    monkeypatch.setattr(cache.os, "replace", real_replace)
    assert not c.has(k)  # tensors were written, but the entry is not complete
    assert not [p for p in c.dir(k).iterdir() if p.name.endswith(".tmp")]  # no temp litter
    c.save(k, {"acc": 2.0}, {"theta0": {"w": torch.ones(2)}})  # a rerun completes it
    assert c.load_metrics(k) == {"acc": 2.0}


def test_killed_midway_through_a_file_write_leaves_the_old_file(tmp_path, monkeypatch):
    c = cache.RunCache(tmp_path)
    c.save("k", {"v": 1})
    monkeypatch.setattr(cache.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):
        c.save("k", {"v": 2})
    assert json.loads((c.dir("k") / "metrics.json").read_text()) == {"v": 1}


def test_tensors_load_with_weights_only(tmp_path):
    c = cache.RunCache(tmp_path)
    c.save("k", {}, {"x": {"w": torch.zeros(1)}})
    torch.save({"evil": object()}, c.dir("k") / "tensors.pt")
    with pytest.raises(cache.DamagedEntry), pytest.warns(cache.DamagedWarning):  # refused, and set aside
        c.load_tensors("k")
    assert not c.has("k")


def test_an_entry_set_aside_twice_within_a_second_keeps_both_copies(tmp_path):
    for _ in range(2):
        d = tmp_path / "runs" / "k"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text("{")
        with pytest.warns(cache.DamagedWarning):
            cache.set_aside(d, ValueError("bad"), file=d / "metrics.json")
    assert len(list((tmp_path / "runs").glob("k.damaged-*"))) == 2
