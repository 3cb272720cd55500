"""Where the report's runs were made: per experiment, the provenance its runs recorded
(harness/runs/provenance.py), the "where trained" table, and the environment that rendered it."""
from __future__ import annotations

import platform

from ..runs import provenance as run_provenance


def short_commit(c: str) -> str:
    """A commit as the report shows it: 10 hex digits, its -dirty mark kept."""
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")


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
    out["from_source"] = sum(bool(p.get("source")) for p in known)
    # the runs grouped by where they were made: one row of the "where trained" table per setup, so a
    # device's torch and CUDA are never paired with another device's
    combos = {}
    for p in known:
        k = tuple("none" if p.get(f) is None else str(p[f]) for f in TRAINED_FIELDS)
        c = combos.setdefault(k, {"values": dict(zip(TRAINED_FIELDS, k)), "runs": 0, "dates": [], "sources": set()})
        c["runs"] += 1
        c["dates"] += [str(p["date"])[:10]] if p.get("date") else []
        c["sources"] |= {p["source"]} if p.get("source") else set()
    out["setups"] = [{**c, "dates": [min(c["dates"]), max(c["dates"])] if c["dates"] else [],
                      "sources": sorted(c["sources"])} for c in sorted(combos.values(), key=lambda c: -c["runs"])]
    out.update({"runs": len(runs), "without": len(runs) - len(known),
                "dates": [dates[0], dates[-1]] if dates else [],
                "mixed": [f for f in PROVENANCE_FIELDS if len(out[f]) > 1]})
    return out


def _dates(dates: list) -> str:
    return (dates[0] if dates[0] == dates[1] else f"{dates[0]} to {dates[1]}") if dates else "not recorded"


def trained_where(sections: list) -> list:
    """The "where trained" table: per experiment, one row per setup its runs record (device,
    driver, torch, ... as one run recorded them together), and one for runs that record none."""
    rows, seen = [], set()
    for sec in sections:
        for g in sec["groups"]:
            pv = g["provenance"]
            if g["key"] in seen or pv["runs"] == pv["without"] and not pv["runs"]:
                continue
            seen.add(g["key"])
            setups = list(pv.get("setups", []))
            if pv["without"]:
                setups.append({"values": {f: "none" for f in TRAINED_FIELDS}, "runs": pv["without"], "dates": [],
                               "sources": []})
            for i, c in enumerate(setups):
                vals = {f: "not recorded" if v == "none" else (short_commit(v) if f == "commit" else v)
                        for f, v in c["values"].items()}
                rows.append({"experiment": g["experiment"], "anchor": g["anchor"], "runs": c["runs"], "fields": vals,
                             "sources": c["sources"], "first": i == 0, "span": len(setups),
                             "dates": _dates(c["dates"])})
    return rows

