"""Every parameter of a simulated world, drawn once from its config and seed.

The draws follow one fixed order from ``numpy.random.default_rng(seed)``, so
a (config, seed) pair always gives the same world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from experiment_design import Context, Target, TargetKind
from simulators.config import WorldConfig
from simulators.graph import ProgramGraph, draw_graph


@dataclass(frozen=True)
class WorldParams:
    """Ground-truth parameters; shapes use ``T`` targets, ``K`` programs, ``G`` genes.

    Attributes:
        genes, programs: Names (``"G0000"``, ``"P0"``).
        targets: ``T`` targets, compounds first.
        contexts: Cell line × site pairs.
        cell_lines, sites: Context names.
        graph: Causal program graph.
        base_log_expr: ``(G,)`` gene log-abundance ``b``.
        loadings: ``(G, K)`` ``W``.
        cc_loadings: ``(G, 2)`` loadings of the cell-cycle nuisance.
        theta: ``(G,)`` NB inverse dispersion.
        emax, ec50_log10, hill: ``(T, K)`` direct Hill parameters (0 / NaN where none).
        tau_h: ``(T,)`` onset time constants, h.
        primary: ``(T,)`` program each target acts on most.
        interactions: ``(T, T)`` symmetric pairwise γ.
        triples: ``(n, 4)`` rows ``(i, j, k, δ)`` of three-way terms, ``i < j < k``.
        line_baseline: ``(L, K)`` baseline latent per cell line.
        line_ec50_shift_log10: ``(L,)`` EC50 shift per line (line 0 is 0).
        responder_frac: ``(L,)`` fraction of responding cells.
        site_library: ``(S,)`` mean scRNA library size per site.
        site_gene_batch: ``(S, G)`` gene-wise log batch effects.
        site_morph_offset: ``(S, F)`` morphology channel offsets.
        site_adt_scale: ``(S,)`` ADT capture factor.
        site_mol_offset: ``(S, K)`` molecular panel offsets.
        adt_genes: ``(P,)`` gene index of each ADT protein.
        adt_signal, adt_background, adt_pi, adt_theta: ``(P,)`` ADT scale, ambient mean,
            background probability, inverse dispersion.
        adt_lag_h: Protein lag behind RNA, h.
        morph_a1, morph_b1, morph_a2, morph_cc: morphology map weights
            ``(K, H)``, ``(H,)``, ``(H, F)``, ``(2, F)``.
        morph_edge, morph_row, morph_col: ``(F,)`` edge offset and row / column gradients.
        mol_gain: ``(K,)`` molecular readout gain.
        type_offsets: ``(C, K)`` latent offsets of tissue cell types.
        scalars: Named noise levels and constants (see :func:`draw_params`).

    """

    genes: tuple[str, ...]
    programs: tuple[str, ...]
    targets: tuple[Target, ...]
    contexts: tuple[Context, ...]
    cell_lines: tuple[str, ...]
    sites: tuple[str, ...]
    graph: ProgramGraph
    base_log_expr: np.ndarray
    loadings: np.ndarray
    cc_loadings: np.ndarray
    theta: np.ndarray
    emax: np.ndarray
    ec50_log10: np.ndarray
    hill: np.ndarray
    tau_h: np.ndarray
    primary: np.ndarray
    interactions: np.ndarray
    triples: np.ndarray
    line_baseline: np.ndarray
    line_ec50_shift_log10: np.ndarray
    responder_frac: np.ndarray
    site_library: np.ndarray
    site_gene_batch: np.ndarray
    site_morph_offset: np.ndarray
    site_adt_scale: np.ndarray
    site_mol_offset: np.ndarray
    adt_genes: np.ndarray
    adt_signal: np.ndarray
    adt_background: np.ndarray
    adt_pi: np.ndarray
    adt_theta: np.ndarray
    adt_lag_h: float
    morph_a1: np.ndarray
    morph_b1: np.ndarray
    morph_a2: np.ndarray
    morph_cc: np.ndarray
    morph_edge: np.ndarray
    morph_row: np.ndarray
    morph_col: np.ndarray
    mol_gain: np.ndarray
    type_offsets: np.ndarray
    scalars: dict


def _loadings(g: int, k: int, rng: np.random.Generator) -> np.ndarray:
    mask = rng.uniform(size=(g, k)) < min(0.5, 2.5 / k)
    w = mask * rng.normal(0.0, 0.8, size=(g, k))
    # Every program gets at least three strong marker genes.
    for j in range(k):
        idx = rng.choice(g, size=min(3, g), replace=False)
        w[idx, j] = rng.uniform(1.0, 1.5, size=len(idx)) * rng.choice([-1.0, 1.0], size=len(idx))
    return w


def _targets(cfg: WorldConfig, w: np.ndarray, genes: tuple[str, ...], rng: np.random.Generator):
    """Compound and genetic targets with their direct Hill parameters."""
    k = cfg.n_programs
    t = cfg.n_compounds + cfg.n_genetic
    emax = np.zeros((t, k))
    ec50 = np.full((t, k), np.nan)
    hill = np.full((t, k), np.nan)
    primary = np.zeros(t, dtype=int)
    targets = []
    for i in range(cfg.n_compounds):
        n_prog = 1 + int(rng.uniform() < 0.5) if k > 1 else 1
        progs = rng.choice(k, size=n_prog, replace=False)
        for p in progs:
            emax[i, p] = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 2.0)
            ec50[i, p] = rng.uniform(-2.0, 1.0)
            hill[i, p] = rng.uniform(0.7, 3.0)
        primary[i] = progs[np.argmax(np.abs(emax[i, progs]))]
        targets.append(Target(f"CMP{i:02d}", TargetKind.COMPOUND))
    # Driver genes: the highest positive loading on their program, never shared between programs.
    ranks = np.argsort(-w, axis=0)
    drivers: dict[tuple[int, int], int] = {}
    for n in range(cfg.n_genetic):
        i = cfg.n_compounds + n
        prog, rnd = n % k, n // k
        knock = (n + rnd) % 2 == 0
        if (prog, rnd // 2) not in drivers:
            used = set(drivers.values())
            free = [int(g) for g in ranks[:, prog] if int(g) not in used]
            drivers[(prog, rnd // 2)] = free[0] if free else int(ranks[0, prog])
        gene = genes[drivers[(prog, rnd // 2)]]
        kind = TargetKind.KNOCKDOWN if knock else TargetKind.ACTIVATION
        emax[i, prog] = (-1.0 if knock else 1.0) * rng.uniform(0.8, 2.0)
        ec50[i, prog] = rng.uniform(-1.0, -0.3)
        hill[i, prog] = rng.uniform(1.0, 3.0)
        primary[i] = prog
        targets.append(Target(f"{'KD' if knock else 'ACT'}_{gene}", kind))
    return tuple(targets), emax, ec50, hill, primary


def _interactions(emax: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sparse γ for pairs with disjoint direct programs, and sparse three-way δ."""
    t = emax.shape[0]
    acts = emax != 0
    disjoint = ~((acts.astype(int) @ acts.T.astype(int)) > 0)
    # About 20% of eligible pairs interact in small worlds, ~4 partners per target in large ones.
    upper = np.triu(disjoint, k=1) & (rng.uniform(size=(t, t)) < min(0.2, 4.0 / t))
    gamma = np.where(upper, rng.choice([-1.0, 1.0], size=(t, t)) * rng.uniform(0.5, 1.5, size=(t, t)), 0.0)
    gamma = gamma + gamma.T
    n_triples = max(1, t // 4) if t >= 3 else 0
    rows = []
    seen = set()
    for _ in range(n_triples):
        ijk = tuple(sorted(int(x) for x in rng.choice(t, size=3, replace=False)))
        if ijk not in seen:
            seen.add(ijk)
            rows.append((*ijk, rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.8)))
    return gamma, np.asarray(rows, dtype=float).reshape(-1, 4)


def draw_params(cfg: WorldConfig, seed: int) -> WorldParams:
    """Draw a world from its config and seed.

    Args:
        cfg: World sizes.
        seed: World seed.

    Returns:
        All ground-truth parameters.

    """
    rng = np.random.default_rng(seed)
    g, k, f = cfg.n_genes, cfg.n_programs, cfg.n_morph_features
    genes = tuple(f"G{i:04d}" for i in range(g))
    programs = tuple(f"P{i}" for i in range(k))
    lines = tuple(f"line{i}" for i in range(cfg.n_cell_lines))
    sites = tuple(f"site{i}" for i in range(cfg.n_sites))
    graph = draw_graph(k, rng)
    w = _loadings(g, k, rng)
    cc = (rng.uniform(size=(g, 2)) < 0.3) * rng.normal(0.0, 1.0, size=(g, 2))
    targets, emax, ec50, hill, primary = _targets(cfg, w, genes, rng)
    gamma, triples = _interactions(emax, rng)
    shift = rng.uniform(-0.5, 0.5, size=cfg.n_cell_lines)
    shift[0] = 0.0
    hidden = 16
    n_adt = cfg.n_adt
    adt_signal = np.exp(rng.normal(math.log(40.0), 0.5, size=n_adt))
    return WorldParams(
        genes=genes,
        programs=programs,
        targets=targets,
        contexts=tuple(Context(line, site) for line in lines for site in sites),
        cell_lines=lines,
        sites=sites,
        graph=graph,
        base_log_expr=rng.normal(0.0, 1.0, size=g),
        loadings=w,
        cc_loadings=cc,
        theta=np.exp(rng.uniform(math.log(2.0), math.log(20.0), size=g)),
        emax=emax,
        ec50_log10=ec50,
        hill=hill,
        tau_h=rng.uniform(0.5, 6.0, size=len(targets)),
        primary=primary,
        interactions=gamma,
        triples=triples,
        line_baseline=rng.normal(0.0, 0.3, size=(cfg.n_cell_lines, k)),
        line_ec50_shift_log10=shift,
        responder_frac=rng.uniform(0.75, 0.95, size=cfg.n_cell_lines),
        site_library=25.0 * g * np.exp(rng.normal(0.0, 0.25, size=cfg.n_sites)),
        site_gene_batch=rng.normal(0.0, 0.15, size=(cfg.n_sites, g)),
        site_morph_offset=rng.normal(0.0, 0.3, size=(cfg.n_sites, f)),
        site_adt_scale=np.exp(rng.normal(0.0, 0.2, size=cfg.n_sites)),
        site_mol_offset=rng.normal(0.0, 0.1, size=(cfg.n_sites, k)),
        adt_genes=np.sort(rng.choice(g, size=n_adt, replace=False)),
        adt_signal=adt_signal,
        adt_background=adt_signal * rng.uniform(0.1, 0.3, size=n_adt),
        adt_pi=rng.uniform(0.1, 0.3, size=n_adt),
        adt_theta=np.exp(rng.uniform(math.log(5.0), math.log(20.0), size=n_adt)),
        adt_lag_h=3.0,
        morph_a1=rng.normal(0.0, 1.5 / math.sqrt(k), size=(k, hidden)),
        morph_b1=rng.normal(0.0, 0.3, size=hidden),
        morph_a2=rng.normal(0.0, 1.0 / math.sqrt(hidden), size=(hidden, f)),
        morph_cc=rng.normal(0.0, 0.3, size=(2, f)),
        morph_edge=rng.normal(0.0, 0.4, size=f),
        morph_row=rng.normal(0.0, 0.15, size=f),
        morph_col=rng.normal(0.0, 0.15, size=f),
        mol_gain=rng.uniform(0.8, 1.2, size=k),
        type_offsets=rng.normal(0.0, 0.7, size=(cfg.n_cell_types, k)),
        scalars={
            "cell_noise_sd": 0.05,  # per-cell latent noise
            "response_sd": 0.2,  # log-normal spread of responder magnitude
            "cc_amplitude": 1.0,  # cell-cycle nuisance amplitude
            "library_log_sd": 0.3,  # scRNA library size spread (log)
            "adt_size_sd": 0.2,  # ADT capture spread (log)
            "morph_noise_sd": 0.3,  # morphology per-cell noise
            "plate_sd": 0.2,  # morphology plate offset spread
            "mol_noise_sd": 0.05,  # molecular panel well noise
            "paracrine": 0.3,  # λ: share of neighbours' response a tissue cell takes up
            "spatial_capture": 0.15,  # spatial library per cell relative to scRNA
        },
    )
