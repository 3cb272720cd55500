"""The fault matrix of issue 15: a damaged or shared cache, nonsense settings and failing tools
never crash, never pass silently, never exit 0. One test (or a few) per fault, on real MNIST at
toy scale (one-epoch runs on 64 samples)."""
import builtins
import errno
import json
import math
import os
import pathlib
import re
import stat
import tempfile
import warnings

import pytest
import torch

from harness import __main__ as cli
from harness.runs import cache, checkpoint
from harness.claims import checks, report, spec, stats
from harness.paper import data, train
from harness.paper.config import RunConfig
from harness import procedures
from harness.runs.context import Context
from harness.runs.context import NotCached
from harness.claims import results
from conftest import synthetic_split

TOML = """
section = "F"
title = "Faults"

[experiments.tiny]
procedure = "train"
dataset = "mnist"
model = "mlp"
measure = {measure}
base = {{train_subset = 64, test_subset = 64, width = 4, epochs = 1, batch_size = 32, lr = 0.05}}
smoke = {{seeds = [0]}}

[[claims]]
id = "learns"
statement = "the MLP learns"
paper = "-"
experiment = "tiny"
check = {{type = "value", metric = "epochs_run"}}
[claims.smoke]
expect = {{target = {threshold}, abs_tol = 0.0, why = "the plumbing: its one epoch (exact with one seed)"}}
"""


def write_claims(tmp_path, measure="[]", threshold=1.0, name="f.toml"):
    d = tmp_path / "claims"
    d.mkdir(exist_ok=True)
    (d / name).write_text(TOML.format(measure=measure, threshold=threshold))
    return d / name


def context(tmp_path, data_dir, **kw):
    return Context(data_dir=str(data_dir), cache_root=str(tmp_path / "cache"), **kw)


def tiny(tmp_path, data_dir, measure="[]", **kw):
    """The experiment, a fresh context, and its rows."""
    exp = spec.load(write_claims(tmp_path, measure)).experiments["tiny"]
    ctx = context(tmp_path, data_dir, **kw)
    return exp, ctx, procedures.rows(exp, "smoke", ctx)


def entry(ctx, rows) -> pathlib.Path:
    return ctx.cache.dir(rows[0]["key"])


def claim_record(path, ctx):
    cf = spec.load(path)
    c = cf.claims[0]
    return results.claim_result(c, "smoke", c.experiment, cf, ctx)


def tree(root) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(pathlib.Path(root).rglob("*"))}


# 1. damaged entries -----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", [b"", b'{"final": {"train_acc": 9', b"[1, 2]", b"{}", b"\xff\xfe\x00"])
def test_a_damaged_metrics_json_is_set_aside_with_a_warning_and_retrained(tmp_path, data_dir, damage):
    exp, ctx, rows = tiny(tmp_path, data_dir)
    path = entry(ctx, rows) / "metrics.json"
    path.write_bytes(damage)
    with pytest.warns(cache.DamagedWarning, match=re.escape(str(entry(ctx, rows)))):
        again = procedures.rows(exp, "smoke", context(tmp_path, data_dir))
    assert again[0]["metrics"]["train_acc"] == rows[0]["metrics"]["train_acc"]  # retrained, same run
    aside = list(path.parent.parent.glob(f"{path.parent.name}.damaged-*"))
    assert len(aside) == 1 and (aside[0] / "metrics.json").read_bytes() == damage


def test_a_garbage_tensors_pt_is_set_aside_and_its_run_retrained(tmp_path, data_dir):
    exp, ctx, rows = tiny(tmp_path, data_dir)  # trained without instruments
    (entry(ctx, rows) / "tensors.pt").write_bytes(b"garbage")
    exp.measure.append("movement")  # the movement measurement now needs the weights
    ctx = context(tmp_path, data_dir)
    with pytest.warns(cache.DamagedWarning, match="tensors.pt"):
        again = procedures.rows(exp, "smoke", ctx)
    assert again[0]["metrics"]["movement"] > 0
    assert ctx.cache.load_tensors(rows[0]["key"])["thetaT"]


def test_a_garbage_checkpoint_is_set_aside_and_training_starts_over(tmp_path):
    cfg = RunConfig(dataset="mnist", model="mlp", width=4, epochs=2, batch_size=64)
    split = synthetic_split(n=128)
    plain = train.train(cfg, split)
    ck = tmp_path / "checkpoints" / "group.pt"
    ck.parent.mkdir()
    ck.write_bytes(b"\x00garbage")
    with pytest.warns(cache.DamagedWarning, match=re.escape(str(ck))):
        res = train.train(cfg, split, checkpoint=checkpoint.Checkpoint(ck))
    assert res.final == plain.final
    assert len(list(ck.parent.glob("group.pt.damaged-*"))) == 1


def test_a_damaged_entry_that_cannot_be_retrained_is_an_error_verdict_naming_it(tmp_path, data_dir):
    path = write_claims(tmp_path)
    _, ctx, rows = tiny(tmp_path, data_dir)
    (entry(ctx, rows) / "metrics.json").write_text('{"final": ')
    before = tree(tmp_path / "cache")
    r = claim_record(path, context(tmp_path, data_dir, allow_train=False))  # python -m harness report
    assert r["verdict"] == "error" and str(entry(ctx, rows) / "metrics.json") in r["detail"]
    assert tree(tmp_path / "cache") == before  # read only: left in place


def test_an_unexpected_exception_in_a_claim_is_an_error_verdict(tmp_path, data_dir, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("boom in the harness")

    monkeypatch.setattr(procedures, "rows", boom)
    r = claim_record(write_claims(tmp_path), context(tmp_path, data_dir))
    assert r["verdict"] == "error" and r["detail"].startswith("ZeroDivisionError: boom in the harness")
    assert "in boom" in r["detail"]  # a traceback tail says where
    assert report.build([r], 0.0)["totals"] == {"error": 1}


SECOND_CLAIM = """
[[claims]]
id = "too"
statement = "s"
paper = "-"
experiment = "tiny"
check = {type = "value", metric = "steps"}
[claims.smoke]
expect = {target = 2.0, abs_tol = 0.0, why = "-"}
"""


def test_pytest_heals_a_damaged_entry_and_counts_a_crashing_claim(pytester, data_dir, tmp_path):
    _, ctx, rows = tiny(tmp_path, data_dir)  # trained here, to be read by pytest
    (entry(ctx, rows) / "metrics.json").write_text("")
    with open(write_claims(pytester.path), "a") as f:
        f.write(SECOND_CLAIM)
    (pytester.path / "conftest.py").write_text(  # the second claim's check crashes
        "from harness.claims import checks\nreal = checks.evaluate\n"
        "def boom(check, expect, rows):\n"
        "    if check['metric'] == 'steps':\n        raise KeyError('steps')\n"
        "    return real(check, expect, rows)\n"
        "checks.evaluate = boom\n")
    # in a subprocess: this test's conftest.py patches a harness module (tests/conftest.py)
    r = pytester.runpytest_subprocess("claims", "--data-dir", str(data_dir), "--run-cache", str(tmp_path / "cache"),
                                      "--report", str(tmp_path / "r"))
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "set aside as" in out and "measured: KeyError: 'steps'" in out
    assert json.loads((tmp_path / "r" / "results.json").read_text())["totals"] == {"pass": 1, "error": 1}


# 2. a read-only or shared cache -----------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cache_files_get_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        c = cache.RunCache(tmp_path)
        c.save("k", {"v": 1.0}, {"w": torch.zeros(1)})
        checkpoint.Checkpoint(c.checkpoint_path(["k"])).save({"w": torch.zeros(1)})
    finally:
        os.umask(old)
    for p in (c.dir("k") / "metrics.json", c.dir("k") / "tensors.pt", c.checkpoint_path(["k"])):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


@pytest.fixture
def read_only(monkeypatch):
    """Make every write under a folder fail with EROFS, as on a read-only mount (tests run as
    root, whom permission bits do not stop)."""
    def protect(root):
        root = str(pathlib.Path(root).resolve())

        def guard(path):
            if str(pathlib.Path(path).resolve()).startswith(root):
                raise OSError(errno.EROFS, "Read-only file system", str(path))

        real_open, real_mkdir, real_replace, real_mkstemp = builtins.open, pathlib.Path.mkdir, os.replace, tempfile.mkstemp

        def open_(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
                guard(file)
            return real_open(file, mode, *a, **k)

        def mkdir(self, *a, **k):
            if not self.exists():
                guard(self)
            return real_mkdir(self, *a, **k)

        def replace(src, dst):
            guard(src)
            return real_replace(src, dst)

        def mkstemp(*a, dir=None, **k):
            guard(dir)
            return real_mkstemp(*a, dir=dir, **k)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return protect


def test_a_read_only_cache_with_everything_cached_is_used_without_writing(tmp_path, data_dir, read_only):
    exp, ctx, rows = tiny(tmp_path, data_dir, measure='["movement"]')
    (tmp_path / "cache" / "locks").rename(tmp_path / "old-locks")  # as if copied without them
    before = tree(tmp_path / "cache")
    read_only(tmp_path / "cache")
    for allow_train in (True, False):  # pytest, and python -m harness report
        again = procedures.rows(exp, "smoke", context(tmp_path, data_dir, allow_train=allow_train))
        assert again == rows
    assert tree(tmp_path / "cache") == before


def test_a_damaged_entry_in_a_read_only_mount_is_an_error_naming_it(tmp_path, data_dir, read_only):
    path = write_claims(tmp_path)
    _, ctx, rows = tiny(tmp_path, data_dir)
    (entry(ctx, rows) / "metrics.json").write_text("")
    read_only(tmp_path / "cache")
    r = claim_record(path, context(tmp_path, data_dir))
    assert r["verdict"] == "error" and "could not set it aside" in r["detail"]
    assert str(entry(ctx, rows)) in r["detail"]


# 3. nonsense settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, field", [
    ("epochs = 1", "epochs = 0", "'base.epochs'"),
    ("epochs = 1", "epochs = -3", "'base.epochs'"),
    ("width = 4", "width = 0", "'base.width'"),
    ("train_subset = 64", "train_subset = -7", "'base.train_subset'"),
    ("train_subset = 64", "train_subset = 60001", "'base.train_subset'"),
    ("test_subset = 64", "test_subset = 10001", "'base.test_subset'"),
    ("batch_size = 32", "batch_size = -5", "'base.batch_size'"),
    ("lr = 0.05", "lr = 0.0", "'base.lr'"),
    ("lr = 0.05", "lr = -0.1", "'base.lr'"),
    ("lr = 0.05", "lr = inf", "'base.lr'"),
    ("lr = 0.05", "lr = 0.05, momentum = 1.0", "'base.momentum'"),
    ("lr = 0.05", "lr = 0.05, optimizer = 'sgdd'", "'base.optimizer'"),
    ("lr = 0.05", "lr = 0.05, subset_seed = -1", "'base.subset_seed'"),
    ("smoke = {seeds = [0]}", "smoke = {seeds = [-1]}", "'smoke.seeds'"),
    ("smoke = {seeds = [0]}", "smoke = {seeds = [0, 0]}", "'smoke.seeds'"),
    ("smoke = {seeds = [0]}", "smoke = {seeds = []}", "'smoke.seeds'"),
    ("smoke = {seeds = [0]}", "smoke = {seeds = [0], base = {epochs = 0}}", "'smoke.base.epochs'"),
    ("smoke = {seeds = [0]}", "smoke = {seeds = [0], grid = {width = []}}", "'smoke.grid.width'"),
    ("smoke = {seeds = [0]}", "smoke = {seeds = [0], configs = [{batch_size = -1}]}", "'smoke.configs[0].batch_size'"),
    ("width = 4, ", "", "'width'"),
    ("measure = []", "measure = ['hessian']\ninstruments = {hessian = {samples = 0}}", "'instruments.hessian.samples'"),
    ("measure = []", "measure = ['hessian']\ninstruments = {hessian = {iters = 0}}", "'instruments.hessian.iters'"),
    ("measure = []", "measure = ['hessian']\ninstruments = {hessian = {chunk = 0}}", "'instruments.hessian.chunk'"),
    ("measure = []", "measure = ['hessian']\ninstruments = {hessian = {tol = -1.0}}", "'instruments.hessian.tol'"),
    ("measure = []", "measure = ['hessian']\ninstruments = {hessian = {dtype = 'int8'}}", "'instruments.hessian.dtype'"),
    ("measure = []", "measure = ['perturbation']\ninstruments = {perturbation = {draws = 0}}",
     "'instruments.perturbation.draws'"),
    ("measure = []", "measure = ['perturbation']\ninstruments = {perturbation = {sigmas = [0.0]}}",
     "'instruments.perturbation.sigmas'"),
    ("measure = []", "measure = ['perturbation']\ninstruments = {perturbation = {sigmas = []}}",
     "'instruments.perturbation.sigmas'"),
    ('procedure = "train"', 'procedure = "ticket"\nticket = {fractions = [0.5, 0.0]}', "'ticket.fractions'"),
    ('procedure = "train"', 'procedure = "ticket"\nticket = {control_fractions = [1.5]}', "'ticket.control_fractions'"),
    ('procedure = "train"', 'procedure = "ticket"\nticket = {retrain_epochs = -1}', "'ticket.retrain_epochs'"),
])
def test_nonsense_settings_are_a_collection_error_naming_file_experiment_field(tmp_path, old, new, field):
    text = TOML.format(measure="[]", threshold=0.0)
    assert old in text
    p = tmp_path / "bad.toml"
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(spec.SpecError) as e:
        spec.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: experiment 'tiny': field {field}") and "\n" not in msg, msg


@pytest.mark.parametrize("new, field", [
    ("expect = {target = 1.0, abs_tol = -1.0, why = 'w'}", "'smoke.expect.abs_tol'"),
    ("expect = {target = 1.0, rel_tol = -0.1, why = 'w'}", "'smoke.expect.rel_tol'"),
    ("expect = {min = 5.0, max = 1.0, why = 'w'}", "'smoke.expect.min'"),
])
def test_nonsense_expectations_are_a_collection_error_naming_the_claim(tmp_path, new, field):
    p = tmp_path / "bad.toml"
    p.write_text(TOML.format(measure="[]", threshold=0.0).replace(
        'expect = {target = 0.0, abs_tol = 0.0, why = "the plumbing: its one epoch (exact with one seed)"}', new))
    with pytest.raises(spec.SpecError, match=f"^{re.escape(str(p))}: claim 'learns': field {field}"):
        spec.load(p)


# 4. python -m harness report / export -----------------------------------------------------------

def report_cli(tmp_path, data_dir, *extra):
    return cli.main(["report", "--claims", str(tmp_path / "claims"), "--run-cache", str(tmp_path / "cache"),
                     "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), *extra])


def test_report_exit_status_is_1_when_a_claim_fails_or_errors(tmp_path, data_dir, capsys):
    tiny(tmp_path, data_dir)
    assert report_cli(tmp_path, data_dir) == 0
    write_claims(tmp_path, threshold=2.0)  # it trains one epoch, not two
    assert report_cli(tmp_path, data_dir) == 1
    (next((tmp_path / "cache" / "runs").glob("*/metrics.json"))).write_text("{")
    before = tree(tmp_path / "cache")
    assert report_cli(tmp_path, data_dir) == 1
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["totals"] == {"error": 1} and "metrics.json" in doc["claims"][0]["detail"]
    assert tree(tmp_path / "cache") == before  # nothing renamed, no locks: it only reads


def test_report_and_export_exit_2_when_nothing_is_found_and_create_nothing(tmp_path, data_dir, capsys):
    write_claims(tmp_path)
    assert report_cli(tmp_path, data_dir, "--run-cache", str(tmp_path / "typo")) == 2
    assert "no run cache entries in" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists() and not (tmp_path / "out").exists()
    assert cli.main(["export", "--run-cache", str(tmp_path / "typo"), "--out", str(tmp_path / "x.tar.gz")]) == 2
    assert not (tmp_path / "typo").exists() and not (tmp_path / "x.tar.gz").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", "--claims", str(tmp_path / "empty")]) == 2
    assert "no claims found" in capsys.readouterr().err
    (tmp_path / "empty" / "bad.toml").write_bytes(b"\xff")
    assert cli.main(["report", "--claims", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty' / 'bad.toml'}: not a UTF-8 text file " \
        "('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)\n"


# 5. a claim file that is not UTF-8 --------------------------------------------------------------

def test_a_binary_claim_file_is_a_one_line_spec_error(tmp_path):
    p = tmp_path / "garbage.toml"
    p.write_bytes(b"section = \"\xff\xfe\x80\"\n\x00\x01")
    with pytest.raises(spec.SpecError, match=f"^{re.escape(str(p))}: not a UTF-8 text file"):
        spec.load(p)


# 6. strict JSON ---------------------------------------------------------------------------------

def strict(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_metrics_and_results_json_are_strict_and_null_reads_back_as_nan(tmp_path, data_dir):
    p = write_claims(tmp_path)
    text = p.read_text().replace("lr = 0.05", "lr = 1e6").replace("epochs = 1", "epochs = 2").replace("size = 32", "size = 8").replace("width = 4", "width = 16")
    p.write_text(text)
    cf = spec.load(p)
    ctx = context(tmp_path, data_dir)
    r = claim_record(p, ctx)
    assert r["verdict"] == "diverged"
    key = procedures.rows(cf.experiments["tiny"], "smoke", ctx)[0]["key"]  # (memoised)
    m = strict((ctx.cache.dir(key) / "metrics.json").read_text())
    assert m["diverged"] and m["final"]["train_loss"] is None
    nan = stats.Estimate(math.nan, math.nan, (math.nan, math.inf), 1).to_dict()
    report.write([r, {**r, "id": "x", "measured": nan}], tmp_path / "out", 0.0)
    doc = strict((tmp_path / "out" / "results.json").read_text())
    assert doc["claims"][-1]["measured"]["value"] is None
    # read back by a fresh session, the nulls are NaN again and the verdict stays "diverged"
    again = claim_record(p, context(tmp_path, data_dir, allow_train=False))
    assert again["verdict"] == "diverged"
    rows = procedures.rows(cf.experiments["tiny"], "smoke", context(tmp_path, data_dir, allow_train=False))
    assert math.isnan(rows[0]["metrics"]["train_loss"])
    assert checks.evaluate(cf.claims[0].tiers["smoke"]["check"], cf.claims[0].tiers["smoke"]["expect"],
                           rows)["verdict"] == "diverged"


def test_a_run_whose_final_loss_is_not_finite_is_diverged_even_if_training_stopped_first(tmp_path, data_dir):
    # one epoch at lr 1e6: every training step's loss is finite, the last step's weights are not
    p = write_claims(tmp_path)
    p.write_text(p.read_text().replace("lr = 0.05", "lr = 1e6").replace("width = 4", "width = 16"))
    r = claim_record(p, context(tmp_path, data_dir))
    assert r["verdict"] == "diverged", r["detail"]


# 7. claim files outside the project -------------------------------------------------------------

COUNT = """
section = "O"
title = "Outside"
[experiments.n]
procedure = "count"
dataset = "mnist"
model = "mlp"
grid = {width = [8]}
smoke = {seeds = [0]}
[[claims]]
id = "c"
statement = "count"
paper = "6,514"
experiment = "n"
check = {type = "value", metric = "params"}
[claims.smoke]
expect = {target = 6514.0, abs_tol = 0.0, why = "exact"}
"""


def test_claim_files_outside_the_project_get_distinct_node_ids_and_labels(pytester, tmp_path):
    outside = []
    for name in ("a", "b"):
        d = tmp_path / name / "claims"
        d.mkdir(parents=True)
        (d / "c.toml").write_text(COUNT)
        outside.append(str(d / "c.toml"))
    pytester.makeini("[pytest]\n")
    r = pytester.runpytest("--rootdir", str(pytester.path), "--collect-only", "-q", *outside,
                           "--report", str(tmp_path / "r"), "-p", "no:cacheprovider")
    out = r.stdout.str()
    for p in outside:
        assert f"{p}::c[smoke]" in out, out
    r = pytester.runpytest("--rootdir", str(pytester.path), *outside, "--report", str(tmp_path / "r"))
    r.assert_outcomes(passed=2)
    files = sorted(c["file"] for c in json.loads((tmp_path / "r" / "results.json").read_text())["claims"])
    assert files == sorted(outside)


def test_file_label_is_relative_inside_the_invocation_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert results.file_label(tmp_path / "claims" / "x.toml") == "claims/x.toml"
    assert results.file_label("/elsewhere/claims/x.toml") == "/elsewhere/claims/x.toml"


# 8. the data a run was trained on ---------------------------------------------------------------

def test_fingerprint_is_of_the_arrays_and_tells_data_apart(tmp_path):
    import numpy as np
    for name, save, x in (("a", np.savez, 0), ("b", np.savez_compressed, 0), ("c", np.savez, 1)):
        (tmp_path / name).mkdir()
        save(tmp_path / name / "mnist.npz", x_train=np.full((3, 2), x, np.uint8), y_train=np.zeros(3, np.uint8))
    fa, fb, fc = (data.fingerprint("mnist", tmp_path / n) for n in "abc")
    assert fa["file"] == "mnist.npz" and fa["size"] != fb["size"]
    assert fa["sha256"] == fb["sha256"] != fc["sha256"]  # same arrays in another file; other arrays
    assert data.fingerprint("cifar10", tmp_path / "a") is None


def test_a_run_trained_on_other_data_is_retrained_one_without_a_fingerprint_reused(tmp_path, data_dir):
    exp, ctx, rows = tiny(tmp_path, data_dir)
    path = entry(ctx, rows) / "metrics.json"
    m = json.loads(path.read_text())
    assert m["data"] == data.fingerprint("mnist", data_dir)
    path.write_text(json.dumps({**m, "data": {**m["data"], "sha256": "0" * 64}}))
    with pytest.warns(UserWarning, match="0000000000.*" + m["data"]["sha256"]):
        procedures.rows(exp, "smoke", context(tmp_path, data_dir))
    assert json.loads(path.read_text())["data"] == m["data"]  # retrained on today's file
    old = {k: v for k, v in m.items() if k != "data"}  # an entry made by older code
    path.write_text(json.dumps(old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        procedures.rows(exp, "smoke", context(tmp_path, data_dir))
    assert json.loads(path.read_text()) == old  # reused as it is


# 9. smaller -------------------------------------------------------------------------------------

def test_missing_weights_message_names_the_file_and_a_way_on(tmp_path, data_dir):
    exp, ctx, rows = tiny(tmp_path, data_dir)
    (entry(ctx, rows) / "tensors.pt").unlink()
    exp.measure.append("movement")
    with pytest.raises(NotCached) as e:
        procedures.rows(exp, "smoke", context(tmp_path, data_dir))
    msg = str(e.value)
    assert str(entry(ctx, rows) / "tensors.pt") in msg and "--run-cache" in msg and f"delete {entry(ctx, rows)}" in msg


def test_xdist_group_is_the_experiment_file_not_the_claim_file(pytester):
    pytester.mkdir("claims")
    (pytester.path / "claims" / "a.toml").write_text(COUNT)
    (pytester.path / "claims" / "b.toml").write_text(COUNT.replace('experiment = "n"', 'experiment = "a.toml:n"')
                                                     .replace("[experiments.n]", "[experiments.m]"))
    items, _ = pytester.inline_genitems("claims")
    groups = {item.get_closest_marker("xdist_group").args[0] for item in items}
    assert len(items) == 2 and groups == {"claims/a.toml:n:smoke"}


def test_export_prints_a_quoted_tar_hint(tmp_path, capsys):
    cache.RunCache(tmp_path / "cache").save("k", {"v": 1})
    out = tmp_path / "my results.tar.gz"
    assert cli.main(["export", "--run-cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    assert f"tar -xzf '{out}' -C CACHE_ROOT" in capsys.readouterr().out


# what already held when the matrix was run, kept under test ----------------------------------------

def test_a_broken_npz_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(data.DataError, match=re.escape(str(tmp_path / "mnist.npz"))):
        data.load_arrays("mnist", tmp_path, download=False)


XDIST_CONFTEST = """
import os, time
from harness.runs import cache, inline
from harness.runs.keys import run_key

real_train, real_lock = inline.train, cache.RunCache.lock


def lock(self, key):  # every worker leaves a mark before it asks for a run's lock
    open(os.path.join(os.environ["LOCK_ASKED"], f"{key}.{os.getpid()}"), "w").close()
    return real_lock(self, key)


def logged(cfg, *a, **k):  # every training call leaves a line, and holds the lock until the
    with open(os.environ["TRAIN_LOG"], "a") as f:  # other worker is waiting for it
        f.write(f"{cfg.seed}\\n")
    key, deadline = run_key(cfg), time.monotonic() + 600
    while not [n for n in os.listdir(os.environ["LOCK_ASKED"]) if n.startswith(key + ".") and n != f"{key}.{os.getpid()}"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the other xdist worker never asked for the lock of the run")
        time.sleep(0.02)
    return real_train(cfg, *a, **k)


cache.RunCache.lock = lock
inline.train = logged
"""


def test_two_xdist_workers_share_runs_each_trained_once(pytester, data_dir, tmp_path, monkeypatch):
    write_claims(pytester.path)
    with open(pytester.path / "claims" / "f.toml", "a") as f:  # a second claim on the same experiment
        f.write(SECOND_CLAIM)
    # the worker that trains the run does so only once the other is waiting for the run's lock: the
    # two always meet there, however the workers are scheduled
    (pytester.path / "conftest.py").write_text(XDIST_CONFTEST)
    (tmp_path / "asked").mkdir()
    monkeypatch.setenv("LOCK_ASKED", str(tmp_path / "asked"))
    monkeypatch.setenv("TRAIN_LOG", str(tmp_path / "trained.log"))
    # in a subprocess: this test's conftest.py patches a harness module (tests/conftest.py)
    r = pytester.runpytest_subprocess("claims", "-n", "2", "--dist", "load", "--data-dir", str(data_dir),
                                      "--run-cache", str(tmp_path / "a cache with spaces"),
                                      "--report", str(tmp_path / "r"))
    r.assert_outcomes(passed=2)
    assert (tmp_path / "trained.log").read_text().split() == ["0"]  # one run, trained once
    assert len({n.rsplit(".", 1)[1] for n in os.listdir(tmp_path / "asked")}) == 2  # by two workers
    measured = {c["id"]: c["measured"]["value"] for c in json.loads((tmp_path / "r" / "results.json").read_text())["claims"]}
    _, _, rows = tiny(tmp_path, data_dir)  # the same run trained here, in one process
    assert measured == {"learns": rows[0]["metrics"]["epochs_run"], "too": rows[0]["metrics"]["steps"]}
