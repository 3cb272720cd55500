"""Live progress of the planned training groups (harness/execute/planner.py) while an executor trains them.

Training reports events (plain dicts, so that they cross process boundaries on a queue):
  {"event": "start", "group": i}                 a group begins (i: its index in the plan)
  {"event": "epoch", "group": i, ...}            an epoch ended: run r/R, epoch k/N, samples/s, ETA
  {"event": "done", "group": i}, {"event": "failed", "group": i, "error": str}
  {"event": "jobs", "counts": {...}}             remote executors: jobs queued/running/done/failed
`epoch_reporter` turns train._fit's per-epoch, per-model records into epoch events (it is what
runs.context.Context.progress hands to the trainer); `Display` renders events as text: a line for
each start, end and failure, with the overall count of groups done of pending and an ETA from the
plan's FLOP estimates; epoch progress as a status line that is rewritten in place (at most twice a
second) where the output is a terminal (`status` given), otherwise as plain lines at most every
`every` seconds per group.
Where the text goes is the caller's choice (the pytest plugin writes through pytest's terminal
reporter, past its output capture).
"""
from __future__ import annotations

import time

from ..paper import data as data_mod
from ..paper.train import steps_per_epoch


def _clock(seconds) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def epoch_reporter(group: int | None, jobs: list, send, batched: bool, clock=time.monotonic):
    """A per-epoch callback for train._fit over `jobs` (runs.inline.Job) that sends epoch events.
    `batched`: the jobs train together (one record per model per epoch); otherwise one after the
    other (the epoch count restarts with each run)."""
    cfg = jobs[0].cfg
    n = cfg.train_subset or data_mod.DATASETS[cfg.dataset].train_shape[0]
    runs = 1 if batched else len(jobs)
    epochs = cfg.epochs
    if cfg.steps:  # a run of a fixed number of optimiser steps: the epochs they span
        epochs = -(-cfg.steps // max(1, steps_per_epoch(n - cfg.val_size, cfg.batch_size)))
    state = {"run": 1, "epoch": None, "t": clock(), "t0": clock(), "epochs_seen": 0}

    def callback(record):
        k = record["epoch"]
        if k == state["epoch"]:
            return  # the other models of a seed-batched group, same epoch
        if state["epoch"] is not None and k < state["epoch"]:
            state["run"] += 1
        now = clock()
        dt, state["t"], state["epoch"] = now - state["t"], now, k
        state["epochs_seen"] += 1
        per_epoch = (now - state["t0"]) / state["epochs_seen"]
        left = (epochs - k) + (runs - state["run"]) * epochs
        send({"event": "epoch", "group": group, "run": state["run"], "runs": runs, "epoch": k,
              "epochs": epochs, "samples_per_s": n * (len(jobs) if batched else 1) / max(dt, 1e-9),
              "eta_s": left * per_epoch})
    return callback


class Display:
    """Renders progress events for `plan` (a list of planner.Group) through `line(text)` and, on a
    terminal, `status(text)` (a line rewritten in place)."""

    def __init__(self, plan, line, status=None, every: float = 30.0, clock=time.monotonic):
        self.plan, self.line, self.status, self.every, self.clock = plan, line, status, every, clock
        self.t0 = None  # set by the first event: the clock runs from when training starts
        self.done, self.failed, self.flops_done = set(), set(), 0.0
        self.active, self.printed, self.jobs = {}, {}, None

    def _label(self, i) -> str:
        if i is None:
            return "group (not in the plan)"
        g = self.plan[i]
        return f"group {i + 1}/{len(self.plan)} {g.experiments[0]} [{g.tier}] {g.kind}, {len(g.keys)} run(s)"

    def overall(self) -> str:
        total = sum(g.flops for g in self.plan)
        elapsed = self.clock() - self.t0 if self.t0 is not None else 0.0
        eta = elapsed * (total - self.flops_done) / self.flops_done if self.flops_done else None
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return f"{len(self.done)}/{len(self.plan)} groups done{failed}, {_clock(elapsed)} elapsed, ETA {_clock(eta)}"

    def _epoch_text(self, e) -> str:
        run = f"run {e['run']}/{e['runs']} " if e["runs"] > 1 else ""
        return (f"{run}epoch {e['epoch']}/{e['epochs']}, {e['samples_per_s']:,.0f} samples/s, "
                f"ETA {_clock(e['eta_s'])}")

    def event(self, e: dict) -> None:
        kind, i = e["event"], e.get("group")
        if self.t0 is None:
            self.t0 = self.clock()
        if kind == "start":
            self.active[i] = None
            self.line(f"[harness] start {self._label(i)}")
        elif kind == "epoch":
            self.active[i] = e
            now = self.clock()
            if self.status is not None and now - self.printed.get("status", now - 1.0) >= 0.5:
                self.printed["status"] = now
                self.status("[harness] " + "; ".join(f"{j + 1 if j is not None else '-'}: {self._epoch_text(a)}"
                                                     for j, a in self.active.items() if a) + f" | {self.overall()}")
            elif self.status is None and (i not in self.printed or now - self.printed[i] >= self.every):
                self.printed[i] = now
                self.line(f"[harness] {self._label(i)}: {self._epoch_text(e)}")
        elif kind in ("done", "failed"):
            self.active.pop(i, None)
            if i is not None and i not in self.done | self.failed:
                (self.done if kind == "done" else self.failed).add(i)
                self.flops_done += self.plan[i].flops if kind == "done" else 0.0
            what = "done" if kind == "done" else f"FAILED ({e.get('error')})"
            self.line(f"[harness] {what}: {self._label(i)} | {self.overall()}")
        elif kind == "jobs" and e["counts"] != self.jobs:
            self.jobs = e["counts"]
            self.line("[harness] jobs: " + ", ".join(f"{n} {s}" for s, n in e["counts"].items())
                      + f" | {self.overall()}")


class InlineTracker:
    """Context.progress for the inline executor: the groups train one after another
    in this process, inside the claims, so a group whose runs start training ends the previous
    one (`finish` ends the last). Runs are matched to plan groups by cache key."""

    def __init__(self, display: Display, batched: bool):
        self.display, self.batched, self.current = display, batched, None
        self.owner = {k: i for i, g in enumerate(display.plan) for k in g.keys}

    def __call__(self, jobs):
        i = self.owner.get(jobs[0].key)
        if i is None or i != self.current:
            self.finish()
            self.current = i
            self.display.event({"event": "start", "group": i})
        batched = self.batched(jobs[0].cfg) if callable(self.batched) else self.batched
        return epoch_reporter(i, jobs, self.display.event, batched and len(jobs) > 1)

    def finish(self):
        if self.current is not None:
            self.display.event({"event": "done", "group": self.current})
        self.current = None
