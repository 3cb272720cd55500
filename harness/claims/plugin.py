"""pytest plugin (registered by the `pytest11` entry point): every claim in claims/*.toml becomes a
test item `claims/FILE.toml::CLAIM_ID[TIER]`, marked `smoke` or `full`, and every session that ran
claims writes results.json and report.html.

Readings (spec.py): by default each claim is checked under its experiment's primary reading only.
`--readings all` also checks it under every reading its experiment declares for the tier, as
`CLAIM_ID[TIER|READING]` (e.g. `movement-w32[full|epochs=20]`, marked `readings`); `--readings
NAME=VALUE` (repeatable) selects the readings whose every changed value is among those given;
a reading's node id given on the command line is found without the option, and one that names
no item gets pytest's "not found" with the node ids its claim has.
The claim's verdict is the primary reading's: a claim that fails or diverges under another
reading is reported as xfailed (an error still fails), and the report classifies the claim as
holding under every reading tried, only under some, or under none.

Options: --gpu, --data-dir, --run-cache DIR, --report DIR, --refresh, --time-budget SECONDS,
--seed-batching, --cuda-graphs, --readings. Under pytest-xdist, items are
grouped by experiment (`xdist_group`, use `--dist loadgroup`) and the run cache's per-run lock
keeps two workers from training the same run. A claim file outside the rootdir is named by its
path (relative to the invocation directory where it can be, else absolute), in node ids and in the
report. Any exception inside a claim makes its record an "error" verdict, so it is counted.

After collection the controlling process plans the pending training groups of the selected claims,
of the configurations their checks read (harness/execute/planner.py). `--plan-only` lists them and runs no claim; `--executor local|submitit`
trains them (harness/execute/executors.py) before the first claim runs, so that the claims only read the
cache; `--executor inline` (the default) leaves the training to the claims, as before. Progress
(harness/runs/progress.py) is written through pytest's terminal reporter, past its output capture.

This module is pytest's entry point: the options and the hooks. What they call is in
session.py (the session's state in `config.stash`, and the context its options ask for),
items.py (claim files and claim items), xdist_order.py (the order xdist workers take claims in)
and terminal.py (what is written to the terminal).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ..execute import executors, planner
from ..runs import progress
from ..runs.context import Context
from . import final_pass, report, spec, terminal, xdist_order
from .items import ClaimItem, ClaimsFile, failure_text, node_ids_hint, to_plan
from .results import family_key, file_label, with_primaries
from .session import STATE, SessionState, context, readings_selection, state


def pytest_addoption(parser):
    g = parser.getgroup("harness", "paper reproduction claims")
    g.addoption("--gpu", action="store_true", help="train on CUDA (error if CUDA is unavailable)")
    g.addoption("--data-dir", default=None, help="folder with mnist.npz / cifar10.npz "
                                                 "(default: $HARNESS_DATA_DIR, else ~/.cache/harness/data)")
    g.addoption("--run-cache", default=None, help="run cache folder (default: $HARNESS_CACHE_DIR, "
                                                  "else ~/.cache/harness/runs)")
    g.addoption("--report", default="build/report", help="folder for report.html and results.json")
    g.addoption("--refresh", action="store_true", help="ignore cached runs and train again")
    g.addoption("--time-budget", type=float, default=None, metavar="SECONDS",
                help="train only what fits in SECONDS from the start of the session: a group whose "
                     "estimated cost exceeds what is left is not started, a group in training stops at "
                     "an epoch end with its checkpoint saved; claims left without runs are 'not run'")
    g.addoption("--seed-batching", choices=("auto", "on", "off"), default="auto",
                help="train the seeds of a configuration together as one grouped network "
                     "(auto: on with --gpu; on the CPU for small MLP steps only, where it is "
                         "faster: runs.context.Context.seeds_together)")
    g.addoption("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                help="capture the SGD training step once as a CUDA graph and replay it "
                     "(auto: on with --gpu; it has no effect on the CPU)")
    g.addoption("--readings", action="append", default=None, metavar="all|NAME=VALUE",
                help="also check claims under the paper's other readings: 'all', or NAME=VALUE "
                     "(repeatable) for the readings made of those values (default: the primary only)")
    g.addoption("--executor", choices=list(executors.EXECUTORS), default="inline",
                help="who trains the pending runs: " + "; ".join(f"{e.name} ({e.help})" for e in
                                                             executors.EXECUTORS.values()))
    g.addoption("--plan-only", action="store_true",
                help="list the pending training groups of the selected claims and run no claim")
    for e in executors.EXECUTORS.values():
        for name, kind, what in e.options:
            g.addoption(f"--{name}", type=kind, default=None,
                        help=f"{e.name} executor: {what} (default: [tool.harness] {name.replace('-', '_')} "
                             "in pyproject.toml)")


def pytest_configure(config):
    for tier in spec.TIERS:
        config.addinivalue_line("markers", f"{tier}: claim in the {tier} tier")
    config.addinivalue_line("markers", "readings: claim checked under a non-primary reading")
    selected = readings_selection(config)
    ctx = context(config)
    parallel = config.getoption("dist", "no") != "no"
    if parallel and (config.getoption("--plan-only") or config.getoption("--executor") != "inline"):
        raise pytest.UsageError("--plan-only and --executor local|submitit plan in one process: drop -n "
                                "(the executor's own workers train in parallel)")
    config.stash[STATE] = SessionState(ctx=ctx, readings=selected, start=time.time())
    config.pluginmanager.register(_Collector(config), "harness-collector")
    if parallel and getattr(config.option, "loadscopereorder", None):
        # xdist's loadgroup/loadscope re-sort groups by their number of items (its default
        # --loadscope-reorder), which would undo the costliest-first order the workers collect
        # in (pytest_collection_modifyitems): an experiment with many cheap claims (the parameter
        # counts) went before one with a few costly ones, and a costly group came last.
        config.option.loadscopereorder = False


def pytest_collect_file(file_path, parent):
    """Claim files: *.toml in a folder named `claims`, or any *.toml named on the command line
    (a file that is no claim file is then a one-line collection error saying why)."""
    if file_path.suffix == ".toml" and (file_path.parent.name == "claims" or parent.session.isinitpath(file_path)):
        try:  # inside the rootdir pytest's own node id; outside it one that names the file
            file_path.relative_to(parent.config.rootpath)
            nodeid = None
        except ValueError:
            nodeid = file_label(file_path)
        return ClaimsFile.from_parent(parent, path=file_path, nodeid=nodeid)
    return None


class _Collector:
    """Gathers claim results from every test report; in the controller too under xdist, where
    user_properties arrive serialised from the workers."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            for name, value in report.user_properties:
                if name == "harness_claim":
                    result = json.loads(value)
                    state(self.config).results.append(result)
                    state(self.config).reports[family_key(result)] = report


def _executor_option(config):
    """An executor's option by name: from the command line, else [tool.harness] in pyproject.toml."""
    path = Path(config.rootpath) / "pyproject.toml"
    table = spec.tomllib.loads(path.read_text()).get("tool", {}).get("harness", {}) if path.exists() else {}

    def option(name):
        value = config.getoption(f"--{name}")
        return value if value is not None else table.get(name.replace("-", "_"))
    return option


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """pytest's "not found" for a claim's node id, with the node ids that claim has."""
    try:
        return (yield)
    except pytest.UsageError as e:
        hint = node_ids_hint(session.config.args) if any("not found" in str(a) for a in e.args) else ""
        if hint:
            raise pytest.UsageError(*e.args, hint) from None
        raise


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """In a pytest-xdist worker, the claims of the costliest groups of runs first (xdist_order)."""
    xdist_order.costliest_first(config, items)


def pytest_collection_finish(session):
    """Check that every --readings NAME=VALUE matched a reading; then plan the pending groups of
    the selected claims (controlling process only)."""
    config = session.config
    st = state(config)
    if not session.items:
        terminal.explain_uncollected(config)
    unmatched = [s for s in st.readings if s != "all" and s not in st.readings_matched]
    if unmatched and any(isinstance(i, ClaimItem) for i in session.items):
        raise pytest.UsageError(f"--readings {', '.join(unmatched)}: no collected experiment declares such a reading "
                                f"(see the readings tables in claims/*.toml)")
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    ctx = st.ctx
    st.plan = planner.pending(to_plan(session.items), ctx.cache, ctx.device, ctx.refresh)
    if config.getoption("--executor") == "inline" and not config.getoption("--plan-only"):
        # the inline executor trains while pytest prints its progress dots: its lines would break
        # them (and pytest would print the file name again after each), so only with -v, where
        # every claim has a line of its own
        display = terminal.display(config, st.plan, live=False) if config.option.verbose > 0 else None
        if display:
            ctx.progress = st.inline = progress.InlineTracker(display, ctx.seeds_together)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """--plan-only: print the plan and run no claim. --executor local|submitit: train the plan
    first; a group that fails marks the claims that need it as not run."""
    config = session.config
    st = state(config)
    plan = st.plan
    if plan is None or (session.testsfailed and not config.option.continue_on_collection_errors):
        return None  # (collection errors: pytest's own loop stops the session)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if config.getoption("--plan-only"):
        for text in planner.describe(plan):
            tr.write_line(text)
        return True
    name = config.getoption("--executor")
    executor = executors.EXECUTORS[name]
    if executor.run is None or not plan:
        return None
    ctx = st.ctx
    display = terminal.display(config, plan, live=True)
    on_event = display.event if display else (lambda e: None)
    failures = executor.run(plan, ctx, _executor_option(config), on_event)
    if display:
        display.line(f"[harness] {name} executor: {display.overall()}")
    for i, err in failures.items():
        if err.startswith("OutOfBudget"):  # not trained for lack of time: its claims say "not run"
            continue
        for e in plan[i].experiments:
            st.failed.setdefault((e, plan[i].tier), err)
    if ctx.refresh:  # trained afresh just now: the claims must not retrain them
        ctx._refreshed.update(k for g in plan for k in g.keys)
    return None


def pytest_report_teststatus(report, config):
    """An inconclusive claim (its interval straddles a band edge) has its own word and letter, and
    its own count in the summary line; it does not make the exit status 1."""
    if report.when == "call" and ("harness_verdict", "inconclusive") in report.user_properties:
        return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter, config):
    inconclusive = terminalreporter.stats.get("inconclusive", [])
    if inconclusive:
        terminalreporter.section("inconclusive claims (more seeds would decide them)")
        for rep in inconclusive:
            result = json.loads(dict(rep.user_properties)["harness_claim"])
            terminalreporter.write_line(f"INCONCLUSIVE {rep.nodeid}: {result['detail']}")
    final_pass.summary(terminalreporter, state(config).restated)
    paths = state(config).report_paths
    if paths:
        terminalreporter.write_line(f"reproduction report: {paths[1]}  (results: {paths[0]})")


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    st = state(config)
    if hasattr(config, "workerinput") or not st.results:
        return
    ctx = st.ctx
    # a claim checked only under other readings: its primary, for the report, from the cache
    judge = Context(device=ctx.device, data_dir=ctx.data_dir, cache_root=str(ctx.cache.root), allow_train=False)
    # family claims (Welch) judged again now that every selected claim has run
    results, st.restated = final_pass.run(session, st.results, st.reports, judge, failure_text)
    results = with_primaries(results, judge)
    st.report_paths = report.write(results, config.getoption("--report"), wall_s=time.time() - st.start,
                                   device=ctx.device)

