"""The ticket procedure: lottery tickets by iterative magnitude pruning with rewinding, and their
controls, one chain per seed group.

A chain is planned from configurations and lineage alone (harness/runs/expand.py: ticket_chain:
its rounds, controls, and each run's configuration, lineage and key), and trained by walking that
plan here, deriving each round's masks and initial weights from the rounds before it; the planner
(harness/execute/planner.py) takes the chain's keys from the same plan, so the keys it plans are
the keys trained.

A chain goes on across machines and sessions: every dense and pruning-round run it trains gets a
resume record beside its entry (resume.pt: its mask, the surviving trained weights, the lineage's
dense run and the sha256 of that run's theta_0), and `python -m harness export` carries the
records of each chain's last rounds. A later round needs only its parent's record: the parent's
mask and surviving weights give the next mask exactly (magnitude pruning ranks the survivors
only), and theta_0 is made again from the dense run's configuration (initialisation is seeded and
built on the CPU) and checked against the recorded sha256 before any weight is rewound to it.
"""
from __future__ import annotations

import hashlib

from ..paper import models, prune
from ..paper.models import cpu_state, init_model
from ..runs.context import NotCached
from ..runs.expand import ticket_chain
from ..runs.inline import RUN_FIELDS, Job, cached, train_group
from . import row

RESUME_FORMAT = 1


def procedure(exp, tier: str, ctx, reading, cfgs) -> list:
    """The rows of the ticket chain of one seed group, its dense runs `cfgs` (see chain_rows)."""
    return chain_rows(ctx, exp, exp.resolved(tier, reading), cfgs)


def chain_rows(ctx, exp, r, cfgs) -> list:
    """Iterative magnitude pruning for a group of seeds: dense runs, then one round per remaining
    fraction, each pruned from the previous round's trained weights, rewound to the dense theta0
    and retrained with the mask enforced; plus the controls at the chosen fractions. Each round
    trains all seeds together (one group). Run keys depend on configurations and lineage only (the
    chain's plan), so a chain whose runs are all cached is read by keys alone, needing none of
    their tensors (a metrics-only cache, brought back from another machine by `python -m harness
    export`). Otherwise it is walked round by round, training what is missing; under a time budget
    a round that does not fit stops the chain there (its claims "not run"), and the next session
    goes on from the last round trained (resume records, see the module docstring)."""
    chain = ticket_chain(r["ticket"], cfgs)
    done = not ctx.refresh and all(cached(ctx, k, c, RUN_FIELDS) for rd in chain for k, c in zip(rd.keys, rd.cfgs))
    return _walk(ctx, exp, r, chain, live=not done)  # (--refresh retrains every run: not by keys alone)


def _walk(ctx, exp, r, chain, live: bool) -> list:
    """The rows of the planned `chain`, round by round; `live`: make the masks and initial weights
    of each round with runs to train (from the states of the rounds before it) and train them,
    and leave a resume record for each dense and pruning-round run (else every run is cached)."""
    t = r["ticket"]
    names = list(models.prunable(models.for_config(chain[0].cfgs[0]), t["include_output"]))
    states = _States(ctx, exp, names, chain[0])
    ticket_keys, out = None, []
    for rd in chain:
        jobs = [Job(c, e) for c, e in zip(rd.cfgs, rd.extras)]
        if live and rd.variant != "dense" and not all(cached(ctx, j.key, j.cfg, RUN_FIELDS) for j in jobs):
            if rd.variant == "ticket":  # pruned from the parent's trained weights
                parents = [states.get(e["parent"]) for e in rd.extras]
                masks = [prune.magnitude_mask(p["thetaT"], rd.fraction, current=p["masks"], scope=t["scope"],
                                              fractions=dict(rd.fractions)) for p in parents]
            else:  # a control: the mask of the pruning round at its fraction
                masks = [states.get(k)["masks"] for k in ticket_keys]
            jobs = [_job(exp, t, names, rd, j.cfg, j.extra, m, states.theta0(i))
                    for i, (j, m) in enumerate(zip(jobs, masks))]
        trained_now = train_group(ctx, jobs)
        if live and rd.variant in ("dense", "ticket"):
            for i, (k, _) in enumerate(trained_now):
                states.record(k, i)
        if rd.variant == "ticket":
            ticket_keys = rd.keys
        fields = {"remaining": rd.remaining, "variant": rd.variant}
        if rd.variant == "reinit":  # one configuration across seeds: init_seed = seed + offset
            fields["init_seed"] = f"seed+{t['reinit_seed_offset']}"
        rows = [row.make(ctx, exp, r, j.cfg, k, m, fields) for j, (k, m) in zip(jobs, trained_now)]
        for x in rows:  # the exact fraction of prunable weights left, in % (Frankle & Carbin's Pm)
            x["metrics"]["pm"] = 100.0 * rd.exact
        out.extend(rows)
    return out


class _States:
    """What a chain's walk needs of the runs before the round it trains, each loaded once: a run's
    prunable trained weights and mask (from its tensors, else from its resume record), and each
    seed's theta_0 (from the dense run's tensors, else made again from its configuration and
    checked against the sha256 a resume record holds)."""

    def __init__(self, ctx, exp, names, dense):
        self.ctx, self.exp, self.names, self.dense = ctx, exp, names, dense
        self._states, self._theta0, self._sha = {}, {}, {}  # _sha: dense key -> recorded theta_0 sha256

    def get(self, key: str) -> dict:
        """{"thetaT": {name: trained weight}, "masks": {name: bool} or None (dense)} of a run."""
        if key not in self._states:
            tensors = self.ctx.cache.load_tensors(key)
            if tensors:
                masks = tensors.get("masks")
                self._states[key] = {"thetaT": {n: tensors["thetaT"][n] for n in self.names},
                                     "masks": {n: masks[n] for n in self.names} if masks else None}
            else:
                record = self.ctx.cache.load_tensors(key, "resume.pt")
                if not record:
                    raise NotCached(self._missing(key, "weights"))
                self._sha[record["root"]] = record["theta0_sha256"]
                self._states[key] = _decode(record)
        return self._states[key]

    def theta0(self, i: int) -> dict:
        """Seed i's initial weights, the dense run's theta_0."""
        if i not in self._theta0:
            key, cfg = self.dense.keys[i], self.dense.cfgs[i]
            tensors = self.ctx.cache.load_tensors(key)
            if tensors:
                self._theta0[i] = tensors["theta0"]
            else:
                want = self._sha.get(key) or self.ctx.cache.load_tensors(key, "resume.pt").get("theta0_sha256")
                if not want:
                    raise NotCached(self._missing(key, "initial weights"))
                made = cpu_state(init_model(cfg))
                if digest(made) != want:
                    raise RuntimeError(
                        f"{self.exp.file}: experiment {self.exp.name!r}: the ticket chain cannot go on here: "
                        f"theta_0 of its dense run {key} (seed {cfg.seed}), made again from its configuration, "
                        f"has sha256 {digest(made)}, but the chain was trained from {want} (another torch "
                        "version's initialisation?); retrain the chain here, or go on where it was trained")
                self._theta0[i] = made
        return self._theta0[i]

    def record(self, key: str, i: int) -> None:
        """Leave the resume record of a dense or pruning-round run (seed i) beside its entry, made
        from its tensors (a run read from a metrics-only cache has none to make it from)."""
        d = self.ctx.cache.dir(key)
        if self.ctx.cache.read_only or (d / "resume.pt").exists() or not (d / "tensors.pt").exists():
            return
        self.ctx.cache.save_resume(key, _encode(self.get(key), self.dense.keys[i], digest(self.theta0(i))))

    def _missing(self, key: str, what: str) -> str:
        d = self.ctx.cache.dir(key)
        return (f"run {key} has metrics but no {what} ({d / 'tensors.pt'} and {d / 'resume.pt'} missing: this "
                f"cache holds results only, as `python -m harness export` writes them, which carries resume "
                f"records only for each chain's last rounds); they are needed to go on with the ticket chain "
                f"of {self.exp.file}: {self.exp.name!r}. To go on, point --run-cache at the cache that holds "
                f"them, or delete {d} so that the run is trained again")


def digest(state: dict) -> str:
    """sha256 of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        v = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{v.dtype}:{tuple(v.shape)};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def _encode(state: dict, root: str, theta0_sha256: str) -> dict:
    """A run's resume record: its mask (None: dense) and its trained weights where the mask keeps
    them (the rest are zero: masks are enforced), the dense run `root` it descends from, and the
    sha256 of that run's theta_0."""
    masks = state["masks"]
    return {"format": RESUME_FORMAT, "root": root, "theta0_sha256": theta0_sha256, "masks": masks,
            "shapes": {n: list(w.shape) for n, w in state["thetaT"].items()},
            "survivors": {n: (w[masks[n]] if masks else w.reshape(-1)).clone() for n, w in state["thetaT"].items()}}


def _decode(record: dict) -> dict:
    """The state a resume record holds (see _encode): the trained weights, zero where pruned."""
    if record.get("format") != RESUME_FORMAT:
        raise ValueError(f"resume record format {record.get('format')!r}: this code reads {RESUME_FORMAT}")
    masks, thetaT = record["masks"], {}
    for n, shape in record["shapes"].items():
        s = record["survivors"][n]
        if masks is None:
            thetaT[n] = s.reshape(shape)
        else:
            thetaT[n] = s.new_zeros(shape)
            thetaT[n][masks[n]] = s
    return {"thetaT": thetaT, "masks": masks}


def _job(exp, t, names, rd, cfg, extra, mask, theta0) -> Job:
    """A pruned round's run: its mask (`mask`: this seed's current ticket mask) and its initial
    weights (`theta0`: the dense run's, rewound), by the round's variant."""
    if rd.variant == "ticket":
        return Job(cfg, extra, mask, prune.apply_mask(theta0, mask))
    if rd.variant == "reinit":  # the paper's control: same mask, a fresh random initialisation
        return Job(cfg, extra, mask)
    if rd.variant == "random":  # review: random pruning at the same per-layer sparsity
        cm = prune.random_mask(mask, seed=cfg.seed)
    elif rd.variant == "init_magnitude":  # review: one-shot magnitude pruning at initialisation
        cm = prune.magnitude_mask({n: theta0[n] for n in names}, rd.fraction, scope=t["scope"],
                                  fractions=dict(rd.fractions))
    else:
        raise ValueError(f"{exp.file}: experiment {exp.name!r}: field 'ticket.controls': "
                         f"unknown control {rd.variant!r}")
    return Job(cfg, extra, cm, prune.apply_mask(theta0, cm))
