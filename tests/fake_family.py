"""A family of Welch claims on synthetic rows, for the tests of deciding a family with members not
run yet (tests/test_family.py): experiment `eK` has two groups of four seeds (width 2 against
width 1) whose Welch p-value is the experiment's, exactly; it is "cached" once a context that may
train has asked for its rows (`train`), as the inline executor trains on demand. `install` puts
`rows` in place of harness.procedures.rows, which the claims engine calls for every table."""
from __future__ import annotations

import math
from pathlib import Path

from scipy import special

from harness import procedures
from harness.runs.context import NotCached

Z = (-1.5, -0.5, 0.5, 1.5)  # the seeds' deviations; sample sd sqrt(5/3)
EXPERIMENT = """
[experiments.{name}]
procedure = "train"
dataset = "mnist"
model = "mlp"
base = {{train_subset = 256, test_subset = 256, epochs = 1, batch_size = 32, lr = 0.05}}
grid = {{width = [1, 2]}}
smoke = {{seeds = [0, 1, 2, 3]}}

[[claims]]
id = "{name}-claim"
statement = "{name}"
paper = "-"
experiment = "{name}"
check = {{type = "welch", metric = "test_acc", a = {{width = 2}}, b = {{width = 1}}}}
[claims.smoke]
expect = {{significant = {significant}, why = "-"}}
"""


def claim_file(folder: Path, family: dict, name="family.toml") -> Path:
    """A claim file of one experiment and one Welch claim per entry of `family`: {experiment name:
    (its p-value, whether its claim expects a significant difference)}."""
    folder.mkdir(parents=True, exist_ok=True)
    text = 'section = "T"\ntitle = "Welch family"\n' + "".join(
        EXPERIMENT.format(name=n, significant=str(sig).lower()) for n, (_, sig) in family.items())
    (folder / name).write_text(text)
    (folder / "pvalues.txt").write_text("\n".join(f"{n} {p!r}" for n, (p, _) in family.items()))
    return folder / name


def values(p: float) -> tuple:
    """Two groups of four values whose two-tailed Welch p (equal spreads: df 6) is `p`."""
    t = float(special.stdtrit(6, 1 - p / 2))
    delta = t * math.sqrt(5 / 3) * math.sqrt(2 / 4)
    return [delta + z for z in Z], list(Z)


def make_rows(p: float) -> list:
    a, b = values(p)
    return [{"config": {"width": w, "lr": 0.05}, "seed": s, "key": None, "diverged": False,
             "metrics": {"test_acc": v}} for w, vs in ((2, a), (1, b)) for s, v in enumerate(vs)]


class FakeCache:
    """Which experiments are cached: in memory (`cached`), or as marker files in `marks` (which
    every process of an xdist session sees)."""

    def __init__(self, marks: Path | None = None):
        self.cached, self.marks = set(), marks

    def has(self, name) -> bool:
        return name in self.cached or bool(self.marks and (self.marks / name).exists())

    def add(self, name) -> None:
        self.cached.add(name)
        if self.marks:
            self.marks.mkdir(parents=True, exist_ok=True)
            (self.marks / name).touch()

    def rows(self, exp, tier, ctx, reading=None, reads=None):  # as procedures.rows
        if not self.has(exp.name):
            if not ctx.allow_train:
                raise NotCached(f"{exp.name} is not cached")
            self.add(exp.name)  # "trained" now
        ps = dict(line.split() for line in (Path(exp.file).parent / "pvalues.txt").read_text().splitlines())
        return make_rows(float(ps[exp.name]))


def install(cache: FakeCache, monkeypatch=None) -> None:
    if monkeypatch is not None:
        monkeypatch.setattr(procedures, "rows", cache.rows)
    else:
        procedures.rows = cache.rows
