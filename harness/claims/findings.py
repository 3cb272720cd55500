"""The findings: the answer in words, generated from the verdicts, readings and plans (an overall
paragraph, and per section what reproduces, what does not and by how much, what the readings say,
what is training-free and what has not run)."""
from __future__ import annotations

from collections import Counter, defaultdict

from .fmt import metric_label
from .kinds import kind
from .plans import duration, pflop_text
from .answer import heads_of, moot
from .words import type_words

VERDICTS = ("pass", "fail", "inconclusive", "diverged", "error", "not run")


EVALUATED = ("pass", "fail", "inconclusive", "diverged")  # a verdict from measured runs


MISSES = ("fail", "diverged")  # what the findings count as "does not reproduce"



def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _list(items: list) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _misses(fails: list, passes: list, declared: dict) -> list:
    """Sentences on the claims that fail: grouped by experiment, metric and direction; three or
    more in one group are summarised (with a note where a slope or ratio on the same metric passes:
    a constant factor), fewer are named one by one; the largest misses first."""
    groups = defaultdict(list)
    for r in fails:
        v = r.get("vs_paper")
        groups[(r["experiment"], r["check"]["metric"], None if v is None else v["d"] > 0)].append(r)

    def size(g):
        return max(abs(r.get("z") or 0) for r in g)
    out = []
    for (exp, metric, up), g in sorted(groups.items(), key=lambda kv: -size(kv[1])):
        label = metric_label(metric)[0]
        if up is not None and len(g) >= 3:
            vs = [r["vs_paper"] for r in g]
            if g[0]["unit"] == "%":
                lo, hi = min(abs(v["d"]) for v in vs), max(abs(v["d"]) for v in vs)
                rng = f"{lo:.1f} pp" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f} to {hi:.1f} pp"
            else:
                rels = [abs(v["rel"]) for v in vs if v["rel"] is not None]
                lo, hi = (min(rels), max(rels)) if rels else (0, 0)
                rng = f"{100 * lo:.0f}% to {100 * hi:.0f}%"
            text = (f"{label[0].upper() + label[1:]} ({exp}) misses the paper in {len(g)} claims, every one "
                    f"{'above' if up else 'below'} it, by {rng}")
            same = [type_words(r["check"]) for r in passes
                    if r["experiment"] == exp and r["check"]["metric"] == metric
                    and kind(r["check"]).scale_free]
            if same and g[0]["unit"] != "%" and lo > 0 and hi / lo <= 1.5:
                same = list(dict.fromkeys(same))
                text += (f", while its {_list(same)} pass{'es' if len(same) == 1 else ''}: the same factor at every "
                         f"configuration (about ×{1 + (lo + hi) / 2 * (1 if up else -1):.2f}), so the trend "
                         f"reproduces and the level does not")
                if declared:
                    text += f"; the experiment declares readings of {_list(sorted(declared))} that could account for it"
            out.append(text + ".")
            continue
        for r in sorted(g, key=lambda r: -abs(r.get("z") or 0)):
            v, mt = r.get("vs_paper"), r.get("measured_text")
            if v is not None and mt:
                out.append(f"{r['statement']}: measured {mt['value']} against the paper's {r['paper_text']} ({v['text']}).")
            elif r["verdict"] == "diverged":
                out.append(f"{r['statement']}: a run diverged.")
            else:
                out.append(f"{r['statement']}: {r.get('explanation') or r.get('detail', '')}.")
    return out


def _reproduced(passes: list) -> str:
    by = defaultdict(list)
    for r in passes:
        by[metric_label(r["check"]["metric"])[0]].append(r["check"])
    parts = []
    for label, checks_ in by.items():
        other = [type_words(c) for c in {c["type"]: c for c in checks_}.values() if not kind(c).level]
        parts.append(f"{label} ({_plural(len(checks_), 'claim')}" + (f"; {_list(other)}" if other else "") + ")")
    return _list(parts)


def findings(sections: list, exps: dict, readings_doc: dict, total: dict | None = None) -> dict:
    """The answer in words, generated from the verdicts, readings and plans (nothing here is
    written for one run's numbers): an overall paragraph, and per section what reproduces, what
    does not and by how much, what the readings say, what is training-free and what has not run."""
    claims = [r for sec in sections for g in sec["groups"] for r in g["claims"]]
    trained = [r for r in claims if not r["training_free"]]
    free = [r for r in claims if r["training_free"]]
    tv, fv = Counter(r["verdict"] for r in trained), Counter(r["verdict"] for r in free)
    overall = []
    n_eval = sum(tv[v] for v in EVALUATED)
    heads = heads_of(claims)
    n_moot = sum(r["verdict"] == "pass" and bool(moot(r, heads)) for r in trained)
    if n_eval:
        n_ok = tv["pass"] - n_moot
        s = (f"Of the {_plural(n_eval, 'claim')} measured on trained models, {n_ok} reproduce"
             f"{'s' if n_ok == 1 else ''} and {tv['fail'] + tv['diverged']} do not")
        if n_moot:
            s += (f"; {n_moot} more pass{'es' if n_moot == 1 else ''} but presuppose{'s' if n_moot == 1 else ''} "
                  f"a headline claim that does not pass, and {'is' if n_moot == 1 else 'are'} not counted")
        if tv["inconclusive"]:
            s += f"; {tv['inconclusive']} {'is' if tv['inconclusive'] == 1 else 'are'} inconclusive (more seeds needed)"
        if tv["diverged"]:
            s += f" ({tv['diverged']} of them diverged)"
        overall.append(s + ".")
    elif trained:
        overall.append("No claim that needs training has been measured yet.")
    if free:
        fe = sum(fv[v] for v in EVALUATED)
        overall.append(f"{_plural(len(free), 'training-free claim')} (counted from the architecture, nothing trained): "
                       + ("all pass." if fv["pass"] == len(free) else
                          ", ".join(f"{fv[v]} {v}" for v in VERDICTS if fv.get(v)) + "." if fe or fv else ""))
    waiting = [e for e in exps.values() if e["verdicts"].get("not run")]
    if waiting:
        pf = sum((e["missing"] or {}).get("pflop", 0.0) for e in waiting)
        runs = sum((e["missing"] or {}).get("runs", 0) for e in waiting)
        if total is not None:  # a run two experiments share counts once
            pf, runs = total["pflop"], total["runs"]
        est = (total or {}).get("estimate")
        n_waiting = sum(e['verdicts']['not run'] for e in waiting)
        not_run = (f"{_plural(n_waiting, 'claim')} in {_plural(len(waiting), 'experiment')} "
                   f"ha{'s' if n_waiting == 1 else 've'} not run: {_plural(runs, 'run')} to train"
                   + (" (a ticket chain's pruning rounds counted as runs, a run two experiments share once)"
                      if total is not None else "")
                   + (f", {pflop_text(pf)}" if pf else "")
                   + (f"; about {duration(est['s'])} of GPU training, estimated at {est['rate']}" if est else "") + ".")
        overall.append(not_run)
        out_not_run = not_run
    if tv["error"] + fv["error"]:
        overall.append(f"{_plural(tv['error'] + fv['error'], 'claim')} could not be evaluated (error).")
    out = {"overall": overall, "sections": [], "not_run": out_not_run if waiting else ""}
    described = set()  # experiments whose readings are already told (a control section reuses them)
    for sec in sections:
        mine = [r for g in sec["groups"] for r in g["claims"]]
        tr = [r for r in mine if not r["training_free"]]
        fr = [r for r in mine if r["training_free"]]
        c = Counter(r["verdict"] for r in tr)
        lines = []
        if fr:
            cf = Counter(r["verdict"] for r in fr)
            lines.append(f"{_plural(len(fr), 'training-free claim')} (parameter counts, nothing trained): "
                         + ("all pass." if cf["pass"] == len(fr) else
                            ", ".join(f"{cf[v]} {v}" for v in VERDICTS if cf.get(v)) + "."))
        ev = sum(c[v] for v in EVALUATED)
        if ev:
            lines.append(f"Of {_plural(ev, 'claim')} measured on trained models, {c['pass']} "
                         f"reproduce{'s' if c['pass'] == 1 else ''}, {c['fail'] + c['diverged']} do not"
                         + (f", {c['inconclusive']} inconclusive" if c["inconclusive"] else "") + ".")
        passes = [r for r in tr if r["verdict"] == "pass" and not moot(r, heads)]
        if passes:
            lines.append(f"Reproduced: {_reproduced(passes)}.")
        for r in tr:
            h = r["verdict"] == "pass" and moot(r, heads)
            if h:
                lines.append(f"{r['statement']} ({r['id']}) passes, but it presupposes the headline "
                             f"{h['id']}, which {'has not run' if h['verdict'] == 'not run' else 'does not pass'}: "
                             f"not counted as reproducing.")
        declared = {}
        for g in sec["groups"]:
            declared.update(exps[g["key"]]["declared"])
        lines += _misses([r for r in tr if r["verdict"] in MISSES], passes, declared)
        inc = [r for r in tr if r["verdict"] == "inconclusive"]
        if inc:
            need = [r["seeds_needed"] for r in inc if isinstance(r.get("seeds_needed"), int)]
            lines.append(f"Inconclusive (the 95% interval straddles a band edge): {_list([r['id'] for r in inc])}"
                         + (f"; about {max(need)} seeds would settle {'it' if len(inc) == 1 else 'them'}" if need else "")
                         + ".")
        err = [r for r in mine if r["verdict"] == "error"]
        if err:
            lines.append(f"Could not be evaluated (error): {_list([r['id'] for r in err])}.")
        rsec = (readings_doc.get("sections") or {}).get(f"{sec['name']} {sec['title']}")
        if rsec:
            lines.append(f"Readings: {rsec['sentence']}.")
        done = set()
        for g in sec["groups"]:
            if g["key"] in done:
                continue
            done.add(g["key"])
            e = exps[g["key"]]
            plan = e["plan"] or {}
            waiting = sum(r["verdict"] == "not run" for x in sec["groups"] if x["key"] == g["key"] for r in x["claims"])
            if waiting:
                m = e["missing"] or {}
                lines.append(f"Not run: {_plural(waiting, 'claim')} of {e['experiment']}"
                             + (f" ({m['runs']} of {m['of']} runs missing" + (f", {pflop_text(m['pflop'])}" if m.get("pflop") else "")
                                + ")" if m else "") + ".")
            if plan.get("readings") and not rsec and g["key"] not in described:
                described.add(g["key"])
                new = [x for x in plan["readings"] if x["runs"]]
                lines.append(f"Readings of {e['experiment']}: {_plural(len(plan['readings']), 'other reading')} declared "
                             f"({_list(sorted(e['declared']))}), none run yet"
                             + (f"; together they train {_plural(sum(x['runs'] for x in new), 'more run')}, "
                                f"{pflop_text(sum(x['pflop'] for x in new))}" if new else "") + ".")
        out["sections"].append({"name": sec["name"], "title": sec["title"], "anchor": sec["anchor"], "lines": lines})
    return out

