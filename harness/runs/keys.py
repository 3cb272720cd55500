"""Run keys: a run's cache key is a stable hash of its fully resolved configuration.

Key: sha256 of canonical JSON of {schema, config fields that differ from their defaults, extra}.
Leaving defaults out means a new field added with a default does not change old keys (as in
open_lth); bump SCHEMA when a default's *meaning* changes so that old runs are not reused.
A run's key names what is trained (configuration, data, seed), not where: the fields in
KEYLESS_FIELDS (the device) are left out, as open_lth keeps its platform out of a run's hash, so
a run trained on a GPU is reused on a CPU and the other way round (--refresh retrains). The
device stays in each entry's metrics.json ("config", "provenance"). Entries made before it left
the keys (a GPU's runs then had keys of their own: `legacy_run_key`) are re-keyed by
runs/migrate.py (a cache, in place: `python -m harness migrate`) and by runs/exports.py
(exports); CPU runs' keys never named the device and are unchanged.

The data a run was made from is not part of its key (runs/cache.py, Data).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

SCHEMA = 1


def canonical(value):
    """`value` with floats as their repr (non-finite ones as text) and dicts sorted: what a key hashes."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def non_default_fields(config) -> dict:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            out[f.name] = value
    return out


# Run settings that say where a run trains, not what: not part of its key (see the top).
KEYLESS_FIELDS = ("device",)


def _hash(fields: dict, extra: dict | None) -> str:
    payload = {"schema": SCHEMA, "config": fields}
    if extra:
        payload["extra"] = extra
    text = json.dumps(canonical(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def run_key(config, extra: dict | None = None) -> str:
    """The cache key of a run (`extra`: its lineage, e.g. a ticket round's parent key), or of a
    measurement (`extra`: {"measure_of": run key, "instrument", "options"}). The device is not
    part of it."""
    return _hash({k: v for k, v in non_default_fields(config).items() if k not in KEYLESS_FIELDS}, extra)


def legacy_run_key(config, extra: dict | None = None) -> str:
    """The pre-change key: as run_key was before the device left the keys (every non-default
    field, device included). Only for finding entries made under it (`migrate`); for a CPU run
    (the default device) it equals run_key."""
    return _hash(non_default_fields(config), extra)
