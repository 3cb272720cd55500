"""The claims engine: every quantitative claim of the paper as a pytest item with a verdict.

Owns: the claim-file schema and its validation (schema.py, spec.py; what a file is parsed into,
parsed.py), readings of lost parameters (readings.py), the check kinds (kinds/, one module per
kind, registered in kinds.KINDS: fields, validation, evaluation, words, unit), checks (checks.py,
which dispatches to them) and their statistics over seeds (stats.py), a claim's result record
(results.py), the pytest plugin (plugin.py, the `pytest11` entry point: its options and hooks;
session.py, the session's state and context; items.py, claim files and items; xdist_order.py, the
order workers take claims in; terminal.py, what it writes) and the report (report.py assembles it
from words.py, a claim's words; figures.py, the figures' data; plans.py, what experiments train and
cost; findings.py, the answer in words; answer.py, the sentence and the verdict per section;
misses.py, what a failing headline measured; trained.py, where the runs were made; svg.py draws the
figures; fmt.py writes numbers and units).

May import: harness.execute (to plan and train), harness.runs (to read cached runs) and
harness.procedures, the registries of procedures and instruments, which also name the run
settings, datasets, models and instruments a claim file may use. Never harness.paper directly.
"""
