"""Reproduction harness for 'Implicit Regularization and Generalization in Overparameterized
Neural Networks': one module per stage (data, models, train, measure, prune, stats, cache, spec,
experiments, checks, report) and a pytest plugin that turns claims/*.toml into test items."""
__version__ = "0.1.0"
