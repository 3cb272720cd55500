"""This paper's ML: what is trained and measured, as the paper describes it.

Owns: the datasets (data.py), the MLP and CNN of Appendix B and a run's model, its state and
layout (models.py), magnitude and random pruning (prune.py), and the training protocol of
Section IV-D, one job a module: a run's configuration (config.py: RunConfig and its checks, seed
streams), the losses and a network's evaluation (losses.py), the networks trained, one model or
a seed group as one network (networks.py: Eager, Grouped), the optimiser, its schedule and one
step (optimise.py), that step captured as a CUDA graph (graphs.py), and the training loop
(train.py: train, train_seeds), which calls the measurements taken at its step boundaries: the
validation split and early stopping (validation.py) and the sharpness of the trajectory
(sharpness.py). The instruments' mathematics is measure.py (Hessian top eigenvalue, perturbation
and Keskar sharpness, relative parameter movement).
How an experiment uses them (procedures, the instruments' options and metrics) is
harness/procedures.

May import: torch and numpy; nothing else of harness (it is the bottom room).
"""
