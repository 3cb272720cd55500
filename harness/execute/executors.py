"""Executors: train the planned groups (harness/execute/planner.py) into the run cache before the claims run.

  inline    no executor step: the claims train what they miss, one group after another, in the
            pytest process (harness/runs/inline.py; the default, and the behaviour before executors).
  local     N worker processes on this machine (`run_local`), each pinned to one device before
            CUDA initialises (CUDA_VISIBLE_DEVICES set in its environment when it is spawned;
            workers round-robin over the visible GPUs, so two workers may share one) or, on the
            CPU, with torch threads split between workers. Groups go to whichever worker is free.
  submitit  one SLURM job per group, submitted as one job array through submitit
            (`run_submitit`); a preempted or timed-out job is requeued by submitit and resumes from
            the harness's own epoch checkpoints (runs.checkpoint.Checkpoint, kept in the run cache, which
            must be on a filesystem the nodes share).

Every executor trains a group through the procedures' registry (harness/procedures:
train_group, which trains through harness/runs/inline.py), and
writes through the run cache's per-run locks and atomic writes, so executors, pytest-xdist
workers and later sessions never train one run twice or leave a half-written entry. A group that
fails (an exception, or its worker killed) is reported through the returned failures, and the
other groups go on; the claims that need it are then reported as not run. Progress goes through
`on_event` as harness/runs/progress.py events.

Groups and settings are plain data (configs and keys, no tensors); this module imports torch only
inside the workers.

The executors are a registry, EXECUTORS: each one record of its name, its words for `--help`, the
command-line options of its own, and how it trains a plan. A new executor is a function that
trains a plan and its record in EXECUTORS, here alone: the pytest plugin adds its options and
dispatches to it.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import time
from dataclasses import dataclass
from typing import Callable


def settings(ctx) -> dict:
    """What a worker needs to rebuild the runs.context.Context of the controlling process."""
    return {"device": ctx.device, "data_dir": ctx.data_dir, "cache_root": str(ctx.cache.root),
            "refresh": ctx.refresh, "batch_seeds": ctx.batch_seeds, "cuda_graphs": ctx.cuda_graphs,
            "checkpoint_every": ctx.checkpoint_every}


_contexts = {}  # one Context per settings in a worker process: data splits load once


def train_group(settings: dict, group, index: int, send) -> None:
    """Train one planned group in this process, sending its epoch events through `send`."""
    from .. import procedures
    from ..runs import context, progress
    memo = json.dumps(settings, sort_keys=True)
    if memo not in _contexts:
        _contexts[memo] = context.Context(**settings)
    ctx = _contexts[memo]
    ctx.progress = lambda jobs: progress.epoch_reporter(index, jobs, send, ctx.seeds_together(jobs[0].cfg) and len(jobs) > 1)
    procedures.train_group(ctx, group)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (without initialising CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def default_workers(device: str) -> int:
    """Local workers when --workers is not given: one per visible GPU with --gpu, else one per CPU
    core (each then trains with one torch thread per core it has)."""
    if device == "cuda":
        return max(1, len(visible_gpus()))
    return _cores()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _environ(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _local_worker(settings, plan, conn, threads):
    import torch
    if settings["device"] == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), threads))
    while (i := conn.recv()) is not None:
        conn.send({"event": "start", "group": i, "pid": os.getpid()})
        try:
            train_group(settings, plan[i], i, conn.send)
        except Exception as e:  # the group fails, the worker goes on with the next
            conn.send({"event": "failed", "group": i, "error": f"{type(e).__name__}: {e}"})
        else:
            conn.send({"event": "done", "group": i})


def run_local(plan: list, settings: dict, workers: int, on_event=lambda e: None) -> dict:
    """Train `plan` on `workers` spawned processes, handing each the next group when it is free
    (costliest first, by the plan's FLOP estimate);
    returns {group index: error} for the groups that failed. A worker that dies fails the group
    it was training, and the others go on; groups left when every worker is gone fail too. Each
    worker talks to this process over its own pipe, so a killed one takes no shared lock down."""
    ctx = multiprocessing.get_context("spawn")
    gpus = visible_gpus() if settings["device"] == "cuda" else []
    threads = max(1, _cores() // workers)
    todo = sorted(range(len(plan)), key=lambda i: -plan[i].flops)  # costliest first: the last to end is short
    conns, procs, current, finished = {}, {}, {}, {}  # current: worker -> group; finished: group -> error

    def finish(i, error):
        if i is not None and i not in finished:
            finished[i] = error
            if error is not None:
                on_event({"event": "failed", "group": i, "error": error})

    def hand_out(w):
        current[w] = todo.pop(0) if todo else None
        conns[w].send(current[w])

    for w in range(min(workers, len(plan))):
        env = {"CUDA_VISIBLE_DEVICES": gpus[w % len(gpus)]} if gpus else {}
        conns[w], child = ctx.Pipe()
        with _environ(**env):  # the child inherits it at spawn, before it imports torch
            procs[w] = ctx.Process(target=_local_worker, args=(settings, plan, child, threads), daemon=True)
            procs[w].start()
        child.close()
        hand_out(w)
    try:
        while conns:
            ready = multiprocessing.connection.wait(list(conns.values()))
            for w, conn in list(conns.items()):
                if conn not in ready:
                    continue
                try:
                    e = conn.recv()
                except (EOFError, OSError):  # the worker is gone
                    procs[w].join()
                    finish(current[w], f"worker (pid {procs[w].pid}) exited with code {procs[w].exitcode}")
                    del conns[w]
                    continue
                on_event(e)
                if e["event"] in ("done", "failed"):
                    finish(e["group"], e.get("error"))
                    hand_out(w)
    finally:
        for p in procs.values():
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for i in todo:
        finish(i, "not trained: every worker exited")
    return {i: err for i, err in finished.items() if err is not None}


class SubmititTask:
    """One group as a submitit job. On preemption or timeout submitit calls `checkpoint`, which
    requeues the same task; the requeued job resumes the group's runs from their epoch
    checkpoints in the run cache, and skips the runs already cached."""

    def __init__(self, settings: dict, group, index: int):
        self.settings, self.group, self.index = settings, group, index

    def __call__(self) -> int:
        train_group(self.settings, self.group, self.index, lambda e: print(json.dumps(e), flush=True))
        return self.index

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self)


SUBMITIT_DEFAULTS = {"folder": "build/submitit", "cluster": None, "partition": None, "time_min": 240,
                     "gpus_per_node": None, "array_parallelism": None}


def run_submitit(plan: list, settings: dict, options: dict, on_event=lambda e: None, poll: float = 5.0) -> dict:
    """Submit `plan` as one job array (one task per group, one GPU per task on CUDA) and wait for
    it, reporting job states; returns {group index: error} for the jobs that failed. `options`:
    SUBMITIT_DEFAULTS' keys (cluster None: detected, i.e. SLURM where sbatch exists; "local":
    submitit's local executor, processes on this machine)."""
    import submitit
    o = {**SUBMITIT_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    ex = submitit.AutoExecutor(folder=o["folder"], cluster=o["cluster"])
    gpus = o["gpus_per_node"] if o["gpus_per_node"] is not None else int(settings["device"] == "cuda")
    params = {"name": "harness", "timeout_min": int(o["time_min"]), "gpus_per_node": gpus,
              "nodes": 1, "tasks_per_node": 1}
    if o["partition"]:
        params["slurm_partition"] = o["partition"]
    if o["array_parallelism"]:
        params["slurm_array_parallelism"] = int(o["array_parallelism"])
    ex.update_parameters(**params)
    with ex.batch():
        jobs = [ex.submit(SubmititTask(settings, g, i)) for i, g in enumerate(plan)]
    failures, reported = {}, set()
    while True:
        counts = {"queued": 0, "running": 0, "done": 0, "failed": 0}
        for i, job in enumerate(jobs):
            if not job.done():
                counts["queued" if job.state in ("PENDING", "REQUEUED", "CONFIGURING") else "running"] += 1
                continue
            err = job.exception()
            counts["failed" if err else "done"] += 1
            if i not in reported:
                reported.add(i)
                if err:
                    failures[i] = f"job {job.job_id}: {type(err).__name__}: {(str(err).strip().splitlines() or [''])[-1]}"
                on_event({"event": "failed", "group": i, "error": failures[i]} if err else {"event": "done", "group": i})
        on_event({"event": "jobs", "counts": counts})
        if len(reported) == len(jobs):
            return failures
        time.sleep(poll)


@dataclass(frozen=True)
class Executor:
    """One way to train a plan. `options`: (name, type, help) of its own command-line options
    (`--NAME`; a value not given on the command line is read from [tool.harness] NAME, with - as _,
    in pyproject.toml); `run(plan, ctx, option, on_event)` trains the plan into the cache, reading
    its options through `option(name)`, and returns {group index: error} for the groups that
    failed; None (inline): nothing trains before the claims, which train what they miss."""
    name: str
    help: str
    options: tuple = ()
    run: Callable | None = None


def _local(plan, ctx, option, on_event) -> dict:
    workers = option("workers") or default_workers(ctx.device)
    # workers on this machine share its monotonic clock: they keep the session's time budget
    return run_local(plan, {**settings(ctx), "deadline": ctx.deadline}, workers, on_event)


_SUBMITIT_OPTIONS = {"folder": ("submitit-folder", str, "folder for submitit's job files and logs"),
                     "cluster": ("submitit-cluster", str, "submitit cluster: slurm (detected where sbatch "
                                                          "exists) or local (processes on this machine)"),
                     "partition": ("slurm-partition", str, "SLURM partition"),
                     "time_min": ("slurm-time", int, "SLURM time limit per job, minutes"),
                     "gpus_per_node": ("slurm-gpus-per-node", int, "GPUs per job (default: 1 with --gpu, else 0)"),
                     "array_parallelism": ("slurm-array-parallelism", int, "most jobs of the array running at once")}


def _submitit(plan, ctx, option, on_event) -> dict:
    return run_submitit(plan, settings(ctx), {k: option(o[0]) for k, o in _SUBMITIT_OPTIONS.items()}, on_event)


EXECUTORS = {e.name: e for e in (
    Executor("inline", "the claims, in this process (default)"),
    Executor("local", "worker processes on this machine, one per GPU (else one per CPU core)",
             (("workers", int, "worker processes (default: one per visible GPU with --gpu, else one per CPU core)"),),
             _local),
    Executor("submitit", "a SLURM job array through submitit", tuple(_SUBMITIT_OPTIONS.values()), _submitit),
)}
