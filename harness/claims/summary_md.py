"""The report's Markdown summary, beside report.html (SUMMARY.md), for a repository page or a CI
job summary ($GITHUB_STEP_SUMMARY): the calibration sentence where there are calibration claims,
the answer in one sentence, one line per section with its verdict, every failing headline claim
with the paper's value against the measured one, and links into report.html."""
from __future__ import annotations

import os
from pathlib import Path


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict, html_name: str = "report.html") -> str:
    a, cal = doc["answer"], doc.get("calibration")
    out = ["# Reproduction summary", ""]
    if cal:
        out += ["## Calibration", "", cal["sentence"], ""]
    out += ["## Does the paper reproduce?", ""]
    if a.get("sentence"):
        out += [f"**{a['sentence']}**", ""]
    for line in a["sections"]:
        why = line["why"][0].upper() + line["why"][1:]
        out.append(f"- [{line['name']} · {line['title']}]({html_name}#{line['anchor']}): **{line['word']}**. {why}")
    failing = [h for h in a["headlines"] if h["verdict"] in ("fail", "diverged", "inconclusive")]
    if failing:
        out += ["", "## Headline claims that do not reproduce", "",
                "| claim | section | paper | measured | verdict |", "|---|---|---|---|---|"]
        out += [f"| [{_cell(h['statement'])}]({html_name}#{h['anchor']}) | {_cell(h['section'])} | {_cell(h['paper'])} "
                f"| {_cell(h['evidence'])} | {h['verdict']} |" for h in failing]
    t = doc["totals"]
    out += ["", f"All {doc['n_claims']} claims: " + ", ".join(f"{t[v]} {v}" for v in doc["verdicts"] if t.get(v))
            + f". The full report: [{html_name}]({html_name}); machine-readable: [results.json](results.json).", ""]
    return "\n".join(out)


def write(doc: dict, out_dir) -> Path:
    """SUMMARY.md in `out_dir`; also appended to $GITHUB_STEP_SUMMARY where that is set."""
    text = markdown(doc)
    path = Path(out_dir) / "SUMMARY.md"
    path.write_text(text)
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        with open(step, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return path
