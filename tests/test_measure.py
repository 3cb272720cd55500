"""Measuring instruments (harness/measure.py) against exact references on tiny models."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, jvp

from harness.paper import measure, models


# ---------------------------------------------------------------- helpers

def _flat_loss(model, x, y):
    """(loss as a function of the flat fp64 parameter vector, that vector) for an fp64 eval copy."""
    m = copy.deepcopy(model).double().eval()
    named = list(m.named_parameters())
    names, shapes = [n for n, _ in named], [p.shape for _, p in named]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in named])
    xd = x.double()

    def loss(flat):
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(m, params, (xd,)), y)

    return loss, flat0


def _largest_magnitude_eig(model, x, y):
    loss, flat0 = _flat_loss(model, x, y)
    ev = torch.linalg.eigvalsh(hessian(loss)(flat0))
    return ev[ev.abs().argmax()].item()


def _with_running_stats(model, shape, seed=0):
    """Give BatchNorm nonzero running statistics by a few train-mode passes, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape, generator=g) * 2 + 0.5)
    return model.eval()


def _tiny_mlp():
    torch.manual_seed(0)
    model = models.MLP(4, in_features=16)  # 158 parameters
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(32, 16, generator=g), torch.randint(0, 10, (32,), generator=g)


def _tiny_convnet():
    """The CNN's block structure (conv3x3-BN(affine=False)-ReLU-maxpool, Linear head) at 243
    parameters: models.CNN(1) has 19,530, whose full fp64 Hessian would need 3 GB."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2, affine=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, affine=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3 * 2 * 2, 10))
    _with_running_stats(model, (16, 3, 8, 8))
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, model.training


def _assert_unchanged(model, snap):
    state, training = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    assert model.training == training
    assert all(m.training == training for m in model.modules())


# ---------------------------------------------------------------- power iteration

@pytest.mark.parametrize("spectrum", [[5.0, 3.0, -2.0, 1.0, 0.5, 0.0, -0.1, 0.01],
                                      [-6.0, 4.0, 3.0, -1.0, 0.2, 0.0, 0.0, 1e-3]])
def test_power_iteration_known_spectrum(spectrum):
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T
    res = measure.power_iteration(lambda v: a @ v, 8, iters=200, seed=3)
    top = max(spectrum, key=abs)  # converges to the largest magnitude, sign included
    assert abs(res["value"] - top) / abs(top) <= 1e-6
    assert res["residual"] < 1e-6 and res["iterations"] == 200
    early = measure.power_iteration(lambda v: a @ v, torch.zeros(8, dtype=torch.float64),
                                    iters=1000, tol=1e-12, seed=3)
    assert early["iterations"] < 1000 and abs(early["value"] - top) / abs(top) <= 1e-6


# ---------------------------------------------------------------- Hessian

@pytest.mark.parametrize("build", [_tiny_mlp, _tiny_convnet])
def test_hessian_top_eigenvalue_matches_full_hessian(build):
    model, x, y = build()
    model.train()  # the instrument must use eval mode (running stats) whatever the caller's mode
    snap = _snapshot(model)
    reference = _largest_magnitude_eig(model, x, y)
    res = measure.hessian_top_eigenvalue(model, x, y, iters=500, tol=1e-12, chunk=16,
                                         dtype=torch.float64)  # two chunks
    assert abs(res["value"] - reference) / abs(reference) <= 1e-4
    assert res["iterations"] < 500 and res["residual"] < 1e-3
    assert res["bn_mode"] == "eval" and res["n_samples"] == len(x)
    _assert_unchanged(model, snap)


def test_chunked_loss_and_hvp_equal_unchunked():
    model, x, y = _tiny_convnet()
    work = copy.deepcopy(model).double()
    xd = x.double()
    full = F.cross_entropy(work(xd), y)
    for chunk in (3, 5, 16):  # 16 = one chunk; 3 leaves a ragged last chunk
        assert torch.allclose(measure.mean_loss(work, xd, y, chunk), full, rtol=1e-13, atol=0)
    v = torch.randn(sum(p.numel() for p in work.parameters()), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    assert torch.allclose(measure.make_hvp(work, xd, y, chunk=3)(v),
                          measure.make_hvp(work, xd, y, chunk=16)(v), rtol=1e-10, atol=1e-13)


def test_one_chunk_hvp_reuses_the_gradient_graph_and_gives_the_same_products():
    """With one chunk, make_hvp builds the gradient's graph once (one forward pass for all the
    products) and each product equals a freshly built one; with two chunks every product
    recomputes both chunks' graphs, as memory is bounded by one chunk."""
    model, x, y = _tiny_convnet()
    work = copy.deepcopy(model).double().eval()
    xd = x.double()
    forwards = []
    work.register_forward_hook(lambda *_: forwards.append(1))
    g = torch.Generator().manual_seed(0)
    vs = [torch.randn(sum(p.numel() for p in work.parameters()), dtype=torch.float64, generator=g) for _ in range(3)]
    kept = measure.make_hvp(work, xd, y, chunk=len(x))
    products = [kept(v) for v in vs]
    assert len(forwards) == 1
    for v, got in zip(vs, products):
        fresh = measure.make_hvp(work, xd, y, chunk=len(x))(v)
        assert torch.allclose(got, fresh, rtol=1e-12, atol=1e-12 * fresh.abs().max().item())
    forwards.clear()
    two = measure.make_hvp(work, xd, y, chunk=len(x) // 2 + 1)
    for v, want in zip(vs, products):
        assert torch.allclose(two(v), want, rtol=1e-10, atol=1e-10 * want.abs().max().item())
    assert len(forwards) == 2 * len(vs)


def test_hvp_matches_forward_over_reverse_on_paper_cnn():
    """The real CNN(1) (19,530 parameters) is too large for a full Hessian: check one
    Hessian-vector product against torch.func's forward-over-reverse product instead."""
    torch.manual_seed(0)
    model = _with_running_stats(models.CNN(1), (8, 3, 32, 32))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    loss, flat0 = _flat_loss(model, x, y)
    v = torch.randn(flat0.numel(), dtype=torch.float64, generator=g)
    reference = jvp(grad(loss), (flat0,), (v,))[1]
    work = copy.deepcopy(model).double().eval()
    ours = measure.make_hvp(work, x.double(), y, chunk=3)(v)
    assert torch.allclose(ours, reference, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- perturbation

def _trained_tiny_mlp():
    """A small MLP fitted (Adam, full batch) to labels a linear teacher gives: near a minimum."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 16, generator=g)
    y = (x @ torch.randn(16, 10, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = models.MLP(16, in_features=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def test_perturbation_sharpness():
    model, x, y = _trained_tiny_mlp()
    model.train()
    snap = _snapshot(model)
    sigmas = (0.0, 1e-3, 1e-2, 1e-1)
    res = measure.perturbation_sharpness(model, x, y, sigmas=sigmas, draws=4, seed=7)
    _assert_unchanged(model, snap)
    assert res["bn_mode"] == "eval"
    assert res["base_loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
    assert list(res["sigmas"]) == ["0.0", "0.001", "0.01", "0.1"]
    zero = res["sigmas"]["0.0"]
    assert zero["values"] == [0.0] * 4 and zero["mean"] == 0.0 and zero["std"] == 0.0
    means = [res["sigmas"][repr(float(s))]["mean"] for s in sigmas]
    assert means == sorted(means) and means[1] > 0 and means[3] > 10 * means[1]
    for s in sigmas[1:]:
        entry = res["sigmas"][repr(s)]
        assert len(entry["values"]) == 4
        assert entry["std"] == pytest.approx(torch.tensor(entry["values"]).std(correction=1).item())
    assert measure.perturbation_sharpness(model, x, y, sigmas=sigmas, draws=4, seed=7) == res
    other = measure.perturbation_sharpness(model, x, y, sigmas=sigmas, draws=4, seed=8)
    assert other["sigmas"]["0.01"]["values"] != res["sigmas"]["0.01"]["values"]
    one = measure.perturbation_sharpness(model, x, y, sigmas=(1e-2,), draws=1)
    assert one["sigmas"]["0.01"]["std"] == 0.0


def test_perturbation_leaves_bn_model_unchanged():
    model, x, y = _tiny_convnet()
    snap = _snapshot(model)  # eval mode, nonzero running statistics
    measure.perturbation_sharpness(model, x, y, sigmas=(1e-2, 1e-1), draws=2, chunk=5)
    _assert_unchanged(model, snap)
    model.train()
    snap = _snapshot(model)
    measure.hessian_top_eigenvalue(model, x, y, iters=3, chunk=5)
    measure.perturbation_sharpness(model, x, y, sigmas=(1e-2,), draws=2)
    _assert_unchanged(model, snap)


# ---------------------------------------------------------------- movement

def test_relative_movement_hand_computed():
    theta0 = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[0.0, 5.0]]),
              "bn.running_mean": torch.tensor([1.0]), "bn.running_var": torch.tensor([9.0]),
              "bn.num_batches_tracked": torch.tensor(3)}
    thetaT = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0, 5.0]]),
              "bn.running_mean": torch.tensor([100.0]), "bn.running_var": torch.tensor([0.0]),
              "bn.num_batches_tracked": torch.tensor(50)}
    res = measure.relative_movement(theta0, thetaT)
    assert res["per_layer"] == {"a": pytest.approx(4 / 5, abs=1e-15), "b": 0.0}
    assert res["total"] == pytest.approx(4 / math.sqrt(50), abs=1e-15)  # ||(0,-4,0,0)|| / ||(3,4,0,5)||
    only_a = measure.relative_movement(theta0, thetaT, names=["a"])
    assert only_a == {"total": pytest.approx(0.8), "per_layer": {"a": pytest.approx(0.8)}}


def test_param_names_select_parameters_not_buffers():
    torch.manual_seed(0)
    model = models.CNN(1)
    names = measure.param_names(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(names) == {k for k in state if not k.endswith(measure.BUFFER_SUFFIXES)}
    moved = {k: v * 2 if k in names else v for k, v in state.items()}  # every parameter doubles
    res = measure.relative_movement(state, moved, names=names)
    assert res["total"] == pytest.approx(1.0) and set(res["per_layer"]) == set(names)
    assert measure.relative_movement(state, moved) == res


# ---------------------------------------------------------------- Keskar et al.'s box sharpness

def _phi(fmax, f0):
    return (fmax - f0) / (1 + f0) * 100


def test_box_sharpness_reaches_the_vertex_of_a_convex_quadratic():
    """f(t) = 0.5 sum h_i t_i^2 is convex and separable: its maximum over the box |z_i| <= eps (|x_i|
    + 1) around x is the vertex z_i = sign(x_i) eps (|x_i| + 1), f = 0.5 sum h_i (|x_i| + eps (|x_i|
    + 1))^2, in closed form. L-BFGS-B projects its iterates onto the box, so it lands on that vertex
    exactly: float64 rounding only (rel 1e-12 of phi, a quantity of order 1-100)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, generator=gen, dtype=torch.float64)
    h = torch.rand(50, generator=gen, dtype=torch.float64) * 10 + 0.1
    eps = 1e-3
    out = measure.box_sharpness(lambda t: (0.5 * (h * t * t).sum().item(), h * t), x, eps)
    f0 = 0.5 * (h * x * x).sum().item()
    fmax = 0.5 * (h * (x.abs() + eps * (x.abs() + 1)) ** 2).sum().item()
    assert out["f0"] == pytest.approx(f0, rel=1e-12)
    assert out["value"] == pytest.approx(_phi(fmax, f0), rel=1e-12)
    assert out["dim"] == 50 and out["iterations"] <= 10


def test_box_sharpness_in_a_random_subspace_of_a_linear_function():
    """f(t) = g.t + c: on the subspace x + A y its maximum over the box |y_i| <= eps (|(A+ x)_i| + 1)
    is g.x + c + sum_i |(A^T g)_i| eps (|(A+ x)_i| + 1), in closed form (a vertex, reached by the
    first projected step). A is float32, so A y and A^T g carry float32 rounding: rel 1e-5 of phi."""
    n, p, eps = 400, 7, 5e-4
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    A = measure.random_subspace(n, p, seed=3)
    assert A.shape == (n, p) and torch.equal(A, measure.random_subspace(n, p, seed=3))
    out = measure.box_sharpness(lambda t: ((g * t).sum().item() + 2.0, g), x, eps, A=A)
    Ad = A.double()
    centre = torch.linalg.lstsq(Ad, x.unsqueeze(1)).solution.squeeze(1)  # A+ x
    f0 = (g * x).sum().item() + 2.0
    fmax = f0 + ((Ad.T @ g).abs() * eps * (centre.abs() + 1)).sum().item()
    assert out["dim"] == p
    assert out["value"] == pytest.approx(_phi(fmax, f0), rel=1e-5)


def test_keskar_sharpness_of_a_model_agrees_with_a_float64_reference():
    """The model's measurement (float32, eval-mode BatchNorm, chunked sums) against box_sharpness on
    the same loss in float64 by autograd (_flat_loss): f(x) within float32 rounding (rel 1e-5), phi
    within 1% (the two L-BFGS-B runs see f to different precision, so their line searches may
    take slightly different steps; phi is of order 0.1-10 here). The caller's model is untouched,
    and phi >= 0 (the box holds x itself)."""
    torch.manual_seed(0)
    model = models.FC((16, 16), 20, batchnorm=True)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    model.train()
    with torch.no_grad():
        model(x)  # running statistics that differ from the defaults
    model.eval()
    before = copy.deepcopy(model.state_dict())
    got = measure.keskar_sharpness(model, x, y, epsilon=1e-2, chunk=24)
    loss, flat0 = _flat_loss(model, x, y)

    def f_and_grad(t):
        t = t.clone().requires_grad_(True)
        f = loss(t)
        return f.item(), torch.autograd.grad(f, t)[0]

    ref = measure.box_sharpness(f_and_grad, flat0, 1e-2)
    assert got["f0"] == pytest.approx(ref["f0"], rel=1e-5)
    assert got["value"] >= 0 and got["value"] == pytest.approx(ref["value"], rel=1e-2)
    assert got["dim"] == sum(p.numel() for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    sub = measure.keskar_sharpness(model, x, y, epsilon=1e-2, subspace=5, seed=1)
    assert sub["dim"] == 5 and sub["value"] >= 0
