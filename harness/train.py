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

import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from . import models
from .cache import atomic_write, load_torch
from .data import Split


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run. Its hash names the run in the cache, with
    default-valued fields left out (see cache.run_key): add new fields with defaults."""
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

    def __init__(self, models_, device):
        (self.model,) = models_
        self.model.to(device)
        self.params = dict(self.model.named_parameters())

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


class Stacked:
    """S models of one architecture trained as one vmapped network (torch.func): each keeps its
    own weights, BatchNorm buffers and mini-batches; SGD and Adam act elementwise, so each model's
    update is the one it would get alone."""

    def __init__(self, models_, device):
        params, buffers = stack_module_state(models_)
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.detach().to(device) for k, v in buffers.items()}
        self.keys = list(models_[0].state_dict())
        self.base = copy.deepcopy(models_[0]).to("meta")

        def call(p, b, x):
            return functional_call(self.base, (p, b), (x,))
        self._train = torch.vmap(call)
        self._eval = torch.vmap(call, in_dims=(0, 0, None))

    def train(self, on: bool):
        self.base.train(on)

    def __call__(self, xb):  # [S, b, ...] -> [S, b, classes]
        return self._train(self.params, self.buffers, xb)

    def eval_forward(self, x):  # [b, ...] -> [S, b, classes]
        return self._eval(self.params, self.buffers, x)

    def states(self) -> list:
        merged = {**self.params, **self.buffers}
        n = next(iter(self.params.values())).shape[0]
        return [{k: merged[k][i].detach().to("cpu", copy=True) for k in self.keys} for i in range(n)]

    def load_states(self, states: list):
        with torch.no_grad():
            for k, t in {**self.params, **self.buffers}.items():
                t.copy_(torch.stack([s[k] for s in states]))


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
    `checkpoint`: a file to save progress to at epoch ends and resume from (see Checkpoint).
    `graphed`: replay the SGD step as a CUDA graph (see GraphedStep; ignored for Adam and amp)."""
    return _fit([cfg], split, [masks], [init_state], Eager, progress, checkpoint, graphed)[0]


def train_seeds(cfgs: list, split: Split, masks: list | None = None, init_states: list | None = None,
                progress=None, checkpoint=None, graphed: bool = False) -> list:
    """Train several runs that differ only in seed (and init_seed) together, as one vmapped
    network; same results as `train` on each, up to float rounding (tests/test_batched.py)."""
    ref = dataclasses.replace(cfgs[0], seed=0, init_seed=-1)
    for c in cfgs:
        if dataclasses.replace(c, seed=0, init_seed=-1) != ref:
            raise ValueError(f"train_seeds: runs differ in more than the seed: {c} vs {cfgs[0]}")
    n = len(cfgs)
    return _fit(cfgs, split, masks or [None] * n, init_states or [None] * n, Stacked, progress, checkpoint,
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


@dataclass
class Checkpoint:
    """Mid-run progress of a training group, saved atomically at epoch ends (at most every
    `every` seconds) so that a killed run resumes where it was: weights and buffers, optimiser and
    schedule state, the batch-order generators, histories and the step count. Resuming gives the
    same result as an uninterrupted run (bit for bit on the CPU; tests/test_train.py)."""
    path: object
    every: float = 60.0

    def load(self):
        """The saved state, or None (none saved; a damaged file is set aside, see cache.set_aside)."""
        return load_torch(Path(self.path))

    def save(self, state: dict):
        atomic_write(Path(self.path), lambda f: torch.save(state, f))

    def remove(self):
        Path(self.path).unlink(missing_ok=True)


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
    stacked = {k: torch.stack([m[k] for m in masks]).to(device=device, dtype=net.params[k].dtype)
               for k in names}
    if net_class is Eager:
        stacked = {k: v[0] for k, v in stacked.items()}
    with torch.no_grad():
        for k, m in stacked.items():
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
    if isinstance(checkpoint, (str, Path)):
        checkpoint = Checkpoint(checkpoint)
    saved = checkpoint.load() if checkpoint else None
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
    # per-epoch sums, accumulated on the device in place (no host sync inside an epoch)
    loss_sum = torch.zeros(n_models, device=device, dtype=torch.float64)
    correct = torch.zeros(n_models, device=device, dtype=torch.int64)

    def batch_step(idx):
        xb, yb = x[idx], y[idx]
        out, losses = step(net, opt, xb, yb, stacked, cfg.amp)
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
        if checkpoint and epoch + 1 < cfg.epochs and time.perf_counter() - last_save >= checkpoint.every:
            checkpoint.save({"states": net.states(), "optimizer": opt.state_dict(),
                             "schedule": sched.state_dict() if sched is not None else None,
                             "orders": [g.get_state() for g in orders], "theta0": theta0,
                             "histories": histories, "diverged": diverged, "steps": steps,
                             "epoch": epoch + 1})
            last_save = time.perf_counter()
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
