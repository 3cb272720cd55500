"""Pre-registration, read from the project's history: was a claim's band set before the runs it
judges were trained?

A claim's band in a tier is its check (what is compared) and its expectation without the `why`
text (the numbers). Its band commit is the commit that last changed them: walking the claim
file's history back from the newest commit, the oldest commit of the newest unbroken stretch in
which they equal what the file holds now. Its runs record the commit they were trained at
(harness/runs/provenance.py; "-dirty" marks uncommitted changes, read as the commit itself). Then:

    "before"     the band commit is an ancestor of (or equal to) every run's commit: the band was
                 in place, as it is now, when each run trained;
    "after"      some run was trained at a commit that does not contain the band commit: the band
                 was set or changed after that run;
    "uncommitted" the file's band differs from the last commit's (no commit to compare);
    "unknown"    no git history here, a claim not in it, or a run commit git does not know;
    "norun"      no run records a commit (nothing trained, or runs older than provenance).

Everything is memoised per process: a report asks once per claim.
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STATUS_WORDS = {
    "before": "band set before its runs",
    "after": "band changed after its runs",
    "uncommitted": "band not committed yet",
    "unknown": "pre-registration unknown",
    "norun": "no runs yet",
}


def _git(root: Path, *args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def _toplevel(folder: str) -> Path | None:
    out = _git(Path(folder), "rev-parse", "--show-toplevel")
    return Path(out.strip()) if out else None


def band(doc: dict, claim_id: str, tier: str) -> str | None:
    """The claim's band in `tier` as canonical JSON (check merged with the tier's override, the
    expectation without its `why`), or None where the claim or its tier is absent."""
    for c in doc.get("claims", []):
        if c.get("id") == claim_id:
            t = c.get(tier)
            if not isinstance(t, dict):
                return None
            expect = {k: v for k, v in (t.get("expect") or {}).items() if k != "why"}
            return json.dumps({"check": {**(c.get("check") or {}), **(t.get("check") or {})}, "expect": expect},
                              sort_keys=True)
    return None


@functools.lru_cache(maxsize=None)
def _history(root: Path, rel: str) -> tuple:
    """(commit, parsed document or None) of every commit that touched the file, newest first."""
    log = _git(root, "log", "--format=%H", "--", rel)
    out = []
    for sha in (log or "").split():
        text = _git(root, "show", f"{sha}:{rel}")
        try:
            out.append((sha, tomllib.loads(text) if text is not None else None))
        except tomllib.TOMLDecodeError:
            out.append((sha, None))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def band_commit(file: str, claim_id: str, tier: str) -> tuple:
    """("ok", sha) of the commit that last changed the claim's band, ("uncommitted", None) where
    the working file's band is not the last commit's, ("unknown", None) without a history."""
    path = Path(file).resolve()
    root = _toplevel(str(path.parent))
    if root is None or not path.exists():
        return "unknown", None
    now = band(tomllib.loads(path.read_text()), claim_id, tier)
    history = _history(root, path.relative_to(root).as_posix())
    if now is None or not history:
        return "unknown", None
    found = None
    for sha, doc in history:
        if doc is None or band(doc, claim_id, tier) != now:
            break
        found = sha
    return ("ok", found) if found else ("uncommitted", None)


@functools.lru_cache(maxsize=None)
def _contains(root: Path, ancestor: str, commit: str) -> bool | None:
    """Whether `commit` contains `ancestor` (None: git does not know one of them)."""
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return None
    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=root,
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 1: False}.get(r.returncode)


def status(file: str, claim_id: str, tier: str, run_commits) -> dict:
    """The claim's pre-registration status against the commits its runs record (see the module
    docstring): {"status", "words", "band_commit", "run_commits", "late"} (late: the run commits
    that do not contain the band commit)."""
    commits = sorted({c.removesuffix("-dirty") for c in run_commits if c})
    state, sha = band_commit(str(file), claim_id, tier)
    out = {"band_commit": sha, "run_commits": commits, "late": []}
    if not commits:
        st = "norun"
    elif state != "ok":
        st = state
    else:
        root = _toplevel(str(Path(file).resolve().parent))
        known = {c: _contains(root, sha, c) for c in commits}
        out["late"] = [c for c, ok in known.items() if ok is False]
        st = "after" if out["late"] else "unknown" if None in known.values() else "before"
    return {"status": st, "words": STATUS_WORDS[st], "runs_short": ", ".join(c[:7] for c in commits), **out}
