"""Lottery-ticket pruning masks (Section IV-G; Frankle & Carbin's iterative magnitude pruning).

Pure functions on dicts of weight tensors, name -> tensor, as produced by
`models.prunable(model, include_output)` (the Parameters themselves or `.detach()` copies).
That dict holds only conv and linear weights, so biases and BatchNorm are never pruned.
`include_output` is a parameter of models.prunable; its default True prunes the output layer
too, since the paper prunes "weights", all of them.

Choices:
- Fractions are of the ORIGINAL weight count: a mask at fraction f keeps exactly
  keep_count(total, f) = round(total * f) weights (Python's round: half to even), whatever the
  previous round kept. Iterating 0.7 -> 0.5 -> ... re-ranks only the weights still alive, so a
  pruned weight never comes back.
- scope="global" (default) ranks all weights together, without reference to layers: the paper's
  text "identify weights with the smallest absolute magnitude" is a ranking of weights, and
  global is its literal reading. scope="layer" keeps round(n_l * f) in each tensor separately,
  Frankle & Carbin's setting for conv nets.
- Per-tensor fractions (`fractions` of magnitude_mask, layer scope): Frankle & Carbin prune
  "connections to outputs ... at half of the rate" (20% per round, 10% for the output layer).
  output_fractions gives the output layer's remaining fraction per round when it is pruned at
  `output_rate` times the others' per-round rate, and overall_remaining the fraction of all
  prunable weights left (their Pm: 51.3%, 21.1%, 13.5%, 3.6% ... for LeNet-300-100).
- Ties in |w| are broken deterministically: a stable sort on |w| (descending) keeps the lower
  flat index first (tensors in dict order for global scope).
"""
from __future__ import annotations

import hashlib

import torch

PAPER_FRACTIONS = (0.7, 0.5, 0.3, 0.2, 0.1, 0.05)
SCOPES = ("global", "layer")


def keep_count(total: int, fraction: float) -> int:
    """Weights kept out of `total` at remaining `fraction`: round(total * fraction), with
    Python's round (ties to even)."""
    return int(round(total * fraction))


def schedule(fractions=PAPER_FRACTIONS) -> tuple[float, ...]:
    """The remaining fractions of an iterative-pruning run, checked: each in (0, 1] and strictly
    decreasing (pruned weights never come back)."""
    fractions = tuple(float(f) for f in fractions)
    for f in fractions:
        _check_fraction(f)
    if any(b >= a for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f"fractions {fractions}: expected strictly decreasing")
    return fractions


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}: expected a value in (0, 1]")


def _top_k(scores: torch.Tensor, alive: torch.Tensor, k: int, where: str) -> torch.Tensor:
    """Boolean mask of the k largest scores among alive entries (flat tensors)."""
    n_alive = int(alive.sum())
    if k > n_alive:
        raise ValueError(f"{where}: keeping {k} weights needs reviving some; only {n_alive} alive")
    ranked = torch.where(alive, scores, torch.full_like(scores, -1.0))  # dead below every |w|
    order = torch.sort(ranked, descending=True, stable=True).indices
    keep = torch.zeros_like(alive)
    keep[order[:k]] = True
    return keep


def output_fractions(fractions, output_rate: float = 1.0) -> tuple[float, ...]:
    """The output layer's remaining fraction after each round of the schedule `fractions` (the
    other layers' remaining fractions), when it is pruned at `output_rate` times their per-round
    rate: round k prunes 1 - f_k / f_(k-1) of the others' weights (f_0 = 1) and output_rate times
    that of the output layer's, compounded. Frankle & Carbin: fractions 0.8^k, output_rate 0.5,
    so 0.9^k. output_rate 1 gives the fractions themselves; 0 keeps the output layer dense."""
    fractions = schedule(fractions)
    if not 0 <= output_rate <= 1:
        raise ValueError(f"output_rate {output_rate}: expected a value in [0, 1]")
    if output_rate == 1:
        return fractions
    out, prev, cur = [], 1.0, 1.0
    for f in fractions:
        cur *= 1 - output_rate * (1 - f / prev)
        out.append(cur)
        prev = f
    return tuple(out)


def overall_remaining(sizes: dict, fraction: float, fractions: dict | None = None) -> float:
    """The fraction of all prunable weights a layer-scope mask keeps: sum over tensors of
    keep_count(size, its fraction) / sum of sizes; `sizes` name -> weight count, `fractions`
    name -> that tensor's fraction where it is not `fraction` (magnitude_mask's)."""
    fractions = fractions or {}
    kept = sum(keep_count(n, fractions.get(k, fraction)) for k, n in sizes.items())
    return kept / sum(sizes.values())


def magnitude_mask(weights: dict, fraction: float, current: dict | None = None,
                   scope: str = "global", fractions: dict | None = None) -> dict:
    """Keep the keep_count(total, fraction) largest-|w| weights among those alive under `current`
    (all alive if None); total is the original weight count (global) or each tensor's (layer).
    `fractions` (layer scope only): name -> the remaining fraction of that tensor instead of
    `fraction` (the output layer pruned at a lower rate: output_fractions).
    Returns name -> bool tensor shaped like the weight, on its device."""
    _check_fraction(fraction)
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: expected one of {SCOPES}")
    fractions = dict(fractions or {})
    if fractions and scope != "layer":
        raise ValueError("per-tensor fractions need scope 'layer' (a global ranking has one fraction)")
    for k, f in fractions.items():
        if k not in weights:
            raise ValueError(f"fraction for {k!r}: not one of the weights {sorted(weights)}")
        _check_fraction(f)
    flat = {k: w.detach().abs().reshape(-1).to(torch.float64) for k, w in weights.items()}
    for k, s in flat.items():
        if not torch.isfinite(s).all():
            raise ValueError(f"weight {k!r} has non-finite entries")
    alive = {k: (current[k].reshape(-1).to(device=s.device, dtype=torch.bool) if current is not None
                 else torch.ones_like(s, dtype=torch.bool)) for k, s in flat.items()}
    if scope == "layer":
        keep = {k: _top_k(s, alive[k], keep_count(s.numel(), fractions.get(k, fraction)), f"layer {k!r}")
                for k, s in flat.items()}
    else:
        names = list(flat)
        scores = torch.cat([flat[k] for k in names])
        kept = _top_k(scores, torch.cat([alive[k] for k in names]),
                      keep_count(scores.numel(), fraction), "global")
        keep = dict(zip(names, torch.split(kept, [flat[k].numel() for k in names])))
    return {k: keep[k].reshape(w.shape).to(w.device) for k, w in weights.items()}


def random_mask(like: dict, seed: int) -> dict:
    """Random pruning at the same per-layer sparsity as `like`: each tensor keeps exactly
    like[name].sum() positions, drawn uniformly by a CPU generator seeded from (seed, name), so a
    layer's draw does not depend on the others or on the dict order."""
    out = {}
    for name, m in like.items():
        digest = hashlib.sha256(f"{seed}:random-mask:{name}".encode()).digest()
        gen = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[torch.randperm(m.numel(), generator=gen)[:int(m.sum())]] = True
        out[name] = keep.reshape(m.shape).to(m.device)
    return out


def apply_mask(state: dict, masks: dict) -> dict:
    """A copy of a state_dict with masked-out entries set to zero (kept values bit-identical);
    entries without a mask are copied unchanged. Used to rewind survivors to theta_0."""
    out = {}
    for k, v in state.items():
        if k in masks:
            out[k] = v.detach().masked_fill(~masks[k].to(device=v.device, dtype=torch.bool), 0)
        else:
            out[k] = v.detach().clone()
    return out


def mask_counts(masks: dict) -> dict:
    """{"kept", "total"} over all masks, and the same per tensor under "per_layer"."""
    per_layer = {k: {"kept": int(m.sum()), "total": m.numel()} for k, m in masks.items()}
    return {"kept": sum(c["kept"] for c in per_layer.values()),
            "total": sum(c["total"] for c in per_layer.values()), "per_layer": per_layer}


def remaining_fraction(masks: dict) -> float:
    """Kept weights / all weights, over all masks together."""
    c = mask_counts(masks)
    return c["kept"] / c["total"]
