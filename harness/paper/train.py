"""Training engine: the paper's protocol (Section IV-D, Appendix A).

SGD with momentum 0.9 or Adam (betas 0.9/0.999), cosine annealing over the run (stepped once per
epoch, T_max = epochs), no weight decay, no augmentation. `batch_size = 0` is full-batch gradient
descent. One seed drives initialisation (torch's global generator, model built on the CPU so the
same seed gives the same init on any device) and a second stream derived from it drives
mini-batch order. Optional binary masks are enforced after every optimiser step (their gradients
are zeroed before it, so momentum never pushes a pruned weight). A non-finite training loss stops
the run and marks it diverged. On CUDA, PyTorch's defaults stay (TF32 convolutions); mixed
precision (bf16 autocast) is an explicit opt-in recorded in the config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import models
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

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer {self.optimizer!r}: expected 'sgd' or 'adam'")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule {self.schedule!r}: expected 'cosine' or 'constant'")
        if self.model not in models.MODELS:
            raise ValueError(f"model {self.model!r}: expected one of {sorted(models.MODELS)}")

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


def init_model(cfg: RunConfig) -> torch.nn.Module:
    torch.manual_seed(cfg.seed if cfg.init_seed < 0 else cfg.init_seed)
    return models.build(cfg.model, cfg.width)


def cpu_state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class Eager:
    """One model, called directly: the plain one-at-a-time PyTorch path. Tensors carry a leading
    model axis of size 1 so that the training loop is the same for both paths."""

    kind = "single"

    def __init__(self, models_, device):
        (self.model,) = models_
        self.model.to(device)
        self.params = dict(self.model.named_parameters())

    @staticmethod
    def pack(per_model: list) -> dict:
        (d,) = per_model
        return dict(d)

    def train(self, on: bool):
        self.model.train(on)

    def __call__(self, xb):  # [1, b, ...] -> [1, b, classes]
        return self.model(xb[0]).unsqueeze(0)

    def eval_forward(self, x):  # [b, ...] -> [1, b, classes]
        return self.model(x).unsqueeze(0)

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
    running statistics are exactly its own model's; pooling and ReLU act per channel; Flatten
    gives each model its own (c, h, w) vector; a linear layer is one batched matmul (baddbmm).
    SGD and Adam act elementwise on the stacked parameters, so each model's update is the one it
    would get alone (tests/test_grouped.py). `channels_last` (default: on CUDA) lays the
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
        self.channels_last = torch.device(device).type == "cuda" if channels_last is None else channels_last
        self.keys = list(base.state_dict())
        packed = self.pack([m.state_dict() for m in models_])
        names = {k for k, _ in base.named_parameters()}
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in packed.items() if k in names}
        self.buffers = {k: v.detach().to(device) for k, v in packed.items() if k not in names}
        self.layers = [(name, m) for name, m in base.named_modules() if not list(m.children())]
        for name, m in self.layers:
            if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear)) \
                    or isinstance(m, nn.BatchNorm2d) and (m.affine or m.momentum is None) \
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
            elif isinstance(m, nn.ReLU):
                x = F.relu(x, inplace=True)  # no layer here keeps its output for backward
            elif isinstance(m, nn.MaxPool2d):
                x = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            elif isinstance(m, nn.Flatten):
                if channels:  # [b, S*c, h, w] -> [S, b, c*h*w], each model's own (c, h, w) order
                    x = x.reshape(x.shape[0], n, -1).transpose(0, 1)
                    channels = False
                else:
                    x = x.flatten(1).expand(n, -1, -1) if shared else x.flatten(2)
            else:  # Linear: [S, b, in] @ [S, in, out] + [S, 1, out]
                x = torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), x, p[f"{name}.weight"].transpose(1, 2))
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
def _evaluate(net, x, y, chunk: int = 1000, amp: bool = False) -> tuple:
    """Per model: (mean cross-entropy list, accuracy-in-% list), eval mode, one host sync."""
    net.train(False)
    loss, correct = 0, 0
    for i in range(0, len(x), chunk):
        with _autocast(x.device, amp):
            out = net.eval_forward(x[i:i + chunk]).float()
        yb = y[i:i + chunk]
        loss = loss + F.cross_entropy(out.flatten(0, 1), yb.repeat(len(out)), reduction="none") \
            .view(len(out), -1).double().sum(1)
        correct = correct + (out.argmax(-1) == yb).sum(1)
    return (loss / len(x)).tolist(), (100.0 * correct.double() / len(x)).tolist()


def _autocast(device, amp):
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp)


def _optimizer(cfg: RunConfig, params, device="cpu"):
    """Adam as PyTorch ships it; SGD fused (one kernel for all parameters) and reading its learning
    rate from a float32 tensor on the device, which the schedule fills in place each epoch: the
    step then never syncs with the host and a CUDA graph can capture it (see GraphedStep)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
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


def step(net, opt, xb, yb, masks: dict, amp: bool = False) -> tuple:
    """One optimiser step for every model of `net` on its own mini-batch (xb: [models, b, ...]).
    Masked weights get zero gradient and are re-zeroed after the step. Returns (logits, losses)."""
    with _autocast(xb.device, amp):
        out = net(xb)
    losses = F.cross_entropy(out.flatten(0, 1).float(), yb.flatten(), reduction="none") \
        .view(len(out), -1).mean(1)
    opt.zero_grad(set_to_none=True)
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
    packed = ({k: v.to(device=device, dtype=net.params[k].dtype) for k, v in net.pack(masks).items()}
              if names else {})  # the masks in the network's layout
    with torch.no_grad():
        for k, m in packed.items():
            net.params[k].mul_(m)
    theta0 = net.states()

    opt = _optimizer(cfg, list(net.params.values()), device)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
             if cfg.schedule == "cosine" else None)
    x, y = split.x_train, split.y_train
    n = len(x)
    bs = cfg.batch_size or n
    orders = [torch.Generator().manual_seed(derive_seed(c.seed, "batch-order")) for c in cfgs]
    histories = [[] for _ in cfgs]
    diverged = [False] * n_models
    steps, first_epoch = 0, 0
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
        start -= saved.get("elapsed", 0.0)  # wall_s counts the training before the resume too
    # per-epoch sums, accumulated on the device in place (no host sync inside an epoch)
    loss_sum = torch.zeros(n_models, device=device, dtype=torch.float64)
    correct = torch.zeros(n_models, device=device, dtype=torch.int64)

    def batch_step(idx):
        xb, yb = x[idx], y[idx]
        out, losses = step(net, opt, xb, yb, packed, cfg.amp)
        loss_sum.add_(losses.detach().double() * idx.shape[1])
        correct.add_((out.detach().argmax(-1) == yb).sum(1))

    graph = GraphedStep(batch_step, (n_models, bs), device) if graphable(cfg) and graphed else None
    last_save = time.perf_counter()
    for epoch in range(first_epoch, cfg.epochs):
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
        if sched is not None:
            sched.step()
        train_loss = (loss_sum / seen).tolist()
        train_acc = (100.0 * correct.double() / seen).tolist()
        test_loss, test_acc = _evaluate(net, split.x_test, split.y_test, amp=cfg.amp)
        new = []
        for j in range(n_models):
            if diverged[j]:
                continue
            record = {"epoch": epoch + 1, "train_loss": train_loss[j], "train_acc": train_acc[j]}
            if not math.isfinite(train_loss[j]):
                diverged[j] = True  # a non-finite loss stops this model's record
            else:
                record["test_loss"], record["test_acc"] = test_loss[j], test_acc[j]
                new.append(record)
            histories[j].append(record)
        stop = checkpoint is not None and checkpoint.out_of_time()
        if checkpoint and epoch + 1 < cfg.epochs and (stop or time.perf_counter() - last_save >= checkpoint.every):
            checkpoint.save({"trainer": net.kind, "states": net.states(), "optimizer": opt.state_dict(),
                             "schedule": sched.state_dict() if sched is not None else None,
                             "orders": [g.get_state() for g in orders], "theta0": theta0,
                             "histories": histories, "diverged": diverged, "steps": steps,
                             "epoch": epoch + 1, "elapsed": time.perf_counter() - start})
            last_save = time.perf_counter()
            if stop:
                raise OutOfTime(f"time budget spent after epoch {epoch + 1} of {cfg.epochs}; "
                                f"checkpoint saved to {checkpoint.path}, the next run resumes it")
        for record in new if progress else ():
            progress(record)
        if all(diverged):
            break

    tr_loss, tr_acc = _evaluate(net, x, y, amp=cfg.amp)
    te_loss, te_acc = _evaluate(net, split.x_test, split.y_test, amp=cfg.amp)
    wall = (time.perf_counter() - start) / n_models
    results = []
    for j, thetaT in enumerate(net.states()):
        if diverged[j]:
            final = {k: float("nan") for k in ("train_loss", "train_acc", "test_loss", "test_acc", "gen_gap")}
        else:
            final = {"train_loss": tr_loss[j], "train_acc": tr_acc[j], "test_loss": te_loss[j],
                     "test_acc": te_acc[j], "gen_gap": tr_acc[j] - te_acc[j]}
        results.append(TrainResult(final=final, history=histories[j], diverged=diverged[j], steps=steps,
                                   wall_s=wall, theta0=theta0[j], thetaT=thetaT))
    if checkpoint:
        checkpoint.remove()
    return results


def model_from_state(cfg: RunConfig, state: dict, device=None) -> torch.nn.Module:
    model = models.build(cfg.model, cfg.width)
    model.load_state_dict(state)
    return model.to(device or cfg.device)
