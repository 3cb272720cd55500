"""The paper's two model families (Appendix B), with PyTorch default initialisation.

MLP (MNIST):  784 -> w -> w -> w -> 10, four Linear layers with ReLU between them.
CNN (CIFAR-10): three blocks of [conv3x3-BN-ReLU, conv3x3-BN-ReLU, maxpool2] with channels
c, 2c, 4c, then Linear(4c*4*4, 256)-ReLU-Linear(256, 10).

The paper's CNN parameter counts (72,990 ... 4,150,890) come out exactly only with biased
convolutions and BatchNorm *without* learnable affine parameters: 279c^2 + 16425c + 2826.
That is the reading taken; tests/test_models.py checks all 16 tabled counts.
"""
from __future__ import annotations

from torch import nn

MLP_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CNN_WIDTHS = (4, 8, 16, 32, 64, 96)
PAPER_PARAM_COUNTS = {
    "mlp": dict(zip(MLP_WIDTHS, (6514, 13274, 27562, 59210, 134794, 335114, 932362,
                                 2913290, 10020874, 36818954))),
    "cnn": dict(zip(CNN_WIDTHS, (72990, 152082, 337050, 814122, 2196810, 4150890))),
}


class MLP(nn.Module):
    def __init__(self, width: int, in_features: int = 784, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, classes),
        )

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self, width: int, in_channels: int = 3, classes: int = 10):
        super().__init__()
        layers, cin = [], in_channels
        for cout in (width, 2 * width, 4 * width):
            for _ in range(2):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=True),
                           nn.BatchNorm2d(cout, affine=False), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * width * 4 * 4, 256), nn.ReLU(), nn.Linear(256, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


MODELS = {"mlp": MLP, "cnn": CNN}
DATASET_OF = {"mlp": "mnist", "cnn": "cifar10"}


def build(family: str, width: int) -> nn.Module:
    """A freshly initialised model; the caller seeds torch's global generator beforehand."""
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; known: {sorted(MODELS)}")
    return MODELS[family](int(width))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(family: str, width: int) -> int:
    """FLOPs of one forward pass of one sample through the conv and linear layers (a multiply-add
    counts 2; BatchNorm, ReLU and pooling are left out), as torch.utils.flop_counter counts them
    (tests/test_models.py). Training costs about 3x this per sample (forward + backward)."""
    w = int(width)
    if family == "mlp":
        return 2 * (784 * w + w * w + w * w + w * 10)
    if family == "cnn":
        convs = [(3, w, 32), (w, w, 32), (w, 2 * w, 16), (2 * w, 2 * w, 16), (2 * w, 4 * w, 8), (4 * w, 4 * w, 8)]
        return 2 * (sum(9 * cin * cout * side * side for cin, cout, side in convs) + 4 * w * 16 * 256 + 256 * 10)
    raise ValueError(f"unknown model {family!r}; known: {sorted(MODELS)}")


def prunable(model: nn.Module, include_output: bool = True) -> dict[str, nn.Parameter]:
    """Weights of conv and linear layers (never biases or BatchNorm), by parameter name.
    The output layer is the last Linear."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not include_output:
        names = names[:-1]
    params = dict(model.named_parameters())
    return {f"{n}.weight": params[f"{n}.weight"] for n in names}
