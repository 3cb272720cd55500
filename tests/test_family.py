"""Welch claims are decided on Holm's adjusted p within their family; a family with members not run
yet bounds it from both sides, and a claim is decided only where the whole range decides
(harness/claims/results.py, kinds/welch.py). Whatever order claims run in, whichever subset is
cached: a verdict is the complete family's or "family incomplete", never the other decision. Also
the minimum detectable difference stated beside a "no significant difference"."""
import itertools
import math
import random
import subprocess
import sys

import pytest
from scipy import stats as sps

from fake_family import FakeCache, claim_file, install, values
from harness.claims import results, spec, stats
from harness.runs.context import Context


def test_holm_range_bounds_the_adjusted_p_of_every_completion_of_the_family():
    rng = random.Random(0)
    for _ in range(300):
        m = rng.randint(1, 7)
        ps = [10 ** rng.uniform(-4, 0) for _ in range(m)]
        unknown = {i for i in range(m) if rng.random() < 0.4}
        partial = [None if i in unknown else p for i, p in enumerate(ps)]
        bounds = stats.holm_range(partial)
        for fill in ([0.0] * m, [1.0] * m, [10 ** rng.uniform(-5, 0) for _ in range(m)], ps):
            full = stats.holm([fill[i] if i in unknown else p for i, p in enumerate(ps)])
            for i in set(range(m)) - unknown:
                lo, hi = bounds[i]
                assert lo - 1e-12 <= full[i] <= hi + 1e-12, (ps, unknown, fill, i)
        assert all(b == (None, None) for i, b in enumerate(bounds) if i in unknown)
    # by hand: known 0.01 and 0.04 of three. Unknown at 1: 0.01 x 3, 0.04 x 2; at 0: 0.01 x 2, 0.04 x 1
    assert stats.holm_range([0.01, None, 0.04]) == [(pytest.approx(0.02), pytest.approx(0.03)), (None, None),
                                                    (pytest.approx(0.04), pytest.approx(0.08))]
    assert stats.holm_range([0.01, 0.04]) == [(pytest.approx(0.02),) * 2, (pytest.approx(0.04),) * 2]


def _two_sided_power(delta, sd_a, na, sd_b, nb, alpha=0.05):
    """Power of the two-sided Welch test at a true difference `delta`, by scipy.stats' noncentral t."""
    se = math.sqrt(sd_a ** 2 / na + sd_b ** 2 / nb)
    df = (sd_a ** 2 / na + sd_b ** 2 / nb) ** 2 / ((sd_a ** 2 / na) ** 2 / (na - 1) + (sd_b ** 2 / nb) ** 2 / (nb - 1))
    crit = sps.t.ppf(1 - alpha / 2, df)
    return sps.nct.sf(crit, df, delta / se) + sps.nct.cdf(-crit, df, delta / se)


@pytest.mark.parametrize("sd_a,na,sd_b,nb,alpha", [(1.0, 4, 1.0, 4, 0.05), (0.3, 5, 1.2, 3, 0.05),
                                                   (2.0, 12, 0.5, 12, 0.05), (1.0, 4, 1.0, 4, 0.01),
                                                   (1.0, 200, 1.0, 200, 0.05)])
def test_detectable_difference_is_detected_with_80_percent_power(sd_a, na, sd_b, nb, alpha):
    d = stats.detectable_difference(sd_a, na, sd_b, nb, alpha)
    assert _two_sided_power(d, sd_a, na, sd_b, nb, alpha) == pytest.approx(0.8, abs=2e-3)
    se = math.sqrt(sd_a ** 2 / na + sd_b ** 2 / nb)
    if na >= 100:  # the normal limit by hand: (z_0.975 + z_0.8) se = (1.95996 + 0.84162) se
        assert d == pytest.approx(2.80158 * se, rel=5e-3)


def test_detectable_difference_by_hand_at_four_seeds():
    """sd 1 and 4 seeds in each group: se sqrt(1/2), df 6, t_0.975,6 = 2.4469; the noncentrality
    with 80% power beyond it is 3.3669 (the shortcut t_0.975 + t_0.8 = 2.4469 + 0.9057 = 3.3526
    is 0.4% lower), so 3.3669 x 0.70711 = 2.3808."""
    assert stats.detectable_difference(1.0, 4, 1.0, 4) == pytest.approx(2.3808, rel=1e-3)
    assert math.isnan(stats.detectable_difference(1.0, 1, 1.0, 4))
    assert stats.detectable_difference(0.0, 4, 0.0, 4) == 0.0


def test_the_synthetic_rows_have_the_p_they_are_made_for():
    for p in (1e-4, 0.03, 0.5):
        assert stats.welch(*values(p))["p"] == pytest.approx(p, rel=1e-9)


def _family(rng, k):
    """k experiments with p-values around the Holm thresholds and random expectations."""
    return {f"e{i}": (10 ** rng.uniform(-3.5, -0.5), rng.random() < 0.5) for i in range(k)}


def _verdicts(cf, ctx, names):
    return {c.experiment.name: results.claim_result(c, "smoke", c.experiment, cf, ctx)
            for c in cf.claims if c.experiment.name in names}


def test_no_order_or_subset_of_a_family_turns_a_verdict(tmp_path, monkeypatch):
    """Many families (seeded), each evaluated in many orders (the cache filling as a session trains,
    each claim judged when its experiment has trained, as the inline executor runs) and on many
    subsets of a cache: every verdict is the complete family's or 'family incomplete'."""
    rng = random.Random(1)
    seen = {"incomplete": 0, "decided early": 0}
    for draw in range(8):
        family = _family(rng, rng.randint(2, 5))
        cf = spec.load(claim_file(tmp_path / f"f{draw}" / "claims", family))
        fake = FakeCache()
        install(fake, monkeypatch)
        fake.cached = set(family)
        complete = {n: r["verdict"] for n, r in _verdicts(cf, _ctx(tmp_path), family).items()}
        assert set(complete.values()) <= {"pass", "fail"}

        def check(got, k):
            for n, r in got.items():
                if r["verdict"] == "inconclusive":
                    assert "family incomplete" in r["detail"], r["detail"]
                    seen["incomplete"] += 1
                else:
                    assert r["verdict"] == complete[n], (family, k, n, r["detail"])
                    seen["decided early"] += r["measured"]["family_missing"] > 0

        orders = list(itertools.permutations(family))
        for order in rng.sample(orders, min(len(orders), 6)):  # a session in this order
            fake.cached, ctx = set(), _ctx(tmp_path, train=True)
            for n in order:
                check(_verdicts(cf, ctx, {n}), order)
            final = results.decide_families([r for r in _verdicts(cf, ctx, set(family)).values()], _ctx(tmp_path))
            assert {r["experiment"]: r["verdict"] for r in final} == complete
        for k in range(1, len(family) + 1):  # a cache holding a subset, judged read only
            for subset in itertools.combinations(family, k):
                fake.cached = set(subset)
                check(_verdicts(cf, _ctx(tmp_path), set(subset)), subset)
    assert seen["incomplete"] > 10 and seen["decided early"] > 10, seen  # both cases were met


def _ctx(tmp_path, train=False):
    return Context(cache_root=str(tmp_path / "cache"), allow_train=train)


def test_welch_decides_only_where_the_whole_range_decides():
    from harness.claims import checks
    a, b = values(0.03)
    rows = [{"config": {"width": w}, "seed": s, "key": None, "diverged": False, "metrics": {"m": v}}
            for w, vs in ((2, a), (1, b)) for s, v in enumerate(vs)]
    check = {"type": "welch", "metric": "m", "a": {"width": 2}, "b": {"width": 1}}

    def verdict(significant, lo, hi, direction="greater"):
        r = checks.evaluate(check, {"significant": significant, "direction": direction, "why": "-"}, rows,
                            adjusted_p=stats.FamilyP(lo, hi, 1, 3))
        return r["verdict"], r["detail"]
    assert verdict(True, 0.01, 0.04)[0] == "pass" and verdict(False, 0.01, 0.04)[0] == "fail"
    assert verdict(True, 0.05, 0.2)[0] == "fail" and verdict(False, 0.05, 0.2)[0] == "pass"
    for sig in (True, False):
        v, detail = verdict(sig, 0.03, 0.09)
        assert v == "inconclusive" and "family incomplete: 1 of the 3" in detail and "0.03 and 0.09" in detail
    assert verdict(True, 0.001, 0.002, direction="less")[0] == "fail"  # significant the other way: decided
    assert verdict(True, 0.03, 0.09, direction="less")[0] == "fail"  # whatever the family


PLUGIN_FAMILY = {"e0": (0.035, True), "e1": (0.001, True), "e2": (0.2, False)}
CONFTEST = """
from pathlib import Path
import fake_family
fake_family.install(fake_family.FakeCache(Path(__file__).parent / "marks"))
"""


@pytest.mark.parametrize("xdist", [False, True])
def test_pytest_its_report_and_harness_report_agree_claim_by_claim(pytester, tmp_path, xdist):
    """e0's claim runs first, its family unknown: its Holm-adjusted p lies between 0.035 x 1 and
    0.035 x 3, so it is inconclusive when it runs; the final pass decides it (0.035 x 2 = 0.07 on
    the complete family: a fail). pytest's summary and exit status, results.json and `python -m
    harness report` then say the same of every claim; so does a second session on the full cache."""
    import json
    from pathlib import Path
    claim_file(pytester.path / "claims", PLUGIN_FAMILY)
    (pytester.path / "fake_family.py").write_text((Path(__file__).parent / "fake_family.py").read_text())
    pytester.makeconftest(CONFTEST)
    args = ["claims", "-m", "smoke", "-p", "no:cacheprovider", "--run-cache", str(tmp_path / "cache"),
            "--report", str(tmp_path / "report")] + (["-n", "2", "--dist", "loadgroup"] if xdist else [])
    outs = []
    for _ in range(2):  # a fresh session, then one on the complete cache
        r = pytester.runpytest_subprocess(*args)
        outs.append(r.stdout.str())
        r.assert_outcomes(passed=2, failed=1)
        assert r.ret == 1
        doc = json.loads((tmp_path / "report" / "results.json").read_text())
        mine = {c["experiment"]: c for c in doc["claims"]}
        assert {e: c["verdict"] for e, c in mine.items()} == {"e0": "fail", "e1": "pass", "e2": "pass"}
        assert "FAILED claims/family.toml::e0-claim[smoke]" in outs[-1]
    if not xdist:  # serial, e0 first: inconclusive when it ran, restated by the final pass
        assert "FAIL (was inconclusive) claims/family.toml::e0-claim[smoke]" in outs[0]
    assert "was inconclusive" not in outs[1]  # the cache complete: decided when it ran
    p = subprocess.run([sys.executable, "-c", "import sys, fake_family as f, harness.__main__ as h; "
                        "from pathlib import Path; f.install(f.FakeCache(Path('marks'))); "
                        "h._has_runs = lambda root: True; sys.exit(h.main(sys.argv[1:]))",
                        "report", "--tier", "smoke", "--claims", "claims",
                        "--run-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "again")],
                       cwd=pytester.path, capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    again = {c["experiment"]: c for c in json.loads((tmp_path / "again" / "results.json").read_text())["claims"]}
    for e, c in mine.items():
        assert again[e]["verdict"] == c["verdict"]
        assert again[e]["measured"]["p_adjusted"] == pytest.approx(c["measured"]["p_adjusted"], rel=1e-12)
