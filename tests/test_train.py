import dataclasses
import math

import torch

from harness.paper import optimise, train
from harness.paper.config import RunConfig
from harness.paper.networks import Eager
from harness.paper.data import load_split
from harness.runs import checkpoint
from conftest import synthetic_split

CFG = RunConfig(dataset="mnist", model="mlp", width=16, batch_size=32, epochs=2, lr=0.05)


def test_same_seed_gives_bit_identical_metrics_and_weights():
    s = synthetic_split()
    a, b = train.train(CFG, s), train.train(CFG, s)
    assert a.history == b.history and a.final == b.final
    assert all(torch.equal(a.thetaT[k], b.thetaT[k]) for k in a.thetaT)


def test_different_seeds_differ_in_init_and_batch_order():
    s = synthetic_split()
    a = train.train(CFG, s)
    b = train.train(dataclasses.replace(CFG, seed=1), s)
    assert a.history != b.history
    assert not torch.equal(a.theta0["net.1.weight"], b.theta0["net.1.weight"])
    # batch order alone: same init (init_seed fixed), different order seed
    c = train.train(dataclasses.replace(CFG, seed=1, init_seed=0), s)
    assert torch.equal(a.theta0["net.1.weight"], c.theta0["net.1.weight"])
    assert a.history != c.history


def test_theta0_and_thetaT_are_kept_and_differ():
    r = train.train(CFG, synthetic_split())
    assert set(r.theta0) == set(r.thetaT)
    assert not torch.equal(r.theta0["net.1.weight"], r.thetaT["net.1.weight"])
    assert r.steps == 2 * 8 and len(r.history) == 2


def test_test_every_leaves_weights_and_final_metrics_bit_identical():
    """Fewer per-epoch test evaluations change only the epoch records: the trained weights, the
    BatchNorm statistics and the final metrics are the same bit for bit (eager MLP, grouped CNN)."""
    s = synthetic_split()
    for cfg, fit in ((dataclasses.replace(CFG, epochs=3), lambda c: [train.train(c, s)]),
                     (RunConfig(dataset="cifar10", model="cnn", width=2, batch_size=16, epochs=3, lr=0.05),
                      lambda c: train.train_seeds([c, dataclasses.replace(c, seed=1)], synthetic_split(n=64, shape=(3, 32, 32))))):
        every = fit(cfg)
        for k, tested in ((0, []), (2, [2])):
            for a, b in zip(every, fit(dataclasses.replace(cfg, test_every=k))):
                assert a.final == b.final and a.steps == b.steps
                assert all(torch.equal(a.thetaT[n], b.thetaT[n]) for n in a.thetaT)
                assert [h["epoch"] for h in b.history if "test_acc" in h] == tested
                assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_cosine_schedule_and_adam_and_full_batch_run():
    s = synthetic_split(n=64)
    r = train.train(dataclasses.replace(CFG, optimizer="adam", lr=1e-3, batch_size=0, epochs=3), s)
    assert r.steps == 3 and not r.diverged


def test_divergence_is_detected_and_reported():
    s = synthetic_split()
    r = train.train(dataclasses.replace(CFG, lr=1e6, epochs=5), s)
    assert r.diverged
    assert all(math.isnan(v) for v in r.final.values())


def test_masks_hold_after_training_with_momentum():
    s = synthetic_split()
    torch.manual_seed(0)
    mask = {"net.3.weight": (torch.rand(16, 16) > 0.5).float()}
    r = train.train(CFG, s, masks=mask)
    w = r.thetaT["net.3.weight"]
    assert torch.all(w[mask["net.3.weight"] == 0] == 0)
    assert torch.count_nonzero(w) == int(mask["net.3.weight"].sum())


def test_tiny_mlp_reaches_100_percent_train_accuracy_on_256_mnist_samples(data_dir):
    s = load_split("mnist", 256, 256, root=data_dir)
    cfg = RunConfig(dataset="mnist", model="mlp", width=256, train_subset=256, batch_size=32,
                          epochs=30, lr=0.05)
    r = train.train(cfg, s)
    assert r.final["train_acc"] == 100.0, r.final


def _interrupt_then_resume(tmp_path, run):
    """Kill a run after epoch 2 (checkpoint at every epoch end), then rerun it from the checkpoint."""
    ck = checkpoint.Checkpoint(tmp_path / "ck.pt", every=0)

    def die(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt("killed")
    try:
        run(die, ck)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    assert (tmp_path / "ck.pt").exists()
    resumed = run(None, ck)
    assert not (tmp_path / "ck.pt").exists()  # removed once the run completes
    return resumed


def test_a_killed_run_resumes_bit_identical(tmp_path):
    s = synthetic_split()
    cfg = dataclasses.replace(CFG, epochs=4)
    full = train.train(cfg, s)
    resumed = _interrupt_then_resume(tmp_path, lambda p, ck: train.train(cfg, s, progress=p, checkpoint=ck))
    assert resumed.history == full.history and resumed.final == full.final and resumed.steps == full.steps
    assert all(torch.equal(resumed.thetaT[k], full.thetaT[k]) for k in full.thetaT)
    assert all(torch.equal(resumed.theta0[k], full.theta0[k]) for k in full.theta0)


def test_a_killed_seed_batched_cnn_group_resumes_bit_identical(tmp_path):
    s = synthetic_split(n=64, shape=(3, 32, 32), n_test=16)
    cfgs = [RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=4, lr=0.01,
                            optimizer="adam", seed=k) for k in range(2)]
    full = train.train_seeds(cfgs, s)
    resumed = _interrupt_then_resume(tmp_path, lambda p, ck: train.train_seeds(cfgs, s, progress=p, checkpoint=ck))
    for a, b in zip(resumed, full):
        assert a.history == b.history and a.final == b.final
        assert all(torch.equal(a.thetaT[k], b.thetaT[k]) for k in b.thetaT)  # BN buffers included


def test_eager_in_place_relu_trains_the_same_weights_as_the_model_as_built():
    """Eager runs a model's ReLUs in place (less memory traffic): three SGD steps of a CNN and
    an MLP give the same weights, bit for bit, as the modules as built (ReLU not in place)."""
    from harness.paper import models
    for family, shape in (("cnn", (3, 32, 32)), ("mlp", (784,))):
        cfg = RunConfig(model=family, width=4, lr=0.05, batch_size=8, dataset="cifar10" if family == "cnn" else "mnist")
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(1, 8, *shape, generator=g), torch.randint(0, 10, (1, 8), generator=g)
        weights = []
        for in_place in (True, False):
            torch.manual_seed(0)
            net = Eager([models.build(family, 4)], "cpu")
            relus = [m for m in net.model.modules() if isinstance(m, torch.nn.ReLU)]
            assert relus and all(m.inplace for m in relus)
            for m in relus:
                m.inplace = in_place
            opt = optimise.optimizer(cfg, list(net.params.values()))
            for _ in range(3):
                optimise.step(net, opt, x, y, {})
            weights.append(net.states()[0])
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), family
