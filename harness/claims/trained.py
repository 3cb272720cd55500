"""Where the report's runs were made: per experiment, the provenance its runs recorded
(harness/runs/provenance.py), the "where trained" table, and the environment that rendered it."""
from __future__ import annotations

import platform

from ..runs import provenance as run_provenance

PROVENANCE_FIELDS = ("device", "torch", "cuda", "commit")  # the report warns where an experiment's runs differ in these


TRAINED_FIELDS = ("device", "driver", "torch", "cuda", "cudnn", "python", "commit", "data")  # "where trained" table



def environment(device: str = "cpu") -> dict:
    """The environment that renders the report: python, platform, torch and CUDA, the device, the GPU
    and its TF32 settings, CPU threads and the commit, the last from harness/runs/provenance.py as
    every run records it (honouring $HARNESS_COMMIT, marked -dirty with uncommitted changes)."""
    import torch

    rec = run_provenance.record(device)
    return {"python": platform.python_version(), "platform": platform.platform(),
            "torch": rec["torch"], "cuda": rec["cuda"], "device": device,
            "cuda_available": torch.cuda.is_available(),
            "gpu": run_provenance.device_name("cuda:0") if torch.cuda.is_available() else None,
            "tf32_convolutions": rec["tf32_conv"], "tf32_matmul": rec["tf32_matmul"],
            "cpu_threads": torch.get_num_threads(), "git_commit": rec["commit"]}


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
                "mixed": [f for f in PROVENANCE_FIELDS if len(out[f]) > 1]})
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

