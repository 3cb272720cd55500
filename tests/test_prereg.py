"""Pre-registration from the git history (harness/claims/prereg.py): a band committed before the
runs that it judges reads "before"; one changed after them reads "after"; an uncommitted change
and a history git cannot read are said as such, never as "before"."""
import subprocess

import pytest

from harness.claims import prereg

CLAIM = """section = "T"
title = "t"
[[claims]]
id = "c"
statement = "s"
paper = "p"
experiment = "e"
check = {{type = "value", metric = "test_acc", where = {{width = 8}}}}
[claims.scaled]
expect = {{min = {band}, why = "{why}"}}
"""


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "claims").mkdir()

    def commit(band, why="w", msg="m"):
        (tmp_path / "claims" / "x.toml").write_text(CLAIM.format(band=band, why=why))
        _git(tmp_path, "add", "-A")
        _git(tmp_path, "commit", "-q", "-m", msg)
        for f in (prereg.band_commit, prereg._history, prereg._toplevel, prereg._contains):
            f.cache_clear()  # memoised per process; the history just changed
        return _git(tmp_path, "rev-parse", "HEAD")

    return tmp_path, commit


def test_band_set_before_its_runs(repo):
    root, commit = repo
    band = commit(50.0)
    runs = commit(50.0, why="reworded")  # a new `why` is not a new band
    st = prereg.status(root / "claims" / "x.toml", "c", "scaled", [runs, runs + "-dirty"])
    assert st["status"] == "before" and st["band_commit"] == band and st["words"] == "band set before its runs"
    # the runs' own commit may be the one that set the band
    assert prereg.status(root / "claims" / "x.toml", "c", "scaled", [band])["status"] == "before"


def test_band_changed_after_its_runs(repo):
    root, commit = repo
    commit(50.0)
    runs = commit(50.0, why="again")
    changed = commit(40.0)  # widened after the runs
    st = prereg.status(root / "claims" / "x.toml", "c", "scaled", [runs])
    assert st["status"] == "after" and st["band_commit"] == changed and st["late"] == [runs]
    # runs trained after the change are fine; one earlier run is enough to flag it
    later = commit(40.0, why="later")
    assert prereg.status(root / "claims" / "x.toml", "c", "scaled", [later])["status"] == "before"
    assert prereg.status(root / "claims" / "x.toml", "c", "scaled", [later, runs])["status"] == "after"


def test_band_changed_back_counts_from_the_change(repo):
    """A band set, changed and set back was last changed by the commit that set it back."""
    root, commit = repo
    first = commit(50.0)
    commit(40.0)
    back = commit(50.0)
    st = prereg.status(root / "claims" / "x.toml", "c", "scaled", [first])
    assert st["status"] == "after" and st["band_commit"] == back


def test_uncommitted_unknown_and_no_runs(repo, tmp_path_factory):
    root, commit = repo
    sha = commit(50.0)
    assert prereg.status(root / "claims" / "x.toml", "c", "scaled", [])["status"] == "norun"
    assert prereg.status(root / "claims" / "x.toml", "c", "scaled", ["0" * 40])["status"] == "unknown"
    assert prereg.status(root / "claims" / "x.toml", "c", "full", [sha])["status"] == "unknown"  # no such tier
    (root / "claims" / "x.toml").write_text(CLAIM.format(band=45.0, why="w"))
    prereg.band_commit.cache_clear()
    assert prereg.status(root / "claims" / "x.toml", "c", "scaled", [sha])["status"] == "uncommitted"
    outside = tmp_path_factory.mktemp("nogit")  # no repository at all
    (outside / "x.toml").write_text(CLAIM.format(band=50.0, why="w"))
    assert prereg.status(outside / "x.toml", "c", "scaled", [sha])["status"] == "unknown"
