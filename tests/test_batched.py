"""Seed-batched training (train.train_seeds) against one-at-a-time training (train.train): same
initialisations, same mini-batch orders, same results up to float rounding. Tolerance: weights
within 1e-4 absolute after 2 epochs (vmapped kernels sum in another order; observed ~1e-6)."""
import dataclasses

import pytest
import torch

from harness import measure, train
from conftest import masked_inits, synthetic_split

ATOL = 1e-4


def _compare(batched, single):
    for b, s in zip(batched, single):
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
def test_batched_equals_one_at_a_time(model, width, shape, optimizer):
    split = synthetic_split(n=96, shape=shape, n_test=32)
    cfg = train.RunConfig(dataset="x", model=model, width=width, batch_size=16, epochs=2,
                          optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    batched = train.train_seeds(cfgs, split)
    single = [train.train(c, split) for c in cfgs]
    _compare(batched, single)
    # different seeds really are different models
    assert not torch.equal(batched[0].thetaT[next(iter(batched[0].thetaT))], batched[1].thetaT[next(iter(batched[1].thetaT))])


def test_batched_with_masks_and_rewound_inits():
    # lr 0.001: a 30%-remaining CNN of width 2 has channels pruned to zero, whose BatchNorm divides
    # rounding noise by sqrt(eps) and makes larger steps chaotic (seen: 1e-7 -> 7e-4 in 6 steps).
    split = synthetic_split(n=96, shape=(3, 32, 32), n_test=32)
    cfg = train.RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=2, lr=0.001)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    masks, inits = masked_inits(cfgs, 0.3)
    batched = train.train_seeds(cfgs, split, masks=masks, init_states=inits)
    single = [train.train(c, split, masks=mk, init_state=st) for c, mk, st in zip(cfgs, masks, inits)]
    _compare(batched, single)
    for b, mk in zip(batched, masks):
        for k, m in mk.items():
            assert torch.all(b.thetaT[k][~m] == 0)  # masks hold exactly in the batched path too


def test_instruments_per_model_agree_after_batched_training():
    split = synthetic_split(n=96, shape=(3, 32, 32), n_test=32)
    cfg = train.RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=2, lr=0.01)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    x, y = split.x_train[:32], split.y_train[:32]
    for b, s, c in zip(train.train_seeds(cfgs, split), [train.train(c, split) for c in cfgs], cfgs):
        mb, ms = train.model_from_state(c, b.thetaT), train.model_from_state(c, s.thetaT)
        hb = measure.hessian_top_eigenvalue(mb, x, y, iters=10)["value"]
        hs = measure.hessian_top_eigenvalue(ms, x, y, iters=10)["value"]
        assert hb == pytest.approx(hs, rel=1e-3)
        pb = measure.perturbation_sharpness(mb, x, y, sigmas=[0.01], draws=2)["sigmas"]["0.01"]["mean"]
        ps = measure.perturbation_sharpness(ms, x, y, sigmas=[0.01], draws=2)["sigmas"]["0.01"]["mean"]
        assert pb == pytest.approx(ps, rel=1e-3, abs=1e-6)


def test_one_diverging_model_does_not_touch_the_others():
    split = synthetic_split(n=64)
    cfg = train.RunConfig(dataset="x", model="mlp", width=8, batch_size=16, epochs=3, lr=0.05)
    bad = dataclasses.replace(cfg, seed=1)
    cfgs = [cfg, bad]
    # a rewound init with a huge weight makes seed 1 diverge
    state = train.cpu_state(train.init_model(bad))
    state["net.1.weight"] = state["net.1.weight"] * 1e30
    res = train.train_seeds(cfgs, split, init_states=[None, state])
    assert res[1].diverged and not res[0].diverged
    alone = train.train(cfg, split)
    assert res[0].final["train_loss"] == pytest.approx(alone.final["train_loss"], rel=1e-4)


def test_groups_must_differ_only_in_seed():
    cfg = train.RunConfig(dataset="x", model="mlp", width=8)
    with pytest.raises(ValueError, match="differ in more than the seed"):
        train.train_seeds([cfg, dataclasses.replace(cfg, lr=0.5)], synthetic_split(n=32))


def test_bench_times_both_paths_on_the_cpu(capsys):
    from harness import bench
    rows = bench.main("cpu", seeds=2, steps=1, quick=True)
    assert [r["case"] for r in rows] == [f"{f} w={w} bs={b}" for f, w, b in bench.QUICK]
    for r in rows:
        assert r["eager"] > 0 and r["batched"] > 0 and r["batched_ratio"] > 0
        assert r["graphed"] != r["graphed"]  # nan: the captured path is CUDA-only
    assert "ratio" in capsys.readouterr().out
