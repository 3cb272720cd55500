"""pytest plugin (registered by the `pytest11` entry point): every claim in claims/*.toml becomes a
test item `claims/FILE.toml::CLAIM_ID[TIER]`, marked `smoke` or `full`, and every session that ran
claims writes results.json and report.html.

Options: --gpu, --data-dir, --run-cache DIR, --report DIR, --refresh, --seed-batching, --cuda-graphs. Under pytest-xdist, items are
grouped by experiment (`xdist_group`, use `--dist loadgroup`) and the run cache's per-run lock
keeps two workers from training the same run. A claim file outside the rootdir is named by its
path (relative to the invocation directory where it can be, else absolute), in node ids and in the
report. Any exception inside a claim makes its record an "error" verdict, so it is counted.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import pytest

from . import checks, experiments, report, spec
from .cache import DamagedEntry
from .data import DataError


def _progress(msg):
    """Progress of long runs with -v, past pytest's output capture."""
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.__stderr__, flush=True)


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
    g.addoption("--seed-batching", choices=("auto", "on", "off"), default="auto",
                help="train the seeds of a configuration together as one vmapped network "
                     "(auto: on with --gpu, off on the CPU)")
    g.addoption("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                help="capture the SGD training step once as a CUDA graph and replay it "
                     "(auto: on with --gpu; it has no effect on the CPU)")


def pytest_configure(config):
    for tier in spec.TIERS:
        config.addinivalue_line("markers", f"{tier}: claim in the {tier} tier")
    if config.getoption("--gpu"):
        import torch
        if not torch.cuda.is_available():
            raise pytest.UsageError("--gpu was given but CUDA is not available "
                                    "(torch.cuda.is_available() is False); drop --gpu to run on the CPU")
    config._harness_ctx = experiments.Context(
        device="cuda" if config.getoption("--gpu") else "cpu",
        data_dir=config.getoption("--data-dir"), cache_root=config.getoption("--run-cache"),
        refresh=config.getoption("--refresh"),
        batch_seeds={"on": True, "off": False, "auto": config.getoption("--gpu")}[config.getoption("--seed-batching")],
        cuda_graphs={"on": True, "off": False, "auto": config.getoption("--gpu")}[config.getoption("--cuda-graphs")],
        log=_progress if config.option.verbose > 0 else None)
    config._harness_results = []
    config._harness_start = time.time()
    config.pluginmanager.register(_Collector(config), "harness-collector")


def file_label(path) -> str:
    """How a claim file is named: relative to the invocation directory where it is under it
    (claims/FILE.toml in the project), else its absolute path."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".toml" and file_path.parent.name == "claims":
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
        for claim in cf.claims:
            exp = claim.experiment
            for tier in claim.tiers:
                yield ClaimItem.from_parent(self, name=f"{claim.id}[{tier}]", claim=claim, tier=tier,
                                            experiment=exp, claim_file=cf)


def claim_result(claim, tier, exp, cf, ctx) -> dict:
    """Run the claim's experiment (cached) and evaluate its check: the record the report shows."""
    t = claim.tiers[tier]
    base = {"id": claim.id, "file": file_label(claim.file), "order": cf.claims.index(claim),
            "section": claim.section, "title": cf.title,
            "tier": tier, "statement": claim.statement, "paper": claim.paper,
            "paper_value": claim.paper_value, "experiment": exp.name, "check": t["check"],
            "expect": t["expect"], "expected": checks.describe(t["check"], t["expect"]),
            "why": t["expect"]["why"], "disagreements": claim.disagreements,
            "reading": claim.reading, "experiment_notes": exp.notes}
    try:
        rows = experiments.run(exp, tier, ctx)
        out = checks.evaluate(t["check"], t["expect"], rows)
    except (DataError, checks.SelectionError, experiments.NotCached) as e:
        return {**base, "verdict": "error", "measured": None, "detail": str(e), "table": []}
    except Exception as e:  # a fault of the harness or of the cache: an error verdict, never a missing row
        tail = "" if isinstance(e, DamagedEntry) else "\n" + "".join(traceback.format_exception(e)[-4:-1]).rstrip()
        return {**base, "verdict": "error", "measured": None, "table": [],
                "detail": f"{type(e).__name__}: {e}{tail}"}
    out["plot"] = report.experiment_series(exp, rows) if exp.plot else None
    out["experiment_seconds"] = ctx.run_seconds.get(exp.name)
    # training time recorded with each run (per model; a seed group's wall time is split evenly),
    # so a report assembled from runs trained in several sessions still says what they cost
    out["run_wall_s"] = {row["key"]: row["metrics"]["wall_s"] for row in rows
                         if row["key"] and "wall_s" in row["metrics"]}
    return {**base, **out}


class ClaimItem(pytest.Item):
    def __init__(self, *, claim, tier, experiment, claim_file, **kw):
        super().__init__(**kw)
        self.claim, self.tier, self.exp, self.claim_file = claim, tier, experiment, claim_file
        self.add_marker(getattr(pytest.mark, tier))
        # grouped by the experiment's own file, so that users of FILE.toml:NAME share a worker
        self.add_marker(pytest.mark.xdist_group(f"{file_label(experiment.file)}:{experiment.name}:{tier}"))

    def runtest(self):
        result = claim_result(self.claim, self.tier, self.exp, self.claim_file, self.config._harness_ctx)
        self.user_properties.append(("harness_claim", json.dumps(result, default=float)))
        if result["verdict"] != "pass":
            raise ClaimFailed(result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ClaimFailed):
            r = excinfo.value.result
            lines = [f"claim {r['id']} [{r['tier']}] {r['verdict'].upper()}: {r['statement']}",
                     f"  paper:    {r['paper']}",
                     f"  measured: {r['detail']}",
                     f"  expected: {json.dumps({k: v for k, v in r['expect'].items() if k != 'why'})}",
                     f"  why:      {r['why']}"]
            lines += [f"  paper disagreement: {d}" for d in r["disagreements"]]
            return "\n".join(lines)
        if isinstance(excinfo.value, (DataError, spec.SpecError)):
            return f"{self.claim.file}: claim {self.claim.id!r}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.claim.id}[{self.tier}]"


class _Collector:
    """Gathers claim results from every test report; in the controller too under xdist, where
    user_properties arrive serialised from the workers."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            for name, value in report.user_properties:
                if name == "harness_claim":
                    self.config._harness_results.append(json.loads(value))


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config, "_harness_results", None):
        return
    paths = report.write(config._harness_results, config.getoption("--report"),
                         wall_s=time.time() - config._harness_start, device=config._harness_ctx.device)
    config._harness_report_paths = paths


def pytest_terminal_summary(terminalreporter, config):
    paths = getattr(config, "_harness_report_paths", None)
    if paths:
        terminalreporter.write_line(f"reproduction report: {paths[1]}  (results: {paths[0]})")
