"""Training engine: the paper's protocol (Section IV-D, Appendix A).

SGD with momentum 0.9 or Adam (betas 0.9/0.999), cosine annealing over the run (stepped once per
epoch, T_max = epochs), no weight decay, no augmentation. `batch_size = 0` is full-batch gradient
descent. One seed drives initialisation (torch's global generator, model built on the CPU so the
same seed gives the same init on any device) and a second stream derived from it drives
mini-batch order. Optional binary masks are enforced after every optimiser step (their gradients
are zeroed before it, so momentum never pushes a pruned weight). A non-finite training loss stops
the run and marks it diverged. On CUDA, PyTorch's defaults stay (TF32 convolutions); mixed
precision (bf16 autocast) is an explicit opt-in recorded in the config.

Options for other papers' calibration experiments (RunConfig; every default keeps the paper's
protocol above, and leaves every existing run key unchanged):
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
  metrics (sharpness_summary). Full-batch gradient descent, as Cohen et al.: batch_size 0,
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

import copy
import dataclasses
import hashlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import data, models
from .data import Split


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
            from .data import DATASETS
            if self.dataset not in DATASETS:
                raise ValueError(f"model 'fc' takes its input size from the dataset: {self.dataset!r} "
                                 f"is not one of {sorted(DATASETS)}")
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


@dataclass
class TrainResult:
    final: dict  # train_loss, train_acc, test_loss, test_acc, gen_gap (accuracies in %)
    history: list = field(default_factory=list)  # one dict per epoch
    diverged: bool = False
    steps: int = 0
    wall_s: float = 0.0
    theta0: dict | None = None  # state_dict at initialisation (CPU tensors)
    thetaT: dict | None = None  # state_dict at the end


def derive_seed(seed: int, stream: str) -> int:
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


LOSSES = ("ce", "mse")


def per_sample_loss(out, y, loss: str = "ce"):
    """Loss of each row: out [..., classes] (logits / outputs), y [...] class indices -> [...].
    "ce": cross-entropy; "mse": 0.5 * sum over classes of (out - onehot(y))^2."""
    if loss == "mse":
        return 0.5 * (out - F.one_hot(y, out.shape[-1]).to(out.dtype)).pow(2).sum(-1)
    return F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none").view(y.shape)


def init_model(cfg: RunConfig) -> torch.nn.Module:
    torch.manual_seed(cfg.seed if cfg.init_seed < 0 else cfg.init_seed)
    return models.for_config(cfg)


def cpu_state(model) -> dict:
    """The model's state on the CPU, every tensor in the standard (contiguous) layout whatever
    layout the model computes in (see has_conv)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def has_conv(model) -> bool:
    """Whether the model has a convolution: its activations then run channels-last (NHWC) on every
    device and path (Eager, Grouped, the instruments' copies). Measured on a 2-core CPU (one torch
    thread, README's bench paragraph) and on an H100 (Grouped, issue 11): the same arithmetic in
    less time; weights agree with the NCHW layout's up to float rounding (tests/test_grouped.py)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d batch [b, c, h, w] laid out channels-last (other tensors as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Eager:
    """One model, called directly: the plain one-at-a-time PyTorch path. Tensors carry a leading
    model axis of size 1 so that the training loop is the same for both paths. A convolutional
    model's weights and activations are channels-last unless `channels_last` is False (has_conv);
    its states (`states`) are in the standard layout all the same."""

    kind = "single"

    def __init__(self, models_, device, channels_last: bool | None = None):
        (self.model,) = models_
        self.model.to(device)
        self.channels_last = has_conv(self.model) if channels_last is None else channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # ReLUs in place, as in Grouped: no layer before a ReLU keeps its output for backward, so
        # the values are the same, in 0.8-0.95x the time at the CNN's batch 128-500 (issue 28)
        for m in self.model.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = True
        self.params = dict(self.model.named_parameters())

    @staticmethod
    def pack(per_model: list) -> dict:
        (d,) = per_model
        return dict(d)

    def train(self, on: bool):
        self.model.train(on)

    def __call__(self, xb):  # [1, b, ...] -> [1, b, classes]
        return self.model(to_channels_last(xb[0]) if self.channels_last else xb[0]).unsqueeze(0)

    def eval_forward(self, x):  # [b, ...] -> [1, b, classes]
        return self.model(to_channels_last(x) if self.channels_last else x).unsqueeze(0)

    def states(self) -> list:
        return [cpu_state(self.model)]

    def load_states(self, states: list):
        self.model.load_state_dict(states[0])


class Grouped:
    """S models of one architecture (models.MLP or models.CNN, differing only in their weights) as
    ONE network: forward maps [S, b, ...] to [S, b, classes], each model on its own mini-batch.
    Every state entry is held as the stack of the S models' tensors ([S, ...], see `pack`), and
    the forward reads them as one layer: a convolution is a grouped convolution (groups=S) over
    the models' concatenated channels (model s owns channels s*c..(s+1)*c), BatchNorm (no affine
    parameters, as in the paper) normalises those S*c channels, so each channel's batch and
    running statistics are exactly its own model's (a fully connected model's BatchNorm1d, with
    its scale and shift, likewise over the S*c features); pooling and ReLU act per channel; Flatten
    gives each model its own (c, h, w) vector; a linear layer is one batched matmul (baddbmm),
    computed as W @ x^T so that each weight's gradient comes out in the weight's own layout (as x @ W^T
    it came out transposed and was copied back at every step: a grouped MLP of width 256 ran a
    third slower).
    SGD and Adam act elementwise on the stacked parameters, so each model's update is the one it
    would get alone (tests/test_grouped.py). `channels_last` (default: on; see has_conv) lays the
    activations out channels-last.

    This replaced a torch.func vmap version of the same S models: issue 11's measurements on one
    H100 had a hand-written network of this form (grouped convolutions, S*c-channel BatchNorm,
    baddbmm heads, step in a CUDA graph) beat the vmap one at every batch size (9.5x / 3.9x /
    2.0x eager at batch 32 / 128 / 1024 against vmap's 5.9x / 1.6x / 0.76x; vmap's BatchNorm
    batching rule was the cost), and channels-last +2% / +9% / +21%. This class itself has not
    been timed on a GPU yet: `python -m harness bench --device cuda`."""

    kind = "grouped"

    def __init__(self, models_, device, channels_last: bool | None = None):
        base, self.n = models_[0], len(models_)
        self.channels_last = True if channels_last is None else channels_last
        self.keys = list(base.state_dict())
        packed = self.pack([m.state_dict() for m in models_])
        names = {k for k, _ in base.named_parameters()}
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in packed.items() if k in names}
        self.buffers = {k: v.detach().to(device) for k, v in packed.items() if k not in names}
        self.layers = [(name, m) for name, m in base.named_modules() if not list(m.children())]
        for name, m in self.layers:
            if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.Tanh, nn.MaxPool2d, nn.Flatten,
                                  nn.Linear)) \
                    or isinstance(m, nn.BatchNorm2d) and (m.affine or m.momentum is None) \
                    or isinstance(m, nn.BatchNorm1d) and m.momentum is None \
                    or isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
                raise TypeError(f"Grouped: layer {name!r} ({m}) has no grouped form")
        self.training = True

    @staticmethod
    def pack(per_model: list) -> dict:
        """Per-model dicts of tensors (parameters, buffers, masks) -> the grouped layout."""
        return {k: torch.stack([d[k] for d in per_model]) for k in per_model[0]}

    def train(self, on: bool):
        self.training = on

    def __call__(self, xb):  # [S, b, ...] -> [S, b, classes]
        return self._forward(xb, shared=False)

    def eval_forward(self, x):  # [b, ...], the same batch for every model -> [S, b, classes]
        return self._forward(x, shared=True)

    def _forward(self, x, shared: bool):
        p, buf, n = self.params, self.buffers, self.n
        channels = False  # False: [S, b, ...] (or [b, ...] if shared); True: [b, S*c, h, w]
        for name, m in self.layers:
            if isinstance(m, nn.Conv2d):
                if not channels:
                    x = x.repeat(1, n, 1, 1) if shared else x.transpose(0, 1).flatten(1, 2)
                    if self.channels_last:  # later layers keep the layout of their input
                        x = x.contiguous(memory_format=torch.channels_last)
                    channels = True
                x = F.conv2d(x, p[f"{name}.weight"].flatten(0, 1), p[f"{name}.bias"].flatten(), m.stride,
                             m.padding, m.dilation, groups=n)
            elif isinstance(m, nn.BatchNorm2d):  # running statistics updated in place, per channel
                x = F.batch_norm(x, buf[f"{name}.running_mean"].view(-1), buf[f"{name}.running_var"].view(-1),
                                 training=self.training, momentum=m.momentum, eps=m.eps)
                if self.training:
                    buf[f"{name}.num_batches_tracked"].add_(1)
            elif isinstance(m, nn.BatchNorm1d):  # [S, b, c] as [b, S*c]: each model's c features its own
                s_, b_, c_ = x.shape
                x = F.batch_norm(x.transpose(0, 1).reshape(b_, s_ * c_), buf[f"{name}.running_mean"].view(-1),
                                 buf[f"{name}.running_var"].view(-1), p[f"{name}.weight"].view(-1),
                                 p[f"{name}.bias"].view(-1), training=self.training, momentum=m.momentum,
                                 eps=m.eps).view(b_, s_, c_).transpose(0, 1)
                if self.training:
                    buf[f"{name}.num_batches_tracked"].add_(1)
            elif isinstance(m, nn.ReLU):
                x = F.relu(x, inplace=True)  # no layer here keeps its output for backward
            elif isinstance(m, nn.Tanh):
                x = torch.tanh(x)  # (its backward needs its output: not in place)
            elif isinstance(m, nn.MaxPool2d):
                x = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            elif isinstance(m, nn.Flatten):
                if channels:  # [b, S*c, h, w] -> [S, b, c*h*w], each model's own (c, h, w) order
                    x = x.reshape(x.shape[0], n, -1).transpose(0, 1)
                    channels = False
                else:
                    x = x.flatten(1).expand(n, -1, -1) if shared else x.flatten(2)
            else:  # Linear: [S, b, in] -> [S, b, out] as (W [S, out, in] @ x^T [S, in, b] + [S, out, 1])^T
                x = torch.baddbmm(p[f"{name}.bias"].unsqueeze(2), p[f"{name}.weight"], x.transpose(1, 2)).transpose(1, 2)
        return x

    def states(self) -> list:
        merged = {**self.params, **self.buffers}
        return [{k: merged[k][i].detach().to("cpu", copy=True) for k in self.keys} for i in range(self.n)]

    def load_states(self, states: list):
        packed = self.pack(states)
        with torch.no_grad():
            for k, t in {**self.params, **self.buffers}.items():
                t.copy_(packed[k])


@torch.no_grad()
def _evaluate(net, x, y, chunk: int = 1000, amp: bool = False, loss_fn: str = "ce") -> tuple:
    """Per model: (mean loss list, accuracy-in-% list), eval mode, one host sync. The loss is
    cross-entropy, or `loss_fn` (see per_sample_loss)."""
    net.train(False)
    loss, correct = 0, 0
    for i in range(0, len(x), chunk):
        with _autocast(x.device, amp):
            out = net.eval_forward(x[i:i + chunk]).float()
        yb = y[i:i + chunk]
        if loss_fn == "ce":
            loss = loss + F.cross_entropy(out.flatten(0, 1), yb.repeat(len(out)), reduction="none") \
                .view(len(out), -1).double().sum(1)
        else:
            loss = loss + per_sample_loss(out, yb.expand(len(out), -1), loss_fn).double().sum(1)
        correct = correct + (out.argmax(-1) == yb).sum(1)
    return (loss / len(x)).tolist(), (100.0 * correct.double() / len(x)).tolist()


def _autocast(device, amp):
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp)


def _optimizer(cfg: RunConfig, params, device="cpu"):
    """Adam as PyTorch ships it, its multi-tensor (foreach) implementation on every device (the
    default on CUDA; on a CPU PyTorch would loop over the parameters in Python, with the same
    results bit for bit: tools/same_training.py); SGD fused (one kernel for all parameters) and
    reading its learning rate from a float32 tensor on the device, which the schedule fills in
    place each epoch: the step then never syncs with the host and a CUDA graph can capture it (see
    GraphedStep)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0, foreach=True)
    lr = torch.tensor(cfg.lr, dtype=torch.float32, device=device)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=0.0, fused=True)


def _lr_to_device(opt, device):
    """A loaded optimiser state brings its tensor learning rate back on the CPU."""
    for g in opt.param_groups:
        for k in ("lr", "initial_lr"):
            if isinstance(g.get(k), torch.Tensor):
                g[k] = g[k].to(device)


def graphable(cfg: RunConfig) -> bool:
    """Whether a run's step may be captured: SGD without amp (Adam and autocast stay uncaptured)."""
    return cfg.optimizer == "sgd" and not cfg.amp


class GraphedStep:
    """Runs `fn(idx)` (one training step on the mini-batch rows `idx`) for every full mini-batch,
    captured once as a CUDA graph and replayed: a step's Python and kernel-launch cost is paid at
    capture only. The indices pass through a static buffer; everything else the step touches
    (weights, BatchNorm buffers, momentum, the learning-rate tensor, the accumulators) stays at
    fixed addresses and is updated in place. As CUDA graphs require, the first `warmup` steps run
    eagerly on a side stream (they are real steps, and they create the momentum buffers); the
    next step is captured, then replayed, and so is every later one. On a CPU the step is called
    directly, so the bookkeeping around it is the same on both devices."""

    def __init__(self, fn, shape, device, warmup: int = 3):
        self.fn, self.warmup, self.calls, self.graph = fn, warmup, 0, None
        self.idx = torch.zeros(shape, dtype=torch.long, device=device)
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, idx):
        self.idx.copy_(idx)
        if not self.cuda:
            self.fn(self.idx)
        elif self.graph is None and self.calls < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(self.idx)
            torch.cuda.current_stream().wait_stream(side)
        else:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.fn(self.idx)
            self.graph.replay()
        self.calls += 1


def train(cfg: RunConfig, split: Split, masks: dict | None = None, init_state: dict | None = None,
          progress=None, checkpoint=None, graphed: bool = False) -> TrainResult:
    """Train one model, one at a time. `init_state` replaces the seeded initialisation
    (lottery-ticket rewinding); `masks` maps parameter names to 0/1 tensors enforced throughout.
    `checkpoint`: where to save progress at epoch ends and resume from (a runs.checkpoint.Checkpoint:
    load, save, remove, out_of_time, every, path).
    `graphed`: replay the SGD step as a CUDA graph (see GraphedStep; ignored for Adam and amp)."""
    return _fit([cfg], split, [masks], [init_state], Eager, progress, checkpoint, graphed)[0]


def train_seeds(cfgs: list, split: Split, masks: list | None = None, init_states: list | None = None,
                progress=None, checkpoint=None, graphed: bool = False) -> list:
    """Train several runs that differ only in seed (and init_seed) together, as one grouped
    network (see Grouped): each run is initialised and sees its mini-batches exactly as under
    `train`, and gets the same results up to float rounding (tests/test_grouped.py)."""
    ref = dataclasses.replace(cfgs[0], seed=0, init_seed=-1)
    for c in cfgs:
        if dataclasses.replace(c, seed=0, init_seed=-1) != ref:
            raise ValueError(f"train_seeds: runs differ in more than the seed: {c} vs {cfgs[0]}")
    n = len(cfgs)
    return _fit(cfgs, split, masks or [None] * n, init_states or [None] * n, Grouped, progress, checkpoint,
                graphed)


def step(net, opt, xb, yb, masks: dict, amp: bool = False, loss: str = "ce") -> tuple:
    """One optimiser step for every model of `net` on its own mini-batch (xb: [models, b, ...]).
    Masked weights get zero gradient and are re-zeroed after the step. Returns (logits, losses).
    The loss is cross-entropy, or `loss` (see per_sample_loss), averaged over the mini-batch."""
    with _autocast(xb.device, amp):
        out = net(xb)
    if loss == "ce":
        losses = F.cross_entropy(out.flatten(0, 1).float(), yb.flatten(), reduction="none") \
            .view(len(out), -1).mean(1)
    else:
        losses = per_sample_loss(out.float(), yb, loss).mean(1)
    for p in net.params.values():  # opt.zero_grad(set_to_none=True) without its per-call bookkeeping
        p.grad = None
    losses.sum().backward()
    for k, m in masks.items():
        net.params[k].grad.mul_(m)
    opt.step()
    if masks:
        with torch.no_grad():
            for k, m in masks.items():
                net.params[k].mul_(m)
    return out, losses


class OutOfTime(RuntimeError):
    """Training stopped at an epoch end because the time budget ran out; its checkpoint is saved,
    so the next call resumes it (see runs.checkpoint.Checkpoint.deadline)."""


def sharpness(model, x, y, loss: str = "ce", iters: int = 20, chunk: int = 1000, seed: int = 0,
              tol: float = 0.0, start: torch.Tensor | None = None) -> dict:
    """Top (largest-magnitude) eigenvalue of the Hessian of the mean training loss `loss` on
    (x, y) with respect to all parameters, BatchNorm in eval mode, float32, on a copy of `model`,
    by power iteration (at most `iters` products; `tol` as measure.power_iteration's).
    Cold (`start` None): "ce" is measure.hessian_top_eigenvalue itself; "mse" the same power
    iteration (measure.power_iteration, the same seeded start vector) on exact Hessian-vector
    products (measure.make_hvp) of the mean of per_sample_loss(..., "mse"). Warm: the iteration
    starts from `start` (e.g. the previous measurement's vector, as the top eigenvector moves
    little between nearby steps), the same update and stopping rule.
    Returns value, residual, iterations, bn_mode, n_samples and, but for cold "ce", vector."""
    from . import measure  # (measure imports this module)
    if loss == "ce" and start is None:
        return measure.hessian_top_eigenvalue(model, x, y, iters=iters, tol=tol, chunk=chunk, seed=seed)
    work = copy.deepcopy(model).float().eval()
    params = list(work.parameters())
    device = params[0].device
    x, y, n = x.to(device=device, dtype=torch.float32), y.to(device), len(x)

    hvp = measure.make_hvp(work, x, y, chunk, lambda out, yb: per_sample_loss(out, yb, loss).mean())
    template = torch.empty(sum(p.numel() for p in params), dtype=torch.float32, device=device)
    res = measure.power_iteration(hvp, template, iters=iters, tol=tol, seed=seed, start=start)
    return {"value": float(res["value"]), "residual": float(res["residual"]),
            "iterations": int(res["iterations"]), "bn_mode": "eval", "n_samples": n, "vector": res["vector"]}


SHARPNESS_CHUNK = 1000  # rows per chunk of a sharpness measurement's double backward
SHARPNESS_FRACTIONS = (0.1, 0.5, 1.0)  # sharpness_ratio_<f> in the final metrics: see sharpness_summary
VAL_KEYS = ("val_loss", "val_acc", "early_stop_step", "early_stop_val_loss", "early_stop_test_loss",
            "early_stop_test_acc")
SHARPNESS_KEYS = ("sharpness_final", "sharpness_max", "sharpness_ratio_max", "eos_step", "sharpness_ratio_post_median",
                  *(f"sharpness_ratio_{f:g}" for f in SHARPNESS_FRACTIONS))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one pass over n rows (a last mini-batch of one row is skipped, as
    BatchNorm cannot train on it; batch_size 0: full batch)."""
    bs = batch_size or n
    return sum(1 for i in range(0, n, bs) if not (min(bs, n - i) < 2 and n > 1))


def sharpness_summary(points: list, lr: float, total_steps: int) -> dict:
    """Final metrics from [(step, sharpness), ...] (measured at step 0, every k steps and at the
    end): sharpness at the end and its maximum; `sharpness_ratio_<f>`: sharpness / (2 / lr) (the
    stability threshold of gradient descent at that learning rate) at the last measurement made at
    or before fraction f of training (f = 0.1, 0.5, 1.0); its maximum; `eos_step`: the first
    measured step where the sharpness reached 2 / lr (NaN if it never did);
    `sharpness_ratio_post_median`: the median ratio over the measurements from eos_step on (NaN if
    none; the lower of the two middle ones for an even count), Cohen et al.'s "hovers right at, or
    just above, 2/eta". The ratio is GD's stability threshold only for plain (full-batch) GD."""
    if not points:
        return {k: float("nan") for k in SHARPNESS_KEYS}
    threshold = 2.0 / lr
    values = [v for _, v in points]
    out = {"sharpness_final": values[-1], "sharpness_max": max(values),
           "sharpness_ratio_max": max(values) / threshold,
           "eos_step": next((float(s) for s, v in points if v >= threshold), float("nan"))}
    post = sorted(v for s, v in points if s >= out["eos_step"])  # (empty where eos_step is NaN)
    out["sharpness_ratio_post_median"] = post[(len(post) - 1) // 2] / threshold if post else float("nan")
    for f in SHARPNESS_FRACTIONS:
        at = [v for s, v in points if s <= f * total_steps + 1e-9]
        out[f"sharpness_ratio_{f:g}"] = at[-1] / threshold if at else float("nan")
    return out


def _fit(cfgs, split, masks, init_states, net_class, progress, checkpoint=None, graphed=False) -> list:
    cfg, n_models = cfgs[0], len(cfgs)
    device = torch.device(cfg.device)
    start = time.perf_counter()
    models_ = []
    for c, state in zip(cfgs, init_states):
        m = init_model(c)
        if state is not None:
            m.load_state_dict(state)
        models_.append(m)
    names = sorted(masks[0] or {})
    if any(sorted(m or {}) != names for m in masks):
        raise ValueError("every model of a group needs masks for the same parameters")
    net = net_class(models_, device)
    # a model to load one grouped model's state into, for sharpness measurements
    template = copy.deepcopy(models_[0]).to(device) if cfg.sharpness_every and net_class is Grouped else None
    packed = ({k: v.to(device=device, dtype=net.params[k].dtype) for k, v in net.pack(masks).items()}
              if names else {})  # the masks in the network's layout
    with torch.no_grad():
        for k, m in packed.items():
            net.params[k].mul_(m)
    theta0 = net.states()

    if (cfg.train_subset or cfg.test_subset) and getattr(split, "subset", "stratified") != cfg.subset:
        raise ValueError(f"the run asks for subset {cfg.subset!r} rows, the split given has "
                         f"{getattr(split, 'subset', 'stratified')!r} ones: load it with data.split_for(cfg)")
    x, y = split.x_train, split.y_train
    if cfg.val_size:  # a validation split held out of the training rows, the same for every seed
        kept, held = (torch.from_numpy(i).to(x.device)
                      for i in data.holdout(len(x), cfg.val_size, derive_seed(cfg.subset_seed, "validation")))
        x, y, x_val, y_val = x[kept], y[kept], x[held], y[held]
    n = len(x)
    bs = cfg.batch_size or n
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    n_epochs = math.ceil(cfg.steps / per_epoch) if cfg.steps else cfg.epochs
    total_steps = cfg.steps or per_epoch * cfg.epochs
    opt = _optimizer(cfg, list(net.params.values()), device)
    # cosine: over the epochs, stepped at each epoch end; over the steps (`steps`), at each step
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps or cfg.epochs)
             if cfg.schedule == "cosine" else None)
    step_sched = sched if cfg.steps else None
    orders = [torch.Generator().manual_seed(derive_seed(c.seed, "batch-order")) for c in cfgs]
    histories = [[] for _ in cfgs]
    diverged = [False] * n_models
    steps, first_epoch = 0, 0
    best = [(math.inf, -1)] * n_models  # per model: (least validation loss, its step)
    best_states = [None] * n_models
    vectors = [None] * n_models  # per model: the last top-eigenvector estimate (sharpness_warm)
    saved = checkpoint.load() if checkpoint else None
    # (a checkpoint from before trainer kinds were recorded: one model's is a "single" one)
    kind = None if saved is None else saved.get("trainer", "single" if len(saved["states"]) == 1 else "vmap")
    if saved is not None and kind != net.kind:  # another trainer's optimiser-state layout
        warnings.warn(f"checkpoint {checkpoint.path} was written by the {kind!r} trainer, not {net.kind!r}: "
                      "removed, the run starts over")
        checkpoint.remove()
        saved = None
    if saved is not None:
        net.load_states(saved["states"])
        opt.load_state_dict(saved["optimizer"])
        _lr_to_device(opt, device)
        if sched is not None:
            sched.load_state_dict(saved["schedule"])
        for g, st in zip(orders, saved["orders"]):
            g.set_state(st)
        theta0, histories, diverged = saved["theta0"], saved["histories"], saved["diverged"]
        steps, first_epoch = saved["steps"], saved["epoch"]
        if cfg.val_size:
            best, best_states = [tuple(b) for b in saved["best"]], saved["best_states"]
        if cfg.sharpness_warm:
            vectors = [None if v is None else v.to(device) for v in saved["vectors"]]
        start -= saved.get("elapsed", 0.0)  # wall_s counts the training before the resume too
    # per-epoch sums, accumulated on the device in place (no host sync inside an epoch)
    loss_sum = torch.zeros(n_models, device=device, dtype=torch.float64)
    correct = torch.zeros(n_models, device=device, dtype=torch.int64)
    # measurements inside an epoch, per model, attached to its epoch record at the epoch end
    pending = [{} for _ in cfgs]

    def batch_step(idx):  # (index_select: x[idx] without advanced indexing's general path)
        rows = idx.reshape(-1)
        xb, yb = x.index_select(0, rows).view(*idx.shape, *x.shape[1:]), y.index_select(0, rows).view(idx.shape)
        out, losses = step(net, opt, xb, yb, packed, cfg.amp, cfg.loss)
        loss_sum.add_(losses.detach().double() * idx.shape[1])
        correct.add_((out.detach().argmax(-1) == yb).sum(1))

    def validate():  # the validation split, every model; the best weights kept per model
        val_loss, val_acc = _evaluate(net, x_val, y_val, amp=cfg.amp, loss_fn=cfg.loss)
        net.train(True)
        states = None
        for j in range(n_models):
            if diverged[j]:
                continue
            pending[j].setdefault("val", []).append([steps, val_loss[j], val_acc[j]])
            if val_loss[j] < best[j][0]:  # (the first step of the least loss; NaN never is)
                states = states or net.states()
                best[j], best_states[j] = (val_loss[j], steps), states[j]

    def measure_sharpness():  # the training loss's top Hessian eigenvalue, model by model
        rows = slice(0, cfg.sharpness_samples or None)
        states = net.states() if template is not None else None
        for j in range(n_models):
            if diverged[j]:
                continue
            if states is None:
                model = net.model
            else:
                template.load_state_dict(states[j])
                model = template
            start = None
            if cfg.sharpness_warm:  # the first from measure.power_iteration's seeded start vector
                start = vectors[j] if vectors[j] is not None else torch.randn(
                    sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
            res = sharpness(model, x[rows], y[rows], cfg.loss, cfg.sharpness_iters, SHARPNESS_CHUNK,
                            tol=cfg.sharpness_tol, start=start)
            if cfg.sharpness_warm:
                vectors[j] = res["vector"]
            pending[j].setdefault("sharpness", []).append([steps, res["value"]])

    def measurements(at_end=False):
        if cfg.eval_every and (steps % cfg.eval_every == 0 or at_end):
            validate()
        if cfg.sharpness_every and (steps % cfg.sharpness_every == 0 or at_end):
            measure_sharpness()

    graph = GraphedStep(batch_step, (n_models, bs), device) if graphable(cfg) and graphed else None
    last_save = time.perf_counter()
    if steps == 0 and first_epoch == 0:
        measurements()
    for epoch in range(first_epoch, n_epochs):
        net.train(True)
        perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        loss_sum.zero_()
        correct.zero_()
        seen = 0
        for i in range(0, n, bs):
            idx = perm[:, i:i + bs]
            if idx.shape[1] < 2 and n > 1:  # BatchNorm cannot train on a batch of one
                continue
            if graph is not None and idx.shape[1] == bs:
                graph(idx)
            else:  # the last, shorter mini-batch of an epoch runs uncaptured
                batch_step(idx)
            steps += 1
            seen += idx.shape[1]
            if step_sched is not None:
                step_sched.step()
            if cfg.eval_every or cfg.sharpness_every:
                measurements(at_end=steps == total_steps)
            if steps == total_steps:
                break
        if sched is not None and step_sched is None:
            sched.step()
        train_loss = (loss_sum / seen).tolist()
        train_acc = (100.0 * correct.double() / seen).tolist()
        # (a run of `steps` evaluates the test set at its end only; `test_every` k: every k epochs)
        tested = not cfg.steps and cfg.test_every > 0 and (epoch + 1) % cfg.test_every == 0
        if tested:
            test_loss, test_acc = _evaluate(net, split.x_test, split.y_test, amp=cfg.amp, loss_fn=cfg.loss)
        new = []
        for j in range(n_models):
            if diverged[j]:
                continue
            record = {"epoch": epoch + 1, "train_loss": train_loss[j], "train_acc": train_acc[j]}
            if not math.isfinite(train_loss[j]):
                diverged[j] = True  # a non-finite loss stops this model's record
            else:
                if cfg.steps:
                    record["steps"] = steps
                elif tested:
                    record["test_loss"], record["test_acc"] = test_loss[j], test_acc[j]
                new.append(record)
            record.update(pending[j])
            pending[j] = {}
            histories[j].append(record)
        stop = checkpoint is not None and checkpoint.out_of_time()
        if checkpoint and epoch + 1 < n_epochs and (stop or time.perf_counter() - last_save >= checkpoint.every):
            more = {"best": best, "best_states": best_states} if cfg.val_size else {}
            if cfg.sharpness_warm:
                more["vectors"] = [None if v is None else v.cpu() for v in vectors]
            checkpoint.save({"trainer": net.kind, "states": net.states(), "optimizer": opt.state_dict(),
                             "schedule": sched.state_dict() if sched is not None else None,
                             "orders": [g.get_state() for g in orders], "theta0": theta0,
                             "histories": histories, "diverged": diverged, "steps": steps,
                             "epoch": epoch + 1, "elapsed": time.perf_counter() - start, **more})
            last_save = time.perf_counter()
            if stop:
                raise OutOfTime(f"time budget spent after epoch {epoch + 1} of {n_epochs}; "
                                f"checkpoint saved to {checkpoint.path}, the next run resumes it")
        for record in new if progress else ():
            progress(record)
        if all(diverged):
            break

    tr_loss, tr_acc = _evaluate(net, x, y, amp=cfg.amp, loss_fn=cfg.loss)
    te_loss, te_acc = _evaluate(net, split.x_test, split.y_test, amp=cfg.amp, loss_fn=cfg.loss)
    wall = (time.perf_counter() - start) / n_models
    final_states = net.states()
    if cfg.val_size:  # the test set once more, on each model's best-validation weights
        last_val = [h[-1]["val"][-1] if h and h[-1].get("val") else [0, math.nan, math.nan] for h in histories]
        net.load_states([b if b is not None else s for b, s in zip(best_states, final_states)])
        es_loss, es_acc = _evaluate(net, split.x_test, split.y_test, amp=cfg.amp, loss_fn=cfg.loss)
    results = []
    for j, thetaT in enumerate(final_states):
        if diverged[j]:
            final = {k: float("nan") for k in ("train_loss", "train_acc", "test_loss", "test_acc", "gen_gap")}
        else:
            final = {"train_loss": tr_loss[j], "train_acc": tr_acc[j], "test_loss": te_loss[j],
                     "test_acc": te_acc[j], "gen_gap": tr_acc[j] - te_acc[j]}
        if cfg.val_size:
            found = not diverged[j] and best_states[j] is not None
            final.update({"val_loss": last_val[j][1], "val_acc": last_val[j][2],
                          "early_stop_step": float(best[j][1]) if found else math.nan,
                          "early_stop_val_loss": best[j][0] if found else math.nan,
                          "early_stop_test_loss": es_loss[j] if found else math.nan,
                          "early_stop_test_acc": es_acc[j] if found else math.nan})
            if diverged[j]:
                final.update({k: math.nan for k in VAL_KEYS})
        if cfg.sharpness_every:
            points = [p for r in histories[j] for p in r.get("sharpness", ())]
            final.update(sharpness_summary(points, cfg.lr, total_steps) if not diverged[j]
                         else {k: math.nan for k in SHARPNESS_KEYS})
        results.append(TrainResult(final=final, history=histories[j], diverged=diverged[j], steps=steps,
                                   wall_s=wall, theta0=theta0[j], thetaT=thetaT))
    if checkpoint:
        checkpoint.remove()
    return results


def model_from_state(cfg: RunConfig, state: dict, device=None) -> torch.nn.Module:
    model = models.for_config(cfg)
    model.load_state_dict(state)
    return model.to(device or cfg.device)
