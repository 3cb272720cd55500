"""The paper's two model families (Appendix B), with PyTorch default initialisation, and a
fully connected family for other papers' calibration experiments.

MLP (MNIST):  784 -> w -> w -> w -> 10, four Linear layers with ReLU between them.
CNN (CIFAR-10): three blocks of [conv3x3-BN-ReLU, conv3x3-BN-ReLU, maxpool2] with channels
c, 2c, 4c, then Linear(4c*4*4, 256)-ReLU-Linear(256, 10).

The paper's CNN parameter counts (72,990 ... 4,150,890) come out exactly only with biased
convolutions and BatchNorm *without* learnable affine parameters: 279c^2 + 16425c + 2826.
That is the reading taken; tests/test_models.py checks all 16 tabled counts.

FC (any dataset): in -> h1 -> ... -> hk -> 10, Linear layers with one activation (relu | tanh)
between them; `in` is the dataset's flattened image size (MNIST 784, CIFAR-10 3072). Its hidden
sizes are RunConfig.hidden ("300,100": LeNet-300-100 of Frankle & Carbin 2019, 266,610
parameters; "200,200" with tanh: the fc-tanh of Cohen et al. 2021), and its `width` is the first
hidden size. With `batchnorm` (RunConfig.batchnorm) every hidden Linear is followed by a
BatchNorm1d with its learnable scale and shift (Ioffe & Szegedy's layer, Keras's default) before
the activation: "512,512,512,512,512" so is Keskar et al. (2017)'s F1, 1,462,794 parameters. It is built from a run's configuration (`for_config`), since build(family, width)
alone does not know the hidden sizes or the input size.

Initialisation (`initialise`): "default" (PyTorch's, as built) or "glorot_normal": every Linear
and Conv2d weight drawn from N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010, Gaussian form;
fan = features, times the kernel area for a convolution), biases zero.

A run's model (`init_model`, seeded from its configuration; `model_from_state`, from saved
weights), its state on the CPU (`cpu_state`), and the layout it computes in: a model with a
convolution runs channels-last (`has_conv`, `to_channels_last`).
"""
from __future__ import annotations

import torch
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


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
INITS = ("default", "glorot_normal")


class FC(nn.Module):
    """Fully connected: Flatten, then Linear layers of the given hidden sizes with `activation`
    between them, then Linear(hidden[-1], classes). Parameter names as in MLP (net.1, net.3, ...);
    with `batchnorm`, a BatchNorm1d (affine) after each hidden Linear, before its activation."""

    def __init__(self, hidden, in_features: int, activation: str = "relu", classes: int = 10,
                 batchnorm: bool = False):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"FC: hidden sizes {hidden}: need at least one, each >= 1")
        if activation not in ACTIVATIONS:
            raise ValueError(f"FC: activation {activation!r}: expected one of {sorted(ACTIVATIONS)}")
        layers, cin = [nn.Flatten()], int(in_features)
        for h in hidden:
            layers += [nn.Linear(cin, h)] + ([nn.BatchNorm1d(h)] if batchnorm else []) + [ACTIVATIONS[activation]()]
            cin = h
        layers.append(nn.Linear(cin, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


MODELS = {"mlp": MLP, "cnn": CNN, "fc": FC}
DATASET_OF = {"mlp": "mnist", "cnn": "cifar10"}


def parse_hidden(hidden: str) -> tuple:
    """"300,100" -> (300, 100); "" -> (). A ValueError names what is wrong."""
    if not hidden.strip():
        return ()
    try:
        sizes = tuple(int(h) for h in hidden.split(","))
    except ValueError:
        raise ValueError(f"hidden {hidden!r}: expected comma-separated integers, e.g. '300,100'") from None
    if min(sizes) < 1:
        raise ValueError(f"hidden {hidden!r}: every size must be >= 1")
    return sizes


def build(family: str, width: int, hidden=(), activation: str = "relu", in_features: int | None = None,
          init: str = "default", batchnorm: bool = False) -> nn.Module:
    """A freshly initialised model; the caller seeds torch's global generator beforehand.
    "fc" needs `hidden` (a tuple or "300,100") and `in_features`; see `for_config` for a run's."""
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; known: {sorted(MODELS)}")
    if family == "fc":
        hidden = parse_hidden(hidden) if isinstance(hidden, str) else tuple(hidden)
        if not hidden or in_features is None:
            raise ValueError("model 'fc' needs its hidden sizes and input size: build it from the run's "
                             "configuration with models.for_config(cfg)")
        model = FC(hidden, in_features, activation, batchnorm=batchnorm)
    else:
        if batchnorm:
            raise ValueError(f"model {family!r}: batchnorm is an option of model 'fc' only")
        if activation != "relu" and family == "cnn" or activation not in ACTIVATIONS:
            raise ValueError(f"model {family!r}: activation {activation!r} not available")
        model = MODELS[family](int(width))
        if activation != "relu":
            for i, m in enumerate(model.net):
                if isinstance(m, nn.ReLU):
                    model.net[i] = ACTIVATIONS[activation]()
    initialise(model, init)
    return model


def architecture(cfg) -> dict:
    """The keyword arguments of `build` that a run's configuration (config.RunConfig) sets beyond
    family and width: hidden sizes, activation, input size (from the dataset) and initialisation."""
    from .data import input_size
    arch = {"activation": cfg.activation, "init": cfg.init}
    if cfg.model == "fc":
        arch.update(hidden=parse_hidden(cfg.hidden), in_features=input_size(cfg.dataset))
        if cfg.batchnorm:
            arch["batchnorm"] = True
    return arch


def for_config(cfg) -> nn.Module:
    """The model a run trains, freshly initialised (the caller seeds torch's global generator)."""
    return build(cfg.model, cfg.width, **architecture(cfg))


def initialise(model: nn.Module, init: str = "default") -> nn.Module:
    """Re-draw the weights of `model` in place by the scheme `init` (see the module docstring),
    from torch's global generator; "default" leaves PyTorch's initialisation."""
    if init not in INITS:
        raise ValueError(f"init {init!r}: expected one of {list(INITS)}")
    if init == "glorot_normal":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    nn.init.xavier_normal_(m.weight)  # std = sqrt(2 / (fan_in + fan_out))
                    if m.bias is not None:
                        m.bias.zero_()
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(family: str, width: int, hidden=(), in_features: int | None = None, **_) -> int:
    """FLOPs of one forward pass of one sample through the conv and linear layers (a multiply-add
    counts 2; BatchNorm, ReLU, tanh and pooling are left out), as torch.utils.flop_counter counts
    them (tests/test_models.py). Training costs about 3x this per sample (forward + backward).
    "fc" needs `hidden` and `in_features` (as `build`; `config_flops` takes a run's)."""
    w = int(width)
    if family == "fc":
        hidden = parse_hidden(hidden) if isinstance(hidden, str) else tuple(hidden)
        if not hidden or in_features is None:
            raise ValueError("model 'fc' needs its hidden sizes and input size: use models.config_flops(cfg)")
        sizes = (int(in_features), *hidden, 10)
        return 2 * sum(a * b for a, b in zip(sizes, sizes[1:]))
    if family == "mlp":
        return 2 * (784 * w + w * w + w * w + w * 10)
    if family == "cnn":
        convs = [(3, w, 32), (w, w, 32), (w, 2 * w, 16), (2 * w, 2 * w, 16), (2 * w, 4 * w, 8), (4 * w, 4 * w, 8)]
        return 2 * (sum(9 * cin * cout * side * side for cin, cout, side in convs) + 4 * w * 16 * 256 + 256 * 10)
    raise ValueError(f"unknown model {family!r}; known: {sorted(MODELS)}")


def config_flops(cfg) -> int:
    """forward_flops of the model a run's configuration trains."""
    return forward_flops(cfg.model, cfg.width, **architecture(cfg))


def prunable(model: nn.Module, include_output: bool = True) -> dict[str, nn.Parameter]:
    """Weights of conv and linear layers (never biases or BatchNorm), by parameter name.
    The output layer is the last Linear."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not include_output:
        names = names[:-1]
    params = dict(model.named_parameters())
    return {f"{n}.weight": params[f"{n}.weight"] for n in names}


def init_model(cfg) -> nn.Module:
    """The model a run (config.RunConfig) trains, initialised from its seed (init_seed where set)
    on the CPU, so that the same seed gives the same initialisation on any device."""
    torch.manual_seed(cfg.seed if cfg.init_seed < 0 else cfg.init_seed)
    return for_config(cfg)


def model_from_state(cfg, state: dict, device=None) -> nn.Module:
    """The model of a run (config.RunConfig) with the weights and buffers `state`, on `device`."""
    model = for_config(cfg)
    model.load_state_dict(state)
    return model.to(device or cfg.device)


def cpu_state(model) -> dict:
    """The model's state on the CPU, every tensor in the standard (contiguous) layout whatever
    layout the model computes in (see has_conv)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def has_conv(model) -> bool:
    """Whether the model has a convolution: its activations then run channels-last (NHWC) on every
    device and path (networks.Eager and Grouped, the instruments' copies). Measured on a 2-core CPU (one torch
    thread, README's bench paragraph) and on an H100 (Grouped, issue 11): the same arithmetic in
    less time; weights agree with the NCHW layout's up to float rounding (tests/test_grouped.py)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d batch [b, c, h, w] laid out channels-last (other tensors as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
