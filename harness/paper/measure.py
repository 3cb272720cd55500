"""Measuring instruments: sharpness of the loss surface and distance travelled in weight space.

hessian_top_eigenvalue
    Top eigenvalue of the Hessian of the mean training cross-entropy with respect to *all*
    parameters (model.parameters()), estimated by power iteration on exact Hessian-vector
    products (double backward through autograd). Choices:
    - BatchNorm in eval mode: the loss is a deterministic function of the weights, with the
      running statistics held fixed (batch statistics would make the "loss" depend on how the
      data are chunked). Reported as bn_mode = "eval".
    - The loss is the mean over all `n_samples` rows, accumulated over fixed chunks of `chunk`
      rows (each chunk's mean weighted by its size / N), so memory is bounded by one chunk's
      double-backward graph; the Hessian-vector product is summed the same way.
    - The work is done on a deep copy converted to `dtype` (float32 by default; float64 for
      reference checks), so the caller's model (weights, buffers, train/eval mode) is untouched.
    - Start vector: standard normal from a CPU generator seeded with `seed`, normalised.
    - Power iteration converges to the eigenvalue of largest *magnitude*. Near a minimum that is
      the top (positive) curvature; if a negative eigenvalue dominates in magnitude, the returned
      value is that negative number. With two eigenvalues of equal magnitude and opposite sign
      it does not converge; the `residual` ||Hv - lambda v|| / |lambda| at the final vector tells
      how far from an eigenpair the estimate is.

perturbation_sharpness
    Relative increase of the mean cross-entropy under isotropic Gaussian weight noise:
    (L(theta + eps) - L(theta)) / L(theta), eps ~ N(0, sigma^2 I) added to every parameter
    (not to BatchNorm buffers), BatchNorm in eval mode, `draws` seeded draws per sigma. Draw d
    uses the same noise direction at every sigma (common random numbers, seeded by (seed, d) on
    a CPU generator, so results do not depend on the device): the curve over sigma then shows
    the loss along fixed directions, and two models are probed along the same directions. Works on a deep copy: the caller's model stays bit-for-bit identical.

box_sharpness, keskar_sharpness
    Keskar et al. (ICLR 2017, section 2.2.2, Metric 2.1): the largest training loss in the box
    C_eps = {z: |z_i| <= eps (|(A+ x)_i| + 1)} around the minimiser x, relative to 1 + f(x), times
    100: phi = (max_{y in C_eps} f(x + A y) - f(x)) / (1 + f(x)) x 100, with A the identity (the
    full space) or an n x p matrix of random columns (A+ its pseudo-inverse; the source: p = 100).
    The maximum is sought as the source does, by `iters` (10) iterations of L-BFGS-B (scipy's,
    Byrd et al. 1995) from y = 0, with scipy's tolerances set to 0 so that the iteration limit
    stops it: a lower bound on the box maximum (exact for a function whose maximum is a vertex
    the iterates reach, tests/test_measure.py). keskar_sharpness takes it on a model's mean
    cross-entropy (BatchNorm in eval mode: the loss a deterministic function of the weights, as
    for the Hessian) over all parameters, in float32 with float64 accumulation over chunks; the
    random A has standard normal entries from a CPU generator seeded with `seed` (the source says
    only "randomly generated"), the same for every model measured with that seed.

relative_movement
    ||theta_T - theta_0|| / ||theta_0|| over parameters (buffers excluded by default), in total
    (all named tensors concatenated) and per tensor, accumulated in float64.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import derive_seed
from .models import has_conv, to_channels_last

DEFAULT_SIGMAS = (1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def param_names(model) -> list[str]:
    """Names of the model's parameters (not buffers), for `relative_movement(..., names=...)`."""
    return [n for n, _ in model.named_parameters()]


def _dtype(dtype) -> torch.dtype:
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _eval_copy(model, dtype=None):
    """A deep copy in eval mode (optionally converted to `dtype`), with gradients enabled; a
    convolutional model's copy computes channels-last, as training does (models.has_conv: the
    same values up to float rounding, in less time). Give it inputs through `_inputs`."""
    work = copy.deepcopy(model)
    if dtype is not None:
        work = work.to(dtype)
    if has_conv(work):
        work = work.to(memory_format=torch.channels_last)
    work.eval()
    for p in work.parameters():
        p.grad = None
        p.requires_grad_(True)
    return work


def _inputs(work, x, **to):
    """The rows `x` moved (`to`: device, dtype) and laid out as `work` (an _eval_copy) computes."""
    x = x.to(**to)
    return to_channels_last(x) if has_conv(work) else x


def mean_loss(model, x, y, chunk: int = 250) -> torch.Tensor:
    """Mean cross-entropy over all of (x, y), summed over chunks of `chunk` rows, each chunk's
    mean weighted by its size / N. Differentiable; the model is used as it is (mode, dtype)."""
    n = len(x)
    total = 0.0
    for i in range(0, n, chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        total = total + F.cross_entropy(model(xb), yb) * (len(xb) / n)
    return total


def make_hvp(model, x, y, chunk: int = 250, loss_fn: Callable | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Hessian-vector product of `mean_loss` with respect to all model parameters, as a
    function of a flat vector (parameters concatenated in model.parameters() order). `loss_fn`
    (default: the mean cross-entropy) maps a chunk's outputs and labels to its mean loss.
    Memory stays bounded by one chunk's double-backward graph: with several chunks, each call
    recomputes the graph chunk by chunk; with one (len(x) <= chunk), the gradient's graph is built
    on the first call and kept for the later ones, which then only differentiate it again (the
    same products, without a forward and a backward pass per product: tests/test_measure.py)."""
    params = list(model.parameters())
    n = len(x)
    loss_fn = loss_fn or F.cross_entropy
    kept = []  # the one chunk's gradient (with its graph), when there is one chunk

    def grads_of(i):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        loss = loss_fn(model(xb), yb) * (len(xb) / n)
        return torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        vs = [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]
        out = [torch.zeros_like(p) for p in params]
        with torch.enable_grad():
            for i in range(0, n, chunk):
                if n <= chunk and not kept:
                    kept.append(grads_of(i))
                grads = kept[0] if kept else grads_of(i)
                pairs = [(g, u) for g, u in zip(grads, vs) if g is not None]
                if not pairs:
                    continue
                dot = sum((g * u).sum() for g, u in pairs)
                hv = torch.autograd.grad(dot, params, allow_unused=True, retain_graph=bool(kept))
                for o, h in zip(out, hv):
                    if h is not None:
                        o.add_(h)
        return torch.cat([o.reshape(-1) for o in out])

    return hvp


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], template, iters: int = 30,
                    tol: float = 0.0, seed: int = 0, start: torch.Tensor | None = None) -> dict:
    """Largest-magnitude eigenvalue of a symmetric linear operator given by `matvec`.

    `template` is a vector (its size, dtype and device are used) or an int dimension (float64 on
    the CPU). Start: standard normal from a CPU generator seeded with `seed`, normalised. Each
    iteration: Hv = matvec(v), lambda = v.Hv (Rayleigh quotient), then v <- Hv / ||Hv||. Stops
    after `iters` products, or earlier when tol > 0 and |lambda_k - lambda_{k-1}| / |lambda_k| <
    tol. Returns value, residual ||Hv - lambda v|| / |lambda| for the final v (the vector whose
    Rayleigh quotient is `value`), iterations (products computed) and vector. `start`, if given,
    replaces the seeded start (a warm start, e.g. the previous measurement's vector).
    """
    if iters < 1:
        raise ValueError(f"iters={iters}: need at least one iteration")
    if isinstance(template, int):
        dim, dtype, device = template, torch.float64, torch.device("cpu")
    else:
        dim, dtype, device = template.numel(), template.dtype, template.device
    if start is None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(dim, generator=gen, dtype=dtype).to(device)
    else:
        v = start.reshape(-1).to(device=device, dtype=dtype)
    v = v / v.norm()
    lam, prev, residual, k = 0.0, None, float("nan"), 0
    for k in range(1, iters + 1):
        hv = matvec(v)
        lam = torch.dot(v, hv).item()
        err = (hv - lam * v).norm().item()
        residual = err / abs(lam) if lam != 0 else (0.0 if err == 0 else math.inf)
        norm = hv.norm()
        if norm.item() == 0:  # v is in the null space: the operator is zero along it
            break
        if tol > 0 and prev is not None and lam != 0 and abs(lam - prev) / abs(lam) < tol:
            break
        if k < iters:
            v = hv / norm
        prev = lam
    return {"value": lam, "residual": residual, "iterations": k, "vector": v}


def hessian_top_eigenvalue(model, x, y, iters: int = 30, tol: float = 0.0, chunk: int = 250,
                           dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """Top (largest-magnitude) eigenvalue of the Hessian of the mean cross-entropy on (x, y)
    with respect to all parameters; BatchNorm in eval mode. See the module docstring."""
    dtype = _dtype(dtype)
    work = _eval_copy(model, dtype)
    device = next(work.parameters()).device
    x = _inputs(work, x, device=device, dtype=dtype)
    y = y.to(device)
    dim = sum(p.numel() for p in work.parameters())
    template = torch.empty(dim, dtype=dtype, device=device)
    res = power_iteration(make_hvp(work, x, y, chunk), template, iters=iters, tol=tol, seed=seed)
    return {"value": float(res["value"]), "residual": float(res["residual"]),
            "iterations": int(res["iterations"]), "bn_mode": "eval", "n_samples": len(x)}


@torch.no_grad()
def _eval_loss(model, x, y, chunk: int) -> float:
    """Mean cross-entropy, float64 accumulation over chunks (model already in eval mode)."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), chunk):
        out = model(x[i:i + chunk])
        total += F.cross_entropy(out.float(), y[i:i + chunk], reduction="sum").double()
    return total.item() / len(x)


def perturbation_sharpness(model, x, y, sigmas=DEFAULT_SIGMAS, draws: int = 5, seed: int = 0,
                           chunk: int = 1000) -> dict:
    """Relative loss change (L - L0) / L0 under N(0, sigma^2) noise on every parameter, for
    each sigma and `draws` seeded draws; BatchNorm in eval mode. See the module docstring."""
    if draws < 1:
        raise ValueError(f"draws={draws}: need at least one draw")
    work = _eval_copy(model)
    params = [p for _, p in work.named_parameters()]
    base = [p.detach().clone() for p in params]
    device = params[0].device
    x, y = _inputs(work, x, device=device), y.to(device)
    l0 = _eval_loss(work, x, y, chunk)
    out = {}
    with torch.no_grad():
        for sigma in sigmas:
            sigma = float(sigma)
            values = []
            for d in range(draws):
                gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, f"perturb:{d}"))
                for p, b in zip(params, base):
                    noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(device)
                    p.copy_(b + sigma * noise)
                values.append((_eval_loss(work, x, y, chunk) - l0) / l0)
            t = torch.tensor(values, dtype=torch.float64)
            std = t.std(correction=1).item() if draws > 1 else 0.0
            out[repr(sigma)] = {"mean": t.mean().item(), "std": std, "values": values}
    return {"base_loss": l0, "bn_mode": "eval", "sigmas": out}


def relative_movement(theta0: dict, thetaT: dict, names=None) -> dict:
    """||thetaT - theta0|| / ||theta0|| over the tensors in `names` (default: the floating-point
    entries of theta0 that are not BatchNorm buffers), in total and per tensor, in float64.
    A tensor with zero norm at theta0 gives inf (moved) or nan (did not move)."""
    if names is None:
        names = [k for k, v in theta0.items()
                 if torch.is_floating_point(v) and not k.endswith(BUFFER_SUFFIXES)]

    def ratio(num, den):
        return num / den if den > 0 else (math.nan if num == 0 else math.inf)

    per_layer, num_sq, den_sq = {}, 0.0, 0.0
    for k in names:
        a = theta0[k].detach().to(torch.float64)
        b = thetaT[k].detach().to(device=a.device, dtype=torch.float64)
        n2, d2 = (b - a).pow(2).sum().item(), a.pow(2).sum().item()
        per_layer[k] = ratio(math.sqrt(n2), math.sqrt(d2))
        num_sq += n2
        den_sq += d2
    return {"total": ratio(math.sqrt(num_sq), math.sqrt(den_sq)), "per_layer": per_layer}


# The definitions of relative parameter movement that the paper's eq. 1 admits (see `movement`).
MOVEMENT_DEFINITIONS = ("all", "weights", "layer_mean")


def movement(theta0: dict, thetaT: dict, names: list, definition: str = "all") -> dict:
    """Relative parameter movement (relative_movement) by one of the definitions the
    paper's eq. 1 admits: "all" parameters as one vector (weights and biases), "weights" only
    (the weight tensors as one vector), or "layer_mean", the mean over weight tensors of each
    one's own ratio. `total` holds the chosen value."""
    if definition != "all":
        names = [n for n in names if n.endswith("weight")]
    out = relative_movement(theta0, thetaT, names)
    if definition == "layer_mean":
        out["total"] = sum(out["per_layer"].values()) / len(out["per_layer"])
    elif definition not in ("all", "weights"):
        raise ValueError(f"movement definition {definition!r}: expected all, weights or layer_mean")
    return out


def random_subspace(n: int, p: int, seed: int = 0) -> torch.Tensor:
    """An n x p float32 matrix of standard normal entries from a CPU generator seeded with `seed`
    (column by column: the same seed and shape give the same matrix on any device)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(p, n, generator=gen, dtype=torch.float32).T


def _pinv_times(A: torch.Tensor, x: torch.Tensor, rows: int = 100_000) -> torch.Tensor:
    """A+ x = (A^T A)^-1 A^T x for a tall A of full column rank, accumulated in float64 over
    blocks of rows (A may be too large to copy in float64)."""
    p = A.shape[1]
    gram = torch.zeros(p, p, dtype=torch.float64)
    atx = torch.zeros(p, dtype=torch.float64)
    for i in range(0, A.shape[0], rows):
        a = A[i:i + rows].double()
        gram += a.T @ a
        atx += a.T @ x[i:i + rows].double()
    return torch.linalg.solve(gram, atx)


def box_sharpness(f_and_grad: Callable, x: torch.Tensor, epsilon: float, iters: int = 10,
                  A: torch.Tensor | None = None) -> dict:
    """Keskar et al.'s (C_eps, A)-sharpness of f at x (see the module docstring). `f_and_grad` maps
    a float64 point (a 1-D tensor like x) to (f, gradient); `A` is None (the full space) or an
    n x p matrix. Returns value (phi), f0, fmax, dim (n or p), iterations, evaluations, message."""
    from scipy.optimize import Bounds, minimize  # (scipy imported only where this is measured)
    x = x.detach().double().cpu()
    f0 = float(f_and_grad(x)[0])
    centre = x if A is None else _pinv_times(A, x)
    half = (epsilon * (centre.abs() + 1)).numpy()
    best = [f0]

    def negated(z):
        step = torch.from_numpy(z)
        point = x + (step if A is None else (A @ step.float()).double())
        f, g = f_and_grad(point)
        best[0] = max(best[0], float(f))
        g = g.double() if A is None else (A.T @ g.float()).double()
        return -float(f), -g.numpy()

    res = minimize(negated, np.zeros_like(half), jac=True, method="L-BFGS-B", bounds=Bounds(-half, half),
                   options={"maxiter": iters, "ftol": 0.0, "gtol": 0.0})
    fmax = max(best[0], -float(res.fun))
    return {"value": (fmax - f0) / (1 + f0) * 100, "f0": f0, "fmax": fmax, "dim": len(half),
            "iterations": int(res.nit), "evaluations": int(res.nfev), "message": str(res.message)}


def keskar_sharpness(model, x, y, epsilon: float, iters: int = 10, subspace: int = 0, seed: int = 0,
                     chunk: int = 1000) -> dict:
    """box_sharpness of the mean cross-entropy on (x, y) over all of a model's parameters, in the
    full space (subspace 0) or a random `subspace`-dimensional one; on an eval-mode copy, so the
    caller's model is untouched. See the module docstring."""
    work = _eval_copy(model)
    params = list(work.parameters())
    device = params[0].device
    x, y = _inputs(work, x, device=device), y.to(device)
    n = len(x)

    def f_and_grad(point):
        torch.nn.utils.vector_to_parameters(point.to(device=device, dtype=params[0].dtype), params)
        for p in params:
            p.grad = None
        total = 0.0
        for i in range(0, n, chunk):
            loss = F.cross_entropy(work(x[i:i + chunk]).float(), y[i:i + chunk], reduction="sum") / n
            loss.backward()
            total += loss.item()
        grad = torch.cat([p.grad.reshape(-1) for p in params]).detach().cpu().double()
        return total, grad

    theta = torch.nn.utils.parameters_to_vector(params).detach().cpu().double()
    A = random_subspace(len(theta), subspace, seed) if subspace else None
    out = box_sharpness(f_and_grad, theta, epsilon, iters, A)
    return {**out, "epsilon": float(epsilon), "subspace": int(subspace), "bn_mode": "eval", "n_samples": n}
