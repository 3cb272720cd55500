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

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from . import models
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


@torch.no_grad()
def evaluate(model, x, y, chunk: int = 1000, amp: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) in eval mode; one host sync at the end."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), chunk):
        with _autocast(x.device, amp):
            out = model(x[i:i + chunk])
        loss += F.cross_entropy(out.float(), y[i:i + chunk], reduction="sum").double()
        correct += (out.argmax(1) == y[i:i + chunk]).sum()
    model.train(was_training)
    return loss.item() / len(x), 100.0 * correct.item() / len(x)


def _autocast(device, amp):
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp)


def _optimizer(cfg: RunConfig, params):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0)


def train(cfg: RunConfig, split: Split, masks: dict | None = None, init_state: dict | None = None,
          progress=None) -> TrainResult:
    """Train one model. `init_state` replaces the seeded initialisation (lottery-ticket rewinding);
    `masks` maps parameter names to 0/1 tensors that are enforced throughout."""
    device = torch.device(cfg.device)
    start = time.perf_counter()
    model = init_model(cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    params = dict(model.named_parameters())
    masks = {k: m.to(device=device, dtype=params[k].dtype) for k, m in (masks or {}).items()}
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m)
    theta0 = cpu_state(model)

    opt = _optimizer(cfg, model.parameters())
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
             if cfg.schedule == "cosine" else None)
    x, y = split.x_train, split.y_train
    n = len(x)
    bs = cfg.batch_size or n
    order = torch.Generator().manual_seed(derive_seed(cfg.seed, "batch-order"))
    history, steps, diverged = [], 0, False
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=order).to(device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2 and n > 1:  # BatchNorm cannot train on a batch of one
                continue
            xb, yb = x[idx], y[idx]
            with _autocast(device, cfg.amp):
                out = model(xb)
            loss = F.cross_entropy(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for k, m in masks.items():
                params[k].grad.mul_(m)
            opt.step()
            if masks:
                with torch.no_grad():
                    for k, m in masks.items():
                        params[k].mul_(m)
            steps += 1
            seen += len(idx)
            loss_sum += loss.detach().double() * len(idx)
            correct += (out.detach().argmax(1) == yb).sum()
        if sched is not None:
            sched.step()
        train_loss = loss_sum.item() / seen
        record = {"epoch": epoch + 1, "train_loss": train_loss,
                  "train_acc": 100.0 * correct.item() / seen}
        if not math.isfinite(train_loss):
            diverged = True
            history.append(record)
            break
        record["test_loss"], record["test_acc"] = evaluate(model, split.x_test, split.y_test, amp=cfg.amp)
        history.append(record)
        if progress:
            progress(record)

    if diverged:
        final = {k: float("nan") for k in ("train_loss", "train_acc", "test_loss", "test_acc", "gen_gap")}
    else:
        tr_loss, tr_acc = evaluate(model, x, y, amp=cfg.amp)
        te_loss, te_acc = evaluate(model, split.x_test, split.y_test, amp=cfg.amp)
        final = {"train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss,
                 "test_acc": te_acc, "gen_gap": tr_acc - te_acc}
    return TrainResult(final=final, history=history, diverged=diverged, steps=steps,
                       wall_s=time.perf_counter() - start, theta0=theta0, thetaT=cpu_state(model))


def model_from_state(cfg: RunConfig, state: dict, device=None) -> torch.nn.Module:
    model = models.build(cfg.model, cfg.width)
    model.load_state_dict(state)
    return model.to(device or cfg.device)
