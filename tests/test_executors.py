"""Executors on the CPU, on real MNIST at toy scale: `local` with 2 workers gives what `inline` gives;
submitit's own local executor (its real code path, processes instead of SLURM) runs claims end to
end, and a job interrupted as on preemption requeues and resumes from its epoch checkpoint; a
worker killed mid-run fails its group only, and the rerun trains only what is missing."""
import json
import os
import re
import signal

import pytest
import torch

from harness.execute import executors, planner
from harness.claims import spec
from harness.runs.context import Context
from harness.runs import inline
from conftest import in_child_processes, wait_for

CLAIMS = """
section = "T"
title = "Executors"

[experiments.tiny]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 256, test_subset = 128, epochs = 3, batch_size = 32, lr = 0.05}
grid = {width = [8, 16]}
smoke = {seeds = [0, 1]}

[experiments.tk]
procedure = "ticket"
dataset = "mnist"
model = "mlp"
base = {train_subset = 256, test_subset = 128, width = 16, epochs = 2, batch_size = 32, lr = 0.05}
ticket = {fractions = [0.5], retrain_epochs = 2, control_fractions = [0.5], controls = ["reinit"]}
smoke = {seeds = [0, 1]}

[[claims]]
id = "learns"
statement = "learns"
paper = "-"
experiment = "tiny"
check = {type = "all", metric = "epochs_run"}
[claims.smoke]
expect = {min = 3.0, max = 3.0, why = "the plumbing: every run (both widths: it reads every configuration) trains its 3 epochs"}

[[claims]]
id = "ticket-vs-dense"
statement = "ticket"
paper = "-"
experiment = "tk"
check = {type = "difference", metric = "test_acc", a = {variant = "ticket", remaining = 0.5}, b = {variant = "dense"}}
[claims.smoke]
expect = {min = -100.0, why = "any finite difference"}
"""


@pytest.fixture
def project(pytester, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # same arithmetic in this process and in the workers
    pytester.mkdir("claims")
    (pytester.path / "claims" / "t.toml").write_text(CLAIMS)

    def run(name, *extra):
        r = pytester.runpytest("claims", "--data-dir", str(data_dir), "--run-cache",
                               str(tmp_path / name / "cache"), "--report", str(tmp_path / name / "r"),
                               *extra)
        runs = {p.parent.name: json.loads(p.read_text())
                for p in (tmp_path / name / "cache" / "runs").glob("*/metrics.json")}
        doc = json.loads((tmp_path / name / "r" / "results.json").read_text())
        return r, runs, {c["id"]: (c["verdict"], c["measured"]) for c in doc["claims"]}
    return run


def test_local_executor_with_two_workers_matches_inline(project):
    r, inline_runs, inline_claims = project("inline")
    r.assert_outcomes(passed=2)
    r, local_runs, local_claims = project("local", "--executor", "local", "--workers", "2")
    r.assert_outcomes(passed=2)
    # the groups end in whatever order the two workers finish them: each ends once, the counts
    # go 1, 2, 3 whichever group that is, and the executor's summary comes last
    out = r.stdout.str()
    done = re.findall(r"^\[harness\] done: (group .*) \| (\d)/3 groups done, ", out, re.M)
    assert sorted(label for label, _ in done) == ["group 1/3 t.toml:tiny [smoke] seeds, 2 run(s)",
                                                  "group 2/3 t.toml:tiny [smoke] seeds, 2 run(s)",
                                                  "group 3/3 t.toml:tk [smoke] ticket chain, 6 run(s)"], out
    assert [n for _, n in done] == ["1", "2", "3"], out
    assert re.findall(r"^\[harness\] (?:done|local executor): .*", out, re.M)[-1].startswith(
        "[harness] local executor: 3/3 groups done, "), out
    assert set(local_runs) == set(inline_runs) and len(local_runs) == 4 + 6
    for key, m in inline_runs.items():
        assert (local_runs[key]["final"], local_runs[key]["history"]) == (m["final"], m["history"]), key
    assert local_claims == inline_claims


def test_submitit_executor_runs_claims_through_submitits_local_executor(project, pytester, tmp_path):
    (pytester.path / "pyproject.toml").write_text(  # options from [tool.harness], and the command line
        f'[tool.pytest.ini_options]\n[tool.harness]\nsubmitit_cluster = "local"\nsubmitit_folder = "{tmp_path / "jobs"}"\n')
    r, runs, claims = project("sub", "--executor", "submitit", "--slurm-time", "10", "-k", "learns")
    r.assert_outcomes(passed=1)
    assert "jobs: 0 queued, 0 running, 2 done, 0 failed" in r.stdout.str()
    assert len(runs) == 4 and claims["learns"][0] == "pass"
    assert len(list((tmp_path / "jobs").glob("*_result.pkl"))) == 2


def test_a_group_that_fails_in_a_worker_leaves_its_claims_not_run(pytester, project, tmp_path):
    r = pytester.runpytest("claims", "--data-dir", str(tmp_path / "nowhere"), "--run-cache",
                           str(tmp_path / "c"), "--executor", "local", "--workers", "1", "-k", "learns")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "FAILED (DataError" in out and "0/2 groups done, 2 failed" in out
    assert "not run: the local executor failed to train runs of experiment 'tiny': DataError" in out
    assert "nowhere/mnist.npz" in out


def _tiny(tmp_path, epochs=3, widths=(8, 16, 32)):
    p = tmp_path / "k.toml"
    p.write_text(CLAIMS.replace("epochs = 3", f"epochs = {epochs}").replace("width = [8, 16]", f"width = {list(widths)}"))
    return [(spec.load(p).experiments["tiny"], "smoke")]


def _settings(tmp_path, data_dir, root="cache"):
    ctx = Context(data_dir=str(data_dir), cache_root=str(tmp_path / root), checkpoint_every=0.0)
    return ctx.cache, executors.settings(ctx)


HOLD_GROUP_0 = """
    import os, time
    from harness.execute import executors

    _train_group = executors.train_group

    def train_group(settings, group, index, send):
        def send_and_hold(e):
            hold = index == 0 and e["event"] == "epoch" and (e["run"], e["epoch"]) == (1, 2)
            if hold:
                try:
                    os.unlink(os.environ["HOLD_ARMED"])  # once (a rerun trains the group unheld), and
                except FileNotFoundError:  # before the event: the test kills the worker when it gets it
                    hold = False
            send(e)
            if hold:
                deadline = time.monotonic() + 600  # held mid-group, epoch 2 checkpointed, until killed
                while time.monotonic() < deadline:
                    time.sleep(0.05)
        _train_group(settings, group, index, send_and_hold)

    executors.train_group = train_group
"""


def test_a_killed_worker_fails_its_group_and_the_rerun_trains_only_what_is_missing(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the worker of group 0 stops right after it reports its second epoch (a checkpoint saved at
    # every epoch end), so the kill below lands mid-group however late the event arrives
    in_child_processes(monkeypatch, tmp_path / "hook", HOLD_GROUP_0)
    (tmp_path / "armed").touch()
    monkeypatch.setenv("HOLD_ARMED", str(tmp_path / "armed"))
    sel = _tiny(tmp_path, epochs=6)
    c, settings = _settings(tmp_path, data_dir)
    plan = planner.pending(sel, c, "cpu")
    pids, killed = {}, []

    def on_event(e):  # kill the worker of group 0 in its second epoch
        if e["event"] == "start":
            pids[e["group"]] = e["pid"]
        if e["event"] == "epoch" and e["group"] == 0 and e["epoch"] == 2 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    failures = executors.run_local(plan, settings, 2, on_event)
    assert not (tmp_path / "armed").exists() and killed == [pids[0]]
    assert list(failures) == [0] and f"worker (pid {pids[0]}) exited with code -9" in failures[0]
    assert not any(c.has(k) for k in plan[0].keys)
    assert all(c.has(k) for g in plan[1:] for k in g.keys)
    [ck] = (tmp_path / "cache" / "checkpoints").glob("*.pt")  # group 0 saved epoch 2 before it died
    assert torch.load(ck, weights_only=True)["epoch"] == 2
    mtimes = {k: c.dir(k).joinpath("metrics.json").stat().st_mtime_ns for g in plan[1:] for k in g.keys}

    again = planner.pending(sel, c, "cpu")
    assert [g.keys for g in again] == [plan[0].keys]
    events = []
    assert executors.run_local(again, settings, 2, events.append) == {}
    assert [e["group"] for e in events if e["event"] == "start"] == [0] and planner.pending(sel, c, "cpu") == []
    first = next(e for e in events if e["event"] == "epoch")
    assert (first["run"], first["epoch"]) == (1, 3)  # resumed from the checkpoint of epoch 2
    assert {k: c.dir(k).joinpath("metrics.json").stat().st_mtime_ns for k in mtimes} == mtimes


HOLD_FOR_THE_SIGNAL = """
    import os, time
    from harness.execute import executors

    _train_group = executors.train_group

    def train_group(settings, group, index, send):
        def send_and_hold(e):
            send(e)
            if e["event"] == "epoch" and (e["run"], e["epoch"]) == (1, 2):
                try:
                    os.unlink(os.environ["HOLD_ARMED"])  # once: the requeued task runs unheld
                except FileNotFoundError:
                    return
                ready = os.environ["HOLD_READY"]
                with open(ready + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(ready + ".tmp", ready)
                deadline = time.monotonic() + 600  # held mid-run, epoch 2 checkpointed, until signalled
                while time.monotonic() < deadline:
                    time.sleep(0.05)
        _train_group(settings, group, index, send_and_hold)

    executors.train_group = train_group
"""


def test_an_interrupted_submitit_job_requeues_and_resumes_from_its_checkpoint(tmp_path, data_dir, monkeypatch):
    """As SLURM does on preemption or timeout: submitit's signal, its checkpoint() requeues the task,
    the requeued task resumes the run from its epoch checkpoint; the result equals an uninterrupted run."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the task stops right after it reports the second epoch of its first run (a checkpoint saved
    # at every epoch end), so the signal below lands mid-run however slowly the task gets there
    in_child_processes(monkeypatch, tmp_path / "hook", HOLD_FOR_THE_SIGNAL)
    (tmp_path / "armed").touch()
    monkeypatch.setenv("HOLD_ARMED", str(tmp_path / "armed"))
    monkeypatch.setenv("HOLD_READY", str(tmp_path / "held"))
    sel = _tiny(tmp_path, epochs=4, widths=(64,))
    c, settings = _settings(tmp_path, data_dir)
    [group] = planner.pending(sel, c, "cpu")
    ex = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    ex.update_parameters(timeout_min=30)  # the controller's own USR2 comes only at its time limit
    job = ex.submit(executors.SubmititTask(settings, group, 0))
    wait_for(tmp_path / "held", "the submitit task reaching epoch 2", gone=job.done)
    # the signal SLURM sends a task before preemption or its time limit (submitit's local controller
    # sends it at its time limit only), sent here straight to the task, the controller's child
    task = int((tmp_path / "held").read_text())
    pid = job._process.pid
    assert str(task) in open(f"/proc/{pid}/task/{pid}/children").read().split()
    os.kill(task, signal.SIGUSR2)
    assert job.result() == 0
    log = job.stderr() + job.stdout()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log, log[-3000:]
    for epoch in (1, 2, 3):  # resumed after the checkpoint of epoch 2, not restarted
        assert job.stdout().count(f'"run": 1, "runs": 2, "epoch": {epoch},') == 1, (epoch, log[-3000:])
    ref, ref_settings = _settings(tmp_path, data_dir, "reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the task had (OMP_NUM_THREADS=1): the same float reduction order
    try:
        executors.train_group(ref_settings, group, 0, lambda e: None)
    finally:
        torch.set_num_threads(threads)
    for k in group.keys:
        assert c.load_metrics(k)["final"] == ref.load_metrics(k)["final"]


def test_epoch_reporter_and_display_with_a_fake_clock():
    from harness.runs import progress
    from harness.paper.config import RunConfig
    t = [0.0]
    clock = lambda: t[0]  # noqa: E731
    jobs = [inline.Job(RunConfig("mnist", "mlp", 8, train_subset=256, epochs=4, seed=s)) for s in (0, 1)]
    sent = []
    one_by_one = progress.epoch_reporter(3, jobs, sent.append, batched=False, clock=clock)
    for now, epoch in ((2.0, 1), (4.0, 2), (6.0, 3), (8.0, 4), (10.0, 1)):
        t[0] = now
        one_by_one({"epoch": epoch})
    assert [(e["run"], e["epoch"], e["samples_per_s"], e["eta_s"]) for e in sent] == [
        (1, 1, 128.0, 14.0), (1, 2, 128.0, 12.0), (1, 3, 128.0, 10.0), (1, 4, 128.0, 8.0), (2, 1, 128.0, 6.0)]
    sent.clear()
    together = progress.epoch_reporter(0, jobs, sent.append, batched=True, clock=clock)
    t[0] = 14.0
    together({"epoch": 1})
    together({"epoch": 1})  # the second model of the same epoch
    assert [(e["runs"], e["samples_per_s"], e["eta_s"]) for e in sent] == [(1, 128.0, 12.0)]

    plan = [planner.Group(("f.toml:a",), "smoke", tuple(j.cfg for j in jobs), ("k1", "k2"), 10, 1.0),
            planner.Group(("f.toml:b",), "smoke", tuple(j.cfg for j in jobs), ("k3", "k4"), 30, 3.0)]
    t[0], lines, statuses = 0.0, [], []
    d = progress.Display(plan, lines.append, every=10.0, clock=clock)
    epoch = {"event": "epoch", "group": 0, "run": 1, "runs": 2, "epoch": 1, "epochs": 4,
             "samples_per_s": 1234.4, "eta_s": 75.0}
    d.event({"event": "start", "group": 0})
    for now in (0.0, 5.0, 11.0):
        t[0] = now
        d.event(epoch)
    t[0] = 20.0
    d.event({"event": "done", "group": 0})
    d.event({"event": "jobs", "counts": {"queued": 1, "running": 0}})
    d.event({"event": "jobs", "counts": {"queued": 1, "running": 0}})
    assert lines == [
        "[harness] start group 1/2 f.toml:a [smoke] seeds, 2 run(s)",
        "[harness] group 1/2 f.toml:a [smoke] seeds, 2 run(s): run 1/2 epoch 1/4, 1,234 samples/s, ETA 0:01:15",
        "[harness] group 1/2 f.toml:a [smoke] seeds, 2 run(s): run 1/2 epoch 1/4, 1,234 samples/s, ETA 0:01:15",
        "[harness] done: group 1/2 f.toml:a [smoke] seeds, 2 run(s) | 1/2 groups done, 0:00:20 elapsed, ETA 0:01:00",
        "[harness] jobs: 1 queued, 0 running | 1/2 groups done, 0:00:20 elapsed, ETA 0:01:00"]
    live = progress.Display(plan, lines.append, statuses.append, clock=clock)
    live.event({**epoch, "group": 1})
    t[0] = 20.3
    live.event({**epoch, "group": 1, "epoch": 2})  # within half a second: not shown
    t[0] = 20.6
    live.event({**epoch, "group": 1, "epoch": 3})
    assert statuses == ["[harness] 2: run 1/2 epoch 1/4, 1,234 samples/s, ETA 0:01:15 | "
                        "0/2 groups done, 0:00:00 elapsed, ETA ?",
                        "[harness] 2: run 1/2 epoch 3/4, 1,234 samples/s, ETA 0:01:15 | "
                        "0/2 groups done, 0:00:01 elapsed, ETA ?"]


def test_the_local_executor_keeps_the_time_budget_and_its_claims_are_not_run(project):
    r, runs, claims = project("budget", "--executor", "local", "--workers", "2", "--time-budget", "0", "-rs")
    r.assert_outcomes(skipped=2)  # not run for lack of time: neither failed nor trained
    assert runs == {} and {v for v, _ in claims.values()} == {"not run"}
    assert "time budget" in r.stdout.str()


def test_progress_of_a_run_of_fixed_steps_counts_the_epochs_they_span():
    """A run set by `steps` reports its epochs out of the epochs those steps span (full batch: one
    step an epoch; LeNet's 50,000 steps of 60 on 55,000 rows: 917 steps an epoch, 55 epochs)."""
    from harness.paper.config import RunConfig
    from harness.runs import progress
    from harness.runs.inline import Job
    for cfg, epochs in ((RunConfig(dataset="cifar10", model="fc", width=200, hidden="200,200", batch_size=0,
                                   train_subset=5000, steps=1000), 1000),
                        (RunConfig(dataset="mnist", model="fc", width=300, hidden="300,100", batch_size=60,
                                   steps=50000, val_size=5000, eval_every=100), 55)):
        events = []
        progress.epoch_reporter(0, [Job(cfg)], events.append, False)({"epoch": 1})
        assert events[-1]["epochs"] == epochs
