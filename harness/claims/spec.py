"""Claim files: TOML under claims/, one per paper section, parsed and validated here.

A file holds experiments (what to train and measure) and claims (what the paper says about the
measurements). Every error names the file, the claim or experiment, and the field, and is raised
at collection time, before anything trains. Numbers are checked against their ranges (RUN_RANGES,
the instruments' options in harness/procedures/instruments.py, EXPECT_RANGES; seeds, fractions), and every run of every tier must have a
width. Readings of lost parameters are parsed in harness/claims/readings.py, the vocabulary
(ranges, SpecError) is harness/claims/schema.py, the check types (their fields, expectations and
validation) are harness/claims/kinds/, and what a file is parsed into (Experiment, Claim,
ClaimFile) is harness/claims/parsed.py. Schema (see claims/*.toml for real ones):

    section = "V-A"                     # the paper's section
    title = "Double descent"
    source = "..."                      # optional: another paper whose results this file reproduces
                                        #   to calibrate the harness (the report shows them first)
    validates = "..."                   # with source: what in the harness this calibration checks
                                        #   (one sentence, shown in the report's calibration table)

    [experiments.NAME]
    procedure = "train"                 # count | train | ticket
    dataset = "mnist"                   # mnist | cifar10
    model = "mlp"                       # mlp | cnn
    measure = ["movement"]              # instruments run on every trained model
    base = {epochs = 60, lr = 0.01}     # RunConfig fields shared by every run
    grid = {width = [8, 16]}            # product over these RunConfig fields
    configs = [{batch_size = 32, lr = 0.005}]   # explicit points, each crossed with the grid
    instruments = {hessian = {samples = 1000}}  # options per instrument
    ticket = {fractions = [0.7, 0.5]}   # lottery-ticket options (procedure = "ticket")
    plot = {x = "width", y = ["train_acc", "test_acc"], logx = true}
                                        # optional: by = "field" (a series per value), apart =
                                        # {"label" = {where}} (points drawn beside the x sweep)
    notes = "..."                       # readings taken for lost numbers, shown in the report
    [experiments.NAME.smoke]            # per tier: seeds (required) and overrides of
    seeds = [0, 1]                      #   base/instruments/ticket (merged), grid/configs (replaced)
    [experiments.NAME.scaled]           # optional: the largest version a 2-core CPU trains in hours,
    seeds = [0, 1, 2, 3, 4]             #   for claims whose statement survives the change of scale
    scale = "c=8, 6,250 images"         #   (one line: how it departs from the paper; the report shows it)
    [experiments.NAME.full]
    seeds = [0, 1, 2, 3, 4]

    [experiments.NAME.readings]         # optional: the paper's lost or ambiguous parameters
    combine = "grid"                    # "grid" (default: every combination of the values) or a
                                        #   list of combinations, e.g. [{epochs = 20, input_norm = "standard"}]
                                        #   (a parameter left out keeps its primary value)
    [experiments.NAME.readings.epochs]  # one table per open parameter; the key names the reading
    field = "epochs"                    # what it sets: a run setting (the default: the key itself),
                                        #   "instruments.INSTRUMENT.OPTION" or "ticket.OPTION"; with
                                        #   no such field, each non-primary value gives `set`
    paper = "'60-80 depending on experiment' (IV-D)"   # the paper's words (required)
    values = [                          # two or more; exactly one primary; `why` required
      {value = 60, primary = true, why = "the low end of the stated range"},
      {value = 80, why = "the high end", smoke = true},  # smoke = true: also run in the smoke tier
      {value = 20, why = "...", outside = "the stated 60-80 epochs (IV-D)"},  # outside: a value beyond
    ]                                   #   what the paper states, and what it states (the report says so)
    # A custom parameter (no run setting of its own) sets tier-body tables instead:
    #   values = [{value = "table", primary = true, why = "..."},
    #             {value = "linear", why = "...", set = {configs = [{batch_size = 32, lr = 0.0025}]}}]
    # The primary reading is the configuration the experiment runs today (checked against the
    # full tier): it is chosen from the paper's text, never because a claim then passes. Every
    # other reading is a set of overrides applied on top of a tier (run settings override every
    # point; instruments/ticket/base merged, grid/configs replaced), so its runs have their own
    # cache keys. Readings run in the full tier, and in the smoke tier those whose every
    # non-primary value says `smoke = true`. Reading names: "primary", or the changed values,
    # e.g. "epochs=20" or "epochs=20,input_norm=standard".

    [[claims]]
    id = "mlp-interpolation"
    statement = "The MLP first reaches 100% train accuracy at width 32"
    paper = "100.0% train accuracy at w=32"
    paper_value = 100.0                 # optional number
    experiment = "NAME"                 # or "OTHER.toml:NAME", an experiment of another file
    check = {type = "value", metric = "train_acc", where = {width = 32}}
    disagreements = ["..."]             # the paper's internal disagreements that touch it
    reading = "..."                     # the reading taken where the paper is ambiguous
    headline = true                     # optional: the paper puts it first (abstract, a section's lead)
    depends_on = "ID"                   # optional: a headline claim of this file that this one presupposes
                                        # (a "second descent" presupposes the peak): the report tells it
                                        # with that headline and counts it as reproducing only when the
                                        # headline passes too
    [claims.smoke]                      # a tier present = the claim runs in that tier
    check = {where = {width = 32}}      # optional overrides, merged into check
    expect = {min = 99.5, why = "..."}  # expectation; `why` is required
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import readings
from .kinds import KINDS
from .parsed import Claim, ClaimFile, Experiment
from .schema import (CONFIG_FIELDS, DATASETS, EXPECT_RANGES, INSTRUMENTS, MODELS, PROCEDURES, RUN_FIELDS,
                     RUN_RANGES, TICKET_DEFAULTS, TIERS, SpecError, _err, _keys, _typed)


def _run_ranges(dataset) -> dict:
    """RUN_RANGES, with the subsets bounded by the dataset's splits (0: the whole split)."""
    info = DATASETS[dataset]
    out = dict(RUN_RANGES)
    for name, n, split in (("train_subset", info.train_shape[0], "training"),
                           ("test_subset", info.test_shape[0], "test")):
        out[name] = (lambda v, n=n: 0 <= v <= n, f"0 (the whole split) to {n} (the {dataset} {split} split)")
    return out


def _run_fields(table, path, where, prefix, ranges, as_lists=False):
    for k, v in table.items():
        if k not in CONFIG_FIELDS:
            raise _err(path, where, prefix + k, f"not a run setting; allowed: {sorted(CONFIG_FIELDS)}")
        ftype = RUN_FIELDS[k].type
        expected = {"int": int, "float": float, "str": str, "bool": bool}[ftype if isinstance(ftype, str) else ftype.__name__]
        values = v if as_lists else [v]
        if as_lists and not _typed(v, list, path, where, prefix + k):
            raise _err(path, where, prefix + k, "expected a non-empty list")
        for x in values:
            _typed(x, expected, path, where, prefix + k)
            if k in ranges and not ranges[k][0](x):
                raise _err(path, where, prefix + k, f"{x!r}: expected {ranges[k][1]}")


def _parse_experiment(name, t, path) -> Experiment:
    where = f"experiment {name!r}"
    allowed = {"procedure", "dataset", "model", "measure", "base", "grid", "configs", "instruments",
               "ticket", "plot", "notes", "readings", *TIERS}
    _keys(t, allowed, {"procedure", "dataset", "model"}, path, where)
    if t["procedure"] not in PROCEDURES:
        raise _err(path, where, "procedure", f"unknown procedure {t['procedure']!r}; known: {list(PROCEDURES)}")
    if t["dataset"] not in DATASETS:
        raise _err(path, where, "dataset", f"unknown dataset {t['dataset']!r}; known: {sorted(DATASETS)}")
    if t["model"] not in MODELS:
        raise _err(path, where, "model", f"unknown model {t['model']!r}; known: {sorted(MODELS)}")
    measure = _typed(t.get("measure", []), list, path, where, "measure")
    for m in measure:
        if m not in INSTRUMENTS:
            raise _err(path, where, "measure", f"unknown instrument {m!r}; known: {list(INSTRUMENTS)}")

    ranges = _run_ranges(t["dataset"])

    def check_instruments(table, prefix):
        _keys(table, set(INSTRUMENTS), set(), path, where, prefix)
        for inst, opts in table.items():
            _keys(opts, set(INSTRUMENTS[inst].options), set(), path, where, f"{prefix}{inst}.")
            for k, v in opts.items():
                fld, option = f"{prefix}{inst}.{k}", INSTRUMENTS[inst].options[k]
                if option.type is list:  # a non-empty list of numbers, each allowed
                    if not _typed(v, list, path, where, fld):
                        raise _err(path, where, fld, "expected a non-empty list")
                    for x in v:
                        if not option.ok(_typed(x, float, path, where, fld)):
                            raise _err(path, where, fld, f"{x!r}: expected {option.allowed}")
                elif not option.ok(_typed(v, option.type, path, where, fld)):
                    raise _err(path, where, fld, f"{v!r}: expected {option.allowed}")

    def check_body(table, prefix):
        if "base" in table:
            _run_fields(_typed(table["base"], dict, path, where, prefix + "base"), path, where, prefix + "base.", ranges)
        if "grid" in table:
            _run_fields(_typed(table["grid"], dict, path, where, prefix + "grid"), path, where, prefix + "grid.",
                        ranges, True)
        for i, c in enumerate(_typed(table.get("configs", []), list, path, where, prefix + "configs")):
            _run_fields(_typed(c, dict, path, where, f"{prefix}configs[{i}]"), path, where, f"{prefix}configs[{i}].",
                        ranges)
        if "instruments" in table:
            check_instruments(table["instruments"], prefix + "instruments.")
        if "ticket" in table:
            t = table["ticket"]
            _keys(t, set(TICKET_DEFAULTS), set(), path, where, prefix + "ticket.")
            if t.get("scope", "global") not in ("global", "layer"):
                raise _err(path, where, prefix + "ticket.scope", f"{t['scope']!r}: expected 'global' or 'layer'")
            for c in t.get("controls", []):
                if c not in TICKET_DEFAULTS["controls"]:
                    raise _err(path, where, prefix + "ticket.controls",
                               f"unknown control {c!r}; known: {TICKET_DEFAULTS['controls']}")
            for k in ("fractions", "control_fractions"):
                for f in _typed(t.get(k, []), list, path, where, f"{prefix}ticket.{k}"):
                    if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1):
                        raise _err(path, where, f"{prefix}ticket.{k}", f"{f!r}: expected a number in (0, 1]")
            if "output_rate" in t:
                rate = t["output_rate"]
                if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate <= 1):
                    raise _err(path, where, prefix + "ticket.output_rate", f"{rate!r}: expected a number in [0, 1]")
            for k in ("retrain_epochs", "reinit_seed_offset"):  # retrain_epochs 0: the parent's epochs
                if k in t and _typed(t[k], int, path, where, f"{prefix}ticket.{k}") < 0:
                    raise _err(path, where, f"{prefix}ticket.{k}", f"{t[k]!r}: expected >= 0")

    check_body(t, "")
    tiers = {}
    for tier in TIERS:
        if tier in t:
            _keys(t[tier], {"seeds", "base", "grid", "configs", "instruments", "ticket", "scale"}, {"seeds"},
                  path, where, f"{tier}.")
            if "scale" in t[tier]:  # one line on how the tier departs from the paper's scale (the report shows it)
                _typed(t[tier]["scale"], str, path, where, f"{tier}.scale")
            seeds = _typed(t[tier]["seeds"], list, path, where, f"{tier}.seeds")
            if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
                    or len(set(seeds)) < len(seeds):
                raise _err(path, where, f"{tier}.seeds", f"{seeds!r}: expected a non-empty list of distinct integers >= 0")
            check_body(t[tier], f"{tier}.")
            tiers[tier] = t[tier]
    plot = t.get("plot", {})
    if plot:
        _keys(plot, {"x", "y", "logx", "logy", "by", "apart"}, {"x", "y"}, path, where, "plot.")
        for label, w in _typed(plot.get("apart", {}), dict, path, where, "plot.apart").items():
            _run_fields(_typed(w, dict, path, where, f"plot.apart.{label}"), path, where, f"plot.apart.{label}.",
                        ranges)
    exp = Experiment(name, str(path), t["procedure"], t["dataset"], t["model"], measure,
                     t.get("base", {}), t.get("grid", {}), t.get("configs", []),
                     t.get("instruments", {}), t.get("ticket", {}), plot, t.get("notes", ""), tiers)
    for tier in tiers:
        r = exp.resolved(tier)
        tk = r["ticket"]
        if exp.procedure == "ticket" and tk["output_rate"] != 1 and (tk["scope"] != "layer" or not tk["include_output"]):
            raise _err(path, where, "ticket.output_rate", f"{tk['output_rate']!r} in the {tier} tier: an output layer "
                                                          "pruned at its own rate needs scope = 'layer' and include_output = true")
        for c in r["configs"] or [{}]:
            if "width" not in {**r["base"], **r["grid"], **c}:
                raise _err(path, where, "width", f"missing in the {tier} tier: every run needs a width "
                                                 "(in base, grid or configs)")
    if "readings" in t:
        readings.parse(t["readings"], exp, path)
    return exp


def _check_where(w, exp, path, where, fld):
    _typed(w, dict, path, where, fld)
    for k in w:
        if k not in exp.fields():
            raise _err(path, where, f"{fld}.{k}", f"not a field of experiment {exp.name!r}'s runs; "
                                                  f"known: {sorted(exp.fields())}")


def _experiment_ref(ref, experiments, path, where) -> Experiment:
    """An experiment of this file by name, or of a sibling file as 'FILE.toml:NAME' (its runs, and
    so its cache entries, are shared: nothing trains twice)."""
    if ":" in ref:
        other, name = ref.split(":", 1)
        other_path = Path(path).parent / other
        if not other_path.exists():
            raise _err(path, where, "experiment", f"{ref!r}: no file {other_path}")
        experiments = load(other_path, with_claims=False).experiments
    else:
        name = ref
    if name not in experiments:
        raise _err(path, where, "experiment", f"unknown experiment {ref!r}; known: {sorted(experiments)}")
    return experiments[name]


def _parse_claim(t, experiments, path, section) -> Claim:
    cid = t.get("id") if isinstance(t, dict) else None
    where = f"claim {cid!r}"
    allowed = {"id", "section", "statement", "paper", "paper_value", "experiment", "check",
               "disagreements", "reading", "headline", "depends_on", *TIERS}
    _keys(t, allowed, {"id", "statement", "paper", "experiment", "check"}, path, where)
    for f in ("id", "statement", "paper", "experiment"):
        _typed(t[f], str, path, where, f)
    _typed(t.get("headline", False), bool, path, where, "headline")
    _typed(t.get("depends_on", ""), str, path, where, "depends_on")
    exp = _experiment_ref(t["experiment"], experiments, path, where)
    check = _typed(t["check"], dict, path, where, "check")
    ctype = check.get("type")
    if ctype not in KINDS:
        raise _err(path, where, "check.type", f"unknown check {ctype!r}; known: {sorted(KINDS)}")
    tiers = {}
    for tier in TIERS:
        if tier not in t:
            continue
        _keys(t[tier], {"check", "expect"}, {"expect"}, path, where, f"{tier}.")
        merged = {**check, **_typed(t[tier].get("check", {}), dict, path, where, f"{tier}.check")}
        ctype = merged.get("type")
        if ctype not in KINDS:
            raise _err(path, where, f"{tier}.check.type", f"unknown check {ctype!r}; known: {sorted(KINDS)}")
        kind = KINDS[ctype]
        _keys(merged, kind.fields | {"type"}, kind.required, path, where, f"{tier}.check.")
        if tier not in exp.tiers:
            raise _err(path, where, tier, f"experiment {exp.name!r} has no {tier!r} tier")
        known = exp.metrics(tier)
        if merged["metric"] not in known:
            raise _err(path, where, "check.metric", f"unknown metric {merged['metric']!r} for experiment "
                                                    f"{exp.name!r}; known: {sorted(known)}")
        for w in ("where", "a", "b"):
            if w in merged:
                _check_where(merged[w], exp, path, where, f"check.{w}")
        if "over" in merged and merged["over"] not in exp.fields():
            raise _err(path, where, "check.over", f"{merged['over']!r} is not a field of the runs")
        expect = t[tier]["expect"]
        _keys(expect, kind.expect_fields | {"why"}, {"why"}, path, where, f"{tier}.expect.")
        _typed(expect["why"], str, path, where, f"{tier}.expect.why")
        for k in ("target", "abs_tol", "rel_tol", "min", "max", "slack", "alpha"):
            if k in expect:
                _typed(expect[k], float, path, where, f"{tier}.expect.{k}")
        for k, (ok, allowed) in EXPECT_RANGES.items():
            if k in expect and not ok(expect[k]):
                raise _err(path, where, f"{tier}.expect.{k}", f"{expect[k]!r}: expected {allowed}")
        if expect.get("min", -math.inf) > expect.get("max", math.inf):
            raise _err(path, where, f"{tier}.expect.min", f"{expect['min']!r} is above max {expect['max']!r}")

        def fail(suffix, msg, tier=tier):
            raise _err(path, where, f"{tier}.expect{suffix}", msg)
        kind.validate(expect, fail)
        tiers[tier] = {"check": merged, "expect": expect}
    if not tiers:
        raise _err(path, where, "smoke/full", "a claim needs at least one tier table")
    return Claim(t["id"], str(path), t.get("section", section), t["statement"], t["paper"],
                 t.get("paper_value"), exp, check, tiers,
                 list(t.get("disagreements", [])), t.get("reading", ""), t.get("headline", False),
                 t.get("depends_on", ""))


def load(path, with_claims: bool = True) -> ClaimFile:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not a UTF-8 text file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: malformed TOML: {e}") from e
    _keys(doc, {"section", "title", "source", "validates", "experiments", "claims"}, {"section", "title"}, path, "file")
    _typed(doc.get("source", ""), str, path, "file", "source")
    if _typed(doc.get("validates", ""), str, path, "file", "validates") and not doc.get("source"):
        raise _err(path, "file", "validates", "says what a calibration checks: set `source` too")
    experiments = {name: _parse_experiment(name, t, path)
                   for name, t in _typed(doc.get("experiments", {}), dict, path, "file", "experiments").items()}
    claims, seen = [], set()
    for t in _typed(doc.get("claims", []) if with_claims else [], list, path, "file", "claims"):
        c = _parse_claim(t, experiments, path, doc["section"])
        if c.id in seen:
            raise _err(path, f"claim {c.id!r}", "id", "duplicate id in this file")
        seen.add(c.id)
        claims.append(c)
    by_id = {c.id: c for c in claims}
    for c in claims:  # a claim presupposes a headline claim of this file, never itself or a dependent
        if not c.depends_on:
            continue
        head = by_id.get(c.depends_on)
        if head is None or head is c:
            raise _err(path, f"claim {c.id!r}", "depends_on", f"{c.depends_on!r} is not another claim of this file; "
                                                                f"known: {sorted(set(by_id) - {c.id})}")
        if not head.headline or head.depends_on:
            raise _err(path, f"claim {c.id!r}", "depends_on", f"{c.depends_on!r} is not a headline claim "
                                                                f"(mark it headline = true; it may not depend on another)")
    return ClaimFile(str(path), doc["section"], doc["title"], experiments, claims, doc.get("source", ""),
                     doc.get("validates", ""))
