"""Provenance: what produced a run, recorded with it in its metrics.json, so that a report
assembled from runs trained on several machines and sessions says, per experiment, which device,
code and precision each result comes from (report.py shows it and warns where they differ).

    {"device": "NVIDIA H100 80GB HBM3" | "cpu (x86_64)", "torch": "2.11.0+cu130", "cuda": "13.0" | None,
     "cudnn": 91300 | None, "commit": "8463b7d..." (+ "-dirty" with uncommitted changes) | None,
     "date": "2026-11-27T08:00:00+00:00", "tf32_conv": bool, "tf32_matmul": bool,
     "amp": bool, "trainer": "single" | ..., "cuda_graph": bool}

The commit comes from $HARNESS_COMMIT when set (a copy of the project without its .git folder,
e.g. on a lent GPU machine, is given it on the command line), else from `git` in the project's
folder, else None. Runs made before provenance was recorded have none; an export's part file
(reports/full/parts/*.provenance.json, see `python -m harness report --exports`) supplies it.
"""
from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    if os.environ.get("HARNESS_COMMIT"):
        return os.environ["HARNESS_COMMIT"]
    try:
        def git(*args):
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=PROJECT,
                                  timeout=10, check=True).stdout.strip()
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return f"{sha}-dirty" if dirty else sha
    except Exception:
        return None


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.machine()})"


def record(device: str, **run) -> dict:
    """Provenance of work done now on `device`; `run` adds per-run fields (amp, trainer, cuda_graph)."""
    import torch

    return {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "commit": commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            **run}
