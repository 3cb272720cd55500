"""The training loop: the paper's protocol (Section IV-D, Appendix A).

SGD with momentum 0.9 or Adam (betas 0.9/0.999), cosine annealing over the run (stepped once per
epoch, T_max = epochs), no weight decay, no augmentation. `batch_size = 0` is full-batch gradient
descent. One seed drives initialisation (torch's global generator, model built on the CPU so the
same seed gives the same init on any device) and a second stream derived from it drives
mini-batch order. Optional binary masks are enforced after every optimiser step (their gradients
are zeroed before it, so momentum never pushes a pruned weight). A non-finite training loss stops
the run and marks it diverged. On CUDA, PyTorch's defaults stay (TF32 convolutions); mixed
precision (bf16 autocast) is an explicit opt-in recorded in the config. The options of other
papers' experiments are RunConfig's (config.py).

`train` trains one run, `train_seeds` several that differ only in seed, together (`_fit` is their
loop, read top to bottom). Its parts: the network (networks.py: Eager or Grouped), the optimiser,
schedule and step (optimise.py), the step replayed as a CUDA graph (graphs.py), and the
measurements taken at step boundaries (validation.Validation, sharpness.Sharpness: each says when
it is `due`, `take`s its measurement into the trajectory, is `saved` in and `restore`d from a
checkpoint, and adds its `final` metrics). What the loop has done so far, per model, is a
`Trajectory`; a checkpoint saved at an epoch end is that, the weights and the optimiser's state.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from . import losses, optimise
from .config import RunConfig, derive_seed
from .data import Split
from .graphs import GraphedStep, graphable
from .models import init_model
from .networks import Eager, Grouped
from .sharpness import Sharpness
from .validation import Validation, hold_out

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "gen_gap")  # every run's final metrics


@dataclass
class TrainResult:
    final: dict  # train_loss, train_acc, test_loss, test_acc, gen_gap (accuracies in %)
    history: list = field(default_factory=list)  # one dict per epoch
    diverged: bool = False
    steps: int = 0
    wall_s: float = 0.0
    theta0: dict | None = None  # state_dict at initialisation (CPU tensors)
    thetaT: dict | None = None  # state_dict at the end


class OutOfTime(RuntimeError):
    """Training stopped at an epoch end because the time budget ran out; its checkpoint is saved,
    so the next call resumes it (see runs.checkpoint.Checkpoint.deadline)."""


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


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one pass over n rows (a last mini-batch of one row is skipped, as
    BatchNorm cannot train on it; batch_size 0: full batch)."""
    bs = batch_size or n
    return sum(1 for i in range(0, n, bs) if not (min(bs, n - i) < 2 and n > 1))


def _fit(cfgs, split, masks, init_states, net_class, progress, checkpoint=None, graphed=False) -> list:
    """Train the runs `cfgs` as one network of `net_class` (Eager: one run): set up, resume from the
    checkpoint where one was saved, then epoch by epoch a step per mini-batch, the measurements due
    after each step, the epoch's records, a checkpoint and the progress; then the final metrics."""
    cfg, n_models, device = cfgs[0], len(cfgs), torch.device(cfgs[0].device)
    start = time.perf_counter()
    models_ = [_initial_model(c, state) for c, state in zip(cfgs, init_states)]
    net, masks = _network(net_class, models_, masks, device)
    x, y, held = _training_rows(cfg, split)
    n, bs = len(x), cfg.batch_size or len(x)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    n_epochs = math.ceil(cfg.steps / per_epoch) if cfg.steps else cfg.epochs
    total_steps = cfg.steps or per_epoch * cfg.epochs
    watch = _measurements(cfg, x, y, held, n_models, total_steps, models_[0] if net_class is Grouped else None)
    opt = optimise.optimizer(cfg, list(net.params.values()), device)
    sched = optimise.schedule(cfg, opt)  # over the epochs, stepped at each epoch end; over `steps`, each step
    orders = [torch.Generator().manual_seed(derive_seed(c.seed, "batch-order")) for c in cfgs]
    run = Trajectory(theta0=net.states(), n_models=n_models)
    start -= _resume(checkpoint, net, opt, sched, orders, run, watch, device)
    one_step = TrainStep(net, opt, x, y, masks, cfg, n_models)
    graph = GraphedStep(one_step, (n_models, bs), device) if graphable(cfg) and graphed else None
    last_save = time.perf_counter()
    if run.steps == 0 and run.epoch == 0:
        _measure(watch, net, run)
    for epoch in range(run.epoch, n_epochs):
        net.train(True)
        perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        one_step.reset()
        seen = 0
        for idx in _batches(perm, bs):
            # the last, shorter mini-batch of an epoch runs uncaptured
            (graph if graph is not None and idx.shape[1] == bs else one_step)(idx)
            run.steps += 1
            seen += idx.shape[1]
            if cfg.steps and sched is not None:
                sched.step()
            _measure(watch, net, run, at_end=run.steps == total_steps)
            if run.steps == total_steps:
                break
        if sched is not None and not cfg.steps:
            sched.step()
        # (a run of `steps` evaluates the test set at its end only; `test_every` k: every k epochs)
        tested = not cfg.steps and cfg.test_every > 0 and (epoch + 1) % cfg.test_every == 0
        test = losses.evaluate(net, split.x_test, split.y_test, amp=cfg.amp, loss_fn=cfg.loss) if tested else None
        new = run.close_epoch(epoch, *one_step.means(seen), test, with_steps=bool(cfg.steps))
        if checkpoint and epoch + 1 < n_epochs:
            stop = checkpoint.out_of_time()
            if stop or time.perf_counter() - last_save >= checkpoint.every:
                _save(checkpoint, net, opt, sched, orders, run, watch, time.perf_counter() - start)
                last_save = time.perf_counter()
            if stop:
                raise OutOfTime(f"time budget spent after epoch {epoch + 1} of {n_epochs}; "
                                f"checkpoint saved to {checkpoint.path}, the next run resumes it")
        for record in new if progress else ():
            progress(record)
        if all(run.diverged):
            break

    results = _results(net, run, watch, cfg, x, y, split, start)
    if checkpoint:
        checkpoint.remove()
    return results


class Trajectory:
    """What the loop has done so far, per model: its initial state, its epoch records, whether it
    diverged, and the measurements of the epoch in progress (attached to its record at the epoch
    end); and the steps and epochs done. A checkpoint saves it at an epoch end."""

    def __init__(self, theta0: list, n_models: int):
        self.theta0 = theta0
        self.histories = [[] for _ in range(n_models)]
        self.diverged = [False] * n_models
        self.pending = [{} for _ in range(n_models)]
        self.steps, self.epoch = 0, 0  # optimiser steps and epochs done

    def live(self) -> list:
        """The models that have not diverged."""
        return [j for j, d in enumerate(self.diverged) if not d]

    def note(self, j: int, key: str, point: list):
        """A measurement of model j during the epoch in progress, under `key` in its record."""
        self.pending[j].setdefault(key, []).append(point)

    def close_epoch(self, epoch: int, train_loss: list, train_acc: list, test, with_steps: bool) -> list:
        """Every live model's record of the epoch: its train loss and accuracy, the step count (a run
        of `steps`) or the test set's loss and accuracy (`test`, where evaluated), its pending
        measurements. A non-finite train loss marks the model diverged (its last record). Returns
        the records of the models still live."""
        new = []
        for j in self.live():
            record = {"epoch": epoch + 1, "train_loss": train_loss[j], "train_acc": train_acc[j]}
            if not math.isfinite(train_loss[j]):
                self.diverged[j] = True  # a non-finite loss stops this model's record
            else:
                if with_steps:
                    record["steps"] = self.steps
                elif test is not None:
                    record["test_loss"], record["test_acc"] = test[0][j], test[1][j]
                new.append(record)
            record.update(self.pending[j])
            self.pending[j] = {}
            self.histories[j].append(record)
        self.epoch = epoch + 1
        return new


class TrainStep:
    """One training step of every model on its rows `idx` ([models, b]) of (x, y), its loss and
    correct predictions summed over the epoch on the device, in place (no host sync inside an
    epoch; a CUDA graph captures the step with them: GraphedStep)."""

    def __init__(self, net, opt, x, y, masks: dict, cfg, n_models: int):
        self.net, self.opt, self.x, self.y, self.masks, self.cfg = net, opt, x, y, masks, cfg
        self.loss_sum = torch.zeros(n_models, device=cfg.device, dtype=torch.float64)
        self.correct = torch.zeros(n_models, device=cfg.device, dtype=torch.int64)

    def reset(self):
        self.loss_sum.zero_()
        self.correct.zero_()

    def __call__(self, idx):  # (index_select: x[idx] without advanced indexing's general path)
        x, y, rows = self.x, self.y, idx.reshape(-1)
        xb, yb = x.index_select(0, rows).view(*idx.shape, *x.shape[1:]), y.index_select(0, rows).view(idx.shape)
        out, loss = optimise.step(self.net, self.opt, xb, yb, self.masks, self.cfg.amp, self.cfg.loss)
        self.loss_sum.add_(loss.detach().double() * idx.shape[1])
        self.correct.add_((out.detach().argmax(-1) == yb).sum(1))

    def means(self, seen: int) -> tuple:
        """The epoch's mean train loss and accuracy (%) per model, over its `seen` rows."""
        return (self.loss_sum / seen).tolist(), (100.0 * self.correct.double() / seen).tolist()


def _initial_model(cfg, state):
    """A run's model, seeded; `state` (where given) replaces its initialisation."""
    model = init_model(cfg)
    if state is not None:
        model.load_state_dict(state)
    return model


def _network(net_class, models_, masks, device) -> tuple:
    """The network of the models on `device`, and their masks in its layout, applied to its weights."""
    names = sorted(masks[0] or {})
    if any(sorted(m or {}) != names for m in masks):
        raise ValueError("every model of a group needs masks for the same parameters")
    net = net_class(models_, device)
    packed = ({k: v.to(device=device, dtype=net.params[k].dtype) for k, v in net.pack(masks).items()}
              if names else {})
    with torch.no_grad():
        for k, m in packed.items():
            net.params[k].mul_(m)
    return net, packed


def _training_rows(cfg, split) -> tuple:
    """The rows the run trains on, x and y, and the validation split held out of them (val_size):
    (x_val, y_val), else None."""
    if (cfg.train_subset or cfg.test_subset) and getattr(split, "subset", "stratified") != cfg.subset:
        raise ValueError(f"the run asks for subset {cfg.subset!r} rows, the split given has "
                         f"{getattr(split, 'subset', 'stratified')!r} ones: load it with data.split_for(cfg)")
    x, y = split.x_train, split.y_train
    if not cfg.val_size:
        return x, y, None
    x, y, x_val, y_val = hold_out(cfg, x, y)
    return x, y, (x_val, y_val)


def _measurements(cfg, x, y, held, n_models: int, total_steps: int, grouped_model) -> list:
    """The measurements the run's settings take at step boundaries, in the order they are taken:
    the validation split's, then the sharpness (of a grouped network's models on a copy of
    `grouped_model` each is loaded into)."""
    out = []
    if cfg.val_size:
        out.append(Validation(cfg, *held, n_models))
    if cfg.sharpness_every:
        out.append(Sharpness(cfg, x, y, n_models, total_steps, grouped_model))
    return out


def _batches(perm, bs: int):
    """Each model's mini-batch rows, [models, b], in the order `perm` ([models, n]); BatchNorm
    cannot train on a batch of one, so a last batch of one row is skipped."""
    n = perm.shape[1]
    for i in range(0, n, bs):
        idx = perm[:, i:i + bs]
        if not (idx.shape[1] < 2 and n > 1):
            yield idx


def _measure(watch, net, run, at_end=False):
    """The measurements due at this step boundary, in order (validation before sharpness)."""
    for m in watch:
        if m.due(run.steps, at_end):
            m.take(net, run)


def _save(checkpoint, net, opt, sched, orders, run, watch, elapsed: float):
    """Save the run's progress at an epoch end (what `_resume` loads)."""
    more = {}
    for m in watch:
        more.update(m.saved())
    checkpoint.save({"trainer": net.kind, "states": net.states(), "optimizer": opt.state_dict(),
                     "schedule": sched.state_dict() if sched is not None else None,
                     "orders": [g.get_state() for g in orders], "theta0": run.theta0,
                     "histories": run.histories, "diverged": run.diverged, "steps": run.steps,
                     "epoch": run.epoch, "elapsed": elapsed, **more})


def _resume(checkpoint, net, opt, sched, orders, run, watch, device) -> float:
    """Load the run's checkpoint, where one was saved by this kind of network; returns the seconds
    it had trained (wall_s counts the training before the resume too)."""
    saved = checkpoint.load() if checkpoint else None
    if saved is None:
        return 0.0
    # (a checkpoint from before trainer kinds were recorded: one model's is a "single" one)
    kind = saved.get("trainer", "single" if len(saved["states"]) == 1 else "vmap")
    if kind != net.kind:  # another trainer's optimiser-state layout
        warnings.warn(f"checkpoint {checkpoint.path} was written by the {kind!r} trainer, not {net.kind!r}: "
                      "removed, the run starts over")
        checkpoint.remove()
        return 0.0
    net.load_states(saved["states"])
    opt.load_state_dict(saved["optimizer"])
    optimise.lr_to_device(opt, device)
    if sched is not None:
        sched.load_state_dict(saved["schedule"])
    for g, st in zip(orders, saved["orders"]):
        g.set_state(st)
    run.theta0, run.histories, run.diverged = saved["theta0"], saved["histories"], saved["diverged"]
    run.steps, run.epoch = saved["steps"], saved["epoch"]
    for m in watch:
        m.restore(saved)
    return saved.get("elapsed", 0.0)


def _results(net, run, watch, cfg, x, y, split, start) -> list:
    """Each model's result: the train and test sets evaluated on its final weights, and the final
    metrics of each measurement (NaN metrics for a diverged model)."""
    tr_loss, tr_acc = losses.evaluate(net, x, y, amp=cfg.amp, loss_fn=cfg.loss)
    te_loss, te_acc = losses.evaluate(net, split.x_test, split.y_test, amp=cfg.amp, loss_fn=cfg.loss)
    wall = (time.perf_counter() - start) / len(run.diverged)
    final_states = net.states()
    extra = [m.final(net, run, split, final_states) for m in watch]
    results = []
    for j, thetaT in enumerate(final_states):
        if run.diverged[j]:
            final = {k: float("nan") for k in METRICS}
        else:
            final = {"train_loss": tr_loss[j], "train_acc": tr_acc[j], "test_loss": te_loss[j],
                     "test_acc": te_acc[j], "gen_gap": tr_acc[j] - te_acc[j]}
        for metrics in extra:
            final.update(metrics[j])
        results.append(TrainResult(final=final, history=run.histories[j], diverged=run.diverged[j],
                                   steps=run.steps, wall_s=wall, theta0=run.theta0[j], thetaT=thetaT))
    return results
