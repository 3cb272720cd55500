"""A run's configuration (RunConfig): everything that determines one training run, the checks of
its values, and the seed streams derived from its seed (derive_seed).

The defaults are the paper's protocol (Section IV-D, Appendix A; see train.py). One seed drives
initialisation (models.init_model) and streams derived from it drive the mini-batch order (and,
from subset_seed, the validation split).

Options for other papers' calibration experiments (every default keeps the paper's protocol,
train.py's docstring, and leaves every existing run key unchanged):
- model "fc" with `hidden` ("300,100"), `activation` (relu | tanh), `init` (default | glorot_normal):
  see models.py. LeNet-300-100 (Frankle & Carbin 2019): fc, hidden "300,100", glorot_normal;
  Cohen et al. (2021)'s fc-tanh: fc, hidden "200,200", tanh, default init. `batchnorm` (fc only):
  a BatchNorm1d after each hidden layer; Keskar et al. (2017)'s F1: fc, hidden 5 x "512", batchnorm.
- `loss` "mse": 0.5 * sum over classes of (f(x) - onehot(y))^2, averaged over samples (Cohen et
  al.'s SquaredLoss / n), in the training step, the reported losses and the sharpness; accuracy is
  the argmax either way.
- `steps` > 0: exactly that many optimiser steps (the last epoch is cut short), `epochs` ignored; a
  cosine schedule then runs over the steps (stepped after each one, T_max = steps). Epoch records
  carry the train loss/accuracy of the epoch's own steps (and "steps", the count at the epoch end)
  but no test evaluation: the test set is evaluated at the end (and on the early-stopping weights).
- `val_size` > 0 with `eval_every` = k: that many training rows held out as a validation split
  (uniformly at random, seeded by subset_seed, the same for every seed; data.holdout), evaluated at
  step 0, every k steps and at the end, recorded as "val": [[step, loss, acc%], ...] in the epoch
  record the evaluation fell in. Each model's weights at its least validation loss (the first step
  of it) are kept in memory; the final metrics add val_loss / val_acc (final weights),
  early_stop_step, early_stop_val_loss and early_stop_test_loss / _acc (the test set evaluated once,
  at the end, on those weights).
- `sharpness_every` = k: the top Hessian eigenvalue of the training loss (`sharpness`: the run's
  loss over its training rows, or the first `sharpness_samples`; `sharpness_iters` power
  iterations from measure.power_iteration's seeded start; `sharpness_tol` > 0 stops a measurement
  once successive estimates agree within it; `sharpness_warm` starts each from the model's previous
  top eigenvector, cheaper and more converged) at step 0, every k steps and at the end,
  recorded as "sharpness": [[step, value], ...] in the epoch records and summarised in the final
  metrics (sharpness.py: summary). Full-batch gradient descent, as Cohen et al.: batch_size 0,
  momentum 0, schedule "constant" (one step per epoch).
- `subset` "first": train_subset / test_subset are the first rows of the file (Cohen et al.'s
  cifar10-5k) instead of a stratified draw; with input_norm "feature" (CIFAR-10: every pixel x
  channel standardised by the whole training split's statistics), see data.py. The split must be
  loaded for it (data.split_for(cfg)); a split of other rows is refused. This project's
  cifar10.npz is sorted by class (its source lost the original order), so "first" is refused on
  it (data.subset_rows): a stratified subset is the available stand-in.
- `test_every` = k: the test set is evaluated into the epoch records every k epochs only (0: never;
  default 1, every epoch). No claim reads those per-epoch values; the final metrics evaluate the
  test set at the end whatever k is, and evaluation does not touch the weights, the BatchNorm
  statistics or any random stream, so the trained weights and the final metrics are the same bit
  for bit (tests/test_train.py). It saves the per-epoch test passes (a forward pass over the test
  set each epoch, 25-40% of a smoke-tier run's arithmetic).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from . import data, models
from .losses import LOSSES


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run. Its hash names the run in the cache, with
    default-valued fields left out (see runs/keys.py: run_key): add new fields with defaults."""
    dataset: str
    model: str
    width: int
    train_subset: int = 0  # 0: the whole training split
    test_subset: int = 0  # 0: the whole test split
    subset_seed: int = 0
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 128  # 0: full batch
    epochs: int = 60
    schedule: str = "cosine"  # cosine | constant
    seed: int = 0
    init_seed: int = -1  # -1: same as seed; another value gives a fresh initialisation
    device: str = "cpu"  # cpu | cuda
    amp: bool = False  # bf16 autocast on CUDA
    input_norm: str = "default"  # input scaling, data.DATASETS[dataset].norms: MNIST "default" = [0, 1], "standard"
    # --- options for other papers' calibration experiments (see the module docstring)
    hidden: str = ""  # model "fc": hidden sizes, "300,100" (width must be the first); others: ""
    activation: str = "relu"  # relu | tanh (models mlp and fc)
    init: str = "default"  # default (PyTorch's) | glorot_normal (weights N(0, 2/(fan_in+fan_out)), biases 0)
    loss: str = "ce"  # ce | mse (0.5 * ||f(x) - onehot(y)||^2, summed over classes, mean over samples)
    steps: int = 0  # > 0: train exactly this many optimiser steps (`epochs` is then ignored)
    val_size: int = 0  # training rows held out as a validation split (random, seeded by subset_seed)
    eval_every: int = 0  # > 0: evaluate the validation split every k steps (and at step 0 and the end)
    sharpness_every: int = 0  # > 0: top Hessian eigenvalue of the training loss every k steps (and 0, end)
    sharpness_iters: int = 20  # power iterations per sharpness measurement
    sharpness_samples: int = 0  # training rows the sharpness is measured on (the first k; 0: all)
    sharpness_tol: float = 0.0  # > 0: stop a measurement early when the estimate changes by < tol (relative)
    sharpness_warm: bool = False  # start each measurement from the model's previous top eigenvector
    subset: str = "stratified"  # how train_subset / test_subset rows are chosen: stratified | first (data.load_split)
    test_every: int = 1  # epochs between test-set evaluations in the epoch records (0: none); see the docstring
    batchnorm: bool = False  # model "fc": BatchNorm1d (affine) after each hidden Linear (models.FC)

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer {self.optimizer!r}: expected 'sgd' or 'adam'")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule {self.schedule!r}: expected 'cosine' or 'constant'")
        if self.model not in models.MODELS:
            raise ValueError(f"model {self.model!r}: expected one of {sorted(models.MODELS)}")
        if self.activation not in models.ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}: expected one of {sorted(models.ACTIVATIONS)}")
        if self.activation != "relu" and self.model == "cnn":
            raise ValueError(f"activation {self.activation!r}: model 'cnn' has ReLU only")
        if self.init not in models.INITS:
            raise ValueError(f"init {self.init!r}: expected one of {list(models.INITS)}")
        if self.subset not in data.SUBSETS:
            raise ValueError(f"subset {self.subset!r}: expected one of {list(data.SUBSETS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: expected one of {list(LOSSES)}")
        hidden = models.parse_hidden(self.hidden)
        if self.model == "fc":
            if not hidden:
                raise ValueError("model 'fc' needs its hidden sizes: hidden = '300,100' (say)")
            if self.width != hidden[0]:
                raise ValueError(f"model 'fc': width {self.width} must be the first hidden size "
                                 f"(hidden {self.hidden!r})")
            if self.dataset not in data.DATASETS:
                raise ValueError(f"model 'fc' takes its input size from the dataset: {self.dataset!r} "
                                 f"is not one of {sorted(data.DATASETS)}")
        elif hidden:
            raise ValueError(f"hidden {self.hidden!r}: only model 'fc' has hidden sizes to set")
        if self.batchnorm and self.model != "fc":
            raise ValueError("batchnorm: an option of model 'fc' only (the CNN has its own BatchNorm)")
        for name in ("steps", "val_size", "eval_every", "sharpness_every", "sharpness_samples", "test_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)}: expected >= 0")
        if not self.sharpness_tol >= 0:
            raise ValueError(f"sharpness_tol {self.sharpness_tol}: expected >= 0")
        if self.sharpness_iters < 1:
            raise ValueError(f"sharpness_iters {self.sharpness_iters}: expected >= 1")
        if self.eval_every and not self.val_size:
            raise ValueError("eval_every > 0 evaluates the validation split: set val_size > 0 too")
        if self.val_size and not self.eval_every:
            raise ValueError("val_size > 0 holds out a validation split: set eval_every > 0 to evaluate it")

    def to_dict(self) -> dict:
        return asdict(self)


def derive_seed(seed: int, stream: str) -> int:
    """A seed of its own for one random stream of a run (its mini-batch order: "batch-order"), from
    the run's seed and the stream's name."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
