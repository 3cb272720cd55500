"""Planning and executing the training the selected claims need, before they run: the plan of
pending run groups with their keys and cost (planner.py), and the executors that train it, local
worker processes or a SLURM job array through submitit (executors.py), each group through the
procedures' registry (harness/procedures: train_group).

May import: harness.procedures, harness.runs and harness.paper. Never harness.claims.
"""
