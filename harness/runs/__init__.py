"""Where and how runs are made and kept, whatever the paper: an experiment expanded into runs, and
a lottery-ticket chain's plan of rounds, controls and keys (expand.py); run keys (keys.py); the
content-hashed run cache with its locks and atomic writes (cache.py), metrics written as strict JSON
(strict_json.py); a training group's mid-run checkpoint (checkpoint.py); exports imported from
other machines (exports.py) and the one-off re-keying of old entries (migrate.py); the context
runs are made in (context.py); the inline executor, which trains or reuses a group of runs and
caches measurements (inline.py); live progress (progress.py) and what produced each run
(provenance.py).

May import: harness.paper (to train a configuration: config.py, train.py, data.py, models.py).
Never the rooms above it: harness.procedures, harness.execute, harness.claims.
"""
