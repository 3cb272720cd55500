"""Readings of the paper's lost or ambiguous parameters, end to end: parsed from an experiment's
`readings` tables (schema at the top of harness/claims/spec.py), expanded into the combinations a
tier runs (`expand`, the primary first; `layers` are the overrides one puts on a tier), selected
by `--readings` (`select`), and judged: per claim, whether it holds under every reading tried, only
under some, or under none (`classify`, `table`), and per experiment which reading fits the paper's
numbers best (`fit`, in tolerance units).
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

from .kinds import tolerance_position
from .schema import (CONFIG_FIELDS, DATASETS, INSTRUMENT_DEFAULTS, INSTRUMENTS, RUN_FIELDS,
                     TICKET_DEFAULTS, _err, _keys, _typed)


@dataclass
class ReadingParam:
    name: str
    target: tuple  # ("run", FIELD) | ("instruments", INSTRUMENT, OPTION) | ("ticket", OPTION) | ("custom",)
    paper: str
    values: list  # [{"value", "why", "primary", "smoke", "set"}], in declaration order

    @property
    def primary(self):
        return next(v["value"] for v in self.values if v.get("primary"))

    def entry(self, value) -> dict:
        return next(v for v in self.values if v["value"] == value and type(v["value"]) is type(value))


@dataclass(frozen=True)
class Reading:
    """One combination of readings: `changed` holds the non-primary values (empty: the primary)."""
    name: str  # "primary", or e.g. "epochs=20,input_norm=standard"
    changed: tuple  # ((parameter, value), ...) in declaration order
    values: tuple  # every declared parameter's value under this reading

    @property
    def is_primary(self) -> bool:
        return not self.changed
PRIMARY = "primary"


def reading_id(result: dict) -> str:
    """The reading a claim's result was taken under: its `reading_id`, PRIMARY where it names none."""
    return result.get("reading_id", PRIMARY)


def format_value(value) -> str:
    """A reading value as written in reading names and `--readings NAME=VALUE`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def reading_name(changed) -> str:
    return ",".join(f"{p}={format_value(v)}" for p, v in changed) or PRIMARY


def expand(exp, tier: str) -> list:
    """The primary reading, then every declared combination run in `tier` (see the schema)."""
    params = list(exp.reading_params.values())
    if exp.combine == "grid":
        combos = [dict(zip([p.name for p in params], vs))
                  for vs in itertools.product(*([v["value"] for v in p.values] for p in params))]
    else:
        combos = [{p.name: c.get(p.name, p.primary) for p in params} for c in exp.combine]
    out, seen = [Reading(PRIMARY, (), tuple((p.name, p.primary) for p in params))], {PRIMARY}
    for combo in combos:
        changed = tuple((p.name, combo[p.name]) for p in params if combo[p.name] != p.primary
                        or type(combo[p.name]) is not type(p.primary))
        name = reading_name(changed)
        if name in seen:
            continue
        if tier != "full" and not (tier == "smoke" and all(exp.reading_params[p].entry(v).get("smoke")
                                                           for p, v in changed)):
            continue  # the scaled tier runs the primary reading only
        seen.add(name)
        out.append(Reading(name, changed, tuple(combo.items())))
    return out


def layers(exp, reading: Reading) -> list:
    """The override tables a reading puts on top of a tier, in the form `Experiment.resolved` merges."""
    layers = []
    for name, value in reading.changed:
        p = exp.reading_params[name]
        kind = p.target[0]
        if kind == "run":
            layers.append({"fixed": {p.target[1]: value}})
        elif kind == "instruments":
            layers.append({"instruments": {p.target[1]: {p.target[2]: value}}})
        elif kind == "ticket":
            layers.append({"ticket": {p.target[1]: value}})
        else:
            layers.append(p.entry(value)["set"])
    return layers


def _option_type(default) -> type:
    return bool if isinstance(default, bool) else int if isinstance(default, int) else \
        float if isinstance(default, float) else str if isinstance(default, str) else list


def _reading_target(name, t, exp, path, where, fld) -> tuple:
    target = _typed(t.get("field", name), str, path, where, fld + "field")
    parts = target.split(".")
    if parts[0] == "instruments":
        if len(parts) != 3 or parts[1] not in exp.measure or parts[2] not in INSTRUMENT_DEFAULTS[parts[1]]:
            raise _err(path, where, fld + "field", f"{target!r}: expected instruments.INSTRUMENT.OPTION with an "
                                                   f"instrument of this experiment's measure {exp.measure}")
        return ("instruments", parts[1], parts[2])
    if parts[0] == "ticket":
        if exp.procedure != "ticket" or len(parts) != 2 or parts[1] not in TICKET_DEFAULTS:
            raise _err(path, where, fld + "field", f"{target!r}: expected ticket.OPTION of a ticket experiment; "
                                                   f"options: {sorted(TICKET_DEFAULTS)}")
        return ("ticket", parts[1])
    if target in CONFIG_FIELDS:
        return ("run", target)
    if "field" in t:
        raise _err(path, where, fld + "field", f"{target!r} is not a run setting; allowed: {sorted(CONFIG_FIELDS)}")
    return ("custom",)


def _check_reading_value(p: ReadingParam, exp, v, path, where, fld):
    kind = p.target[0]
    if kind == "run":
        ftype = RUN_FIELDS[p.target[1]].type
        _typed(v, {"int": int, "float": float, "str": str, "bool": bool}[ftype if isinstance(ftype, str) else ftype.__name__],
               path, where, fld)
        if p.target[1] == "input_norm" and v not in DATASETS[exp.dataset].norms:
            raise _err(path, where, fld, f"{v!r}: {exp.dataset} input_norm is one of {sorted(DATASETS[exp.dataset].norms)}")
    elif kind == "instruments":
        option = INSTRUMENTS[p.target[1]].options[p.target[2]]
        _typed(v, option.type, path, where, fld)
        if option.type is not list and not option.ok(v):
            raise _err(path, where, fld, f"{v!r}: expected {option.allowed}")
    elif kind == "ticket":
        _typed(v, _option_type(TICKET_DEFAULTS[p.target[1]]), path, where, fld)
        if p.target[1] == "scope" and v not in ("global", "layer"):
            raise _err(path, where, fld, f"{v!r}: expected 'global' or 'layer'")
    else:
        _typed(v, str, path, where, fld)


def parse(t, exp, path) -> None:
    """Validate an experiment's `readings` table and attach it (reading_params, combine)."""
    where = f"experiment {exp.name!r}"
    table = _typed(t, dict, path, where, "readings")
    for name, pt in table.items():
        if name == "combine":
            continue
        fld = f"readings.{name}."
        _keys(pt, {"field", "paper", "values"}, {"paper", "values"}, path, where, fld)
        _typed(pt["paper"], str, path, where, fld + "paper")
        p = ReadingParam(name, _reading_target(name, pt, exp, path, where, fld), pt["paper"],
                         _typed(pt["values"], list, path, where, fld + "values"))
        if len(p.values) < 2:
            raise _err(path, where, fld + "values", "give at least two values (the primary and an alternative)")
        seen = []
        for i, v in enumerate(p.values):
            vf = f"{fld}values[{i}]"
            _keys(v, {"value", "why", "primary", "smoke", "set", "outside"}, {"value", "why"}, path, where, vf + ".")
            _typed(v["why"], str, path, where, vf + ".why")
            _typed(v.get("outside", ""), str, path, where, vf + ".outside")
            for flag in ("primary", "smoke"):
                _typed(v.get(flag, False), bool, path, where, f"{vf}.{flag}")
            _check_reading_value(p, exp, v["value"], path, where, vf + ".value")
            if format_value(v["value"]) in seen:
                raise _err(path, where, vf + ".value", f"{v['value']!r} is declared twice")
            seen.append(format_value(v["value"]))
            if "set" in v and (p.target[0] != "custom" or v.get("primary")):
                raise _err(path, where, vf + ".set", "only a non-primary value of a parameter without a run "
                                                     "setting of its own takes `set` (the primary is today's configuration)")
            if p.target[0] == "custom" and not v.get("primary"):
                if "set" not in v:
                    raise _err(path, where, vf + ".set", f"missing: {name!r} is not a run setting, so each "
                                                         f"alternative says what it sets")
                _keys(v["set"], {"base", "grid", "configs", "instruments", "ticket"}, set(), path, where, vf + ".set.")
        if sum(bool(v.get("primary")) for v in p.values) != 1:
            raise _err(path, where, fld + "values", "mark exactly one value primary = true (today's configuration)")
        exp.reading_params[name] = p
    combine = table.get("combine", "grid")
    if combine != "grid":
        for i, c in enumerate(_typed(combine, list, path, where, "readings.combine")):
            _typed(c, dict, path, where, f"readings.combine[{i}]")
            for k, v in c.items():
                if k not in exp.reading_params:
                    raise _err(path, where, f"readings.combine[{i}].{k}",
                               f"not a declared reading; declared: {sorted(exp.reading_params)}")
                if format_value(v) not in [format_value(x["value"]) for x in exp.reading_params[k].values]:
                    raise _err(path, where, f"readings.combine[{i}].{k}", f"{v!r} is not one of its declared values")
    exp.combine = combine
    _check_primary_is_today(exp, path, where)


def _check_primary_is_today(exp, path, where) -> None:
    """Each parameter's primary value is what the experiment runs today, in its full tier; a
    reading cannot vary a field that the tier sweeps (its grid)."""
    if "full" not in exp.tiers:
        return
    r = exp.resolved("full")
    for p in exp.reading_params.values():
        fld = f"readings.{p.name}.values"
        kind = p.target[0]
        if kind == "run":
            f = p.target[1]
            if f in r["grid"]:
                raise _err(path, where, f"readings.{p.name}", f"{f!r} is swept by the grid; a reading cannot fix it")
            points = [{**r["base"], **c} for c in (r["configs"] or [{}])]
            today = {pt.get(f, RUN_FIELDS[f].default) for pt in points}
        elif kind == "instruments":
            today = {r["instruments"][p.target[1]][p.target[2]]}
        elif kind == "ticket":
            today = {r["ticket"][p.target[1]]}
        else:
            continue
        if today != {p.primary}:
            raise _err(path, where, fld, f"primary {p.primary!r} is not what the full tier runs today "
                                         f"({sorted(map(str, today))})")


def select(exp, tier, selection, matched=None, claim=None) -> list:
    """The readings of `exp` in `tier` that --readings selects: the primary always; every one with
    'all'; otherwise those whose changed values are all among the NAME=VALUE pairs (those pairs
    are added to `matched`). Given a claim, a reading that changes only an instrument the claim
    does not read is left out where the reading it reduces to is selected (it would repeat it)."""
    out = []
    for r in exp.readings(tier):
        pairs = {f"{p}={format_value(v)}" for p, v in r.changed}
        if r.is_primary or "all" in selection or (selection and pairs <= set(selection)):
            out.append(r)
            if matched is not None:
                matched |= pairs
    if claim is None:
        return out
    names, rep = {r.name for r in out}, repeated(claim.tiers[tier]["check"], exp, tier)
    return [r for r in out if rep.get(r.name) not in names]


def repeated(check: dict, exp, tier: str) -> dict:
    """{reading: the reading it repeats} for a claim with this `check`: a reading that changes an
    option of an instrument whose metrics the check does not read (e.g. movement's definition for
    a test-accuracy claim) repeats the reading without that change."""
    metric, out = check.get("metric"), {}
    for r in exp.readings(tier) if metric is not None else ():
        inst = exp.resolved(tier, r)["instruments"]
        unread = {name for name, _ in r.changed if (t := exp.reading_params[name].target)[0] == "instruments"
                  and metric not in INSTRUMENTS[t[1]].metrics(inst[t[1]])}
        if unread:
            out[r.name] = reading_name(tuple(c for c in r.changed if c[0] not in unread))
    return out


# ----------------------------------------------------------------------------------- judging
# Per claim and per section, whether the claim holds under every reading tried, only under some,
# or under none; and per experiment, which reading fits the paper's numbers best.


HOLDS_EVERY = "holds under every reading tried"
HOLDS_SOME = "holds only under some readings"
HOLDS_NONE = "fails under every reading tried"
UNDECIDED = "undecided"
TRIED = ("pass", "fail", "diverged", "inconclusive")  # an "error" (e.g. runs not in the cache) is not a reading tried


def split(results: list) -> tuple:
    """(results of the primary reading, results of the other readings)."""
    primary = [r for r in results if reading_id(r) == PRIMARY]
    return primary, [r for r in results if reading_id(r) != PRIMARY]


def classify(verdicts: dict) -> dict:
    """Classification of one claim from {reading_id: verdict}: every reading tried passes, some do
    (named), or none does. An inconclusive reading (its interval straddles a band edge) neither
    holds nor fails: the class is taken over the decided readings and the sentence names the
    undecided ones; where they could still tip it (no decided reading disagrees with another),
    the class is "undecided". Errors are left out; one reading tried is no classification
    ("class": None)."""
    tried = [k for k, v in verdicts.items() if v in TRIED]
    holding = [k for k in tried if verdicts[k] == "pass"]
    undecided = [k for k in tried if verdicts[k] == "inconclusive"]
    failing = [k for k in tried if k not in holding and k not in undecided]
    out = {"tried": tried, "holding": holding, "undecided": undecided}
    if len(tried) < 2:
        return {**out, "class": None,
                "sentence": f"only the {tried[0]} reading run" if tried else "no reading run"}
    tail = f"; inconclusive under {len(undecided)}: {', '.join(undecided)}" if undecided else ""
    if holding and failing:
        cls, sentence = "some", f"{HOLDS_SOME} ({len(holding)} of {len(tried)}): {', '.join(holding)}{tail}"
    elif undecided:
        cls = UNDECIDED
        sentence = (f"holds under none of {len(tried)} readings tried, undecided: fails under {len(failing)}{tail}"
                    if not holding else f"undecided: holds under {len(holding)}, fails under {len(failing)} of "
                                        f"{len(tried)} readings tried{tail}")
    elif holding:
        cls, sentence = "every", f"{HOLDS_EVERY} ({len(tried)})"
    else:
        cls, sentence = "none", f"{HOLDS_NONE} ({len(tried)})"
    return {**out, "class": cls, "sentence": sentence}


def tolerance_units(result: dict):
    """A tried reading's measured value in tolerance units, for a claim with a numeric paper value:
    kinds.tolerance_position's z (the forest plot's), whose zero is the paper value (the target of
    a band centred on it, or the paper value inside a one-sided band). None if the claim has no
    such number."""
    pv = result.get("paper_value")
    if result["verdict"] not in TRIED or not isinstance(pv, (int, float)) or isinstance(pv, bool):
        return None
    t = tolerance_position(result)
    return None if t is None else t["z"]


def fit(results: list, repeats: dict | None = None) -> list:
    """Readings of one experiment in one tier ranked by the sum of squared misses of its claims'
    paper values in tolerance units (`tolerance_units`). Readings missing a claim that others
    have rank after the complete ones; a claim `select` left out under a reading because it would
    repeat another (`repeats`: {(file, id): {reading: the reading it repeats}}) counts as under that
    one. Rows: reading, n, sum_sq, rms, passes, missing, primary, largest (its two largest terms,
    (claim id, z)), and shared_n, shared_sum_sq: the sum over only the claims every reading has,
    which compares readings fairly where some lack claims (narrow widths trained, wide ones not)."""
    by = defaultdict(dict)
    for r in results:
        z = tolerance_units(r)
        if z is not None:
            by[reading_id(r)][(r["file"], r["id"])] = (z, r["verdict"])
    for c, rep in (repeats or {}).items():  # a claim left out under a reading that would repeat another
        for name, base in rep.items():  # counts as under that one
            if name in by and c not in by[name] and c in by.get(base, {}):
                by[name][c] = by[base][c]
    claims = set().union(*by.values()) if by else set()
    shared = set.intersection(*(set(zs) for zs in by.values())) if by else set()
    rows = []
    for reading, zs in by.items():
        sum_sq = sum(z * z for z, _ in zs.values())
        rows.append({"reading": reading, "n": len(zs), "sum_sq": sum_sq, "rms": math.sqrt(sum_sq / len(zs)),
                     "passes": sum(v == "pass" for _, v in zs.values()), "missing": len(claims - set(zs)),
                     "primary": reading == PRIMARY, "shared_n": len(shared),
                     "shared_sum_sq": sum(zs[c][0] ** 2 for c in shared),
                     # its largest terms: (claim id, z), the claims that weigh most in the sum
                     "largest": [(c[1], z) for c, (z, _) in sorted(zs.items(), key=lambda kv: -kv[1][0] ** 2)[:2]]})
    return sorted(rows, key=lambda r: (r["missing"], r["sum_sq"], r["reading"]))


def table(results: list, repeats: dict | None = None) -> dict:
    """The readings part of the report: per claim (key FILE::ID[TIER]) a row per reading and its
    classification; per section, the claims in each class; per experiment[tier], the fit
    (`repeats`: {(file, id, tier): {reading: the reading it repeats}}, see `fit`)."""
    claims, by_exp, walls = {}, defaultdict(list), {}
    for r in sorted(results, key=lambda r: reading_id(r) != PRIMARY):
        walls.update(r.get("run_wall_s") or {})  # (report.build gives the primary results without theirs)
        key = f"{r['file']}::{r['id']}[{r['tier']}]"
        c = claims.setdefault(key, {"section": f"{r['section']} {r['title']}", "experiment": r["experiment"],
                                    "tier": r["tier"], "declared": r.get("readings_declared", {}), "rows": []})
        m = r.get("measured") or {}
        c["rows"].append({"reading": reading_id(r), "values": r.get("reading_values", {}),
                          "verdict": r["verdict"], "value": m.get("value"), "std": m.get("std"),
                          "ci": m.get("ci"), "p": m.get("p") if m.get("p_adjusted") is None else m["p_adjusted"], "z": tolerance_units(r), "detail": r["detail"]})
        by_exp[f"{r['experiment']}[{r['tier']}]"].append(r)
    sections = defaultdict(lambda: {"every": [], "some": [], "none": [], UNDECIDED: []})
    for key, c in claims.items():
        c.update(classify({row["reading"]: row["verdict"] for row in c["rows"]}))
        if c["class"]:
            sections[c["section"]][c["class"]].append(key)
    for name, s in sections.items():
        n = sum(len(v) for v in s.values())
        s["sentence"] = (f"of {n} claims checked under several readings: {len(s['every'])} hold under every "
                         f"reading tried, {len(s['some'])} hold only under some, {len(s['none'])} fail under "
                         f"every reading tried" + (f", {len(s[UNDECIDED])} undecided (inconclusive under a reading)"
                                                   if s[UNDECIDED] else ""))
    fits = {k: fit(v, {c[:2]: m for c, m in (repeats or {}).items() if c[2] == v[0]["tier"]})
            for k, v in by_exp.items() if len({reading_id(r) for r in v}) > 1}
    for c in claims.values():
        rows = fits.get(f"{c['experiment']}[{c['tier']}]")
        c["best_fit"] = rows[0] if rows else None
        c["primary_fit"] = next((row for row in rows or [] if row["primary"]), None)
    for c in claims.values():  # a reading not run is said once per experiment, not as a row per claim
        c["not_run"] = [row["reading"] for row in c["rows"] if row["verdict"] == "not run"]
        c["rows"] = [row for row in c["rows"] if row["verdict"] != "not run"]
    return {"claims": {k: c for k, c in claims.items() if set(c["tried"]) - {PRIMARY}},
            "sections": dict(sorted(sections.items())), "fit": fits,
            # training time recorded with the runs the other readings used (shared runs included)
            "training_seconds_total": sum(walls.values())}
