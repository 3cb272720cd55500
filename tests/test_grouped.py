"""The grouped network (Grouped: S seeds of one configuration as one module) against the S
separate models it stands for, and seed-grouped training (train.train_seeds) against one-at-a-time
training (train.train).

Tolerances (fp32 on the CPU): one forward/backward/optimiser step agrees within rtol 1e-4 / atol
1e-6 (outputs, weights under SGD, BatchNorm running statistics; weights under Adam within 1% of lr,
see the test; a grouped convolution sums in another order than a plain one). Gradients agree
within rtol 1e-4 and an atol of GRAD_EPS times the largest entry of the gradient compared (see
_grad_close); a convolution's bias before BatchNorm has an exact gradient of zero, and is checked
to be zero on the scale of its convolution weight's gradient (_bn_bias_grad_is_zero). Whole runs
agree within 1e-4
absolute on every weight after 2-3 epochs (observed <= 2e-7); initial weights are bit-identical."""
import copy
import dataclasses

import pytest
import torch

from harness.paper import measure, models, optimise, train
from harness.paper.config import RunConfig
from harness.paper.networks import Eager, Grouped
from harness.runs import checkpoint
from conftest import masked_inits, synthetic_split

ATOL = 1e-4
SHAPES = {"mlp": (1, 28, 28), "cnn": (3, 32, 32)}


def _close(a, b, what, atol=1e-6):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=atol, msg=lambda m: f"{what}: {m}")


EPS = torch.finfo(torch.float32).eps
# A gradient entry is a sum over the batch and the positions (up to 4 x 32 x 32 terms here), which
# the two paths sum in different orders: the rounding difference scales with the gradient's
# largest entry, not with the entry itself (observed on this CPU, 1 and 2 threads: <= 28 eps of
# that scale in one backward pass, <= 132 eps at the second step of
# test_grouped_steps_equal_the_separate_models, whose weights already differ by the first
# step's rounding). 1024 eps (1.2e-4 of the scale, the order of the rtol) leaves ~8x room for
# other summation orders (BLAS blocking, thread counts); a wrong layout, channel order or seed
# mapping is off by the order of the scale itself.
GRAD_EPS = 1024 * EPS
# A gradient that is exactly zero (_bn_bias_grad_is_zero): rounding noise <= 20 eps of the
# neighbouring weight gradient's largest entry observed; 256 eps leaves ~12x room.
ZERO_EPS = 256 * EPS


def _grad_close(a, b, what):
    _close(a, b, what, atol=GRAD_EPS * b.abs().max().item())


def _is_bn_bias(k):
    return k.startswith("features.") and k.endswith(".bias")  # every CNN conv feeds a BatchNorm


def _bn_bias_grad_is_zero(bias_grad, weight_grad, what):
    """A convolution bias feeding a train-mode BatchNorm shifts each of its channels uniformly,
    which the BatchNorm's batch mean removes: its exact gradient is zero, and what is computed is
    the rounding noise of sums whose terms are on the scale of the same convolution's weight
    gradient. It is checked to be zero on that scale (ZERO_EPS),
    which a BatchNorm that does not remove the channel mean (eval-mode statistics, a wrong
    channel axis) would fail by orders of magnitude."""
    scale = weight_grad.abs().max().item()
    worst = bias_grad.abs().max().item()
    assert worst <= ZERO_EPS * scale, f"{what}: {worst:.3g} is not zero on the weight gradient's scale {scale:.3g}"


def _seeded_models(family, width, n):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(models.build(family, width))
    return out


@pytest.mark.parametrize("family,width", [("mlp", 8), ("cnn", 2)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("masked", [False, True])
def test_grouped_steps_equal_the_separate_models(family, width, optimizer, masked):
    """Two steps (so momentum / Adam moments are used) in train mode: outputs, gradients mapped
    back per seed, updated weights and running statistics; then eval-mode outputs."""
    n, b = 3, 6
    separate = _seeded_models(family, width, n)
    grouped = Grouped(copy.deepcopy(separate), "cpu")
    eager = [Eager([m], "cpu") for m in separate]
    cfg = RunConfig(dataset="x", model=family, width=width, optimizer=optimizer,
                          lr=0.05 if optimizer == "sgd" else 1e-2)
    masks = [{}] * n
    if masked:
        g = torch.Generator().manual_seed(7)
        masks = [{k: (torch.rand(w.shape, generator=g) > 0.5).float() for k, w in models.prunable(m).items()}
                 for m in separate]
        for e, mk in zip(eager, masks):
            with torch.no_grad():
                for k, m in mk.items():
                    e.params[k].mul_(m)
        grouped.load_states([e.states()[0] for e in eager])
    packed = Grouped.pack(masks) if masked else {}
    opt_g = optimise.optimizer(cfg, list(grouped.params.values()))
    opts = [optimise.optimizer(cfg, list(e.params.values())) for e in eager]
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        xb = torch.randn(n, b, *SHAPES[family], generator=gen)
        yb = torch.randint(0, 10, (n, b), generator=gen)
        out_g, loss_g = optimise.step(grouped, opt_g, xb, yb, packed)
        for i, (e, o, mk) in enumerate(zip(eager, opts, masks)):
            out, loss = optimise.step(e, o, xb[i:i + 1], yb[i:i + 1], mk)
            _close(out_g[i], out[0], "outputs")
            _close(loss_g[i], loss[0], "loss")
            for k, p in e.params.items():
                if family == "cnn" and _is_bn_bias(k):
                    w = k[:-len("bias")] + "weight"
                    _bn_bias_grad_is_zero(grouped.params[k].grad[i], grouped.params[w].grad[i], f"gradient of {k}")
                    _bn_bias_grad_is_zero(p.grad, e.params[w].grad, f"gradient of {k}")
                else:
                    _grad_close(grouped.params[k].grad[i], p.grad, f"gradient of {k}")
    # Adam moves a weight by about lr whatever the size of its gradient, so a gradient at the
    # rounding level (a weight fed by a fully pruned channel) moves it by a noise-driven part of
    # lr: under Adam weights are compared within 1% of lr (a wrong update would be off by ~lr).
    # A convolution bias that feeds BatchNorm has only rounding noise as gradient and moves by ~lr
    # differently on the two paths; it, the running means that include it and the eval outputs
    # are compared under SGD only.
    atol = 1e-6 if optimizer == "sgd" else 1e-2 * cfg.lr
    noise = family == "cnn" and optimizer == "adam"
    for i, (e, st) in enumerate(zip(eager, grouped.states())):
        for k, v in e.states()[0].items():  # weights and BatchNorm running statistics
            if not (noise and (k.startswith("features.") and k.endswith(".bias") or k.endswith("running_mean"))):
                _close(st[k], v, k, atol=atol)
        for k, m in masks[i].items():
            assert torch.all(st[k][m == 0] == 0), k
    if noise:
        return
    grouped.train(False)
    x = torch.randn(5, *SHAPES[family], generator=gen)
    out_g = grouped.eval_forward(x)
    for i, e in enumerate(eager):
        e.train(False)
        _close(out_g[i], e.eval_forward(x)[0], "eval outputs")


def _layouts_agree(nets, x):
    """nets[0] (NCHW) and nets[1] (channels-last) on the same batch: outputs, gradients of a
    loss on them, and BatchNorm buffers agree up to float rounding."""
    outs = [net(x) for net in nets]
    _close(outs[1], outs[0], "outputs")
    for o in outs:
        o.square().sum().backward()
    for k, p in nets[0].params.items():
        if _is_bn_bias(k):
            w = k[:-len("bias")] + "weight"
            for net in nets:
                _bn_bias_grad_is_zero(net.params[k].grad, net.params[w].grad, f"gradient of {k}")
        else:
            _grad_close(nets[1].params[k].grad, p.grad, f"gradient of {k}")


def test_channels_last_layout_computes_the_same():
    nets = [Grouped(_seeded_models("cnn", 2, 2), "cpu", channels_last=c) for c in (False, True)]
    _layouts_agree(nets, torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    for k, b in nets[0].buffers.items():
        _close(nets[1].buffers[k], b, k)


def test_eager_channels_last_computes_the_same_and_states_are_standard_layout():
    nets = [Eager(_seeded_models("cnn", 2, 1), "cpu", channels_last=c) for c in (False, True)]
    assert nets[1].channels_last and Eager(_seeded_models("cnn", 2, 1), "cpu").channels_last
    assert not Eager(_seeded_models("mlp", 8, 1), "cpu").channels_last  # no convolution
    x = torch.randn(1, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _layouts_agree(nets, x)
    assert nets[1].params["features.0.weight"].is_contiguous(memory_format=torch.channels_last)
    (state,) = nets[1].states()
    assert all(t.is_contiguous() for t in state.values())
    for net in nets:
        net.train(False)
    _close(nets[1].eval_forward(x[0]), nets[0].eval_forward(x[0]), "eval outputs")


def test_states_round_trip_bit_exact():
    separate = _seeded_models("cnn", 2, 3)
    for m in separate:  # non-trivial buffers
        m.features[1].running_mean.uniform_()
        m.features[1].num_batches_tracked += 5
    states = [models.cpu_state(m) for m in separate]
    grouped = Grouped(separate, "cpu")
    out = grouped.states()
    for a, b in zip(out, states):
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in b)
    other = Grouped(_seeded_models("cnn", 2, 3)[::-1], "cpu")
    other.load_states(out)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(other.states(), states) for k in b)


def test_unknown_layers_are_refused():
    with pytest.raises(TypeError, match="no grouped form"):
        Grouped([torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU())], "cpu")


def _compare(grouped, single):
    for b, s in zip(grouped, single):
        assert b.steps == s.steps and b.diverged == s.diverged
        for k in s.theta0:
            assert torch.equal(b.theta0[k], s.theta0[k]), k  # identical initialisation
            assert torch.allclose(b.thetaT[k].double(), s.thetaT[k].double(), atol=ATOL), k
        for key in ("train_loss", "test_loss"):
            assert b.final[key] == pytest.approx(s.final[key], rel=1e-4, abs=1e-5)
        assert [h["train_loss"] for h in b.history] == pytest.approx([h["train_loss"] for h in s.history], rel=1e-4)


@pytest.mark.parametrize("model,width,shape,optimizer", [
    ("mlp", 8, (1, 28, 28), "sgd"),
    ("mlp", 8, (1, 28, 28), "adam"),
    ("cnn", 2, (3, 32, 32), "sgd"),
])
def test_grouped_run_equals_one_at_a_time(model, width, shape, optimizer):
    split = synthetic_split(n=96, shape=shape, n_test=32)
    cfg = RunConfig(dataset="x", model=model, width=width, batch_size=16, epochs=2,
                          optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    grouped = train.train_seeds(cfgs, split)
    single = [train.train(c, split) for c in cfgs]
    _compare(grouped, single)
    # different seeds really are different models
    k = next(iter(grouped[0].thetaT))
    assert not torch.equal(grouped[0].thetaT[k], grouped[1].thetaT[k])


def test_grouped_batchnorm1d_run_equals_one_at_a_time():
    """A fully connected model with BatchNorm1d (scale, shift, running statistics; Keskar et al.'s
    F1 at toy width) trains grouped as it trains alone. SGD, as the CNN's run above: a Linear bias
    feeding a BatchNorm has an exact gradient of zero, whose rounding noise Adam would scale up to
    full steps (as it would a CNN's convolution bias), differing between summation orders."""
    split = synthetic_split(n=96, shape=(1, 28, 28), n_test=32)
    cfg = RunConfig(dataset="mnist", model="fc", width=8, hidden="8,8", batchnorm=True, batch_size=16,
                          epochs=2, optimizer="sgd", lr=0.01)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    grouped = train.train_seeds(cfgs, split)
    single = [train.train(c, split) for c in cfgs]
    assert any(k.endswith("running_var") for k in single[0].thetaT)
    _compare(grouped, single)


def test_grouped_run_with_masks_and_rewound_inits():
    # 3 epochs of 6 full batches and a ragged one of 4.
    # lr 0.001: a 30%-remaining CNN of width 2 has channels pruned to zero, whose BatchNorm divides
    # rounding noise by sqrt(eps) and makes larger steps chaotic (seen: 1e-7 -> 7e-4 in 6 steps).
    split = synthetic_split(n=100, shape=(3, 32, 32), n_test=32)
    cfg = RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=3, lr=0.001)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    masks, inits = masked_inits(cfgs, 0.3)
    grouped = train.train_seeds(cfgs, split, masks=masks, init_states=inits)
    single = [train.train(c, split, masks=mk, init_state=st) for c, mk, st in zip(cfgs, masks, inits)]
    _compare(grouped, single)
    assert grouped[0].steps == 3 * 7
    for b, mk in zip(grouped, masks):
        for k, m in mk.items():
            assert torch.all(b.thetaT[k][~m] == 0)  # masks hold exactly in the grouped path too


def test_instruments_per_model_agree_after_grouped_training():
    split = synthetic_split(n=96, shape=(3, 32, 32), n_test=32)
    cfg = RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=2, lr=0.01)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    x, y = split.x_train[:32], split.y_train[:32]
    for b, s, c in zip(train.train_seeds(cfgs, split), [train.train(c, split) for c in cfgs], cfgs):
        mb, ms = models.model_from_state(c, b.thetaT), models.model_from_state(c, s.thetaT)
        hb = measure.hessian_top_eigenvalue(mb, x, y, iters=10)["value"]
        hs = measure.hessian_top_eigenvalue(ms, x, y, iters=10)["value"]
        assert hb == pytest.approx(hs, rel=1e-3)
        pb = measure.perturbation_sharpness(mb, x, y, sigmas=[0.01], draws=2)["sigmas"]["0.01"]["mean"]
        ps = measure.perturbation_sharpness(ms, x, y, sigmas=[0.01], draws=2)["sigmas"]["0.01"]["mean"]
        assert pb == pytest.approx(ps, rel=1e-3, abs=1e-6)


def test_one_diverging_model_does_not_touch_the_others():
    split = synthetic_split(n=64)
    cfg = RunConfig(dataset="x", model="mlp", width=8, batch_size=16, epochs=3, lr=0.05)
    bad = dataclasses.replace(cfg, seed=1)
    cfgs = [cfg, bad]
    # a rewound init with a huge weight makes seed 1 diverge
    state = models.cpu_state(models.init_model(bad))
    state["net.1.weight"] = state["net.1.weight"] * 1e30
    res = train.train_seeds(cfgs, split, init_states=[None, state])
    assert res[1].diverged and not res[0].diverged
    alone = train.train(cfg, split)
    assert res[0].final["train_loss"] == pytest.approx(alone.final["train_loss"], rel=1e-4)


def test_groups_must_differ_only_in_seed():
    cfg = RunConfig(dataset="x", model="mlp", width=8)
    with pytest.raises(ValueError, match="differ in more than the seed"):
        train.train_seeds([cfg, dataclasses.replace(cfg, lr=0.5)], synthetic_split(n=32))


def test_a_killed_masked_grouped_run_resumes_bit_identical(tmp_path):
    split = synthetic_split(n=100, shape=(3, 32, 32), n_test=32)
    cfg = RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=3, lr=0.001)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(2)]
    masks, inits = masked_inits(cfgs, 0.5)
    full = train.train_seeds(cfgs, split, masks=masks, init_states=inits)
    ck = checkpoint.Checkpoint(tmp_path / "ck.pt", every=0)

    def die(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train.train_seeds(cfgs, split, masks=masks, init_states=inits, progress=die, checkpoint=ck)
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["trainer"] == "grouped"
    resumed = train.train_seeds(cfgs, split, masks=masks, init_states=inits, checkpoint=ck)
    for a, b in zip(resumed, full):
        assert a.history == b.history and a.steps == b.steps
        assert all(torch.equal(a.thetaT[k], b.thetaT[k]) for k in b.thetaT)  # BatchNorm buffers included


def test_a_checkpoint_of_another_trainer_is_removed_not_resumed(tmp_path):
    """A mid-run checkpoint of the vmap trainer this one replaced (no "trainer" field, several
    models) is warned about and removed; the run starts over and equals an uninterrupted one."""
    split = synthetic_split(n=64)
    cfgs = [RunConfig(dataset="x", model="mlp", width=8, batch_size=16, epochs=2, seed=s) for s in range(2)]
    full = train.train_seeds(cfgs, split)
    ck = checkpoint.Checkpoint(tmp_path / "ck.pt", every=0)
    ck.save({"states": [full[0].thetaT, full[1].thetaT], "optimizer": {}, "epoch": 1})
    with pytest.warns(UserWarning, match="'vmap' trainer, not 'grouped'"):
        again = train.train_seeds(cfgs, split, checkpoint=ck)
    assert not (tmp_path / "ck.pt").exists()
    for a, b in zip(again, full):
        assert a.history == b.history and all(torch.equal(a.thetaT[k], b.thetaT[k]) for k in b.thetaT)
    ck.save({"trainer": "grouped", "states": [full[0].thetaT], "optimizer": {}, "epoch": 1})
    with pytest.warns(UserWarning, match="'grouped' trainer, not 'single'"):
        train.train(cfgs[0], split, checkpoint=ck)


def test_bench_times_every_path_on_the_cpu(capsys):
    from harness import bench
    rows = bench.main("cpu", seeds=2, steps=1, quick=True)
    assert [r["case"] for r in rows] == [f"{f} w={w} bs={b}" for f, w, b in bench.QUICK]
    for r in rows:
        assert r["eager"] > 0 and r["grouped"] > 0 and r["grouped_ratio"] > 0
        assert r["graphed"] != r["graphed"]  # nan: the captured path is CUDA-only
    assert "ratio" in capsys.readouterr().out


def test_wall_estimate_is_steps_times_step_time_plus_evaluation(capsys):
    from harness import bench
    cfg = RunConfig(dataset="mnist", model="mlp", width=8, batch_size=128, epochs=2,
                          train_subset=1000, test_subset=500)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(5)]
    timings = {("mlp", 8, 128, 5, "sgd"): {"step": 0.01, "eval": 1e-5}}
    # per group: 2 epochs x 8 steps (7 full batches and one of 104); 2 x 500 test samples per
    # epoch, then 1000 + 500 for the final evaluation
    assert bench.wall_seconds(cfgs, 5, "cpu", timings) == pytest.approx(16 * 0.01 + 2500 * 1e-5)
    full_batch = [dataclasses.replace(c, batch_size=0, train_subset=40, test_subset=20) for c in cfgs[:2]]
    bench.wall_seconds(full_batch, 2, "cpu", timings)  # measures the new shape: 40 samples, 2 seeds
    t = timings[("mlp", 8, 40, 2, "sgd")]
    assert t["step"] > 0 and t["eval"] > 0
    assert "measured mlp w=8 bs=40 x2 sgd" in capsys.readouterr().out


def test_wall_estimate_times_an_fc_network_by_its_hidden_sizes(capsys):
    # fc's shape is its hidden sizes and BatchNorm (Keskar's F1), not its width: timed as built
    from harness import bench
    cfg = RunConfig(dataset="mnist", model="fc", width=16, hidden="16,16", batchnorm=True, optimizer="adam",
                    lr=1e-3, batch_size=20, epochs=1, train_subset=40, test_subset=20)
    timings = {}
    assert bench.wall_seconds([dataclasses.replace(cfg, seed=s) for s in range(2)], 2, "cpu", timings) > 0
    (shape, t), = timings.items()
    assert shape[-3:] == ("16,16", True, "mnist") and t["step"] > 0 and t["eval"] > 0
    assert "measured fc 16,16 bs=20 x2 adam" in capsys.readouterr().out
