"""Where and how runs execute, whatever the paper: an experiment expanded into runs (expand.py),
the plan of what the selected claims still need (planner.py), the content-hashed run cache with its
keys, locks, checkpoints and exports (cache.py), the context runs are made in (context.py), the
executors that train the plan (inline.py in the claims' own process; executors.py: local worker
processes or a SLURM job array through submitit), live progress (progress.py) and what produced
each run (provenance.py).

May import: harness.paper's ML modules (to train a configuration: train.py, data.py, models.py),
and its registry of procedures (planner.py and executors.py dispatch a group to its procedure).
Never harness.claims.
"""
