"""The report's Markdown summary, beside report.html (SUMMARY.md), for a repository page or a CI
job summary ($GITHUB_STEP_SUMMARY): the answer in one sentence with what each failing headline
measured and its context lines (the calibration's), one line per section with its verdict, every
failing headline with the paper's value against the measured one, the claims counted, what has not
run with its cost and command, and the calibration. A repository page shows report.html as source,
so sections link to their claim files (relative to the summary's folder); report.html is named
once, to be opened from a checkout or a CI artifact."""
from __future__ import annotations

import os
from pathlib import Path

from .plans import duration, pflop_text


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _files(doc: dict) -> dict:
    """{section anchor: its claim file}."""
    out = {}
    for r in doc["claims"]:
        out.setdefault(r.get("section_anchor") or r["section"], r["file"])
    return out


def markdown(doc: dict, html_name: str = "report.html", base: str = ".") -> str:
    """`base`: the path from the summary's folder to the folder claim files are named from."""
    a, cal = doc["answer"], doc.get("calibration")
    files = _files(doc)

    def link(file):
        return (Path(base) / file).as_posix()
    out = ["# Reproduction summary", "", "## Does the paper reproduce?", ""]
    if a.get("sentence"):
        out += [f"**{a['sentence']}**", ""]
    for m in a.get("misses", []):
        out.append(f"- {m['section']}: {m['text']}.")
    if a.get("misses"):
        out.append("")
    for line in a.get("lines", []):
        out += [f"{line['text']} See [{line['link']}](#{line['anchor']}) below.", ""]
    for line in a["sections"]:
        why = line["why"][0].upper() + line["why"][1:]
        f = files.get(line["name"])
        name = f"[{line['name']} · {line['title']}]({link(f)})" if f else f"{line['name']} · {line['title']}"
        out.append(f"- {name}: **{line['word']}**. {why}")
    failing = [h for h in a["headlines"] if h["verdict"] in ("fail", "diverged", "inconclusive")]
    if failing:
        out += ["", "## Headline claims that do not reproduce", "",
                "| claim | section | paper | measured | verdict |", "|---|---|---|---|---|"]
        out += [f"| {_cell(h['statement'])} (`{h['id']}`) | {_cell(h['section'])} | {_cell(h['paper'])} "
                f"| {_cell(h['evidence'])} | {h['verdict']} |" for h in failing]
    t = doc["totals"]
    out += ["", f"All {doc['n_claims']} claims: " + ", ".join(f"{t[v]} {v}" for v in doc["verdicts"] if t.get(v)) + "."]
    out += [f"{s}" for s in doc["findings"]["overall"][:1]]
    waiting = doc.get("waiting") or []
    if waiting:
        m_all = doc.get("missing_total") or {}
        out += ["", "## What has not run", "", doc["findings"]["not_run"], "",
                "| experiment | claims | runs to train | training | command |", "|---|---|---|---|---|"]
        for e in waiting:
            m = e["missing"] or {}
            runs = str(m.get("trains", "—")) + (f" ({m['runs']} dense)" if m.get("trains", m.get("runs")) != m.get("runs") else "") \
                + (f"; {m['trains'] - m['new']} counted under {', '.join(m['shared_with'])}" if m.get("shared_with") else "")
            est = e.get("gpu_estimate")
            out.append(f"| `{e['experiment']}` | {e['verdicts']['not run']} | {runs} | {m.get('pflop_text', '—')}"
                       + (f", about {duration(est['s'])} (estimate)" if est else "") + f" | `{e['command']}` |")
        out.append(f"| total | {sum(e['verdicts']['not run'] for e in waiting)} | {m_all.get('runs')} (each once) | "
                   f"{pflop_text(m_all.get('pflop', 0.0))}"
                   + (f", about {duration(m_all['estimate']['s'])} (estimate)" if m_all.get("estimate") else "") + " | |")
    sc = doc.get("scaled")
    if sc:
        out += ["", "## Scaled tier (not the paper's verdicts)", "", sc["sentence"], ""]
        for x in sc["headlines"]:
            out.append(f"- Headline “{x['statement']}” (not run at the paper's scale): **{x['verdict']}**"
                       + (f" at this scale, measured {x['measured']} against {x['expected']}" if x["measured"] != "—" else "")
                       + (f"; {x['related']}" if x.get("related") else "") + ".")
        out += ["", "| claim | section | scale | expected | measured | verdict |", "|---|---|---|---|---|---|"]
        for sec in sc["sections"]:
            out += [f"| {_cell(c['statement'])} (`{c['id']}`) | {_cell(sec['name'])} | {_cell(sec['where'])} "
                    f"| {_cell(c['expected'])} | {_cell(c['measured'])}{' ' + _cell(c['ci']) if c['ci'] else ''} "
                    f"| {c['verdict']} |" for c in sec["claims"]]
    if cal:
        out += ["", "## Calibration", "", cal["sentence"]]
    out += ["", f"The full report: `{html_name}` beside this file (a repository page shows it as source: open it "
                f"from a checkout); machine-readable: [results.json](results.json).", ""]
    return "\n".join(out)


def write(doc: dict, out_dir) -> Path:
    """SUMMARY.md in `out_dir`; also appended to $GITHUB_STEP_SUMMARY where that is set."""
    path = Path(out_dir) / "SUMMARY.md"
    text = markdown(doc, base=os.path.relpath(".", out_dir))
    path.write_text(text)
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        with open(step, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return path
