"""The order pytest-xdist workers take claims in: the costliest groups of runs first, a group being
the claims of one experiment in one tier and reading, merged with every group that shares a run
with it (so that a run trains in one worker), and under `--dist loadgroup` each claim's group
made to take (pytest 9 no longer reads where xdist 3.8 writes it).
"""
from __future__ import annotations

from ..runs import expand
from . import checks
from .items import ClaimItem


def costliest_first(config, items) -> None:
    """In a pytest-xdist worker, the claims of the costliest groups first (a group's training FLOPs
    in its tier and reading, see run_groups), then every other item in its order: workers take
    groups (`--dist loadgroup`) in collection order, so a heavy group collected last runs alone at
    the end while the other workers idle. Every worker sorts alike (a pure function of the claim
    files; the controller keeps it, see pytest_configure). Without xdist the order is the files'
    own. Under `--dist loadgroup`, each claim's group is also made to take (see group_ids)."""
    if not hasattr(config, "workerinput"):
        return
    claims = [i for i in items if isinstance(i, ClaimItem)]
    others = [i for i in items if not isinstance(i, ClaimItem)]
    groups = run_groups(claims)
    if config.getvalue("loadgroup"):
        group_ids(claims, groups)
    items[:] = sorted(claims, key=lambda i: (-groups[i][1], -groups[i][2])) + others


def run_groups(claims) -> dict:
    """Each claim's xdist group, that group's training FLOPs and its own experiment's. A claim's
    group is its experiment's under its tier and reading (its `xdist_group` mark), merged with
    every other such group that shares a run with it (V-C's flat_sharp measures V-B's bs_sweep
    runs): a shared run then trains in one worker, and no worker waits on another's run-cache
    lock. Merged groups are named by their marks joined with "+", and their cost counts each run
    once; within one, the costliest experiment's claims go first, so that its seeds train together
    (flat_sharp's five, not bs_sweep's three and then the other two)."""
    parent, runs, owner, reads = {}, {}, {}, {}

    def root(g):
        while parent[g] != g:
            g = parent[g]
        return g

    for item in claims:  # the configurations a group's claims read
        reads.setdefault(item.get_closest_marker("xdist_group").args[0], []).append(item.reads)
    for item in claims:
        g = item.get_closest_marker("xdist_group").args[0]
        if g in parent:
            continue
        parent[g] = g
        runs[g] = set(expand.training_runs(item.exp, item.tier, "cpu", item.reading, checks.union(reads[g])))
        for cfg in runs[g]:
            if cfg in owner and root(owner[cfg]) != root(g):
                parent[root(g)] = root(owner[cfg])
            owner.setdefault(cfg, g)
    members = {}
    for g in parent:
        members.setdefault(root(g), []).append(g)
    named = {}
    for gs in members.values():
        flops = sum(expand.training_cost(c)["flops"] for c in set().union(*(runs[g] for g in gs)))
        for g in gs:
            named[g] = ("+".join(sorted(gs)), flops, sum(expand.training_cost(c)["flops"] for c in runs[g]))
    return {item: named[item.get_closest_marker("xdist_group").args[0]] for item in claims}


def group_ids(claims, groups) -> None:
    """pytest-xdist (3.8) puts an item in its `xdist_group` by appending "@GROUP" to `item._nodeid`,
    which pytest 9 no longer reads (a node's id lives in `item._id`): `--dist loadgroup` then
    scheduled item by item, and the claims of one experiment ran on two workers, one waiting on
    the other's run-cache locks. Append each claim's group (`groups`: run_groups) here."""
    from _pytest.nodeid import coerce_node_id  # pytest's own; where it is missing, nothing to mend

    for item in claims:
        if "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = coerce_node_id(f"{item.nodeid}@{groups[item][0]}")
