import pytest

from harness.claims import checks


def rows_of(table):
    """table: {(width,): [per-seed values]} -> rows with metric 'm'."""
    out = []
    for width, values in table.items():
        for seed, v in enumerate(values):
            out.append({"config": {"width": width, "lr": 0.01}, "seed": seed, "key": None,
                        "diverged": False, "metrics": {"m": v}})
    return out


ROWS = rows_of({8: [97.0, 97.2], 32: [100.0, 100.0], 128: [100.0, 100.0]})


def ev(check, expect, rows=ROWS):
    return checks.evaluate({"metric": "m", **check}, {"why": "test", **expect}, rows)


def test_value_abs_and_rel_tolerance():
    assert ev({"type": "value", "where": {"width": 8}}, {"target": 97.1, "abs_tol": 0.2})["verdict"] == "pass"
    r = ev({"type": "value", "where": {"width": 8}}, {"target": 98.0, "abs_tol": 0.5})
    assert r["verdict"] == "fail" and r["miss"] == pytest.approx(0.4) and "misses by 0.4" in r["detail"]
    assert ev({"type": "value", "where": {"width": 8}}, {"target": 100.0, "rel_tol": 0.03})["verdict"] == "pass"
    assert ev({"type": "value", "where": {"width": 8}}, {"target": 100.0, "rel_tol": 0.02})["verdict"] == "fail"


def test_bounds_and_all():
    assert ev({"type": "value", "where": {"width": 32}}, {"min": 100.0})["verdict"] == "pass"
    assert ev({"type": "all"}, {"min": 99.0})["verdict"] == "fail"
    assert ev({"type": "all"}, {"min": 97.0, "max": 100.0})["verdict"] == "pass"


def test_where_must_pick_one_configuration():
    with pytest.raises(checks.SelectionError, match="matches 3 configurations"):
        ev({"type": "value"}, {"min": 0.0})
    with pytest.raises(checks.SelectionError, match="matches no configuration"):
        ev({"type": "value", "where": {"width": 7}}, {"min": 0.0})


def test_ratio_and_difference():
    r = ev({"type": "ratio", "a": {"width": 32}, "b": {"width": 8}}, {"target": 100 / 97.1, "rel_tol": 1e-6})
    assert r["verdict"] == "pass"
    d = ev({"type": "difference", "a": {"width": 32}, "b": {"width": 8}}, {"min": 2.5, "max": 3.0})
    assert d["verdict"] == "pass" and d["measured"]["value"] == pytest.approx(2.9)


def test_monotonic_strict_and_slack():
    rows = rows_of({32: [0.9], 64: [0.7], 128: [0.71], 256: [0.3]})
    assert ev({"type": "monotonic", "over": "width"}, {"direction": "decreasing", "strict": True}, rows)["verdict"] == "fail"
    assert ev({"type": "monotonic", "over": "width"}, {"direction": "decreasing", "slack": 0.02}, rows)["verdict"] == "pass"
    assert ev({"type": "monotonic", "over": "width"}, {"direction": "increasing"}, rows)["verdict"] == "fail"


def test_loglog_slope():
    rows = rows_of({w: [2.0 * w ** -0.5, 2.2 * w ** -0.5] for w in (32, 64, 128)})
    assert ev({"type": "loglog_slope", "over": "width"}, {"target": -0.5, "abs_tol": 1e-9}, rows)["verdict"] == "pass"
    assert ev({"type": "loglog_slope", "over": "width"}, {"max": -0.6}, rows)["verdict"] == "fail"


def test_welch_significance_and_direction():
    rows = rows_of({32: [85.5, 85.9, 85.2, 86.1, 85.7], 1024: [84.1, 84.4, 83.9, 84.3, 84.0]})
    sig = {"type": "welch", "a": {"width": 32}, "b": {"width": 1024}}
    assert ev(sig, {"significant": True}, rows)["verdict"] == "pass"
    assert ev(sig, {"significant": True, "direction": "less"}, rows)["verdict"] == "fail"
    assert ev(sig, {"significant": False}, rows)["verdict"] == "fail"
    assert ev(sig, {"significant": True}, rows)["measured"]["p"] < 0.001


def test_a_diverged_run_is_never_a_pass():
    rows = rows_of({8: [97.0, float("nan")]})
    r = ev({"type": "value", "where": {"width": 8}}, {"min": 0.0}, rows)
    assert r["verdict"] == "diverged" and "diverged" in r["detail"]
    rows = rows_of({8: [97.0, 97.0]})
    rows[0]["diverged"] = True
    assert ev({"type": "all"}, {"min": 0.0}, rows)["verdict"] == "diverged"
