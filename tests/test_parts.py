"""Running the full tier in parts: provenance recorded with every run, training time carried
across a resume, a time budget that stops cleanly, and reports rebuilt from committed exports."""
import dataclasses
import json
import shutil
import tarfile
import textwrap
import time
import types

import pytest
import torch

from harness import __main__ as cli
from harness.runs import cache, checkpoint, exports, provenance
from harness.claims import spec
from harness.paper import train
from harness.paper.config import RunConfig
from harness import procedures
from harness.runs.context import Context
from harness.runs.context import NotCached
from harness.runs.context import OutOfBudget
from harness.runs.expand import training_cost
from conftest import REPO, synthetic_split

TOML = """
section = "T"
title = "t"

[experiments.tiny]
procedure = "train"
dataset = "mnist"
model = "mlp"
measure = ["movement"]
base = {train_subset = 128, test_subset = 64, width = 8, epochs = 2, batch_size = 32, lr = 0.05}
smoke = {seeds = [0, 1]}
"""


def _experiment(tmp_path, data_dir, **ctx):
    p = tmp_path / "t.toml"
    p.write_text(textwrap.dedent(TOML))
    return spec.load(p).experiments["tiny"], Context(
        data_dir=str(data_dir), cache_root=str(tmp_path / "cache"), **ctx)


def test_runs_and_measurements_record_what_produced_them(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("HARNESS_COMMIT", "abc123")
    provenance.commit.cache_clear()
    try:
        exp, ctx = _experiment(tmp_path, data_dir)
        rows = procedures.rows(exp, "smoke", ctx)
    finally:
        provenance.commit.cache_clear()
    for row in rows:
        p = row["provenance"]
        assert p["commit"] == "abc123" and p["torch"] == torch.__version__ and p["device"].startswith("cpu")
        assert p["trainer"] == "single" and p["amp"] is False and p["cuda_graph"] is False
        assert {"cuda", "cudnn", "date", "tf32_conv", "tf32_matmul"} <= set(p)
    measurements = [json.loads(f.read_text()) for f in (tmp_path / "cache" / "runs").glob("*/metrics.json")]
    assert sum("measure_of" not in m and "total" in m for m in measurements) == 2  # movement entries
    assert all(m["provenance"]["commit"] == "abc123" for m in measurements)


def test_a_run_stopped_by_its_deadline_resumes_bit_identical_and_counts_all_its_time(tmp_path):
    s = synthetic_split()
    cfg = dataclasses.replace(RunConfig(dataset="mnist", model="mlp", width=16, batch_size=32, lr=0.05),
                              epochs=3)
    full = train.train(cfg, s)
    ck = checkpoint.Checkpoint(tmp_path / "ck.pt", every=1e9, deadline=time.monotonic() - 1)
    with pytest.raises(train.OutOfTime, match="after epoch 1 of 3"):
        train.train(cfg, s, checkpoint=ck)
    saved = ck.load()
    assert saved["epoch"] == 1 and saved["elapsed"] > 0
    resumed = train.train(cfg, s, checkpoint=checkpoint.Checkpoint(ck.path))
    assert resumed.history == full.history and resumed.final == full.final
    assert all(torch.equal(resumed.thetaT[k], full.thetaT[k]) for k in full.thetaT)
    assert resumed.wall_s >= saved["elapsed"]  # the time before the resume is counted


def test_a_spent_budget_trains_nothing_and_says_not_run(tmp_path, data_dir):
    exp, ctx = _experiment(tmp_path, data_dir, deadline=time.monotonic() - 1)
    with pytest.raises(OutOfBudget, match="not run"):
        procedures.rows(exp, "smoke", ctx)
    assert not list((tmp_path / "cache").glob("runs/*/metrics.json"))
    assert issubclass(OutOfBudget, NotCached)  # reported like a missing run


def test_a_group_is_not_started_when_its_estimate_exceeds_what_is_left(tmp_path, monkeypatch):
    from harness.runs import context
    now = [1000.0]  # the budget's clock, faked: what is left does not shrink while the test runs
    monkeypatch.setattr(context, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    ctx = Context(cache_root=str(tmp_path), deadline=now[0] + 100)
    cfgs = [RunConfig(dataset="mnist", model="mlp", width=64, epochs=10)] * 2
    flops = sum(training_cost(c)["flops"] for c in cfgs)
    ctx.check_budget(cfgs, "g")  # no speed measured yet for the family: it starts
    ctx._speed["mlp"] = [50.0, flops]  # measured: these runs take 50 s
    ctx.check_budget(cfgs, "g")
    ctx._speed["mlp"] = [500.0, flops]  # 500 s > the 100 s left
    with pytest.raises(OutOfBudget, match="needs about 500 s of training, 100 s of the time budget are left"):
        ctx.check_budget(cfgs, "g")
    ctx._speed["cnn"] = [1e6, 1]  # another family's speed does not count
    ctx._speed.pop("mlp")
    ctx.check_budget(cfgs, "g")
    now[0] += 60  # 40 s left: the 50 s group no longer fits, one without an estimate still starts
    ctx._speed["mlp"] = [50.0, flops]
    with pytest.raises(OutOfBudget, match="needs about 50 s of training, 40 s of the time budget are left"):
        ctx.check_budget(cfgs, "g")
    ctx._speed.pop("mlp")
    ctx.check_budget(cfgs, "g")
    now[0] += 40  # spent: nothing starts, estimate or not
    with pytest.raises(OutOfBudget, match="needs about 0 s of training, 0 s of the time budget are left"):
        ctx.check_budget(cfgs, "g")


def _export(root, entries, out):
    rc = cache.RunCache(root)
    for key, metrics in entries.items():
        rc.save(key, metrics)
    return rc.export_metrics(out)


def test_an_export_in_volumes_holds_every_file_once_each_volume_within_its_size(tmp_path):
    import os
    rc = cache.RunCache(tmp_path / "c")
    for i in range(6):
        rc.save(f"k{i}", {"final": i, "pad": "x" * 3000})
        (rc.dir(f"k{i}") / "resume.pt").write_bytes(os.urandom(5000))  # incompressible, as weights are
    out = rc.export_metrics(tmp_path / "v" / "p.tar.gz", max_bytes=12000)
    assert out == 6 and out.files[0] == tmp_path / "v" / "p.tar.gz"
    assert [f.name for f in out.files[1:]] == [f"p-{i}.tar.gz" for i in range(2, len(out.files) + 1)]
    members = []
    for f in out.files:
        with tarfile.open(f) as tar:
            sizes = [m.size for m in tar.getmembers()]
            assert sum(sizes) <= 12000 or len(sizes) == 1
            members += tar.getnames()
    assert sorted(members) == sorted([f"runs/k{i}/metrics.json" for i in range(6)]
                                     + [f"runs/k{i}/resume.pt" for i in range(6)])
    assert len(members) == len(set(members))
    assert rc.export_metrics(tmp_path / "one.tar.gz").files == [tmp_path / "one.tar.gz"]  # no limit: one file


def test_exports_import_into_one_root_with_their_part_provenance(tmp_path):
    _export(tmp_path / "a", {"k1": {"final": 1}, "k2": {"final": 2, "provenance": {"device": "own"}}},
            tmp_path / "parts" / "1-old.tar.gz")
    _export(tmp_path / "b", {"k2": {"final": 99}, "k3": {"final": 3}}, tmp_path / "parts" / "2-new.tar.gz")
    (tmp_path / "parts" / "1-old.provenance.json").write_text(json.dumps({"device": "H100", "commit": "c"}))
    with tarfile.open(tmp_path / "parts" / "3-odd.tar.gz", "w:gz") as tar:  # nothing but metrics is taken
        tar.add(tmp_path / "parts" / "1-old.provenance.json", arcname="../escape.json")
    taken = exports.import_exports(tmp_path / "parts", tmp_path / "root")
    assert taken == {"1-old.tar.gz": 2, "2-new.tar.gz": 1, "3-odd.tar.gz": 0}
    rc = cache.RunCache(tmp_path / "root")
    assert rc.load_metrics("k1")["provenance"] == {"device": "H100", "commit": "c", "source": "1-old.provenance.json"}
    assert rc.load_metrics("k2") == {"final": 2, "provenance": {"device": "own"}}  # first part wins, own kept
    assert "provenance" not in rc.load_metrics("k3")
    assert not (tmp_path / "escape.json").exists()


def test_report_from_exports_without_a_cache(tmp_path, data_dir, capsys):
    exp, ctx = _experiment(tmp_path, data_dir)
    procedures.rows(exp, "smoke", ctx)
    (tmp_path / "parts").mkdir()
    cache.RunCache(tmp_path / "cache").export_metrics(tmp_path / "parts" / "p.tar.gz")
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "t.toml").write_text(textwrap.dedent(TOML) + textwrap.dedent("""
        [[claims]]
        id = "moves"
        statement = "weights move"
        paper = "yes"
        experiment = "tiny"
        check = {type = "value", metric = "movement", where = {width = 8}}
        [claims.smoke]
        expect = {max = 1000.0, why = "a finite norm (an interval from two seeds is wide: no lower edge to straddle)"}
        """))
    cli.main(["report", "--claims", str(claims), "--exports", str(tmp_path / "parts"), "--tier", "smoke",
              "--out", str(tmp_path / "out")])
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    (claim,) = doc["claims"]
    (group,) = doc["sections"][0]["groups"]
    assert claim["verdict"] == "pass" and group["provenance"]["runs"] == 2 and group["provenance"]["without"] == 0
    assert [d[:3] for d in group["provenance"]["device"]] == ["cpu"]


def test_the_committed_h100_part_lands_under_the_new_keys_and_reports_as_before(tmp_path, capsys):
    """The committed H100 part was made when a run's key named its device (cuda): its 150 entries
    (110 runs, 40 movement measurements) all land under the new keys, and the report rebuilt
    from it gives, claim by claim, the primary verdicts and values of reports/full/results.json
    (rendered from all parts: the other parts hold other readings only): from the export (any
    --device) and from a cache it was imported into (--device cuda, as the README's command was)."""
    parts, claims = tmp_path / "parts", REPO / "claims"
    parts.mkdir()
    shutil.copy(REPO / "reports" / "full" / "parts" / "2026-11-27-h100-mnist-ddcnn.tar.gz", parts)
    shutil.copy(REPO / "reports" / "full" / "parts" / "2026-11-27-h100-mnist-ddcnn.provenance.json", parts)
    taken = exports.import_exports(parts, tmp_path / "root", cli.measurement_candidates(claims))
    m = taken.migration
    assert (m.runs, m.measurements, m.current) == (110, 40, 0) and m.runs + m.measurements == 150
    assert not m.present and not m.unmatched and not m.unverified
    assert taken == {"2026-11-27-h100-mnist-ddcnn.tar.gz": 150}
    before = {(c["file"], c["id"], c["tier"]): c
              for c in json.loads((REPO / "reports" / "full" / "results.json").read_text())["claims"]
              if c["reading_id"] == "primary"}
    for source in (["--exports", str(parts)], ["--run-cache", str(tmp_path / "root"), "--device", "cuda"]):
        out = tmp_path / "out" / source[0]
        assert cli.main(["report", "--tier", "full", "--claims", str(claims), "--out", str(out), *source]) == 1
        after = {(c["file"], c["id"], c["tier"]): c
                 for c in json.loads((out / "results.json").read_text())["claims"]}
        assert after.keys() == before.keys()
        assert {k: (c["verdict"], c["measured"]) for k, c in after.items()} == \
            {k: (c["verdict"], c["measured"]) for k, c in before.items()}
        verdicts = [c["verdict"] for c in after.values()]
        # 52 evaluated: 33 passed on the point estimate before issue 21; two of them straddle a band edge
        assert (len(verdicts) - verdicts.count("not run"), verdicts.count("pass"), verdicts.count("fail"),
                verdicts.count("inconclusive")) == (52, 31, 19, 2)
