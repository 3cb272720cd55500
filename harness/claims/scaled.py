"""The scaled tier in the report: the paper's GPU sections run at a CPU's scale, answered apart
from the paper's own verdicts so that no reader takes one for the other.

Its claims (tier "scaled") never enter the paper's sentence, counts or headline tally. They form
one block: a sentence with the share of the paper's compute they stand on, per section the
scale, the share and each claim's verdict with its pre-registration status, the headline
statements it answers, and the claims of those sections that have no scaled version because
they are tied to the paper's absolute numbers ("needs the paper's scale").
"""
from __future__ import annotations

from collections import Counter

from .findings import EVALUATED

TIER = "scaled"


def compute_share(exp) -> float | None:
    """The scaled tier's training FLOPs as a fraction of the full tier's, for one experiment (as
    the planner costs them: a ticket chain with every round)."""
    from ..execute import planner
    if TIER not in exp.tiers or "full" not in exp.tiers or exp.procedure == "count":
        return None
    cost = {t: sum(g.flops for g in planner.groups([(exp, t)], "cpu")) for t in (TIER, "full")}
    return cost[TIER] / cost["full"] if cost["full"] else None


def share_text(share: float | None) -> str:
    return f"about 1/{round(1 / share):,} of the paper's compute" if share else "a share of the paper's compute not known"


def _row(r: dict) -> dict:
    mt = r.get("measured_text") or {}
    return {"id": r["id"], "anchor": r.get("anchor"), "statement": r["statement"], "verdict": r["verdict"],
            "expected": r.get("expected_text") or "—", "why": r.get("why") or "", "headline": bool(r.get("headline")),
            "measured": mt.get("value") or "—", "ci": mt.get("ci") or "", "n": mt.get("n"),
            "detail": r.get("detail") or "", "prereg": (r.get("prereg") or {}).get("words", ""),
            "file": r["file"], "experiment": r["experiment"]}


def _counts_text(c: Counter, ev: int) -> str:
    parts = [f"{c['pass']} of {ev} measured hold"]
    if c["fail"] + c["diverged"]:
        parts.append(f"{c['fail'] + c['diverged']} do{'es' if c['fail'] + c['diverged'] == 1 else ''} not")
    if c["inconclusive"]:
        parts.append(f"{c['inconclusive']} {'is' if c['inconclusive'] == 1 else 'are'} inconclusive")
    if c["not run"]:
        parts.append(f"{c['not run']} {'has' if c['not run'] == 1 else 'have'} not run yet")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def block(claims: list, files: dict, paper_claims: list, runs: dict | None = None) -> dict | None:
    """The scaled tier's block from its claim records (`claims`), the loaded claim files
    (`files`: {file: parsed.ClaimFile}), the paper-scale records (`paper_claims`: the headlines
    the scaled statements answer for) and its runs ({'runs', 'seconds', 'provenance'}); None
    without scaled claims."""
    if not claims:
        return None
    by_name = {e.name: e for f in files.values() for e in f.experiments.values()}
    sections = []
    for r in claims:
        if not sections or sections[-1]["name"] != r["section"]:
            sections.append({"name": r["section"], "title": r["title"], "claims": [], "experiments": {}})
        sec = sections[-1]
        sec["claims"].append(_row(r))
        exp = by_name.get(r["experiment"].split(":")[-1])
        if exp is not None and exp.name not in sec["experiments"]:
            share = compute_share(exp)
            sec["experiments"][exp.name] = {"name": exp.name, "scale": exp.tiers.get(TIER, {}).get("scale", ""),
                                            "share": share, "share_text": share_text(share)}
    scaled_ids = {(r["file"], r["id"]) for r in claims}
    notes = {}
    for sec in sections:
        mine = dict.fromkeys(r["file"] for r in claims if r["section"] == sec["name"])
        # the claims of these files with no scaled version: tied to the paper's absolute numbers
        sec["needs_scale"] = [{"id": c.id, "statement": c.statement} for f in mine if f in files
                              for c in files[f].claims
                              if "full" in c.tiers and TIER not in c.tiers and (f, c.id) not in scaled_ids]
        c = Counter(x["verdict"] for x in sec["claims"])
        ev = sum(c[v] for v in EVALUATED)
        sec["counts"], sec["experiments"] = dict(c), list(sec["experiments"].values())
        shares = sorted({x["share_text"] for x in sec["experiments"]})
        sec["where"] = "; ".join(shares)
        notes[sec["name"]] = (f"at reduced scale ({' / '.join(shares)}, scaled tier): "
                              + (_counts_text(c, ev) if ev else f"its {len(sec['claims'])} scaled claims have not run yet"))
    c = Counter(r["verdict"] for r in claims)
    ev = sum(c[v] for v in EVALUATED)
    shares = [x["share"] for s in sections for x in s["experiments"] if x["share"]]
    lo, hi = (min(shares), max(shares)) if shares else (None, None)
    where = (share_text(hi) if lo and round(1 / lo) == round(1 / hi) else
             f"1/{round(1 / hi):,} to 1/{round(1 / lo):,} of the paper's compute" if lo else "a smaller scale")
    # the paper's headlines not decided at its scale, and what the scaled tier says of each
    scaled_by = {(r["file"], r["id"]): r for r in claims}
    heads = []
    for h in paper_claims:
        if not h.get("headline") or h["verdict"] not in ("not run",):
            continue
        s_r = scaled_by.get((h["file"], h["id"]))
        if s_r is not None:
            heads.append({"id": h["id"], "statement": h["statement"], "verdict": s_r["verdict"],
                          "anchor": s_r.get("anchor"), "expected": s_r.get("expected_text") or "",
                          "measured": (s_r.get("measured_text") or {}).get("value") or "—"})
        else:
            same = [r for r in claims if r["experiment"].split(":")[-1] == h["experiment"].split(":")[-1]]
            sc = Counter(r["verdict"] for r in same)
            heads.append({"id": h["id"], "statement": h["statement"], "verdict": "needs the paper's scale",
                          "anchor": None, "expected": "", "measured": "—",
                          "related": (f"its experiment's scaled claims: {_counts_text(sc, sum(sc[v] for v in EVALUATED))}"
                                      if same and sum(sc[v] for v in EVALUATED) else "")})
    said = {"pass": "holds at this scale", "fail": "fails at this scale", "diverged": "diverged at this scale",
            "inconclusive": "is inconclusive at this scale", "error": "is an error", "not run": "has not run yet",
            "needs the paper's scale": "needs the paper's scale"}
    head_words = "; ".join(f"“{x['statement']}” {said.get(x['verdict'], x['verdict'])}"
                           + (f" ({x['related']})" if x.get("related") else "") for x in heads)
    if not ev:
        sentence = f"The scaled tier ({len(claims)} claims pre-registered at {where}) has not run yet."
    else:
        sentence = (f"At reduced scale ({where}; the scaled tier, {len(claims)} claims pre-registered before their "
                    f"runs), {_counts_text(c, ev)}. These say whether the paper's statements survive a smaller "
                    f"scale; they are not the paper's verdicts.")
    answer_line = sentence + (f" Of the headlines not run at the paper's scale: {head_words}." if heads else "")
    return {"sentence": sentence, "answer_line": answer_line, "n": len(claims), "evaluated": ev, "counts": dict(c),
            "sections": sections, "headlines": heads, "where": where, "notes": notes,
            "needs_scale": sum(len(s["needs_scale"]) for s in sections),
            "runs": (runs or {}).get("runs", 0), "seconds": (runs or {}).get("seconds", 0.0),
            "provenance": (runs or {}).get("provenance") or {}}
