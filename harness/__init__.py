"""Reproduction harness for 'Implicit Regularization and Generalization in Overparameterized
Neural Networks'. Five rooms, each a package whose docstring says what it owns and may import.
Every import points down this list, never up, and no module imports one that imports it back
(tests/test_layout.py checks both):

  claims/      the engine, claims as tests: claim files parsed and validated (spec, schema,
               readings), checks and their statistics, a claim's result, the pytest plugin and the
               report. It knows nothing of MNIST or MLPs: it reaches the paper's ML only through
               the registry of procedures and asks execute/ to plan and train.
  execute/     the plan of what the selected claims still need (planner) and the executors that
               train it (local workers, submitit), each group through the procedures.
  procedures/  the registry of procedures (count, train, ticket) that turn an experiment into
               rows, and the registry of instruments (Hessian, perturbation sharpness, parameter
               movement): how each is taken on a trained run and tabulated.
  runs/        where and how a run is made and kept, whatever the paper: expansion into runs (and a
               ticket chain's plan), run keys, the run cache, checkpoints, exports, the context,
               the inline executor, progress, provenance.
  paper/       this paper's ML only: datasets, the MLP and CNN, the training protocol (a run's
               config, the networks, optimiser and step, the loop and the measurements it takes
               at step boundaries), the instruments' mathematics, pruning.

Plus the command line (__main__.py) and the speed benchmarks (bench.py), above all five.
"""
__version__ = "0.1.0"
