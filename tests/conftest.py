"""Shared fixtures. pytester runs a pytest session in this process (`pytester.runpytest`): no
new interpreter, no second import of torch (3-4 CPU s each). A test whose scratch conftest.py
patches a harness module uses `runpytest_subprocess` instead, so that the patch cannot outlive it."""
import os
import textwrap
from pathlib import Path

import pytest
import torch
# pytester restores sys.modules after each of its tests, dropping the modules first imported during
# one; torch._dynamo (imported lazily, e.g. by an optimiser step) registers C++ operator libraries
# that cannot be registered twice, so a later re-import failed, depending on test order. Imported
# once here, before any snapshot, it stays.
import torch._dynamo  # noqa: F401,E402

from harness.paper.data import Split

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path:
    return Path(os.environ.get("HARNESS_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture
def data_dir():
    d = real_data_dir()
    if not (d / "mnist.npz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the datasets: {d}/mnist.npz missing")
        pytest.skip(f"real datasets not found in {d}")
    return d


def synthetic_split(n=256, shape=(1, 28, 28), seed=0, n_test=64) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                 torch.randn(n_test, *shape, generator=g), torch.randint(0, 10, (n_test,), generator=g))

pytest_plugins = ["pytester"]


def in_child_processes(monkeypatch, folder: Path, code: str) -> None:
    """Run `code` at the start of every Python process this test starts from now on (worker
    processes included): a sitecustomize.py in `folder`, put first on PYTHONPATH. Tests use it to
    hold or fault a worker at a precise point of its work, instead of racing it with a clock."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))


def wait_for(path: Path, what: str, gone=None, seconds: float = 600.0) -> None:
    """Wait for a file a child process writes when it reaches a point; the deadline is only a
    safety net (minutes), so that a child that never gets there fails the test instead of hanging it.
    `gone`: a callable, true once the child has ended (it will not write the file any more)."""
    import time
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert not (gone and gone() and not path.exists()), f"{what}: it ended before writing {path}"
        assert time.monotonic() < deadline, f"{what}: {path} did not appear within {seconds:.0f} s"
        time.sleep(0.02)


def masked_inits(cfgs, fraction):
    """Per run: a magnitude mask keeping `fraction` of its initial weights, and that init masked."""
    from harness.paper import models, prune
    masks, inits = [], []
    for c in cfgs:
        m = models.init_model(c)
        mask = prune.magnitude_mask({k: w.detach() for k, w in models.prunable(m).items()}, fraction, current=None)
        masks.append(mask)
        inits.append(prune.apply_mask(models.cpu_state(m), mask))
    return masks, inits

