"""Where the report's runs were made: per experiment, the provenance its runs recorded
(harness/runs/provenance.py), the "where trained" table, and the environment that rendered it."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

PROVENANCE_FIELDS = ("device", "torch", "cuda", "commit")


TRAINED_FIELDS = ("device", "driver", "torch", "cuda", "cudnn", "python", "commit", "data")  # "where trained" table



def environment(device: str = "cpu") -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
           "cuda_available": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "tf32_convolutions": torch.backends.cudnn.allow_tf32,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
           "cpu_threads": torch.get_num_threads()}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).resolve().parents[2], timeout=10).stdout.strip() or None
    except Exception:
        env["git_commit"] = None
    return env


def provenance(runs: dict) -> dict:
    """Where one experiment's runs were made, from their run_provenance ({run key: dict or None}):
    the distinct values of device, torch, cuda and commit, the date range, how many runs carry no
    provenance (trained by older code), the part files that supplied it for runs that had none
    (`sources`), and `mixed`: the fields with more than one value."""
    known = [p for p in runs.values() if p]
    out = {f: sorted({"none" if p.get(f) is None else str(p[f]) for p in known}) for f in TRAINED_FIELDS}
    # provenance an export's part file supplied for runs made before it was recorded (cache.import_exports)
    out["sources"] = sorted({p["source"] for p in known if p.get("source")})
    dates = sorted(str(p["date"])[:10] for p in known if p.get("date"))  # the day of an ISO date or time
    out.update({"runs": len(runs), "without": len(runs) - len(known),
                "dates": [dates[0], dates[-1]] if dates else [],
                "mixed": [f for f in ("device", "torch", "cuda", "commit") if len(out[f]) > 1]})
    return out


def trained_where(sections: list) -> list:
    rows, seen = [], set()
    for sec in sections:
        for g in sec["groups"]:
            pv = g["provenance"]
            if g["key"] in seen or pv["runs"] == pv["without"] and not pv["runs"]:
                continue
            seen.add(g["key"])
            vals = {}
            for f in TRAINED_FIELDS:
                got = [v for v in pv.get(f, [])]
                if not got:
                    vals[f] = "not recorded"
                else:
                    vals[f] = " / ".join("not recorded" if v == "none" else (v[:10] if f == "commit" else v) for v in got)
            dates = pv["dates"]
            rows.append({"experiment": g["experiment"], "anchor": g["anchor"], "runs": pv["runs"], "fields": vals,
                         "sources": pv["sources"], "without": pv["without"],
                         "dates": (dates[0] if dates[0] == dates[1] else f"{dates[0]} to {dates[1]}") if dates else "not recorded"})
    return rows

