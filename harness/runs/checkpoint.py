"""Training checkpoints: a training group's mid-run progress, kept in the run cache's
<root>/checkpoints/ (RunCache.checkpoint_path), so that a killed or preempted run resumes from its
last saved epoch.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .cache import atomic_write, load_torch


@dataclasses.dataclass
class Checkpoint:
    """Mid-run progress of a training group, saved atomically at epoch ends (at most every
    `every` seconds) so that a killed run resumes where it was: weights and buffers, optimiser and
    schedule state, the batch-order generators, histories and the step count. Resuming gives the
    same result as an uninterrupted run (bit for bit on the CPU; tests/test_train.py)."""
    path: object
    every: float = 60.0
    deadline: float | None = None  # time.monotonic() after which training saves and stops (OutOfTime)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def load(self):
        """The saved state, or None (none saved; a damaged file is set aside, see set_aside)."""
        return load_torch(Path(self.path))

    def save(self, state: dict):
        atomic_write(Path(self.path), lambda f: torch.save(state, f))

    def remove(self):
        Path(self.path).unlink(missing_ok=True)
