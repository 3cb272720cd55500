"""Compare two results.json files claim by claim, timings and the run's environment aside.

    python tools/same_results.py reports/full/results.json build/check/results.json

Exit 0 when every claim (and every other top-level entry but the timings) is equal, else print
the first differences and exit 1. Used to show that a refactor left the full report unchanged.
"""
import json
import sys

TIMING = {"generated", "environment", "wall_s", "experiment_seconds", "training_seconds",
          "training_seconds_total"}


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMING and not k.endswith("_s")}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def main(a_path, b_path) -> int:
    a, b = (json.load(open(p)) for p in (a_path, b_path))
    bad = []
    ca = {(c["file"], c["id"], c.get("reading_id")): c for c in a.get("claims", [])}
    cb = {(c["file"], c["id"], c.get("reading_id")): c for c in b.get("claims", [])}
    for k in sorted(set(ca) | set(cb), key=str):
        if k not in ca or k not in cb:
            bad.append(f"claim {k}: only in {'second' if k in cb else 'first'}")
            continue
        for f in sorted(set(ca[k]) | set(cb[k])):
            if f in TIMING:
                continue
            if strip(ca[k].get(f)) != strip(cb[k].get(f)):
                bad.append(f"claim {k} field {f!r}: {str(ca[k].get(f))[:120]} != {str(cb[k].get(f))[:120]}")
    for f in sorted(set(a) | set(b)):
        if f in TIMING or f == "claims":
            continue
        if strip(a.get(f)) != strip(b.get(f)):
            bad.append(f"top-level {f!r} differs")
    print(f"{len(ca)} claims compared, {len(bad)} differences")
    for line in bad[:40]:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
