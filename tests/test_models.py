import pytest
import torch

from harness.paper import models
from harness.paper.config import RunConfig


@pytest.mark.parametrize("family,width", [(f, w) for f, d in models.PAPER_PARAM_COUNTS.items() for w in d])
def test_parameter_counts_match_the_paper_to_the_unit(family, width):
    model = models.build(family, width)
    assert models.count_params(model) == models.PAPER_PARAM_COUNTS[family][width]


def test_all_sixteen_tabled_widths_are_covered():
    assert len(models.PAPER_PARAM_COUNTS["mlp"]) == 10 and len(models.PAPER_PARAM_COUNTS["cnn"]) == 6


def test_cnn_count_formula_and_output_shapes():
    for c in (1, 3, 5):
        assert models.count_params(models.CNN(c)) == 279 * c * c + 16425 * c + 2826
    assert models.CNN(4)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert models.MLP(8)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_prunable_weights_exclude_biases_and_batchnorm():
    names = list(models.prunable(models.CNN(4)))
    assert len(names) == 8 and all(n.endswith(".weight") for n in names)
    assert names[-1] == "classifier.3.weight"
    assert list(models.prunable(models.CNN(4), include_output=False))[-1] == "classifier.1.weight"


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build("resnet", 8)


@pytest.mark.parametrize("family,width,shape", [("mlp", 8, (1, 28, 28)), ("mlp", 512, (1, 28, 28)),
                                                ("cnn", 4, (3, 32, 32)), ("cnn", 32, (3, 32, 32))])
def test_forward_flops_match_torch_flop_counter(family, width, shape):
    from torch.utils.flop_counter import FlopCounterMode
    model = models.build(family, width).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(2, *shape))
    assert counter.get_total_flops() == 2 * models.forward_flops(family, width)


def test_keskar_f1_parameter_count():
    """F1 (Keskar et al. 2017, App. B.1): 784 -> 5 x [Linear 512, BatchNorm, ReLU] -> 10. Weights and
    biases 784*512 + 512 + 4 * (512*512 + 512) + 512*10 + 10, and each BatchNorm's scale and shift."""
    cfg = RunConfig(dataset="mnist", model="fc", width=512, hidden="512,512,512,512,512", batchnorm=True)
    model = models.for_config(cfg)
    assert models.count_params(model) == 784 * 512 + 512 + 4 * (512 * 512 + 512) + 512 * 10 + 10 + 5 * 2 * 512
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 5
