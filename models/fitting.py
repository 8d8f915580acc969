"""Fitting one ensemble member: a picklable module-level function.

``fit_member(job)`` is what the ensemble hands to ``map_fn`` (the builtin
``map`` or a Ray-backed map), so it takes one plain argument and returns plain
data: the member's state (tensors and vocabularies) and a fit summary. A
previous state warm-starts the fit: every parameter whose name and shape still
match is copied; plate effects are copied row by row by plate name.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from experiment_design import DesignSpace
from experiment_design.assays import MOLECULAR, MORPHOLOGY, RNA, SPATIAL
from models.data import WellData, bootstrap_weights, context_vocab
from models.modules.network import CSLNetwork


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of one member.

    Attributes:
        n_programs: Latent dimension ``K`` when the data has no molecular panel
            (with one, ``K`` is its number of features).
        max_steps: Adam steps of a cold fit.
        warm_steps: Adam steps of a warm-started fit. 100: on random's 5 ledgers of the
            default world (budget 200) the final identifiability was 0.557 after 100 and
            0.564 after 200 (the risk 0.324 both), at half the fit time; on the small world's
            5 ledgers the final risk rose by 0.022 (README, Performance).
        lr: Adam learning rate (cold fits).
        warm_lr: Adam learning rate of warm-started fits (smaller: a refinement).
        tol: Stop when the loss improved by less than this over 25 steps.
        beta1: Adam's first-moment decay (``torch.optim.Adam``'s ``betas[0]``).
        beta2: Adam's second-moment decay (``betas[1]``).
        propagate: Learn the program propagator.
        bootstrap: Resample specimens (members 1.. only; member 0 sees all data).
        n_cell_types: Learned tissue cell types (spatial decoded through the RNA decoder).
        batched: Fit the members as one batched computation in the calling process
            (:mod:`models.ensemble_fit`); ``False``: one :func:`fit_member` call per member
            through the caller's ``map_fn`` (e.g. one Ray task each), the earlier design.

    """

    n_programs: int = 8
    max_steps: int = 500
    warm_steps: int = 100
    lr: float = 0.05
    warm_lr: float = 0.02
    tol: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    propagate: bool = True
    bootstrap: bool = True
    n_cell_types: int = 3
    batched: bool = True

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"FitConfig.{name} must be in [0, 1) (an Adam moment decay), got {getattr(self, name)}"
                )

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class FitJob:
    """Everything one member fit needs (picklable).

    Attributes:
        space: Design space.
        data: Specimens.
        config: Settings.
        seed: Member seed (initialisation and bootstrap).
        member: Member index.
        state: Previous state of this member, or ``None`` for a cold start.

    """

    space: DesignSpace
    data: WellData
    config: FitConfig
    seed: int
    member: int
    state: dict | None = None


def ec50_init(space: DesignSpace) -> torch.Tensor:
    """``(T,)`` middle of each target's log10 dose range."""
    out = []
    for t in space.targets:
        lo, hi = space.dose_ranges[t.kind]
        out.append(0.5 * (math.log10(lo) + math.log10(hi)))
    return torch.tensor(out, dtype=torch.float32)


def latent_dim(data: WellData, config: FitConfig, state: dict | None) -> int:
    """``K``: the molecular panel's width if observed, else the previous or configured one."""
    if MOLECULAR in data.blocks:
        return len(data.blocks[MOLECULAR].var_names)
    if state is not None:
        return int(state["n_programs"])
    return config.n_programs


def projects_spatial(var_names: dict) -> bool:
    """Spatial spots are decoded through the RNA decoder when both are decoded with the same genes."""
    return SPATIAL in var_names and RNA in var_names and list(var_names[SPATIAL]) == list(var_names[RNA])


def build_network(space: DesignSpace, data: WellData, config: FitConfig, seed: int, state: dict | None) -> tuple:
    """A fresh network sized for ``data`` (and the previous state's modalities), warm-started.

    Returns:
        ``(network, meta)``, ``meta`` the vocabularies stored with the state.

    """
    lines, sites = context_vocab(space)
    K = latent_dim(data, config, state)
    dims = dict(state["feature_dims"]) if state is not None and state["n_programs"] == K else {}
    dims.update({name: len(b.var_names) for name, b in data.blocks.items()})
    var_names = dict(state["var_names"]) if state is not None and state["n_programs"] == K else {}
    var_names.update({name: list(b.var_names) for name, b in data.blocks.items()})
    plates = list(data.blocks[MORPHOLOGY].plates) if MORPHOLOGY in data.blocks else []
    gen = torch.Generator().manual_seed(int(seed))
    net = CSLNetwork(
        len(space.targets),
        K,
        len(lines),
        len(sites),
        ec50_init(space),
        dims,
        max(len(plates), 1),
        generator=gen,
        propagate=config.propagate,
        n_cell_types=config.n_cell_types,
        project_spatial=projects_spatial(var_names),
    )
    if state is not None:
        _warm_load(net, state, plates)
    meta = {"n_programs": K, "feature_dims": dims, "var_names": var_names, "plates": plates}
    return net, meta


def _warm_load(net: CSLNetwork, state: dict, plates: list[str]) -> None:
    """Copy matching parameters from ``state``; plate rows by plate name."""
    own = net.state_dict()
    old = state["net"]
    old_plates = {p: i for i, p in enumerate(state.get("plates", []))}
    with torch.no_grad():
        for name, t in own.items():
            if name not in old:
                continue
            if name.endswith("decoders.morphology.plate"):
                for i, p in enumerate(plates):
                    if p in old_plates and old_plates[p] < old[name].shape[0]:
                        t[i] = old[name][old_plates[p]]
            elif old[name].shape == t.shape:
                t.copy_(old[name])
    net.load_state_dict(own)


@dataclass
class PreparedMember:
    """A member ready to fit: its network (warm-loaded and calibrated) and its bootstrap weights.

    Attributes:
        net: The network.
        meta: Vocabularies stored with the state.
        state: The previous state it was warm-started from, or ``None`` (a cold start).
        weights: Modality → ``(W,)`` float tensor of bootstrap counts, or ``None`` (all 1).
        counts: The same counts as numpy arrays (stored in the state), or ``None``.

    """

    net: CSLNetwork
    meta: dict
    state: dict | None
    weights: dict | None
    counts: dict | None


def prepare_member(job: FitJob) -> PreparedMember:
    """Build, warm-start and calibrate a member's network and draw its bootstrap weights."""
    cfg = job.config
    state = job.state
    if state is not None and int(state["n_programs"]) != latent_dim(job.data, cfg, state):
        state = None  # the latent dimension changed (a molecular panel appeared): start cold
    net, meta = build_network(job.space, job.data, cfg, job.seed, state)
    net.calibrate(job.data)  # data-derived buffers; morphology starts are set on a cold start only
    weights, counts = None, None
    if cfg.bootstrap and job.member > 0:
        counts = bootstrap_weights(job.data, np.random.default_rng([int(job.seed), 7919]))
        weights = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in counts.items()}
    return PreparedMember(net, meta, state, weights, counts)


def fit_member(job: FitJob) -> dict:
    """Fit one member (module level, picklable: what ``map_fn`` runs).

    :func:`models.ensemble_fit.fit_members` fits several as one batched computation, with the same
    optimisation per member.

    Args:
        job: The member's job.

    Returns:
        ``{"state": ..., "summary": {...}}``: ``state`` holds ``net`` (a
        state dict) and the vocabularies; ``summary`` the final loss parts,
        steps and seconds.

    """
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    cfg = job.config
    prep = prepare_member(job)
    net, meta, state, weights, counts = prep.net, prep.meta, prep.state, prep.weights, prep.counts
    with torch.no_grad():
        initial = net.loss(job.data, weights).total.item()
    history: list[float] = []
    if state is None:
        # Cold start in stages: anchor the operator on the molecular panel (a direct readout of
        # the programs), then fit the other decoders to that latent, then everything jointly.
        n_stage = cfg.max_steps // 5
        if MOLECULAR in job.data.blocks:
            _adam(
                net,
                job.data,
                weights,
                list(net.operator.parameters()) + list(net.decoders[MOLECULAR].parameters()),
                n_stage,
                cfg,
                history,
                (MOLECULAR,),
            )
            others = [p for n, d in net.decoders.items() if n != MOLECULAR for p in d.parameters()]
            if others:
                _adam(net, job.data, weights, others, n_stage, cfg, history)
        steps = cfg.max_steps - len(history)
    else:
        steps = cfg.warm_steps
    _adam(
        net, job.data, weights, list(net.parameters()), steps, cfg, history, lr=cfg.lr if state is None else cfg.warm_lr
    )
    with torch.no_grad():
        final = net.loss(job.data, weights)
    new_state = {"net": {k: v.detach().clone() for k, v in net.state_dict().items()}, **meta, "weights": counts}
    summary = {
        "member": job.member,
        "steps": len(history),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "warm": state is not None,
        "initial_total": initial,
        **final.as_floats(),
    }
    return {"state": new_state, "summary": summary}


def _adam(
    net: CSLNetwork,
    data: WellData,
    weights: dict | None,
    params: list,
    steps: int,
    cfg: FitConfig,
    history: list[float],
    modalities: tuple[str, ...] | None = None,
    lr: float | None = None,
) -> None:
    """``steps`` Adam steps on ``params`` (cosine learning rate), early-stopped on a plateau."""
    lr = cfg.lr if lr is None else lr
    opt = torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.05)
    start = len(history)
    for step in range(steps):
        opt.zero_grad()
        out = net.loss(data, weights, modalities)
        out.total.backward()
        opt.step()
        sched.step()
        history.append(out.total.item())
        if step >= 50 and step % 25 == 0 and history[start + step - 25] - history[-1] < cfg.tol:
            break


def network_from_state(space: DesignSpace, state: dict, config: FitConfig) -> CSLNetwork:
    """Rebuild a member's network from its state (for prediction)."""
    lines, sites = context_vocab(space)
    net = CSLNetwork(
        len(space.targets),
        int(state["n_programs"]),
        len(lines),
        len(sites),
        ec50_init(space),
        dict(state["feature_dims"]),
        max(len(state["plates"]), 1),
        propagate=config.propagate,
        n_cell_types=config.n_cell_types,
        project_spatial=projects_spatial(state["var_names"]),
    )
    net.load_state_dict(state["net"])
    net.eval()
    return net
