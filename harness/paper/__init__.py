"""This paper's ML: what is trained and measured, as the paper describes it.

Owns: the datasets (data.py), the MLP and CNN of Appendix B (models.py), the training protocol of
Section IV-D (train.py), the instruments (measure.py: Hessian top eigenvalue, perturbation
sharpness, relative parameter movement), magnitude and random pruning (prune.py), and the
registry of procedures (procedures.py: count, train, ticket), which turns an experiment into rows.

May import: torch and numpy. The ML modules import nothing else of harness; procedures.py, the one
seam with the rest, uses harness.runs to expand experiments into runs and to train and cache them.
"""
