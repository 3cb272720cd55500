"""This paper's ML: what is trained and measured, as the paper describes it.

Owns: the datasets (data.py), the MLP and CNN of Appendix B (models.py), the training protocol of
Section IV-D (train.py), the instruments' mathematics (measure.py: Hessian top eigenvalue,
perturbation sharpness, relative parameter movement) and magnitude and random pruning (prune.py).
How an experiment uses them (procedures, the instruments' options and metrics) is
harness/procedures.

May import: torch and numpy; nothing else of harness (it is the bottom room).
"""
