"""The pytest plugin's state for one session (SessionState, kept in `config.stash`; `state`), and
what the session's options ask for: the readings selected, and the context claims train and read
runs in (`context`: device, data and cache folders, seed batching, CUDA graphs, time budget).
"""
from __future__ import annotations

import dataclasses
import os
import time

import pytest

from ..runs import progress
from ..runs.context import Context
from . import terminal


@dataclasses.dataclass
class SessionState:
    """This plugin's state for one pytest session, kept in `config.stash` under STATE (see state()).
    Under xdist every worker has its own, from its own pytest_configure; only the controller's
    `plan` and `report_paths` are ever set, and only its `results` gather every worker's claims."""
    ctx: Context
    readings: list  # the --readings selection ('all', NAME=VALUE ...)
    readings_matched: set = dataclasses.field(default_factory=set)  # the NAME=VALUE that matched a reading
    failed: dict = dataclasses.field(default_factory=dict)  # (experiment id, tier) -> executor error
    results: list = dataclasses.field(default_factory=list)  # claim results of this session
    start: float = dataclasses.field(default_factory=time.time)  # wall clock at pytest_configure
    inline: progress.InlineTracker | None = None  # progress of the inline executor (-v only)
    plan: list | None = None  # pending training groups (controller only, after collection)
    report_paths: tuple | None = None  # (results.json, report.html) once written
    reports: dict = dataclasses.field(default_factory=dict)  # results.family_key -> its claim's TestReport
    restated: list = dataclasses.field(default_factory=list)  # claims the final pass decided anew (final_pass.run)


STATE = pytest.StashKey[SessionState]()


def state(config: pytest.Config) -> SessionState:
    """The harness's state of the session `config` belongs to (set by pytest_configure)."""
    return config.stash[STATE]


def readings_selection(config) -> list:
    """The --readings selection ('all', NAME=VALUE ...); 'all' where a reading's node id is named
    on the command line."""
    selection = config.getoption("--readings") or []
    if not selection and any("|" in a and "[" in a for a in config.args):
        selection = ["all"]  # a reading's node id named on the command line, e.g. CLAIM[full|epochs=20]
    for s in selection:
        if s != "all" and "=" not in s:
            raise pytest.UsageError(f"--readings {s!r}: expected 'all' or NAME=VALUE, e.g. epochs=20")
    return selection


def context(config) -> Context:
    """The context the session's claims train and read runs in, from its options."""
    if config.getoption("--gpu"):
        import torch
        if not torch.cuda.is_available():
            raise pytest.UsageError("--gpu was given but CUDA is not available "
                                    "(torch.cuda.is_available() is False); drop --gpu to run on the CPU")
    ctx = Context(
        device="cuda" if config.getoption("--gpu") else "cpu",
        data_dir=config.getoption("--data-dir"), cache_root=config.getoption("--run-cache"),
        refresh=config.getoption("--refresh"),
        batch_seeds={"on": True, "off": False, "auto": None}[config.getoption("--seed-batching")],
        cuda_graphs={"on": True, "off": False, "auto": config.getoption("--gpu")}[config.getoption("--cuda-graphs")],
        log=terminal.progress_line if config.option.verbose > 0 else None,
        deadline=None if config.getoption("--time-budget") is None
        else time.monotonic() + config.getoption("--time-budget"))
    _share_cores(ctx.device)
    return ctx


def _share_cores(device: str) -> None:
    """In a pytest-xdist worker on the CPU, torch's intra-op threads are the cores shared out among
    the workers (at least one; never more than torch would use alone): `-n 2` on two cores runs
    two one-thread processes, not four threads fighting over two cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if device == "cpu" and workers > 1:
        import torch
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cores // workers)))
