import math

import pytest

from harness.claims import checks, stats


def rows_of(table, metric="m"):
    """table: {width: [per-seed values]} -> rows with metric `metric`."""
    out = []
    for width, values in table.items():
        for seed, v in enumerate(values):
            out.append({"config": {"width": width, "lr": 0.01}, "seed": seed, "key": None,
                        "diverged": False, "metrics": {metric: v}})
    return out


# width 8: mean 97.1, sd 0.1, n=3 -> t interval 97.1 ± 4.3027 * 0.1 / sqrt(3) = [96.852, 97.348]
ROWS = rows_of({8: [97.0, 97.2, 97.1], 32: [100.0, 100.0, 100.0], 128: [99.9, 100.0, 100.0]})
SHAPE = {"verdict", "measured", "miss", "seeds_needed", "detail", "table"}


def ev(check, expect, rows=ROWS, **kw):
    r = checks.evaluate({"metric": "m", **check}, {"why": "test", **expect}, rows, **kw)
    assert set(r) == (SHAPE if r["verdict"] != "diverged" else {"verdict", "measured", "detail", "table"})
    return r


W8 = {"type": "value", "where": {"width": 8}}


def test_value_passes_only_when_its_interval_lies_inside_the_band():
    r = ev(W8, {"target": 97.1, "abs_tol": 0.3})
    assert r["verdict"] == "pass" and r["miss"] == 0.0 and r["seeds_needed"] is None
    assert r["measured"]["ci"] == pytest.approx((96.8516, 97.3484), abs=1e-4) and r["measured"]["method"] == "t"
    # the point estimate 97.1 lies inside [96.9, 97.3], but its interval does not
    r = ev(W8, {"target": 97.1, "abs_tol": 0.2})
    assert r["verdict"] == "inconclusive" and r["miss"] == 0.0


def test_value_fails_when_its_interval_lies_wholly_outside():
    r = ev(W8, {"target": 98.0, "abs_tol": 0.5})
    assert r["verdict"] == "fail" and r["miss"] == pytest.approx(0.4) and "misses by 0.4" in r["detail"]
    assert ev(W8, {"target": 100.0, "rel_tol": 0.02})["verdict"] == "fail"


def test_inconclusive_says_which_edge_and_how_many_seeds():
    r = ev(W8, {"target": 97.5, "abs_tol": 0.3})  # band [97.2, 97.8]; interval [96.85, 97.35]
    assert r["verdict"] == "inconclusive" and r["miss"] == pytest.approx(0.1)
    # t_{n-1} * 0.1 / sqrt(n) < 0.1 (the distance from 97.1 to 97.2): n = 7 (2.447 / 2.646 = 0.925)
    assert r["seeds_needed"] == 7 == stats.seeds_needed(0.1, 0.1)
    assert ("inconclusive: the 95% interval [96.85, 97.35] straddles the band edge 97.2; "
            "about 7 seeds would likely decide it") in r["detail"]
    r = ev(W8, {"target": 100.0, "rel_tol": 0.03})  # band [97, 103]: the edge 97.0, 0.1 away
    assert r["verdict"] == "inconclusive" and "straddles the band edge 97;" in r["detail"]


def test_one_sided_bands():
    assert ev(W8, {"min": 96.0})["verdict"] == "pass"
    assert ev(W8, {"min": 97.5})["verdict"] == "fail"
    assert ev(W8, {"max": 98.0})["verdict"] == "pass"
    assert ev(W8, {"max": 96.5})["verdict"] == "fail"
    r = ev(W8, {"max": 97.2})
    assert r["verdict"] == "inconclusive" and r["seeds_needed"] == 7 and r["miss"] == 0.0
    assert ev(W8, {"min": 97.1})["seeds_needed"] is None  # the estimate on the edge: undecidable
    # all seeds at the ceiling: a degenerate interval, decided on the value
    assert ev({"type": "value", "where": {"width": 32}}, {"min": 99.95})["verdict"] == "pass"


def test_a_single_seed_decides_nothing_but_an_exact_count():
    rows = rows_of({8: [97.0]})
    r = ev(W8, {"target": 97.0, "abs_tol": 1.0}, rows)
    assert r["verdict"] == "inconclusive" and r["seeds_needed"] is None and "single seed" in r["detail"]
    assert all(math.isnan(c) for c in r["measured"]["ci"])
    counts = rows_of({8: [6514]}, metric="params")
    check = {"type": "value", "metric": "params", "where": {"width": 8}}
    r = checks.evaluate(check, {"target": 6514.0, "abs_tol": 0.0, "why": ""}, counts)
    assert r["verdict"] == "pass" and r["measured"]["ci"] == (6514.0, 6514.0) and r["measured"]["method"] == "exact"
    assert r["measured"]["std"] == 0.0 and r["measured"]["n"] == 1
    r = checks.evaluate(check, {"target": 6515.0, "abs_tol": 0.0, "why": ""}, counts)
    assert r["verdict"] == "fail" and r["miss"] == 1.0
    two = rows_of({8: [6514, 6514]}, metric="params")
    assert checks.evaluate(check, {"target": 6514.0, "abs_tol": 0.0, "why": ""}, two)["verdict"] == "pass"
    differ = rows_of({8: [6514, 6515]}, metric="params")
    r = checks.evaluate(check, {"target": 6514.0, "abs_tol": 0.0, "why": ""}, differ)
    assert r["verdict"] == "fail" and "disagree" in r["detail"]


def test_where_must_pick_one_configuration():
    with pytest.raises(checks.SelectionError, match="matches 3 configurations"):
        ev({"type": "value"}, {"min": 0.0})
    with pytest.raises(checks.SelectionError, match="matches no configuration"):
        ev({"type": "value", "where": {"width": 7}}, {"min": 0.0})


def test_all():
    assert ev({"type": "all"}, {"min": 96.0})["verdict"] == "pass"
    r = ev({"type": "all"}, {"min": 99.0})
    assert r["verdict"] == "fail" and "width=8" in r["detail"] and r["miss"] == pytest.approx(1.9)
    # w=32 is exactly 100; w=128's interval [99.82, 100.11] straddles 99.9
    r = ev({"type": "all", "where": {"width": [32, 128]}}, {"min": 99.9})
    assert r["verdict"] == "inconclusive" and "width=128" in r["detail"] and r["miss"] == 0.0
    assert r["seeds_needed"] == stats.seeds_needed(stats.summarize([99.9, 100.0, 100.0]).std, 100 - 99.9 - 1 / 30)
    # one configuration wholly outside fails the claim, whatever the others
    assert ev({"type": "all"}, {"min": 99.95})["verdict"] == "fail"
    r = ev({"type": "all"}, {"target": 100.0, "abs_tol": 0.0})  # exact, configuration by configuration
    assert r["verdict"] == "fail"
    assert ev({"type": "all", "where": {"width": 32}}, {"target": 100.0, "abs_tol": 0.0})["verdict"] == "pass"


RATIO_ROWS = rows_of({1: [10.0, 10.2, 9.8], 2: [5.0, 5.1, 4.9], 3: [0.1, 1.0]})
RATIO = {"type": "ratio", "a": {"width": 1}, "b": {"width": 2}}


def test_ratio():
    r = ev(RATIO, {"target": 2.0, "rel_tol": 0.1}, RATIO_ROWS)
    assert r["verdict"] == "pass" and r["measured"]["value"] == pytest.approx(2.0)
    assert r["measured"]["method"] == "fieller"
    assert ev(RATIO, {"min": 2.5}, RATIO_ROWS)["verdict"] == "fail"
    r = ev(RATIO, {"target": 2.02, "abs_tol": 0.01}, RATIO_ROWS)
    assert r["verdict"] == "inconclusive" and "per group" in r["detail"]
    # delta-method spread sqrt(0.2^2 + 2^2 0.1^2) / 5, 0.01 from the edge 2.01
    assert r["seeds_needed"] == stats.seeds_needed(math.sqrt(0.04 + 4 * 0.01) / 5, 0.01)


def test_a_ratio_over_a_noisy_denominator_is_unbounded_and_inconclusive():
    r = ev({"type": "ratio", "a": {"width": 1}, "b": {"width": 3}}, {"min": 2.0}, RATIO_ROWS)
    assert r["verdict"] == "inconclusive" and r["measured"]["ci"] == (-math.inf, math.inf)
    assert "unbounded" in r["detail"]


def test_a_ratio_of_exact_quantities_is_decided_on_its_value():
    rows = rows_of({256: [64, 64], 32: [64, 64]}, metric="steps")
    check = {"type": "ratio", "metric": "steps", "a": {"width": 256}, "b": {"width": 32}}
    assert checks.evaluate(check, {"target": 1.0, "rel_tol": 0.01, "why": ""}, rows)["verdict"] == "pass"


A = [85.5, 85.9, 85.2, 86.1, 85.7]
B = [84.1, 84.4, 83.9, 84.3, 84.0]
AB = rows_of({32: A, 1024: B})
DIFF = {"type": "difference", "a": {"width": 32}, "b": {"width": 1024}}


def test_difference():
    r = ev(DIFF, {"min": 1.0}, AB)  # Welch interval [1.104, 1.976]
    assert r["verdict"] == "pass" and r["measured"]["value"] == pytest.approx(1.54)
    assert r["measured"]["ci"] == pytest.approx((1.1038, 1.9762), abs=1e-4) and r["measured"]["method"] == "welch"
    assert ev(DIFF, {"max": 1.0}, AB)["verdict"] == "fail"
    r = ev(DIFF, {"target": 1.54, "abs_tol": 0.2}, AB)
    assert r["verdict"] == "inconclusive"
    spread = math.sqrt(stats.summarize(A).std ** 2 + stats.summarize(B).std ** 2)
    assert r["seeds_needed"] == stats.seeds_needed(spread, 0.2) and r["seeds_needed"] > 5
    assert f"about {r['seeds_needed']} seeds per group would likely decide it" in r["detail"]


MONO = {"type": "monotonic", "over": "width"}
# steps (decreasing): 0.2 (clear), 0.005 against the direction but within noise (Welch [-0.028, 0.018]), 0.405
NOISY = rows_of({32: [0.90, 0.91, 0.89], 64: [0.70, 0.71, 0.69], 128: [0.705, 0.715, 0.695], 256: [0.30, 0.31, 0.29]})


def test_monotonic_decides_each_step_on_the_welch_interval():
    r = ev(MONO, {"direction": "decreasing", "strict": True}, NOISY)
    assert r["verdict"] == "inconclusive" and "(64->128) straddles 0, e.g. [" in r["detail"]
    assert r["miss"] == pytest.approx(0.005) and r["measured"]["value"] == pytest.approx(-0.005)
    assert r["measured"]["ci"][0] < 0 < r["measured"]["ci"][1]
    assert r["seeds_needed"] == stats.seeds_needed(math.sqrt(2) * 0.01, 0.005)
    assert ev(MONO, {"direction": "decreasing", "slack": 0.05}, NOISY)["verdict"] == "pass"
    assert ev(MONO, {"direction": "increasing"}, NOISY)["verdict"] == "fail"
    clear = rows_of({32: [0.90, 0.91, 0.89], 64: [0.70, 0.71, 0.69], 128: [0.80, 0.81, 0.79]})
    r = ev(MONO, {"direction": "decreasing", "strict": True}, clear)
    assert r["verdict"] == "fail" and r["miss"] == pytest.approx(0.1)
    r = ev(MONO, {"direction": "decreasing", "slack": 0.02}, clear)  # the step's interval: [-0.123, -0.077]
    assert r["verdict"] == "fail"
    assert ev(MONO, {"direction": "decreasing", "strict": True},
              rows_of({32: [0.90, 0.91, 0.89], 64: [0.70, 0.71, 0.69]}))["verdict"] == "pass"


def test_monotonic_with_single_seeds_is_inconclusive():
    rows = rows_of({32: [0.9], 64: [0.7], 128: [0.71], 256: [0.3]})
    r = ev(MONO, {"direction": "decreasing", "strict": True}, rows)
    assert r["verdict"] == "inconclusive" and r["seeds_needed"] is None and "single seed" in r["detail"]


def test_loglog_slope():
    rows = rows_of({w: [2.0 * w ** -0.5, 2.2 * w ** -0.5] for w in (32, 64, 128)})
    assert ev({"type": "loglog_slope", "over": "width"}, {"target": -0.5, "abs_tol": 1e-9}, rows)["verdict"] == "pass"
    assert ev({"type": "loglog_slope", "over": "width"}, {"max": -0.6}, rows)["verdict"] == "fail"
    # per-seed exponents -0.45, -0.5, -0.6: t interval [-0.706, -0.328]
    rows = rows_of({w: [w ** -0.45, w ** -0.5, w ** -0.6] for w in (32, 64, 128)})
    slope = {"type": "loglog_slope", "over": "width"}
    r = ev(slope, {"target": -0.5, "abs_tol": 0.1}, rows)
    assert r["verdict"] == "inconclusive" and r["measured"]["n"] == 3
    assert r["seeds_needed"] == stats.seeds_needed(r["measured"]["std"], 0.6 - 0.5167)
    assert ev(slope, {"min": -1.0, "max": -0.2}, rows)["verdict"] == "pass"
    assert ev(slope, {"max": -0.8}, rows)["verdict"] == "fail"


WELCH = {"type": "welch", "a": {"width": 32}, "b": {"width": 1024}}


def test_welch_significance_and_direction():
    assert ev(WELCH, {"significant": True}, AB)["verdict"] == "pass"
    assert ev(WELCH, {"significant": True, "direction": "less"}, AB)["verdict"] == "fail"
    assert ev(WELCH, {"significant": False}, AB)["verdict"] == "fail"
    r = ev(WELCH, {"significant": True}, AB)
    assert r["measured"]["p"] < 0.001 and r["measured"]["p_adjusted"] is None and r["seeds_needed"] is None


def test_welch_decides_on_the_adjusted_p_when_given():
    raw = stats.welch(A, B)["p"]
    r = ev(WELCH, {"significant": True}, AB, adjusted_p=0.2)
    assert r["verdict"] == "fail" and r["measured"]["p"] == pytest.approx(raw)
    assert r["measured"]["p_adjusted"] == 0.2 and "adjusted p = 0.2" in r["detail"]
    assert ev(WELCH, {"significant": False}, AB, adjusted_p=0.2)["verdict"] == "pass"
    # a family of 3, two members not run yet: Holm gives the known one the multiplier 3
    (adj, _, _) = stats.holm([raw, None, None])
    assert adj == pytest.approx(3 * raw)
    assert ev(WELCH, {"significant": True}, AB, adjusted_p=adj)["verdict"] == "pass"
    # other checks ignore it
    assert ev(W8, {"min": 96.0}, adjusted_p=0.9)["verdict"] == "pass"


def test_a_diverged_run_is_never_a_pass():
    rows = rows_of({8: [97.0, float("nan")]})
    r = ev({"type": "value", "where": {"width": 8}}, {"min": 0.0}, rows)
    assert r["verdict"] == "diverged" and "diverged" in r["detail"]
    rows = rows_of({8: [97.0, 97.0]})
    rows[0]["diverged"] = True
    assert ev({"type": "all"}, {"min": 0.0}, rows)["verdict"] == "diverged"


def test_position_and_in_band_are_unchanged():
    e = {"target": 97.5, "abs_tol": 0.3}
    assert checks._in_band(97.1, e) == (False, pytest.approx(0.1))
    assert checks._in_band(97.3, e) == (True, 0.0)
    p = checks.position(e, 97.1)
    assert p["delta"] == pytest.approx(-0.4) and p["outside"] == pytest.approx(-0.1)
    assert p["units"] == pytest.approx(-0.4 / 0.3)
    assert checks.position({"min": 99.95}, 100.0)["units"] is None


WELCH_FAMILY = """
section = "T"
title = "Welch family"

[experiments.tiny]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 256, test_subset = 256, epochs = 2, batch_size = 32, lr = 0.05}
grid = {width = [8, 16]}
smoke = {seeds = [0, 1, 2]}

[experiments.never]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {train_subset = 256, test_subset = 256, epochs = 2, batch_size = 32, lr = 0.05}
grid = {width = [4, 8]}
smoke = {seeds = [0, 1]}

[[claims]]
id = "a"
statement = "a"
paper = "-"
experiment = "tiny"
check = {type = "welch", metric = "test_acc", a = {width = 16}, b = {width = 8}}
[claims.smoke]
expect = {significant = false, why = "-"}

[[claims]]
id = "b"
statement = "b"
paper = "-"
experiment = "tiny"
check = {type = "welch", metric = "train_acc", a = {width = 16}, b = {width = 8}}
[claims.smoke]
expect = {significant = false, why = "-"}

[[claims]]
id = "c"
statement = "c"
paper = "-"
experiment = "never"
check = {type = "welch", metric = "train_acc", a = {width = 8}, b = {width = 4}}
[claims.smoke]
expect = {significant = false, why = "-"}
"""


def test_a_welch_claim_is_decided_on_its_holm_adjusted_p_within_every_welch_claim_of_the_tier(tmp_path, data_dir):
    """The family is every Welch claim declared in the tier beside it, whichever are selected; a
    member not run yet ('never') counts conservatively (stats.holm)."""
    from harness.claims import results, spec
    from harness.runs.context import Context
    (tmp_path / "claims").mkdir()
    path = tmp_path / "claims" / "w.toml"
    path.write_text(WELCH_FAMILY)
    cf = spec.load(path)
    a, b, _ = cf.claims
    ctx = Context(data_dir=str(data_dir), cache_root=str(tmp_path / "cache"))
    ra = results.claim_result(a, "smoke", a.experiment, cf, ctx)  # trains `tiny`
    rb = results.claim_result(b, "smoke", b.experiment, cf, ctx)
    pa, pb = ra["measured"]["p"], rb["measured"]["p"]
    assert ra["measured"]["p_adjusted"] == pytest.approx(stats.holm([pa, pb, None])[0])
    assert rb["measured"]["p_adjusted"] == pytest.approx(stats.holm([pa, pb, None])[1])
    assert ra["measured"]["p_adjusted"] >= min(1.0, 2 * pa) - 1e-12  # a family of three: a multiplier of 2 at least
