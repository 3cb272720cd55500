"""The captured training step (GraphedStep) and the fused SGD it relies on.

On a CPU the step is called directly, so these tests check the bookkeeping around it (static
index buffer, in-place accumulators, the ragged last batch, the tensor learning rate). The tests
marked `cuda` check the capture itself (replays really skip Python, and a graphed run matches an
uncaptured one) and run only where a GPU is present: `pytest tests/test_graphs.py` on the GPU."""
import dataclasses

import pytest
import torch

from harness.paper import optimise, train
from harness.paper.config import RunConfig
from harness.paper.graphs import GraphedStep
from harness.runs import checkpoint
from conftest import masked_inits, synthetic_split

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _graph_probe(device):
    x = torch.arange(20, dtype=torch.float32, device=device)
    acc = torch.zeros((), device=device)
    python_calls = []

    def fn(idx):
        python_calls.append(1)
        acc.add_(x[idx].sum())
    g = GraphedStep(fn, (4,), device, warmup=2)
    expected = 0.0
    for k in range(6):
        idx = torch.arange(k, k + 4, device=device)
        g(idx)
        expected += float(sum(range(k, k + 4)))
    return g, acc.item(), expected, len(python_calls)


def test_graphed_step_on_cpu_calls_the_step_every_time():
    g, got, expected, calls = _graph_probe("cpu")
    assert got == expected and calls == 6 and g.graph is None


@cuda
def test_graphed_step_replays_without_python_and_reads_new_indices():
    g, got, expected, calls = _graph_probe("cuda")
    assert g.graph is not None
    assert calls == 3  # 2 warm-up steps + 1 capture; the other 3 steps were replays
    assert got == expected  # every replay read the indices copied into the static buffer


def test_fused_sgd_with_tensor_lr_is_torch_sgd():
    """The fused, tensor-lr SGD is PyTorch's SGD with momentum: same trajectory under the cosine
    schedule up to float rounding (the lr tensor is float32; the schedule's values then differ
    from the float64 ones by <= 4e-7 relative)."""
    cfg = RunConfig(dataset="x", model="mlp", width=8, lr=0.05, epochs=6)
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(50))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = optimise.optimizer(cfg, [a])
    opt_b = torch.optim.SGD([b], lr=0.05, momentum=0.9, weight_decay=0.0, foreach=False)
    sa = torch.optim.lr_scheduler.CosineAnnealingLR(opt_a, T_max=6)
    sb = torch.optim.lr_scheduler.CosineAnnealingLR(opt_b, T_max=6)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        for _ in range(5):
            grad = torch.randn(50, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
            opt_a.step()
            opt_b.step()
        sa.step()
        sb.step()
    # elementwise updates, no reductions: the two differ by the float32 lr (<= 4e-7 relative, over
    # a displacement of ~4 here) and rounding of the values themselves, on the scale of the largest
    # |b| (~4), not of each entry (an entry near zero has no smaller error): atol 16 float32 eps of
    # that scale (observed 1 eps); a wrong momentum or a schedule a step off is off by ~lr.
    scale = b.detach().abs().max().item()
    assert torch.allclose(a, b, rtol=1e-5, atol=16 * torch.finfo(torch.float32).eps * scale)
    assert not torch.equal(a, torch.zeros(50))


def _masked_cnn_group(device, n=100):
    """3 seeds of a masked CNN, rewound inits, 3 epochs: 6 full batches of 16 and a ragged one of 4."""
    split = synthetic_split(n=n, shape=(3, 32, 32), n_test=32)
    split = dataclasses.replace(split, **{f: getattr(split, f).to(device)
                                          for f in ("x_train", "y_train", "x_test", "y_test")})
    cfg = RunConfig(dataset="x", model="cnn", width=2, batch_size=16, epochs=3, lr=0.001, device=device)
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(3)]
    masks, inits = masked_inits(cfgs, 0.5)
    return cfgs, split, masks, inits


def _same(a, b, exact):
    for ra, rb in zip(a, b):
        assert ra.steps == rb.steps and ra.diverged == rb.diverged
        for k in rb.thetaT:
            if exact:
                assert torch.equal(ra.thetaT[k], rb.thetaT[k]), k
            else:
                assert torch.allclose(ra.thetaT[k].double(), rb.thetaT[k].double(), atol=1e-4), k
        assert [h["train_loss"] for h in ra.history] == pytest.approx([h["train_loss"] for h in rb.history], rel=1e-4)


def test_graphed_training_on_cpu_is_bit_identical_to_plain():
    cfgs, split, masks, inits = _masked_cnn_group("cpu")
    plain = train.train_seeds(cfgs, split, masks=masks, init_states=inits)
    graphed = train.train_seeds(cfgs, split, masks=masks, init_states=inits, graphed=True)
    _same(graphed, plain, exact=True)
    assert plain[0].steps == 3 * 7


@cuda
@pytest.mark.parametrize("grouped", [True, False])
def test_graphed_training_on_cuda_matches_plain(grouped):
    cfgs, split, masks, inits = _masked_cnn_group("cuda")
    if grouped:
        plain = train.train_seeds(cfgs, split, masks=masks, init_states=inits)
        graphed = train.train_seeds(cfgs, split, masks=masks, init_states=inits, graphed=True)
    else:
        plain = [train.train(c, split, masks=m, init_state=s) for c, m, s in zip(cfgs, masks, inits)]
        graphed = [train.train(c, split, masks=m, init_state=s, graphed=True) for c, m, s in zip(cfgs, masks, inits)]
    _same(graphed, plain, exact=False)
    for r, mk in zip(graphed, masks):
        for k, m in mk.items():
            assert torch.all(r.thetaT[k][~m] == 0)  # masks hold under replay


@cuda
def test_graphed_grouped_cuda_training_matches_one_at_a_time(monkeypatch):
    """The fast path (grouped seeds, graphed step) against the plain one-at-a-time runs, in fp32
    (TF32 off: grouped and plain convolutions would round differently at TF32's 10-bit mantissa)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cfgs, split, masks, inits = _masked_cnn_group("cuda")
    fast = train.train_seeds(cfgs, split, masks=masks, init_states=inits, graphed=True)
    single = [train.train(c, split, masks=m, init_state=s) for c, m, s in zip(cfgs, masks, inits)]
    _same(fast, single, exact=False)


@cuda
def test_a_killed_graphed_cuda_run_resumes(tmp_path):
    cfgs, split, masks, inits = _masked_cnn_group("cuda")
    cfgs = [dataclasses.replace(c, epochs=4) for c in cfgs]
    full = train.train_seeds(cfgs, split, masks=masks, init_states=inits, graphed=True)
    ck = checkpoint.Checkpoint(tmp_path / "ck.pt", every=0)

    def die(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train.train_seeds(cfgs, split, masks=masks, init_states=inits, graphed=True, progress=die, checkpoint=ck)
    resumed = train.train_seeds(cfgs, split, masks=masks, init_states=inits, graphed=True, checkpoint=ck)
    _same(resumed, full, exact=False)
