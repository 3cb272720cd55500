"""The context runs are made and read in: device, data, run cache, time budget, and what may train.

One Context per process (the pytest session, a worker of an executor, `python -m harness report`):
it holds the run cache (harness/runs/cache.py), the data splits loaded so far (loaded once per
process), the training options (--gpu's seed batching and CUDA graphs, checkpoint interval) and
the time budget (--time-budget), with the speed measured on the groups trained so far.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..paper import data as data_mod
from ..paper.config import RunConfig
from . import cache as cache_mod
from .expand import training_cost


class NotCached(RuntimeError):
    """A run is not in the cache and training is not allowed (report re-rendering)."""


class OutOfBudget(NotCached):
    """A run was not trained because the time budget (--time-budget) would be exceeded."""


# The largest forward passes (FLOPs) at which a CPU trains a family's seeds together, of one
# mini-batch and, for the fully connected families, of one sample (twice the weights): see
# Context.seeds_together.
GROUPED_CPU_FLOPS = {"mlp": 32e6, "fc": 32e6, "cnn": 200e6}
GROUPED_CPU_SAMPLE_FLOPS = {"mlp": 4e5, "fc": 4e5}


@dataclass
class Context:
    device: str = "cpu"
    data_dir: str | None = None
    cache_root: str | None = None
    refresh: bool = False
    allow_train: bool = True
    batch_seeds: bool | None = False  # train the seeds of a configuration together (train.train_seeds);
    # None: where it pays (seeds_together)
    cuda_graphs: bool = False  # replay the SGD step as a CUDA graph (graphs.GraphedStep)
    checkpoint_every: float = 60.0  # seconds between mid-run checkpoints (at epoch ends)
    deadline: float | None = None  # time.monotonic() by which training stops (see check_budget)
    log: object = None
    progress: object = None  # called with the jobs about to train; returns a per-epoch callback or None
    _splits: dict = field(default_factory=dict)
    _tables: dict = field(default_factory=dict)
    _refreshed: set = field(default_factory=set)
    run_seconds: dict = field(default_factory=dict)  # experiment name -> seconds spent training here
    _speed: dict = field(default_factory=dict)  # model family -> [seconds, training FLOPs] trained here

    def __post_init__(self):  # a context that may not train only reads the cache
        self.cache = cache_mod.RunCache(cache_mod.default_root(self.cache_root), read_only=not self.allow_train)

    def seeds_together(self, cfg) -> bool:
        """Whether the seeds of `cfg`'s configuration train as one grouped network: batch_seeds,
        or, where it is None (--seed-batching auto), on CUDA always, and on a CPU where a
        mini-batch's forward pass is at most GROUPED_CPU_FLOPS[family] and, for an MLP, one
        sample's at most GROUPED_CPU_SAMPLE_FLOPS[family] (at most about 200,000 weights), so that
        a step's cost is largely per-step overhead, which grouping pays once for all seeds.
        Measured with one torch thread per process, as `-n 2` trains (ratios: grouped speed over
        eager speed per seed-step), on the 2-core EPYC on 2026-12-04, after the grouped linear
        layers' weight gradients stopped being transposed at every step (networks.Grouped). MLPs, 12
        seeds (a script of optimise.step's calls, each path best of two): batch 32, width 8 5-6x,
        width 32 4.3x, width 128 (134,794 parameters, 8.6 MFLOP a mini-batch) 1.45x, width 256
        (335,114 parameters, 21 MFLOP) 0.90-0.94x; LeNet-300-100 at batch 60 (15 seeds, 266,610
        parameters, 32 MFLOP) 1.03x; batch 128 (5 seeds), width 64 (15 MFLOP) 1.35x, width 128
        (34 MFLOP) 0.97x, width 256 1.07x. (Before that change: width 256 at batch 32
        0.54-0.73x, LeNet 0.81-0.97x.) The grouped batched matmuls gain nothing where the weights
        are many (their gradients and momenta pass through memory at every step). CNNs,
        both channels-last (5 seeds): 2.1x at width 4, batch 32 (45 MFLOP), 1.4x at width 8,
        batch 16 (83), 1.2x at width 8, batch 32 (166), 1.3x at width 4, batch 128 (180), 0.73x
        at width 8, batch 128 (665)."""
        if self.batch_seeds is not None:
            return self.batch_seeds
        if self.device == "cuda":
            return True
        if cfg.model not in GROUPED_CPU_FLOPS:
            return False
        from ..paper import models
        rows = cfg.batch_size or (cfg.train_subset or data_mod.DATASETS[cfg.dataset].train_shape[0]) - cfg.val_size
        sample = models.config_flops(cfg)
        return sample * rows <= GROUPED_CPU_FLOPS[cfg.model] and sample <= GROUPED_CPU_SAMPLE_FLOPS.get(cfg.model, sample)

    def say(self, msg):
        if self.log:
            self.log(msg)

    def check_budget(self, cfgs: list, what: str) -> None:
        """Under a time budget, refuse (OutOfBudget) to start training `cfgs` when the time is
        spent, or when their estimated cost exceeds what is left. The estimate is the runs'
        training FLOPs at the speed measured on this family's groups trained so far in this
        process; before the first group of a family there is none, and the group starts (it then
        stops at an epoch end when the time runs out, its checkpoint saved: train.OutOfTime)."""
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        seconds, flops = self._speed.get(cfgs[0].model, (0.0, 0))
        need = seconds / flops * sum(training_cost(c)["flops"] for c in cfgs) if flops else 0.0
        if left <= 0 or need > left:
            raise OutOfBudget(f"not run: {what} needs about {need:.0f} s of training, "
                              f"{max(left, 0):.0f} s of the time budget are left")

    def fingerprint(self, dataset: str) -> dict | None:
        return data_mod.fingerprint(dataset, self.data_dir)

    def split(self, cfg: RunConfig) -> data_mod.Split:
        k = (cfg.dataset, cfg.train_subset, cfg.test_subset, cfg.subset_seed, cfg.device, cfg.input_norm, cfg.subset)
        if k not in self._splits:
            self._splits[k] = data_mod.split_for(cfg, self.data_dir)
        return self._splits[k]
