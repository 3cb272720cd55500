"""pytest plugin (registered by the `pytest11` entry point): every claim in claims/*.toml becomes a
test item `claims/FILE.toml::CLAIM_ID[TIER]`, marked `smoke` or `full`, and every session that ran
claims writes results.json and report.html.

Readings (spec.py): by default each claim is checked under its experiment's primary reading only.
`--readings all` also checks it under every reading its experiment declares for the tier, as
`CLAIM_ID[TIER|READING]` (e.g. `movement-w32[full|epochs=20]`, marked `readings`); `--readings
NAME=VALUE` (repeatable) selects the readings whose every changed value is among those given;
a reading's node id given on the command line is found without the option.
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
(harness/progress.py) is written through pytest's terminal reporter, past its output capture.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import pytest

from ..execute import executors, planner
from ..procedures import DataError
from ..runs import expand, progress
from ..runs.context import Context
from . import checks, final_pass, readings, report, spec
from .results import claim_result, family_key, file_label, with_primaries


def _progress(msg):
    """Progress of long runs with -v, past pytest's output capture."""
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.__stderr__, flush=True)


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


class ClaimFailed(Exception):
    def __init__(self, result):
        super().__init__(result["detail"])
        self.result = result


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
    selection = config.getoption("--readings") or []
    if not selection and any("|" in a and "[" in a for a in config.args):
        selection = ["all"]  # a reading's node id named on the command line, e.g. CLAIM[full|epochs=20]
    for s in selection:
        if s != "all" and "=" not in s:
            raise pytest.UsageError(f"--readings {s!r}: expected 'all' or NAME=VALUE, e.g. epochs=20")
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
        log=_progress if config.option.verbose > 0 else None,
        deadline=None if config.getoption("--time-budget") is None
        else time.monotonic() + config.getoption("--time-budget"))
    _share_cores(ctx.device)
    parallel = config.getoption("dist", "no") != "no"
    if parallel and (config.getoption("--plan-only") or config.getoption("--executor") != "inline"):
        raise pytest.UsageError("--plan-only and --executor local|submitit plan in one process: drop -n "
                                "(the executor's own workers train in parallel)")
    config.stash[STATE] = SessionState(ctx=ctx, readings=selection, start=time.time())
    config.pluginmanager.register(_Collector(config), "harness-collector")
    if parallel and getattr(config.option, "loadscopereorder", None):
        # xdist's loadgroup/loadscope re-sort groups by their number of items (its default
        # --loadscope-reorder), which would undo the costliest-first order the workers collect
        # in (pytest_collection_modifyitems): an experiment with many cheap claims (the parameter
        # counts) went before one with a few costly ones, and a costly group came last.
        config.option.loadscopereorder = False


def _share_cores(device: str) -> None:
    """In a pytest-xdist worker on the CPU, torch's intra-op threads are the cores shared out among
    the workers (at least one; never more than torch would use alone): `-n 2` on two cores runs
    two one-thread processes, not four threads fighting over two cores."""
    import os
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if device == "cpu" and workers > 1:
        import torch
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cores // workers)))


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


class ClaimsFile(pytest.File):
    def collect(self):
        try:
            cf = spec.load(self.path)
        except spec.SpecError as e:
            raise self.CollectError(str(e)) from None
        st = state(self.config)
        for claim in cf.claims:
            exp = claim.experiment
            for tier in claim.tiers:
                for reading in readings.select(exp, tier, st.readings, st.readings_matched, claim):
                    yield ClaimItem.from_parent(self, name=f"{claim.id}[{node_suffix(tier, reading)}]",
                                                claim=claim, tier=tier, experiment=exp, claim_file=cf,
                                                reading=reading)


def node_suffix(tier: str, reading) -> str:
    """TIER for the primary reading (the node ids of today), TIER|READING for another."""
    return tier if reading.is_primary else f"{tier}|{reading.name}"


class NotTrained(Exception):
    """An executor failed to train runs a claim needs."""


class ClaimItem(pytest.Item):
    def __init__(self, *, claim, tier, experiment, claim_file, reading, **kw):
        super().__init__(**kw)
        self.claim, self.tier, self.exp, self.claim_file = claim, tier, experiment, claim_file
        self.reading = reading
        self.reads = checks.reads(claim.tiers[tier]["check"])  # the configurations it reads
        self.add_marker(getattr(pytest.mark, tier))
        if not reading.is_primary:
            self.add_marker(pytest.mark.readings)
        # grouped by the experiment's own file, so that users of FILE.toml:NAME share a worker
        self.add_marker(pytest.mark.xdist_group(f"{file_label(experiment.file)}:{experiment.name}:"
                                                f"{node_suffix(tier, reading)}"))

    def runtest(self):
        st = state(self.config)
        failed = st.failed.get((planner.exp_id(self.exp), self.tier))
        if failed:
            raise NotTrained(f"not run: the {self.config.getoption('--executor')} executor failed to train "
                             f"runs of experiment {self.exp.name!r}: {failed}")
        try:
            result = claim_result(self.claim, self.tier, self.exp, self.claim_file, st.ctx, self.reading)
        finally:  # an experiment's runs train within the claim that first needs them
            if st.inline:
                st.inline.finish()
        self.user_properties.append(("harness_claim", json.dumps(result, default=float)))
        self.user_properties.append(("harness_verdict", result["verdict"]))
        if result["verdict"] == "not run":
            pytest.skip(result["detail"])
        if result["verdict"] == "inconclusive":
            return  # neither pass nor fail: reported with its own word (pytest_report_teststatus)
        if result["verdict"] in ("fail", "diverged") and not self.reading.is_primary:
            # the claim's verdict is the primary reading's; another reading that does not
            # reproduce it is a finding (the report's readings table), not a failed test
            pytest.xfail(f"does not hold under reading {self.reading.name}: {result['detail']}")
        if result["verdict"] != "pass":
            raise ClaimFailed(result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ClaimFailed):
            return failure_text(excinfo.value.result)
        if isinstance(excinfo.value, (DataError, spec.SpecError, NotTrained)):
            return f"{self.claim.file}: claim {self.claim.id!r}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.claim.id}[{node_suffix(self.tier, self.reading)}]"


def failure_text(r: dict) -> str:
    """What a failed claim shows: its verdict and statement, the paper's words, measured against
    expected, and why the tolerance."""
    reading = readings.reading_id(r)
    suffix = r["tier"] if reading == readings.PRIMARY else f"{r['tier']}|{reading}"
    lines = [f"claim {r['id']} [{suffix}] {r['verdict'].upper()}: {r['statement']}",
             f"  paper:    {r['paper']}",
             f"  measured: {r['detail']}",
             f"  expected: {json.dumps({k: v for k, v in r['expect'].items() if k != 'why'})}",
             f"  why:      {r['why']}"]
    lines += [f"  paper disagreement: {d}" for d in r["disagreements"]]
    return "\n".join(lines)


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


def _display(config, plan, live: bool):
    """A progress display writing through pytest's terminal reporter with capture suspended; a
    status line rewritten in place on a terminal when `live` (nothing else writes meanwhile), plain
    lines otherwise; none with -q."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if config.option.verbose < 0 or tr is None or not plan:
        return None
    shown = []

    def uncaptured(write):
        def out(text):
            with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
                write(text)
        return out

    def line(text):
        if shown:  # the status line becomes this line
            tr.rewrite(text, erase=True)
            tr.write_line("")
            shown.clear()
        else:
            tr.write_line(text)

    def status(text):  # one terminal row, so that rewriting it in place works
        tr.rewrite(text[:tr._tw.fullwidth - 1], erase=True)
        shown.append(True)
    return progress.Display(plan, uncaptured(line), uncaptured(status) if live and tr.isatty() else None)


def _selection(items) -> list:
    """The planner's selection: (experiment, tier, reading, reads) per experiment, tier and reading
    of the claim items, `reads` the selectors of their checks together (checks.union: None where
    one reads every configuration), so that only the configurations they read are planned."""
    out, reads = {}, {}
    for item in items:
        if isinstance(item, ClaimItem):
            key = (planner.exp_id(item.exp), item.tier, item.reading.name)
            out.setdefault(key, (item.exp, item.tier, item.reading))
            reads.setdefault(key, []).append(item.reads)
    return [(*v, checks.union(reads[k])) for k, v in out.items()]


def _explain_uncollected(config):
    """Nothing collected: say so where a folder given on the command line holds *.toml files that
    were not taken as claim files (only a folder named `claims`, or a file named, is)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    for arg in config.args:
        folder = Path(arg.split("::")[0])
        tomls = sorted(folder.rglob("*.toml")) if folder.is_dir() else []
        skipped = [p for p in tomls if p.parent.name != "claims"]
        if tr and skipped:
            tr.write_line(f"harness: {len(skipped)} *.toml file(s) under {arg} (e.g. {skipped[0]}) are not claim files "
                          "here: claims are collected from folders named `claims`, or from a file named on the "
                          "command line")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """In a pytest-xdist worker, the claims of the costliest groups first (a group's training FLOPs
    in its tier and reading, see _run_groups), then every other item in its order: workers take
    groups (`--dist loadgroup`) in collection order, so a heavy group collected last runs alone at
    the end while the other workers idle. Every worker sorts alike (a pure function of the claim
    files; the controller keeps it, see pytest_configure). Without xdist the order is the files'
    own. Under `--dist loadgroup`, each claim's group is also made to take (see _group_ids)."""
    if not hasattr(config, "workerinput"):
        return
    claims = [i for i in items if isinstance(i, ClaimItem)]
    others = [i for i in items if not isinstance(i, ClaimItem)]
    groups = _run_groups(claims)
    if config.getvalue("loadgroup"):
        _group_ids(claims, groups)
    items[:] = sorted(claims, key=lambda i: (-groups[i][1], -groups[i][2])) + others


def _run_groups(claims) -> dict:
    """Each claim's xdist group, that group's training FLOPs and its own experiment's. A claim's
    group is its experiment's under its tier and reading (its `xdist_group` mark), merged with
    every other such group that shares a run with it (V-C's flat_sharp measures V-B's bs_sweep
    runs): a shared run then trains in one worker, and no worker waits on another's run-cache
    lock. Merged groups are named by their marks joined with "+", and their cost counts each run
    once; within one, the costliest experiment's claims go first, so that its seeds train together
    (flat_sharp's five, not bs_sweep's three and then the other two)."""
    parent, runs, owner, reads = {}, {}, {}, {}

    def root(g):
        while parent[g] != g:
            g = parent[g]
        return g

    for item in claims:  # the configurations a group's claims read
        reads.setdefault(item.get_closest_marker("xdist_group").args[0], []).append(item.reads)
    for item in claims:
        g = item.get_closest_marker("xdist_group").args[0]
        if g in parent:
            continue
        parent[g] = g
        runs[g] = set(expand.training_runs(item.exp, item.tier, "cpu", item.reading, checks.union(reads[g])))
        for cfg in runs[g]:
            if cfg in owner and root(owner[cfg]) != root(g):
                parent[root(g)] = root(owner[cfg])
            owner.setdefault(cfg, g)
    members = {}
    for g in parent:
        members.setdefault(root(g), []).append(g)
    named = {}
    for gs in members.values():
        flops = sum(expand.training_cost(c)["flops"] for c in set().union(*(runs[g] for g in gs)))
        for g in gs:
            named[g] = ("+".join(sorted(gs)), flops, sum(expand.training_cost(c)["flops"] for c in runs[g]))
    return {item: named[item.get_closest_marker("xdist_group").args[0]] for item in claims}


def _group_ids(claims, groups) -> None:
    """pytest-xdist (3.8) puts an item in its `xdist_group` by appending "@GROUP" to `item._nodeid`,
    which pytest 9 no longer reads (a node's id lives in `item._id`): `--dist loadgroup` then
    scheduled item by item, and the claims of one experiment ran on two workers, one waiting on
    the other's run-cache locks. Append each claim's group (`groups`: _run_groups) here."""
    from _pytest.nodeid import coerce_node_id  # pytest's own; where it is missing, nothing to mend

    for item in claims:
        if "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = coerce_node_id(f"{item.nodeid}@{groups[item][0]}")


def pytest_collection_finish(session):
    """Check that every --readings NAME=VALUE matched a reading; then plan the pending groups of
    the selected claims (controlling process only)."""
    config = session.config
    st = state(config)
    if not session.items:
        _explain_uncollected(config)
    unmatched = [s for s in st.readings if s != "all" and s not in st.readings_matched]
    if unmatched and any(isinstance(i, ClaimItem) for i in session.items):
        raise pytest.UsageError(f"--readings {', '.join(unmatched)}: no collected experiment declares such a reading "
                                f"(see the readings tables in claims/*.toml)")
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    ctx = st.ctx
    st.plan = planner.pending(_selection(session.items), ctx.cache, ctx.device, ctx.refresh)
    if config.getoption("--executor") == "inline" and not config.getoption("--plan-only"):
        # the inline executor trains while pytest prints its progress dots: its lines would break
        # them (and pytest would print the file name again after each), so only with -v, where
        # every claim has a line of its own
        display = _display(config, st.plan, live=False) if config.option.verbose > 0 else None
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
    display = _display(config, plan, live=True)
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

