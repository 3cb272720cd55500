"""The answer to "does the paper reproduce?": one sentence, then one line per section with a
verdict (reproduces, partly, does not reproduce, inconclusive, not run yet) and why, led by the
claims the paper puts first (`headline = true`). A claim that presupposes a headline
(`depends_on`, e.g. a "second descent" presupposes the peak) is told with that headline and
counts as reproducing only when the headline passes. Readings that were run and change a verdict
are named. Calibration claims (another paper's results, r["source"] set) are answered apart.
Generated from the verdicts; nothing here is written for one run's numbers."""
from __future__ import annotations

import re
from collections import Counter, defaultdict

from .fmt import num
from .misses import miss_text

MISS = ("fail", "diverged")
DECIDED = ("pass", "fail", "diverged")
EVALUATED = ("pass", "fail", "inconclusive", "diverged")
WORDS = {"yes": "reproduces", "partly": "partly reproduces", "no": "does not reproduce",
         "inconclusive": "inconclusive", "waiting": "not run yet"}


def _key(r: dict) -> tuple:
    return (r["file"], r["tier"], r["id"])


def heads_of(claims: list) -> dict:
    """{claim key: the headline record it depends on} for claims with `depends_on`."""
    by = {_key(r): r for r in claims}
    return {_key(r): by[(r["file"], r["tier"], r["depends_on"])] for r in claims
            if r.get("depends_on") and (r["file"], r["tier"], r["depends_on"]) in by}


def moot(r: dict, heads: dict) -> dict | None:
    """The headline a passing claim presupposes when that headline does not pass (so the claim's
    pass says nothing on its own); None otherwise."""
    h = heads.get(_key(r))
    return h if h is not None and h["verdict"] != "pass" else None


def evidence(r: dict) -> str:
    """What was measured against the paper, in a few words."""
    mt, vs = r.get("measured_text"), r.get("vs_paper")
    if r["verdict"] == "not run":
        return "not run yet"
    if mt and vs is not None:
        return f"measured {mt['value']} against the paper's {r['paper_text']} ({vs['text']})"
    if r.get("explanation"):
        return r["explanation"]
    return r.get("detail", "")


def _short(statement: str) -> str:
    """A claim's statement up to its first colon, in lower case where it starts a sentence."""
    s = statement.split(": ")[0]
    return s[0].lower() + s[1:] if s[:2] != s[:2].upper() else s


def section_verdict(claims: list, heads: dict) -> str:
    """yes / partly / no / inconclusive / waiting for one section's claims (headlines decide where
    they were measured; a moot dependent counts for nothing)."""
    counted = [r for r in claims if not moot(r, heads)]
    ev = [r for r in counted if r["verdict"] in EVALUATED]
    if not ev:
        return "waiting"
    hv = [r for r in ev if r.get("headline")]
    pool = hv or ev
    p = sum(r["verdict"] == "pass" for r in pool)
    f = sum(r["verdict"] in MISS for r in pool)
    if not p and not f:
        return "inconclusive"
    if not p:
        return "no"
    if f:
        return "partly"
    others = [r for r in ev if r not in pool]
    if any(r["verdict"] in MISS for r in others) or any(r["verdict"] == "not run" for r in claims if r.get("headline")):
        return "partly"
    return "yes"


def section_line(sec: dict, claims: list, heads: dict, changes: list) -> dict:
    """{'verdict', 'word', 'why', 'headlines': [...]} for one section."""
    v = section_verdict(claims, heads)
    why = []
    hs = [r for r in claims if r.get("headline")]
    said = {"pass": "reproduces", "not run": "not run yet", "fail": "fails"}
    for h in sorted(hs, key=lambda r: r["verdict"] == "pass"):
        text = f"headline “{_short(h['statement'])}” {said.get(h['verdict'], h['verdict'])}"
        passing = [r["id"] for r in claims if heads.get(_key(r)) is h and r["verdict"] == "pass"]
        if passing and h["verdict"] != "pass":
            one = len(passing) == 1
            text += (f" ({', '.join(passing)} pass{'es' if one else ''} but presuppose{'s' if one else ''} it: "
                     f"not counted)")
        why.append(text)
    counted = [r for r in claims if not moot(r, heads) and not r.get("headline")]
    ev = [r for r in counted if r["verdict"] in EVALUATED]
    if ev:
        n_pass = sum(r["verdict"] == "pass" for r in ev)
        free = all(r.get("training_free") for r in ev)
        why.append(f"{'other claims' if hs else 'claims'}: {n_pass} of {len(ev)} "
                   + ("pass (counted from the architecture, nothing trained)" if free else "measured pass"))
    waiting = sum(r["verdict"] == "not run" for r in claims)
    if waiting and waiting < len(claims):
        why.append(f"{waiting} not run yet")
    elif waiting:
        why.append(f"none of its {waiting} claims has run")
    why += changes
    return {"name": sec["name"], "title": sec["title"], "anchor": sec["anchor"], "verdict": v,
            "word": WORDS[v], "why": "; ".join(why) + ".",
            "headlines": [{"id": r["id"], "anchor": r["anchor"], "statement": r["statement"], "verdict": r["verdict"],
                           "paper": r.get("paper_text") or r.get("paper"), "measured": evidence(r)} for r in hs]}


def fit_words(row: dict, claims: list = ()) -> str:
    """A fit's sum with its largest term's share (a sum one claim dominates says little of the
    others), and that claim's tolerance unit where its result is among `claims`."""
    text = f"{row['sum_sq']:.3g}"
    if row.get("largest") and row["sum_sq"] > 0:
        cid, z = row["largest"][0]
        r = next((r for r in claims if r["id"] == cid and r.get("vs_paper") and z), None)
        unit = (f" units of {abs(r['vs_paper']['d'] / z):.2g} {'pp' if r.get('unit') == '%' else r.get('unit', '')}"
                .rstrip() if r else "")
        text += f" ({100 * z * z / row['sum_sq']:.0f}% of it {cid}, at {z:+.2f}{unit})".replace("at -", "at −")
    return text


def outside_words(reading: str, outside: dict) -> str:
    """'; epochs=20 lies outside the stated 60-80 epochs (IV-D)' for a reading's values beyond
    what the paper states ('' where none is)."""
    return "".join(f"; {pair} lies outside {outside[pair]}" for pair in reading.split(",") if pair in outside)


def outside_of(exp_docs: dict | None, exp: str) -> dict:
    """{reading pair: the paper's stated range it lies outside} of an experiment[tier]."""
    return ((exp_docs or {}).get(exp) or {}).get("outside") or {}


def reading_changes(claims: list, readings_doc: dict, exp_docs: dict | None = None) -> dict:
    """Per experiment[tier], the sentences on readings that were run and change a verdict: the
    readings under which claims failing under the primary pass, and the best fit to the paper."""
    out = defaultdict(list)
    failing = defaultdict(list)
    for r in claims:
        failing[f"{r['experiment']}[{r['tier']}]"].append(r)
    turned = defaultdict(lambda: defaultdict(list))  # experiment -> reading -> claims it turns to pass
    ran = defaultdict(set)
    for key, c in (readings_doc.get("claims") or {}).items():
        exp = f"{c['experiment']}[{c['tier']}]"
        prim = next((row for row in c["rows"] if row["reading"] == "primary"), None)
        for row in c["rows"]:
            if row["reading"] != "primary" and row["verdict"] in EVALUATED:
                ran[exp].add(row["reading"])
                if prim and prim["verdict"] in MISS + ("inconclusive",) and row["verdict"] == "pass":
                    turned[exp][row["reading"]].append(key.split("::")[1].split("[")[0])
    verdicts = defaultdict(lambda: defaultdict(dict))  # exp -> reading -> claim key -> verdict
    for key, c in (readings_doc.get("claims") or {}).items():
        for row in c["rows"]:
            verdicts[f"{c['experiment']}[{c['tier']}]"][row["reading"]][key] = row["verdict"]
    counts = {exp: {name: Counter(by.values()) for name, by in v.items()} for exp, v in verdicts.items()}
    for exp, by in turned.items():
        fit = (readings_doc.get("fit") or {}).get(exp) or []
        prim = next((f for f in fit if f["primary"]), None)
        best = sorted(ran[exp], key=lambda name: (-counts[exp][name]["pass"], name))[0]
        shown = [best] + ([fit[0]["reading"]] if fit and not fit[0]["primary"] and fit[0]["reading"] != best else [])
        # the primary is counted on the claims each shown reading measured (a reading may lack some)
        measured = {name: {k for k, v in verdicts[exp][name].items() if v in EVALUATED} for name in shown}
        same = len({frozenset(keys) for keys in measured.values()}) == 1
        parts = []
        for name in shown:
            c = counts[exp][name]
            n = sum(c[v] for v in EVALUATED)
            on = [verdicts[exp]["primary"].get(k) for k in measured[name]]
            against = (f"{on.count('pass')} of {sum(v in EVALUATED for v in on)} under the primary"
                       + ("" if same else " on the same claims"))
            parts.append(f"under {name}, {c['pass']} of {n} pass" + (f" ({c['inconclusive']} inconclusive)"
                                                                    if c["inconclusive"] else "")
                         + ("" if same else f", against {against}"))
        text = (f"readings run for {exp.split('[')[0]} ({len(ran[exp])}): " + "; ".join(parts)
                + (f", against {against}" if same else ""))
        if fit and prim and not fit[0]["primary"]:
            outside = outside_of(exp_docs, exp)
            text += (f"; best fit to the paper's numbers: {fit[0]['reading']}, sum of squared misses in tolerance "
                     f"units {fit_words(fit[0])}, against {fit_words(prim, failing[exp])} for the primary"
                     + outside_words(fit[0]["reading"], outside))
        if fit and prim and any(f["missing"] for f in fit) and prim["shared_n"]:
            # readings lacking claims rank after complete ones; compare all on the claims they share
            near = min(fit, key=lambda f: (f["shared_sum_sq"], f["reading"]))
            if not near["primary"]:
                text += (f"; on the {prim['shared_n']} claims with a paper value that every reading run measured, "
                         f"closest to the paper: {near['reading']} (sum of squared misses in tolerance units "
                         f"{num(near['shared_sum_sq'], digits=3)}, against {num(prim['shared_sum_sq'], digits=3)} "
                         f"for the primary)" + outside_words(near["reading"], outside_of(exp_docs, exp)))
        out[exp].append(text)
    return dict(out)


def answer(sections: list, readings_doc: dict, exp_docs: dict | None = None, calib: dict | None = None) -> dict:
    """{'sentence', 'misses': [what each failing headline measured, misses.miss_text], 'lines':
    [the context lines after it, each {'text', 'anchor'}: the calibration's; a further tier's
    verdicts join here], 'sections': [section lines], 'headlines': [...]} for the paper's claims
    (the sections given exclude calibration claims; `calib` is `calibration`'s block)."""
    claims = [r for sec in sections for g in sec["groups"] for r in g["claims"]]
    heads = heads_of(claims)
    changes = reading_changes(claims, readings_doc, exp_docs)
    lines = []
    for sec in sections:
        mine = [r for g in sec["groups"] for r in g["claims"]]
        exps = list(dict.fromkeys(f"{r['experiment']}[{r['tier']}]" for r in mine))
        lines.append(section_line(sec, mine, heads, [c for e in exps for c in changes.get(e, [])]))
    hs = [r for r in claims if r.get("headline")]
    hp = [r for r in hs if r["verdict"] == "pass"]
    hf = [r for r in hs if r["verdict"] in MISS]
    hw = [r for r in hs if r["verdict"] == "not run"]
    hi = [r for r in hs if r["verdict"] not in DECIDED + ("not run",)]
    if not hs:
        sentence = None
    elif not hp and not hf:
        sentence = "Not known yet: none of the paper's headline claims has been decided."
    else:
        lead = "Yes" if not hf and not hw and not hi else "No" if not hp else "Partly"
        parts = [f"{len(hp)} of the paper's {len(hs)} headline claims reproduce"]
        if hf:
            parts.append(f"{len(hf)} do{'es' if len(hf) == 1 else ''} not")
        if hi:
            parts.append(f"{len(hi)} {'is' if len(hi) == 1 else 'are'} inconclusive")
        if hw:
            parts.append(f"{len(hw)} {'has' if len(hw) == 1 else 'have'} not run yet")
        sentence = f"{lead}: " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] + "."
    exp_docs = exp_docs or {}
    misses = [{"id": r["id"], "anchor": r["anchor"], "section": r["section"],
               "text": miss_text(r, claims, readings_doc, exp_docs.get(f"{r['experiment']}[{r['tier']}]"))} for r in hf]
    return {"sentence": sentence, "misses": misses, "lines": [calibration_line(calib)] if calib else [],
            "sections": lines,
            "headlines": [{"id": r["id"], "anchor": r["anchor"], "section": r["section"], "statement": r["statement"],
                           "verdict": r["verdict"], "paper": r.get("paper_text") or "—", "evidence": evidence(r),
                           "measured": (r.get("measured_text") or {}).get("value") or "—"}
                          for r in sorted(hs, key=lambda r: r["verdict"] == "pass")]}


def calibration_line(cal: dict) -> dict:
    """The calibration as one line of the answer, linked to its section."""
    if not cal["evaluated"]:
        return {"text": cal["sentence"], "anchor": "calibration", "link": "Calibration"}
    u = cal["inconclusive"]
    return {"anchor": "calibration", "link": "Calibration",
            "text": (f"Before these verdicts, the harness reproduced {cal['pass']} of {cal['evaluated']} results of "
                     f"{len(cal['sources'])} other papers through the same code ("
                     + (f"{len(cal['misses'])} missed" if cal["misses"] else "none missed")
                     + (f", {u} inconclusive" if u else "") + ").")}


def calibration(claims: list, runs: dict | None = None) -> dict | None:
    """The calibration block: claims that reproduce another paper's results (r["source"] set),
    counted apart from this paper's, and per claim file its runs (`runs`: {file: {'runs',
    'seconds', 'provenance'}}); None when there are none."""
    if not claims:
        return None
    ev = [r for r in claims if r["verdict"] in EVALUATED]
    sources = sorted({r["source"] for r in claims})
    if not ev:
        sentence = (f"{len(claims)} calibration claims (other papers' results: {'; '.join(sources)}) "
                    f"are declared, and none has run yet.")
    else:
        p = sum(r["verdict"] == "pass" for r in ev)
        f = [r for r in ev if r["verdict"] in MISS]
        sentence = (f"The harness reproduces {p} of {len(ev)} calibration results measured "
                    f"({len(claims)} declared, from {'; '.join(sources)})"
                    + (f"; it misses {', '.join(r['id'] for r in f)}" if f else "; none fails")
                    + (f"; {', '.join(r['id'] for r in u)} {'is' if len(u) == 1 else 'are'} inconclusive "
                       "(more seeds would decide)" if (u := [r for r in ev if r["verdict"] == "inconclusive"]) else "")
                    + ". These are other papers' results, counted apart from this paper's.")
    return {"sentence": sentence, "n": len(claims), "evaluated": len(ev),
            "pass": sum(r["verdict"] == "pass" for r in ev), "sources": sources,
            "validates": {r["source"]: r["validates"] for r in claims if r.get("validates")},
            "misses": [r["id"] for r in ev if r["verdict"] in MISS],
            "inconclusive": sum(r["verdict"] == "inconclusive" for r in ev),
            "claims": [_calibration_row(r) for r in claims],
            "files": [{"file": f, "source": next(r["source"] for r in claims if r["file"] == f),
                       **((runs or {}).get(f) or {"runs": 0, "seconds": 0.0, "provenance": {}})}
                      for f in dict.fromkeys(r["file"] for r in claims)],
            "runs": sum(c["runs"] for c in (runs or {}).values()),
            "seconds": sum(c["seconds"] for c in (runs or {}).values())}


def stated(r: dict) -> bool | None:
    """Whether the source states the claim's paper value as a number (it is in the source's quoted
    words, e.g. 21.1, 2.51) rather than our reading of its words or a value derived from them (0.62
    for '38% earlier', 1.126 the ratio of our step sizes); None where there is no paper value."""
    v = r.get("paper_value")
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    return re.search(rf"(?<![\d.]){re.escape(f'{v:g}')}(?![\d])", r.get("paper") or "") is not None


def _calibration_row(r: dict) -> dict:
    """One row of the calibration table: the source's value (stated by it or our reading of its
    words), the band (ours, where its `why` says so), the estimate with its CI."""
    mt = r.get("measured_text") or {}
    return {"id": r["id"], "source": r["source"], "statement": r["statement"], "stated": stated(r),
            "band_ours": (r.get("why") or "").startswith("Ours"), "why": r.get("why") or "",
            "paper": r.get("paper_text") or r.get("paper") or "—", "expected": r.get("expected_text") or "—",
            "measured": mt.get("value") or "—", "ci": mt.get("ci") or "", "n": mt.get("n"),
            "verdict": r["verdict"], "file": r["file"]}
