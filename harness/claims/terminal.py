"""What the pytest plugin writes to the terminal, past pytest's output capture: progress lines of
long runs (-v), the training progress display (runs.progress.Display), and why nothing was
collected where that is a puzzle.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from ..runs import progress


def progress_line(msg):
    """Progress of long runs with -v, past pytest's output capture."""
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.__stderr__, flush=True)


def display(config, plan, live: bool):
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


def explain_uncollected(config):
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
