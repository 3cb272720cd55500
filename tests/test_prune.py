"""Lottery-ticket masks (harness/prune.py) and their use in training (harness/train.py)."""
import pytest
import torch

from harness.paper import models, prune
from harness.paper.data import Split
from harness.paper.train import RunConfig, init_model, train


def _cnn_weights():
    torch.manual_seed(0)
    return {k: w.detach() for k, w in models.prunable(models.CNN(2)).items()}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_iterated_schedule_exact_counts_and_monotone(scope):
    weights = _cnn_weights()
    total = sum(w.numel() for w in weights.values())
    current = None
    for f in prune.schedule():
        masks = prune.magnitude_mask(weights, f, current, scope=scope)
        assert set(masks) == set(weights)
        for k, m in masks.items():
            assert m.dtype == torch.bool and m.shape == weights[k].shape
            if scope == "layer":
                assert int(m.sum()) == prune.keep_count(m.numel(), f)
        counts = prune.mask_counts(masks)
        assert counts["total"] == total
        if scope == "global":
            assert counts["kept"] == round(total * f)
            assert prune.remaining_fraction(masks) == round(total * f) / total
        if current is not None:  # pruned weights never come back
            assert all(not (m & ~current[k]).any() for k, m in masks.items())
        current = masks


def test_global_mask_keeps_largest_magnitudes_among_alive():
    weights = _cnn_weights()
    first = prune.magnitude_mask(weights, 0.5)
    second = prune.magnitude_mask(weights, 0.2, current=first)
    for masks, alive in ((first, None), (second, first)):
        kept = torch.cat([weights[k].abs()[m] for k, m in masks.items()])
        pruned = torch.cat([weights[k].abs()[(~m if alive is None else ~m & alive[k])]
                            for k, m in masks.items()])
        assert kept.min() >= pruned.max()
    layer = prune.magnitude_mask(weights, 0.5, scope="layer")
    for k, m in layer.items():
        assert weights[k].abs()[m].min() >= weights[k].abs()[~m].max()


def test_ties_and_errors():
    w = {"a": torch.tensor([1.0, -1.0, 1.0, 0.5]), "b": torch.tensor([[1.0, 2.0]])}
    m = prune.magnitude_mask(w, 0.5)  # keep 3 of 6: the 2, then the first two tied 1s in order
    assert m["a"].tolist() == [True, True, False, False] and m["b"].tolist() == [[False, True]]
    assert all(torch.equal(m[k], v) for k, v in prune.magnitude_mask(w, 0.5).items())
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            prune.magnitude_mask(w, bad)
    with pytest.raises(ValueError):
        prune.magnitude_mask(w, 0.5, scope="block")
    with pytest.raises(ValueError):  # 0.5 of 6 is 3 > the 2 alive at 1/3
        prune.magnitude_mask(w, 0.5, current=prune.magnitude_mask(w, 1 / 3))
    with pytest.raises(ValueError):
        prune.schedule((0.5, 0.7))
    assert prune.keep_count(10, 0.25) == 2 and prune.keep_count(13274, 0.7) == 9292
    assert prune.schedule() == prune.PAPER_FRACTIONS


def test_random_mask_same_counts_other_pattern_reproducible():
    weights = _cnn_weights()
    mag = prune.magnitude_mask(weights, 0.3)
    rnd = prune.random_mask(mag, seed=1)
    for k in mag:
        assert rnd[k].shape == mag[k].shape and int(rnd[k].sum()) == int(mag[k].sum())
        assert not torch.equal(rnd[k], mag[k])
    again = prune.random_mask(mag, seed=1)
    other = prune.random_mask(mag, seed=2)
    assert all(torch.equal(rnd[k], again[k]) for k in mag)
    assert not all(torch.equal(rnd[k], other[k]) for k in mag)


def test_masks_hold_only_conv_and_linear_weights():
    torch.manual_seed(0)
    model = models.CNN(2)
    names = set(prune.magnitude_mask(models.prunable(model), 0.5))
    assert all(k.endswith(".weight") for k in names)
    bn = {f"{n}.{b}" for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
          for b in ("weight", "bias", "running_mean", "running_var")}
    assert not names & bn and not any(k.endswith(".bias") for k in names)
    assert len(names) == 8  # six convs, two linears
    no_out = set(models.prunable(model, include_output=False))
    assert names - no_out == {"classifier.3.weight"}


def _synthetic_split():
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g),
                 torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))


def test_lottery_round_masks_hold_through_training_and_rewind_is_exact():
    cfg = RunConfig(dataset="mnist", model="mlp", width=16, batch_size=32, epochs=2, lr=0.05)
    split = _synthetic_split()
    dense = train(cfg, split)
    weights = {k: dense.thetaT[k] for k in models.prunable(init_model(cfg))}
    masks = prune.magnitude_mask(weights, 0.3)
    assert prune.remaining_fraction(masks) == pytest.approx(0.3, abs=1e-4)

    rewound = prune.apply_mask(dense.theta0, masks)
    assert rewound.keys() == dense.theta0.keys()
    for k, v in dense.theta0.items():
        if k in masks:
            assert torch.equal(rewound[k][masks[k]], v[masks[k]])
            assert (rewound[k][~masks[k]] == 0).all()
        else:
            assert torch.equal(rewound[k], v)

    ticket = train(cfg, split, masks=masks, init_state=rewound)
    assert all(torch.equal(ticket.theta0[k], rewound[k]) for k in rewound)
    for k, m in masks.items():
        final = ticket.thetaT[k]
        assert (final[~m] == 0).all()  # exactly zero through SGD with momentum
        assert (final[m] != rewound[k][m]).any()  # survivors trained


def test_reinit_seed_gives_a_different_initialisation():
    cfg = RunConfig(dataset="mnist", model="mlp", width=16)
    a, b = init_model(cfg).state_dict(), init_model(cfg).state_dict()
    c = init_model(RunConfig(dataset="mnist", model="mlp", width=16, init_seed=1000)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)
