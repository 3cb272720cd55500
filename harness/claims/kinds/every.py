"""all: every configuration `where` selects lies within the band (min/max); the configuration
shown is the worst of those that decide the verdict."""
from __future__ import annotations

from .. import stats
from .common import (Kind, _decide, _describe_band, _exact_band, _exact_estimate, _fmt, _in_band, _max_needed,
                     _values, label, outcome, where_text)
from .value import EXACT_DISAGREE


class Every(Kind):
    name = "all"
    words = "every configuration"
    level = True
    expect_fields = {"min", "max"}
    paper_points = "each"

    def evaluate(self, check, expect, sel, rows, adjusted_p=None):
        metric = check["metric"]
        needed, why = None, ""
        exact = _exact_band(expect)
        ests = [_exact_estimate(_values(g, metric)) if exact else stats.summarize(_values(g, metric)) for g in sel]
        decided = [_decide(e, expect, e.std, exact=exact) for e in ests]
        misses = [_in_band(e.value, expect)[1] for e in ests]
        verdicts = [d[0] for d in decided]
        verdict = "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
        # the configuration shown: the worst of those that decide the verdict
        cand = [i for i in range(len(ests)) if verdicts[i] == verdict]
        worst = max(cand, key=lambda i: (misses[i], -ests[i].value))
        if verdict == "inconclusive":
            worst = max(cand, key=lambda i: (decided[i][1] is None, decided[i][1] or 0, misses[i]))
            needed = _max_needed([decided[i][1] for i in cand])
            why = decided[worst][2]
            if len(cand) > 1:  # the least decided one's seeds decide them all
                why += f" ({len(cand)} of {len(ests)} configurations undecided)"
        est, miss = ests[worst], misses[worst]
        shown = "worst" if verdict != "inconclusive" else "least decided"
        detail = (f"{metric} over {len(sel)} configurations; {shown} {label(sel[worst][0]['config'], rows)}"
                  f" = {_fmt(est)}; expected every one {_describe_band(expect)}")
        out = outcome(verdict, est, miss, needed, why, detail)
        if verdict == "fail" and est.method != "exact" and exact:
            out["detail"] += EXACT_DISAGREE
        return out

    def explain(self, r):
        return f"worst of the configurations {where_text(r['check'].get('where'))}"

    def compared(self, r):
        worst = [t["label"] for t in r["table"] if t["value"] == r["measured"]["value"]]
        return f"worst: {worst[0]}" if worst else ""


KIND = Every()
