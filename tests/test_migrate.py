"""Entries made before the device left the run keys (legacy_run_key) are re-keyed: in place
(migrate.migrate, `python -m harness migrate`) and as exports are imported (exports.import_exports),
verified against their configs, ticket rounds after their parents, measurements through the
claim files' instrument options; what does not verify or match stays where it is."""
import dataclasses
import json
import tarfile
from pathlib import Path

import pytest
import torch

from harness import __main__ as cli
from harness.runs import cache, exports, migrate
from harness.runs.keys import legacy_run_key, run_key
from harness.claims import spec
from harness.paper.config import RunConfig
from harness.runs.expand import expand
from harness.procedures import instruments

REPO = Path(__file__).resolve().parent.parent
CLAIMS = REPO / "claims"

# The cuda keys of primary runs before the device left the keys (commit 8463b7d; the committed
# H100 part is keyed by them): legacy_run_key must go on giving them, or old entries are lost.
LEGACY = [("ntk.toml", "ntk_mlp", "full", "cfbac5a79dc9f7c514a6c4c4"),
          ("ntk.toml", "ntk_mlp", "smoke", "c2175ae9a5ce1ecd66285dc1"),
          ("double_descent.toml", "dd_mlp", "full", "7caba4240b0949a271db4378"),
          ("double_descent.toml", "dd_mlp", "smoke", "7e16bc93144e33005ad9bed3"),
          ("double_descent.toml", "dd_cnn", "full", "b00229b5c74636e5d201fc16"),
          ("batch_size.toml", "bs_sweep", "full", "5f733da9c07e9852efb2392a"),
          ("lottery.toml", "ticket", "full", "a6b089107f9bb98143ee5c67")]


@pytest.mark.parametrize("file,name,tier,key", LEGACY)
def test_legacy_keys_are_the_old_cuda_keys_and_the_new_keys_the_cpu_ones(file, name, tier, key):
    exp = spec.load(CLAIMS / file, with_claims=False).experiments[name]
    # (the smoke runs as they were then: the smoke tables have set test_every = 0 since, issue 28)
    gpu, cpu = (dataclasses.replace(expand(exp, tier, d)[0], test_every=1) for d in ("cuda", "cpu"))
    assert legacy_run_key(gpu) == key
    assert run_key(gpu) == run_key(cpu) == legacy_run_key(cpu) != key


def test_the_legacy_movement_measurement_key():
    exp = spec.load(CLAIMS / "ntk.toml", with_claims=False).experiments["ntk_mlp"]
    cfg = expand(exp, "full", "cuda")[0]
    opts = instruments.measurement_options("movement", exp.resolved("full")["instruments"]["movement"])
    extra = {"measure_of": legacy_run_key(cfg), "instrument": "movement", "options": opts}
    assert legacy_run_key(cfg, extra) == "710a8ad0c861172829dccebd"


def test_measurement_candidates_cover_every_tier_and_reading():
    cands = cli.measurement_candidates(CLAIMS)
    assert ("movement", {}) in cands and ("movement", {"definition": "layer_mean"}) in cands
    assert len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)  # no duplicates
    assert {i for i, _ in cands} == {"movement", "hessian", "perturbation", "keskar"}


GPU = RunConfig(dataset="mnist", model="mlp", width=8, epochs=2, device="cuda")
MOVEMENT = ("movement", {})


def _measure_key(keyf, cfg, run):
    return keyf(cfg, {"measure_of": run, "instrument": MOVEMENT[0], "options": MOVEMENT[1]})


def _run(rc, keyf, cfg, extra=None, tensors=True):
    """A run entry saved under `keyf`'s key (legacy_run_key: as the old code saved it), with a
    movement measurement; returns (run key, measurement key)."""
    key = keyf(cfg, extra)
    rc.save(key, {"config": cfg.to_dict(), "extra": extra, "final": {"test_acc": cfg.width}},
            {"theta0": {"w": torch.ones(1) * cfg.width}} if tensors else None)
    m = _measure_key(keyf, cfg, key)
    rc.save(m, {"total": float(cfg.width)})
    return key, m


def _old_cache(root):
    """A cache made before the change: a cuda run with a ticket round, a CPU run, a cuda run whose
    CPU twin is cached too, a cuda round whose parent is not here, a misnamed run entry and a
    stray measurement."""
    rc = cache.RunCache(root)
    legacy = legacy_run_key
    dense, dense_m = _run(rc, legacy, GPU)
    rnd = dataclasses.replace(GPU, epochs=1)
    extra = {"parent": dense, "remaining": 0.5, "variant": "ticket", "scope": "global", "include_output": True}
    child, child_m = _run(rc, legacy, rnd, extra)
    cpu, cpu_m = _run(rc, run_key, dataclasses.replace(GPU, width=16, device="cpu"))
    twin = dataclasses.replace(GPU, width=32)
    taken_run, _ = _run(rc, run_key, dataclasses.replace(twin, device="cpu"))
    twin_old, twin_m = _run(rc, legacy, twin)
    orphan, orphan_m = _run(rc, legacy, rnd, {**extra, "parent": "0" * 24})
    rc.save("f" * 24, {"config": GPU.to_dict(), "extra": None, "final": {}})  # its name is no key of its config
    rc.save("e" * 24, {"total": 1.0})  # a measurement of no run here
    return dict(dense=dense, dense_m=dense_m, child=child, child_m=child_m, cpu=cpu, cpu_m=cpu_m,
                taken_run=taken_run, twin_old=twin_old, twin_m=twin_m, orphan=orphan, orphan_m=orphan_m,
                extra=extra, rnd=rnd)


def _names(root):
    return sorted(p.parent.name for p in Path(root).glob("runs/*/metrics.json"))


def test_migrate_rekeys_runs_rounds_and_measurements_in_place(tmp_path):
    k = _old_cache(tmp_path)
    before = _names(tmp_path)
    done = migrate.migrate(tmp_path, [MOVEMENT, ("movement", {"definition": "weights"})])
    assert (done.runs, done.measurements) == (2, 2)  # the dense run and its round, with their measurements
    assert done.current == 2 + 2  # the CPU runs and their measurements
    twin = dataclasses.replace(GPU, width=32)  # its CPU twin is kept, with its measurement
    assert sorted(done.present) == sorted([(k["twin_old"], run_key(twin)),
                                           (k["twin_m"], _measure_key(run_key, twin, run_key(twin)))])
    assert done.unmatched == sorted(["e" * 24, k["orphan_m"]])  # the unverified run's measurement too
    assert sorted(key for key, _ in done.unverified) == sorted([k["orphan"], "f" * 24])
    assert "parent" in dict(done.unverified)[k["orphan"]]
    rc = cache.RunCache(tmp_path)
    dense, child = run_key(GPU), run_key(k["rnd"], {**k["extra"], "parent": run_key(GPU)})
    assert dense == run_key(dataclasses.replace(GPU, device="cpu"))  # found by a CPU run of it
    assert rc.load_metrics(dense)["config"]["device"] == "cuda"  # where it ran stays recorded
    assert torch.equal(rc.load_tensors(dense)["theta0"]["w"], torch.ones(1) * 8)  # the folder moved whole
    assert rc.load_metrics(child)["extra"]["parent"] == dense  # the round names its parent's new key
    assert rc.load_metrics(_measure_key(run_key, GPU, dense)) == {"total": 8.0}
    assert rc.load_metrics(_measure_key(run_key, k["rnd"], child)) == {"total": 8.0}
    for gone in (k["dense"], k["child"], k["dense_m"], k["child_m"]):
        assert not rc.dir(gone).exists()
    assert len(_names(tmp_path)) == len(before)  # nothing deleted
    again = migrate.migrate(tmp_path, [MOVEMENT])
    assert (again.runs, again.measurements, again.current) == (0, 0, 4 + 4)
    assert len(again.present) == 2 and len(again.unverified) == 2


def test_a_migration_cut_short_is_finished_by_the_next(tmp_path):
    k = _old_cache(tmp_path)
    plan = migrate.plan_migration(migrate._entries(tmp_path / "runs"), [MOVEMENT])
    first = plan.moves[0]
    assert (first.old, first.kind) == (k["dense"], "run")  # the parent first
    (tmp_path / "runs" / first.old).rename(tmp_path / "runs" / first.new)  # then killed
    done = migrate.migrate(tmp_path, [MOVEMENT])
    assert (done.runs, done.measurements) == (1, 2)
    rc = cache.RunCache(tmp_path)
    child = run_key(k["rnd"], {**k["extra"], "parent": first.new})
    assert rc.load_metrics(child)["extra"]["parent"] == first.new


def test_a_read_only_cache_is_not_migrated(tmp_path, monkeypatch, capsys):
    _old_cache(tmp_path)
    before = _names(tmp_path)

    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(migrate.tempfile, "mkstemp", refuse)
    with pytest.raises(migrate.ReadOnlyCache, match=str(tmp_path / "runs")):
        migrate.migrate(tmp_path, [MOVEMENT])
    assert cli.main(["migrate", "--run-cache", str(tmp_path), "--claims", str(CLAIMS)]) == 2
    assert str(tmp_path / "runs") in capsys.readouterr().err
    assert _names(tmp_path) == before


def test_an_old_export_imports_under_the_new_keys_once(tmp_path):
    k = _old_cache(tmp_path / "old")
    (tmp_path / "parts").mkdir()
    cache.RunCache(tmp_path / "old").export_metrics(tmp_path / "parts" / "p.tar.gz")
    taken = exports.import_exports(tmp_path / "parts", tmp_path / "root", [MOVEMENT])
    m = taken.migration
    assert (m.runs, m.measurements, len(m.present), m.unmatched) == (2, 2, 2, sorted(["e" * 24, k["orphan_m"]]))
    assert taken == {"p.tar.gz": len(_names(tmp_path / "old")) - 2}  # all but the cuda twin's run and measurement
    rc = cache.RunCache(tmp_path / "root")
    assert rc.load_metrics(run_key(GPU))["config"]["device"] == "cuda"
    assert rc.load_metrics(run_key(dataclasses.replace(GPU, width=32)))["config"]["device"] == "cpu"  # kept
    assert not rc.has(k["dense"])
    assert rc.has(k["orphan"]) and rc.has(k["orphan_m"]) and rc.has("e" * 24)  # taken as they were
    names = _names(tmp_path / "root")
    again = exports.import_exports(tmp_path / "parts", tmp_path / "root", [MOVEMENT])
    assert again == {"p.tar.gz": 0} and _names(tmp_path / "root") == names


def test_the_migrate_command_on_the_committed_h100_part(tmp_path, capsys):
    """The part's 150 entries (110 cuda runs, 40 movement measurements), extracted into a cache
    as the old code keyed them, all move; the primary full-tier runs of its experiments are then
    found under CPU keys."""
    with tarfile.open(REPO / "reports" / "full" / "parts" / "2026-11-27-h100-mnist-ddcnn.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    assert len(_names(tmp_path)) == 150
    assert cli.main(["migrate", "--run-cache", str(tmp_path), "--claims", str(CLAIMS)]) == 0
    out = capsys.readouterr().out
    assert ("110 runs migrated, 40 measurements migrated, 0 entries already under their keys, 0 already present"
            in out and "0 unmatched, 0 not verified" in out)
    exps = spec.load(CLAIMS / "double_descent.toml", with_claims=False).experiments
    exps.update(spec.load(CLAIMS / "ntk.toml", with_claims=False).experiments)
    want = {run_key(c) for name in ("dd_mlp", "dd_cnn", "ntk_mlp") for c in expand(exps[name], "full", "cpu")}
    assert len(want) == 110 and want <= set(_names(tmp_path))
    assert cli.main(["migrate", "--run-cache", str(tmp_path), "--claims", str(CLAIMS)]) == 0
    assert "0 runs migrated, 0 measurements migrated, 150 entries already under their keys" in capsys.readouterr().out


def test_fit_ranks_the_readings_of_the_committed_parts(capsys):
    """GPU primaries and CPU readings, from two parts, side by side under one key scheme."""
    assert cli.main(["fit", "dd_mlp", "--claims", str(CLAIMS), "--exports", str(REPO / "reports" / "full" / "parts")]) == 0
    out = capsys.readouterr().out
    ranked = [line.split()[1] for line in out.splitlines() if line.strip()[:1].isdigit() and "readings" not in line]
    assert {"primary", "input_norm=standard"} <= set(ranked), out
