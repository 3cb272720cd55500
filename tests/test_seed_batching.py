"""--seed-batching auto (Context.batch_seeds None): which configurations train their seeds together."""
from harness.paper.config import RunConfig
from harness.runs.context import Context


def _cfg(model, width=8, **kw):
    return RunConfig(dataset="mnist" if model != "cnn" else "cifar10", model=model, width=width, **kw)


def test_auto_groups_small_steps_on_the_cpu_and_everything_on_cuda(tmp_path):
    cpu = Context(cache_root=str(tmp_path), batch_seeds=None)
    assert cpu.seeds_together(_cfg("mlp", batch_size=32))  # the smoke tier's MLPs
    assert cpu.seeds_together(_cfg("mlp", width=128, batch_size=32))
    assert cpu.seeds_together(_cfg("mlp", width=64, batch_size=128))
    # many weights at a small batch: the grouped step measured slower (0.5-0.7x, 0.8-0.97x)
    assert not cpu.seeds_together(_cfg("mlp", width=256, batch_size=32))
    assert not cpu.seeds_together(_cfg("fc", width=300, hidden="300,100", batch_size=60))
    assert not cpu.seeds_together(_cfg("mlp", width=512, batch_size=128))  # arithmetic-bound: eager
    assert not cpu.seeds_together(_cfg("mlp", width=8, batch_size=0))  # full batch of 60,000 rows
    assert not cpu.seeds_together(_cfg("cnn", batch_size=128))  # 665 MFLOP a mini-batch: eager
    assert cpu.seeds_together(_cfg("cnn", batch_size=16)) and cpu.seeds_together(_cfg("cnn", width=4, batch_size=32))
    assert not cpu.seeds_together(_cfg("cnn", width=4, batch_size=0, train_subset=500))  # full batch
    gpu = Context(device="cuda", cache_root=str(tmp_path), batch_seeds=None)
    assert gpu.seeds_together(_cfg("cnn")) and gpu.seeds_together(_cfg("mlp"))


def test_on_and_off_override_the_rule(tmp_path):
    for flag in (True, False):
        ctx = Context(cache_root=str(tmp_path), batch_seeds=flag)
        assert ctx.seeds_together(_cfg("mlp")) is flag and ctx.seeds_together(_cfg("cnn")) is flag
