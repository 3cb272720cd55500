"""The registry of instruments (harness/procedures/instruments.py): each record is consistent with
itself, keys its measurements as before, and tabulates a measurement into exactly the metrics it
declares."""
import math

import pytest

from harness.procedures import instruments
from harness.procedures.instruments import INSTRUMENT_DEFAULTS, INSTRUMENTS


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_every_default_is_of_its_type_and_allowed(name):
    inst = INSTRUMENTS[name]
    assert INSTRUMENT_DEFAULTS[name] == inst.defaults
    for k, o in inst.options.items():
        values = o.default if o.type is list else [o.default]
        assert isinstance(o.default, o.type), (name, k)
        assert values and all(o.ok(v) for v in values), (name, k)


def test_keyless_options_leave_the_key_at_their_keyless_values():
    assert instruments.measurement_options("movement", {"definition": "all"}) == {}
    assert instruments.measurement_options("movement", {"definition": "weights"}) == {"definition": "weights"}
    opts = dict(INSTRUMENT_DEFAULTS["hessian"])
    assert instruments.measurement_options("hessian", opts) == opts


MEASUREMENTS = {  # as the instruments' measurements are cached (null: a non-finite value)
    "hessian": {"value": 3.5, "residual": None, "iterations": 30},
    "perturbation": {"base_loss": 0.1, "sigmas": {repr(float(s)): {"mean": 0.5 * i}
                                                  for i, s in enumerate(INSTRUMENT_DEFAULTS["perturbation"]["sigmas"])}},
    "movement": {"total": 0.25, "per_layer": {}},
    "keskar": {"keskar_0.001": {"value": 205.14, "f0": 0.01}, "keskar_0.0005": {"value": 42.9, "f0": 0.01}},
}


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_a_measurement_is_tabulated_into_the_metrics_declared(name):
    opts = INSTRUMENT_DEFAULTS[name]
    row = instruments.tabulate(name, opts, MEASUREMENTS[name])
    assert list(row) == INSTRUMENTS[name].metrics(opts)
    assert all(isinstance(v, float) for v in row.values())
    if name == "hessian":
        assert row["hessian_top"] == 3.5 and math.isnan(row["hessian_residual"])
    if name == "perturbation":
        assert row["perturb_0.0001"] == 0.0 and row["perturb_0.02"] == 3.0
    if name == "keskar":  # the full space at each default epsilon; subspaces add "_subP" metrics
        assert row == {"keskar_0.001": 205.14, "keskar_0.0005": 42.9}
        assert INSTRUMENTS[name].metrics({**opts, "subspaces": [0, 100]})[2:] == ["keskar_0.001_sub100",
                                                                                   "keskar_0.0005_sub100"]
