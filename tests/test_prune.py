"""Lottery-ticket masks (harness/paper/prune.py) and their use in training (harness/paper/train.py)."""
import pytest
import torch

from harness.paper import models, prune
from harness.paper.data import Split
from harness.paper.config import RunConfig
from harness.paper.models import init_model
from harness.paper.train import train


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


# ---------------------------------------------- the output layer at its own rate (Frankle & Carbin)

def _lenet_weights():
    cfg = RunConfig(dataset="mnist", model="fc", width=300, hidden="300,100", init="glorot_normal")
    torch.manual_seed(0)
    return {k: w.detach() for k, w in models.prunable(models.for_config(cfg)).items()}


def test_output_fractions_compound_the_output_layers_own_rate():
    fractions = [0.8 ** k for k in range(1, 8)]
    outs = prune.output_fractions(fractions, 0.5)  # 20% a round, 10% for the output layer
    assert outs == pytest.approx([0.9 ** k for k in range(1, 8)], rel=1e-12)
    assert prune.output_fractions(fractions, 1.0) == tuple(fractions)  # the default: as every layer
    assert prune.output_fractions(fractions, 0.0) == pytest.approx([1.0] * 7)  # never pruned
    # an uneven schedule: rates 50%, then 60% of what is left -> output 75%, then 75% x 70%
    assert prune.output_fractions([0.5, 0.2], 0.5) == pytest.approx([0.75, 0.75 * 0.7])
    with pytest.raises(ValueError):
        prune.output_fractions(fractions, 1.5)


def test_lenet_masks_with_the_output_layer_at_half_rate_weight_by_weight():
    """LeNet-300-100 (784x300, 300x100, 100x10 weights), 20% a round and 10% for the output layer,
    counted by hand: after round k each hidden layer keeps round(n x 0.8^k), the output layer
    round(1000 x 0.9^k); Pm = their sum / 266,200, the source's axis ticks 51.3, 21.1, 13.5, 3.6."""
    weights = _lenet_weights()
    names = list(weights)
    assert [weights[n].numel() for n in names] == [235_200, 30_000, 1_000]
    out = names[-1]
    fractions = [0.8 ** k for k in range(1, 16)]
    outs = prune.output_fractions(fractions, 0.5)
    current, pm = None, {}
    for k, (f, fo) in enumerate(zip(fractions, outs), start=1):
        mask = prune.magnitude_mask(weights, f, current=current, scope="layer", fractions={out: fo})
        hand = {names[0]: round(235_200 * 0.8 ** k), names[1]: round(30_000 * 0.8 ** k), out: round(1000 * 0.9 ** k)}
        assert {n: int(m.sum()) for n, m in mask.items()} == hand
        if current is not None:
            assert not any((mask[n] & ~current[n]).any() for n in names)  # pruned weights stay pruned
        for n in names:  # the kept ones are the largest |w| of the layer among those alive
            alive = weights[n].abs()[current[n]] if current is not None else weights[n].abs().flatten()
            kept = weights[n].abs()[mask[n]]
            assert kept.min() >= torch.sort(alive, descending=True).values[hand[n] - 1]
        exact = sum(hand.values()) / 266_200
        assert prune.overall_remaining({n: w.numel() for n, w in weights.items()}, f, {out: fo}) == exact
        assert prune.remaining_fraction(mask) == exact
        pm[k] = round(100 * exact, 1)
        current = mask
    assert [pm[k] for k in (3, 4, 6, 7, 8, 9, 12, 15)] == [51.3, 41.1, 26.3, 21.1, 16.9, 13.5, 7.0, 3.6]


def test_per_tensor_fractions_need_layer_scope_and_known_names():
    weights = _lenet_weights()
    out = list(weights)[-1]
    with pytest.raises(ValueError, match="layer"):
        prune.magnitude_mask(weights, 0.8, scope="global", fractions={out: 0.9})
    with pytest.raises(ValueError, match="not one of"):
        prune.magnitude_mask(weights, 0.8, scope="layer", fractions={"nope": 0.9})
