"""RunConfig options for other papers' calibration experiments (Cohen et al. 2021, edge of
stability; Frankle & Carbin 2019, lottery tickets on LeNet-300-100), each against an exact answer
where one exists, and the grouped trainer against one-at-a-time training for each.

Tolerances (fp32 on the CPU) are relative to the scale of what is compared: weights within
rtol 1e-4 plus 1e-5 of the tensor's largest magnitude; losses rel 1e-4; sharpness rel 1e-3 between
trainers (power iteration amplifies rounding a little) and rel 1e-5 against measure on the same
weights (the same arithmetic but for the chunking)."""
import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.paper import data, measure, models, optimise, sharpness, train
from harness.paper.config import RunConfig, derive_seed
from harness.paper.losses import per_sample_loss
from harness.paper.networks import Eager, Grouped
from harness.runs import keys as run_keys
from harness.runs.checkpoint import Checkpoint
from conftest import synthetic_split

LENET = RunConfig(dataset="mnist", model="fc", width=300, hidden="300,100", init="glorot_normal",
                        optimizer="adam", lr=1.2e-3, batch_size=60, schedule="constant")
FC_TANH = RunConfig(dataset="cifar10", model="fc", width=200, hidden="200,200", activation="tanh",
                          loss="mse", batch_size=0, momentum=0.0, schedule="constant", lr=0.01)
TINY = RunConfig(dataset="mnist", model="fc", width=8, hidden="8,6", activation="tanh", lr=0.05,
                       batch_size=16, schedule="constant", momentum=0.0)


def _close(a, b, what, rtol=1e-4):
    """Within rtol, plus 1e-5 of the compared tensor's largest magnitude."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-5 * float(b.abs().max()) + 1e-12,
                               msg=lambda m: f"{what}: {m}")


# ------------------------------------------------------------------ models

def test_lenet_300_100_and_fc_tanh_parameter_counts_are_exact():
    lenet = models.for_config(LENET)
    assert models.count_params(lenet) == 266_610 == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    fc = models.for_config(FC_TANH)
    assert models.count_params(fc) == 656_810 == 3072 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    assert [type(m).__name__ for m in fc.net] == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert [type(m).__name__ for m in lenet.net] == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert fc(torch.zeros(2, 3, 32, 32)).shape == (2, 10) and lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("cfg", [LENET, FC_TANH], ids=["lenet", "fc-tanh"])
def test_fc_forward_flops_match_torch_flop_counter(cfg):
    from torch.utils.flop_counter import FlopCounterMode
    model = models.for_config(cfg).eval()
    counter = FlopCounterMode(display=False)
    shape = (1, 28, 28) if cfg.dataset == "mnist" else (3, 32, 32)
    with counter, torch.no_grad():
        model(torch.zeros(2, *shape))
    assert counter.get_total_flops() == 2 * models.config_flops(cfg)


def test_fc_prunable_weights_and_builders():
    names = list(models.prunable(models.for_config(LENET)))
    assert names == ["net.1.weight", "net.3.weight", "net.5.weight"]
    assert list(models.prunable(models.for_config(LENET), include_output=False)) == names[:2]
    with pytest.raises(ValueError, match="models.for_config"):
        models.build("fc", 300)  # the hidden sizes and input size are the configuration's
    with pytest.raises(ValueError, match="config_flops"):
        models.forward_flops("fc", 300)
    # the paper's models are built as before
    torch.manual_seed(3)
    a = models.build("mlp", 8)
    torch.manual_seed(3)
    b = models.for_config(RunConfig(dataset="mnist", model="mlp", width=8))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert models.config_flops(RunConfig(dataset="cifar10", model="cnn", width=4)) == models.forward_flops("cnn", 4)


def test_glorot_normal_init_has_the_stated_std_and_zero_biases():
    """std = sqrt(2 / (fan_in + fan_out)) per layer, within 5 standard errors of a sample std
    (relative SE of a normal sample's std: 1 / sqrt(2N): 0.7% for 784x300 ... 11% for 100x10)."""
    torch.manual_seed(0)
    model = models.for_config(LENET)
    for m in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        w = m.weight.detach().double()
        fan_out, fan_in = w.shape
        expected = math.sqrt(2.0 / (fan_in + fan_out))
        rel = 5 / math.sqrt(2 * w.numel())
        assert w.std().item() == pytest.approx(expected, rel=rel), (w.shape, w.std().item(), expected)
        assert abs(w.mean().item()) < 5 * expected / math.sqrt(w.numel())
        assert torch.all(m.bias == 0)
    # PyTorch's default (uniform, bound 1/sqrt(fan_in)) is visibly different for the first layer
    torch.manual_seed(0)
    default = models.for_config(dataclasses.replace(LENET, init="default")).net[1].weight.detach()
    assert default.abs().max() <= 1 / math.sqrt(784) + 1e-7
    assert default.std().item() == pytest.approx(1 / math.sqrt(3 * 784), rel=0.01)
    # seeded: the same seed gives the same Glorot draw
    a, b = models.init_model(LENET), models.init_model(LENET)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_glorot_on_a_convolution_uses_the_kernel_area():
    torch.manual_seed(0)
    model = models.build("cnn", 8, init="glorot_normal")
    conv = model.features[3]  # 8 -> 8 channels, 3x3: fan_in = fan_out = 72
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=5 / math.sqrt(2 * conv.weight.numel()))
    assert torch.all(conv.bias == 0)


# ------------------------------------------------------------------ configuration

@pytest.mark.parametrize("fields,match", [
    (dict(model="mlp", hidden="300,100"), "only model 'fc'"),
    (dict(model="fc"), "needs its hidden sizes"),
    (dict(model="fc", hidden="300,100", width=100), "width 100 must be the first hidden size"),
    (dict(model="fc", hidden="300,x"), "comma-separated integers"),
    (dict(model="fc", hidden="300,0"), ">= 1"),
    (dict(model="fc", hidden="8", dataset="x"), "input size from the dataset"),
    (dict(activation="gelu"), "activation 'gelu'"),
    (dict(model="cnn", activation="tanh"), "ReLU only"),
    (dict(init="kaiming"), "init 'kaiming'"),
    (dict(loss="l1"), "loss 'l1'"),
    (dict(steps=-1), "steps -1"),
    (dict(eval_every=10), "set val_size > 0"),
    (dict(val_size=10), "set eval_every > 0"),
    (dict(sharpness_iters=0), "sharpness_iters 0"),
    (dict(sharpness_every=-2), "sharpness_every -2"),
    (dict(sharpness_tol=-0.1), "sharpness_tol -0.1"),
])
def test_options_are_validated_with_a_clear_error(fields, match):
    base = dict(dataset="mnist", model="mlp", width=8)
    with pytest.raises(ValueError, match=match):
        RunConfig(**{**base, **fields})


def test_default_options_leave_run_keys_unchanged_and_new_ones_change_them():
    cfg = RunConfig(dataset="mnist", model="mlp", width=8)
    assert run_keys.run_key(cfg) == "8ae7e4f59117040fb2f196ae"  # as tests/test_cache.py pins it
    assert run_keys.non_default_fields(cfg) == {"dataset": "mnist", "model": "mlp", "width": 8}
    keys = {run_keys.run_key(dataclasses.replace(cfg, **f)) for f in (
        {}, {"loss": "mse"}, {"init": "glorot_normal"}, {"activation": "tanh"}, {"steps": 5},
        {"val_size": 10, "eval_every": 5}, {"sharpness_every": 5})}
    assert len(keys) == 7


def test_adam_is_pytorchs_default_adam_at_the_configured_lr():
    opt = optimise.optimizer(LENET, [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Adam)
    d = opt.defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"], d["amsgrad"]) == (1.2e-3, (0.9, 0.999), 1e-8, 0.0, False)


# ------------------------------------------------------------------ loss

def test_mse_loss_on_a_tiny_batch_by_hand():
    out = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([2, 0])
    # 0.5 * (0.5^2 + 1^2 + (2 - 1)^2) = 1.125 ; 0.5 * (0 - 1)^2 = 0.5
    assert per_sample_loss(out, y, "mse").tolist() == [1.125, 0.5]
    assert per_sample_loss(out, y, "ce").tolist() == pytest.approx(F.cross_entropy(out, y, reduction="none").tolist())
    # in the training step: a model whose outputs are its bias, the loss of the step
    net = Eager([torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))], "cpu")
    with torch.no_grad():
        net.params["1.weight"].zero_()
        net.params["1.bias"].copy_(torch.tensor([0.5, -1.0, 2.0]))
    opt = torch.optim.SGD(net.params.values(), lr=0.0)
    _, losses = optimise.step(net, opt, torch.zeros(1, 2, 4), torch.tensor([[2, 0]]), {}, loss="mse")
    # row 1 (class 2): 0.5 * (0.25 + 1 + 1) = 1.125; row 2 (class 0): 0.5 * (0.25 + 1 + 4) = 2.625
    assert losses.item() == pytest.approx((1.125 + 2.625) / 2, rel=1e-7)


def test_mse_run_reports_the_mse_of_its_final_weights():
    split = synthetic_split(n=64, n_test=32)
    cfg = dataclasses.replace(TINY, loss="mse", epochs=2)
    r = train.train(cfg, split)
    model = models.model_from_state(cfg, r.thetaT).eval()
    with torch.no_grad():
        for xs, ys, key in ((split.x_train, split.y_train, "train"), (split.x_test, split.y_test, "test")):
            out = model(xs).double()
            mse = (0.5 * (out - F.one_hot(ys, 10).double()).pow(2).sum(1)).mean().item()
            assert r.final[f"{key}_loss"] == pytest.approx(mse, rel=1e-5)
            assert r.final[f"{key}_acc"] == pytest.approx(100.0 * (out.argmax(1) == ys).double().mean().item())


# ------------------------------------------------------------------ training length

def test_steps_stop_after_exactly_that_many_optimiser_steps():
    split = synthetic_split(n=100, n_test=16)  # batch 16: 6 full batches and one of 4 per epoch
    assert train.steps_per_epoch(100, 16) == 7 and train.steps_per_epoch(5000, 0) == 1
    assert train.steps_per_epoch(97, 16) == 6  # a last batch of one row is skipped
    r = train.train(dataclasses.replace(TINY, steps=10), split)
    assert r.steps == 10 and [h["steps"] for h in r.history] == [7, 10]
    assert [h["epoch"] for h in r.history] == [1, 2] and "test_loss" not in r.history[0]
    # one epoch of steps is one epoch
    a = train.train(dataclasses.replace(TINY, steps=7), split)
    b = train.train(dataclasses.replace(TINY, epochs=1), split)
    assert a.steps == b.steps == 7 and all(torch.equal(a.thetaT[k], b.thetaT[k]) for k in b.thetaT)
    # `steps` overrides `epochs`
    c = train.train(dataclasses.replace(TINY, steps=7, epochs=5), split)
    assert all(torch.equal(a.thetaT[k], c.thetaT[k]) for k in a.thetaT)


def test_cosine_schedule_runs_over_the_steps():
    split = synthetic_split(n=100, n_test=16)
    cfg = dataclasses.replace(TINY, steps=10, schedule="cosine")
    seen = []
    real = optimise.optimizer

    def spy(*a, **k):
        opt = real(*a, **k)
        seen.append(opt)
        return opt
    optimise.optimizer = spy
    try:
        train.train(cfg, split)
    finally:
        optimise.optimizer = real
    lr = seen[0].param_groups[0]["lr"]
    # after 10 of T_max = 10 steps, cosine annealing reaches 0
    assert float(lr) == pytest.approx(0.0, abs=1e-9)


def test_full_batch_gradient_descent_is_one_plain_step_per_epoch():
    split = synthetic_split(n=50, n_test=16)
    cfg = dataclasses.replace(TINY, batch_size=0, momentum=0.0, schedule="constant", lr=0.1, loss="mse", steps=1)
    r = train.train(cfg, split)
    assert r.steps == 1
    model = models.model_from_state(cfg, r.theta0)
    loss = per_sample_loss(model(split.x_train), split.y_train, "mse").mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (k, p), g in zip(model.named_parameters(), grads):
        _close(r.thetaT[k], p.detach() - 0.1 * g, k)
    assert train.train(dataclasses.replace(cfg, steps=0, epochs=3), split).steps == 3


def test_full_batch_fc_tanh_on_5000_cifar_images_is_one_step_per_epoch(data_dir):
    if not (data_dir / "cifar10.npz").exists():
        pytest.skip("cifar10.npz not provided")
    split = data.load_split("cifar10", 5000, 100, root=data_dir)
    cfg = dataclasses.replace(FC_TANH, train_subset=5000, test_subset=100, steps=2)
    r = train.train(cfg, split)
    assert r.steps == 2 and len(r.history) == 2 and not r.diverged
    assert r.history[1]["train_loss"] < r.history[0]["train_loss"]  # lr 0.01 is stable at init


# ------------------------------------------------------------------ validation and early stopping

def _val_rows(cfg, split):
    kept, held = data.holdout(len(split.x_train), cfg.val_size, derive_seed(cfg.subset_seed, "validation"))
    return split.x_train[held], split.y_train[held], kept


def test_holdout_is_seeded_disjoint_and_complete():
    kept, held = data.holdout(100, 20, 5)
    assert len(held) == 20 and len(kept) == 80 and set(kept) | set(held) == set(range(100))
    assert list(kept) == sorted(kept) and np.array_equal(data.holdout(100, 20, 5)[1], held)
    assert not np.array_equal(data.holdout(100, 20, 6)[1], held)
    with pytest.raises(data.DataError, match="held-out split of 100 rows"):
        data.holdout(100, 100, 0)


def learnable_split(n=120, n_test=40, noise=0.3, seed=0) -> data.Split:
    """Labels from a random linear map of the inputs, 30% of them replaced by random ones: a small
    model first learns the map (validation loss falls), then memorises the noise (it rises)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(784, 10, generator=g)

    def draw(m):
        x = torch.randn(m, 1, 28, 28, generator=g)
        y = (x.flatten(1) @ w).argmax(1)
        flip = torch.rand(m, generator=g) < noise
        y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
        return x, y
    return data.Split(*draw(n), *draw(n_test))


def test_early_stopping_step_and_test_accuracy_equal_a_brute_force_recomputation():
    """Every evaluation is recomputed from a separate run stopped at that step (constant
    schedule: the same trajectory), and the early-stopping test accuracy from that run's weights.
    (Observed: validation loss 2.24 at step 0, least 2.015 at step 35, 2.23 at step 60.)"""
    split = learnable_split()
    cfg = dataclasses.replace(TINY, optimizer="adam", lr=0.02, batch_size=10, val_size=20, eval_every=5, steps=60)
    r = train.train(cfg, split)
    vals = [v for h in r.history for v in h.get("val", ())]
    assert [v[0] for v in vals] == list(range(0, 61, 5))
    x_val, y_val, kept = _val_rows(cfg, split)
    assert len(kept) == 100
    brute = {}
    for t in range(0, 61, 5):
        weights = r.theta0 if t == 0 else train.train(dataclasses.replace(cfg, steps=t), split).thetaT
        model = models.model_from_state(cfg, weights).eval()
        with torch.no_grad():
            brute[t] = (F.cross_entropy(model(x_val), y_val).item(),
                        100.0 * (model(split.x_test).argmax(1) == split.y_test).double().mean().item())
    for t, loss, acc in vals:
        assert loss == pytest.approx(brute[t][0], rel=1e-5), t
    best = min(brute, key=lambda t: brute[t][0])
    assert 0 < best < 60, "the synthetic run should stop early somewhere inside"
    assert r.final["early_stop_step"] == best
    assert r.final["early_stop_val_loss"] == pytest.approx(brute[best][0], rel=1e-5)
    assert r.final["early_stop_test_acc"] == pytest.approx(brute[best][1])
    assert r.final["val_loss"] == pytest.approx(brute[60][0], rel=1e-5)
    # the training rows are the 100 kept ones: the final training loss is theirs
    model = models.model_from_state(cfg, r.thetaT).eval()
    with torch.no_grad():
        own = F.cross_entropy(model(split.x_train[kept]), split.y_train[kept]).item()
    assert r.final["train_loss"] == pytest.approx(own, rel=1e-5)


# ------------------------------------------------------------------ sharpness during training

def test_sharpness_during_training_equals_measure_on_the_weights_at_that_step():
    split = synthetic_split(n=60, n_test=16)
    cfg = dataclasses.replace(TINY, batch_size=0, steps=6, sharpness_every=3, sharpness_iters=15, lr=0.2)
    r = train.train(cfg, split)
    points = [p for h in r.history for p in h.get("sharpness", ())]
    assert [p[0] for p in points] == [0, 3, 6]
    for t, value in points:
        weights = {0: r.theta0, 6: r.thetaT}.get(t) or train.train(dataclasses.replace(cfg, steps=t), split).thetaT
        model = models.model_from_state(cfg, weights)
        ref = measure.hessian_top_eigenvalue(model, split.x_train, split.y_train, iters=15)["value"]
        assert value == pytest.approx(ref, rel=1e-5), t
    assert r.final["sharpness_final"] == points[-1][1]
    assert r.final["sharpness_max"] == max(v for _, v in points)


def test_mse_sharpness_equals_the_top_eigenvalue_of_the_full_hessian():
    torch.manual_seed(0)
    model = models.FC((5, 4), in_features=6, activation="tanh")
    x, y = torch.randn(30, 6), torch.randint(0, 10, (30,))
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params]).double()

    def loss_of(flat):
        ws, i = [], 0
        for s in shapes:
            ws.append(flat[i:i + math.prod(s)].view(s))
            i += math.prod(s)
        h = torch.tanh(x.double() @ ws[0].T + ws[1])
        h = torch.tanh(h @ ws[2].T + ws[3])
        out = h @ ws[4].T + ws[5]
        return (0.5 * (out - F.one_hot(y, 10).double()).pow(2).sum(1)).mean()
    hessian = torch.autograd.functional.hessian(loss_of, flat0)
    eig = torch.linalg.eigvalsh(hessian)
    top = eig[eig.abs().argmax()].item()
    got = sharpness.top_eigenvalue(model, x, y, "mse", iters=300)
    assert got["value"] == pytest.approx(top, rel=1e-3)
    assert sharpness.top_eigenvalue(model, x, y, "ce", iters=20)["value"] == measure.hessian_top_eigenvalue(model, x, y, iters=20, chunk=1000)["value"]


def test_warm_started_sharpness_agrees_with_a_converged_cold_one():
    """sharpness_warm: each measurement starts from the previous top eigenvector; with a tolerance
    it stops early. Every recorded value is checked against a long (300-product) cold power
    iteration on the weights at that step, within 1% (the cold 20-product one is often worse)."""
    split = synthetic_split(n=60, n_test=16)
    cfg = dataclasses.replace(TINY, batch_size=0, loss="mse", steps=20, sharpness_every=5, lr=0.25,
                              sharpness_iters=20, sharpness_tol=1e-4, sharpness_warm=True)
    r = train.train(cfg, split)
    points = [p for h in r.history for p in h.get("sharpness", ())]
    assert [p[0] for p in points] == [0, 5, 10, 15, 20]
    for t, value in points[1:]:
        weights = r.thetaT if t == 20 else train.train(dataclasses.replace(cfg, steps=t, sharpness_every=0), split).thetaT
        model = models.model_from_state(cfg, weights)
        ref = sharpness.top_eigenvalue(model, split.x_train, split.y_train, "mse", iters=300)["value"]
        assert value == pytest.approx(ref, rel=1e-2), t
    # the same with cross-entropy, the warm path's own Hessian-vector products against measure's
    model = models.model_from_state(cfg, r.thetaT)
    warm = sharpness.top_eigenvalue(model, split.x_train, split.y_train, "ce", iters=300,
                           start=torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0)))
    cold = measure.hessian_top_eigenvalue(model, split.x_train, split.y_train, iters=300)
    assert warm["value"] == pytest.approx(cold["value"], rel=1e-5) and warm["iterations"] == cold["iterations"]


def test_sharpness_summary_by_hand():
    points = [(0, 5.0), (10, 12.0), (50, 21.0), (90, 19.0), (100, 20.5)]
    s = sharpness.summary(points, lr=0.1, total_steps=100)  # 2 / lr = 20
    assert s["sharpness_final"] == 20.5 and s["sharpness_max"] == 21.0 and s["eos_step"] == 50
    assert s["sharpness_ratio_0.1"] == 12.0 / 20 and s["sharpness_ratio_0.5"] == 21.0 / 20
    assert s["sharpness_ratio_1"] == 20.5 / 20 and s["sharpness_ratio_max"] == 21.0 / 20
    assert s["sharpness_ratio_post_median"] == 20.5 / 20  # median of 21, 19, 20.5
    assert math.isnan(sharpness.summary(points[:2], 0.1, 100)["eos_step"])
    assert math.isnan(sharpness.summary(points[:2], 0.1, 100)["sharpness_ratio_post_median"])


# ------------------------------------------------------------------ grouped == one at a time

def _compare(grouped, single, sharp_rtol=1e-3):
    for b, s in zip(grouped, single):
        assert b.steps == s.steps and b.diverged == s.diverged and len(b.history) == len(s.history)
        for k in s.theta0:
            assert torch.equal(b.theta0[k], s.theta0[k]), k
            _close(b.thetaT[k], s.thetaT[k], k)
        for key, value in s.final.items():
            if key == "early_stop_step":
                assert b.final[key] == value
            else:
                assert b.final[key] == pytest.approx(value, rel=sharp_rtol if "sharpness" in key else 1e-4, nan_ok=True), key
        for hb, hs in zip(b.history, s.history):
            assert hb.keys() == hs.keys()
            assert hb["train_loss"] == pytest.approx(hs["train_loss"], rel=1e-4)
            for (tb, *vb), (ts, *vs) in zip(hb.get("val", ()), hs.get("val", ())):
                assert tb == ts and vb == pytest.approx(vs, rel=1e-4)
            for (tb, vb), (ts, vs) in zip(hb.get("sharpness", ()), hs.get("sharpness", ())):
                assert tb == ts and vb == pytest.approx(vs, rel=sharp_rtol)


def test_grouped_step_with_tanh_and_mse_equals_the_separate_models():
    n, b = 3, 6
    cfg = dataclasses.replace(TINY, loss="mse")
    separate = []
    for s in range(n):
        torch.manual_seed(s)
        separate.append(models.for_config(cfg))
    grouped = Grouped(copy.deepcopy(separate), "cpu")
    eager = [Eager([m], "cpu") for m in separate]
    opt_g = optimise.optimizer(cfg, list(grouped.params.values()))
    opts = [optimise.optimizer(cfg, list(e.params.values())) for e in eager]
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        xb, yb = torch.randn(n, b, 1, 28, 28, generator=gen), torch.randint(0, 10, (n, b), generator=gen)
        out_g, loss_g = optimise.step(grouped, opt_g, xb, yb, {}, loss="mse")
        for i, (e, o) in enumerate(zip(eager, opts)):
            out, loss = optimise.step(e, o, xb[i:i + 1], yb[i:i + 1], {}, loss="mse")
            _close(out_g[i], out[0], "outputs")
            _close(loss_g[i], loss[0], "loss")
            for k, p in e.params.items():
                _close(grouped.params[k].grad[i], p.grad, f"gradient of {k}")
    for e, st in zip(eager, grouped.states()):
        for k, v in e.states()[0].items():
            _close(st[k], v, k)


def test_grouped_full_batch_mse_tanh_run_with_sharpness_equals_one_at_a_time():
    split = synthetic_split(n=60, n_test=16)
    cfg = dataclasses.replace(TINY, batch_size=0, loss="mse", steps=8, sharpness_every=4, sharpness_iters=10, lr=0.25)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    grouped = train.train_seeds(cfgs, split)
    _compare(grouped, [train.train(c, split) for c in cfgs])
    # 2 / lr = 8: (seed 0) sharpness 8.98 at init, so the summary's eos_step is a number
    assert grouped[0].final["eos_step"] == 0 and grouped[0].final["sharpness_ratio_0.1"] > 0


def test_grouped_glorot_adam_run_with_validation_equals_one_at_a_time():
    split = learnable_split()
    cfg = dataclasses.replace(TINY, activation="relu", init="glorot_normal", optimizer="adam", lr=0.02,
                              batch_size=10, val_size=20, eval_every=5, steps=30)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    grouped, single = train.train_seeds(cfgs, split), [train.train(c, split) for c in cfgs]
    _compare(grouped, single)
    assert len({g.final["early_stop_step"] for g in grouped} | {0.0}) > 1  # really measured


# ------------------------------------------------------------------ checkpoint and resume

@pytest.mark.parametrize("grouped", [False, True])
def test_a_killed_steps_run_with_validation_and_sharpness_resumes_bit_identical(tmp_path, grouped):
    split = synthetic_split(n=60, n_test=16)
    cfg = dataclasses.replace(TINY, schedule="cosine", batch_size=16, steps=14, val_size=10, eval_every=3,
                              sharpness_every=5, sharpness_iters=5, sharpness_warm=True)  # 4 steps per epoch: 4 epochs
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(2)] if grouped else [cfg]

    def run(progress=None, ck=None):
        if grouped:
            return train.train_seeds(cfgs, split, progress=progress, checkpoint=ck)
        return [train.train(cfg, split, progress=progress, checkpoint=ck)]
    full = run()
    ck = Checkpoint(tmp_path / "ck.pt", every=0)

    def die(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run(die, ck)
    assert (tmp_path / "ck.pt").exists()
    resumed = run(None, ck)
    for a, b in zip(resumed, full):
        assert a.history == b.history and a.steps == b.steps == 14
        assert a.final.keys() == b.final.keys()
        assert all(a.final[k] == b.final[k] or math.isnan(a.final[k]) and math.isnan(b.final[k]) for k in b.final)
        assert all(torch.equal(a.thetaT[k], b.thetaT[k]) for k in b.thetaT)


# ------------------------------------------------------------------ data: Cohen et al.'s cifar10-5k

def test_first_rows_subset_and_its_refusal_on_a_file_sorted_by_class():
    labels = np.array([3, 1, 2, 0, 1, 2, 3, 0, 0, 1])
    assert data.subset_rows(labels, 5, "first") == slice(0, 5) and data.subset_rows(labels, 0, "first") == slice(None)
    assert list(data.subset_rows(labels, 4, "stratified", 0)) == list(data.stratified_subset(labels, 4, 0))
    with pytest.raises(data.DataError, match=r"miss classes \[0, 1\]"):
        data.subset_rows(np.sort(labels)[::-1].copy(), 3, "first")
    with pytest.raises(data.DataError, match="subset of 11 asked from 10"):
        data.subset_rows(labels, 11, "first")


def test_per_feature_standardisation_from_the_whole_training_split(data_dir):
    if not (data_dir / "cifar10.npz").exists():
        pytest.skip("cifar10.npz not provided")
    a = data.load_arrays("cifar10", data_dir)
    # this project's cifar10.npz is sorted by class (PROVENANCE.md): "first" rows are refused
    with pytest.raises(data.DataError, match="sorted by class"):
        data.load_split("cifar10", 5000, 0, root=data_dir, subset="first")
    cfg = dataclasses.replace(FC_TANH, train_subset=50, test_subset=20, input_norm="feature")
    s = data.split_for(cfg, data_dir)
    itr, ite = data.stratified_subset(a["y_train"], 50, 0), data.stratified_subset(a["y_test"], 20, 0)
    assert torch.equal(s.y_train, torch.from_numpy(a["y_train"][itr].astype(np.int64)))
    # a few features (channel, row, column), against numpy over all 50,000 training images
    for c, i, j in ((0, 0, 0), (1, 16, 7), (2, 31, 31)):
        col = a["x_train"][:, i, j, c].astype(np.float64) / 255.0
        mean, std = col.mean(), col.std()
        want_train = (a["x_train"][itr, i, j, c] / 255.0 - mean) / std
        want_test = (a["x_test"][ite, i, j, c] / 255.0 - mean) / std
        np.testing.assert_allclose(s.x_train[:, c, i, j].numpy(), want_train, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.x_test[:, c, i, j].numpy(), want_test, rtol=1e-5, atol=1e-5)
    with pytest.raises(data.DataError, match="input_norm 'feature' for mnist"):
        data.load_split("mnist", 10, 10, root=data_dir, input_norm="feature")


def test_a_split_of_other_rows_than_the_run_asks_for_is_refused():
    cfg = dataclasses.replace(TINY, train_subset=64, subset="first", epochs=1)
    with pytest.raises(ValueError, match="load it with data.split_for"):
        train.train(cfg, synthetic_split(n=64))
    split = synthetic_split(n=64)
    split.subset = "first"
    assert train.train(cfg, split).steps == 4
