"""Reproduction harness for 'Implicit Regularization and Generalization in Overparameterized
Neural Networks'. Three rooms, each a package whose docstring says what it owns and may import:

  claims/  the engine, claims as tests: claim files parsed and validated (spec, schema, readings),
           checks and their statistics, a claim's result, the pytest plugin and the report. It
           knows nothing of MNIST or MLPs: it reaches the paper's ML only through the registry of
           procedures (paper/procedures.py) and asks runs/ to plan and execute.
  paper/   this paper's ML: datasets, the MLP and CNN, the training protocol, the instruments
           (Hessian, perturbation sharpness, parameter movement), pruning, and the procedures
           (count, train, ticket) that turn an experiment into rows.
  runs/    where and how runs execute: expansion into runs and the plan of what is missing, the
           run cache and its keys, the inline, local and SLURM executors, progress, provenance.

Plus the command line (__main__.py) and the speed benchmarks (bench.py).
"""
__version__ = "0.1.0"
