"""Ground truth crosses packages as data: named arrays plus two functions.

A simulator turns its parameters into a :class:`GroundTruth`; ``models``
scores identifiability against it without importing ``simulators``. A lab data
set has no ``GroundTruth``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from experiment_design.query import Query


@dataclass(frozen=True)
class GroundTruth:
    """Every ground-truth parameter of a world, for scoring.

    Shapes use ``T`` targets, ``K`` programs, ``G`` genes.

    Attributes:
        programs: ``K`` program names.
        genes: ``G`` gene names (the scRNA features).
        targets: ``T`` target names, in the design space's order.
        loadings: ``(G, K)`` loadings ``W`` of programs on genes (log scale).
        dag_edges: ``(n_edges, 4)`` rows ``(parent, child, weight, delay_h)``
            of the causal program graph.
        ec50_log10: ``(T, K)`` log10 EC50 of each target's *direct* effect on
            each program (µM for compounds, strength for genes); NaN where the
            target does not act directly on the program.
        hill: ``(T, K)`` Hill slopes (NaN where no direct effect).
        emax: ``(T, K)`` signed maximal direct effect on the latent scale
            (0 where none).
        tau_h: ``(T,)`` onset time constants, hours.
        interactions: ``(T, T)`` symmetric pairwise interaction γ
            (>0 synergy, <0 antagonism, 0 none).
        total_effect: ``(T, K)`` steady-state effect at the top dose after
            propagation through the DAG (what a perturbation ultimately does).
        context_shifts: Named arrays of context effects, e.g.
            ``"baseline"`` ``(n_cell_lines, K)``, ``"ec50_shift_log10"``
            ``(n_cell_lines,)``, ``"library_log"`` ``(n_sites,)``,
            ``"gene_batch_log"`` ``(n_sites, G)``.
        latent: ``queries → (n, K)`` noise-free mean latent state.
        expected: ``queries → {modality: (n, n_features)}`` noise-free
            expected readout per unit (cell, spot or well).
        extras: Anything else a world wants to expose (named arrays).

    """

    programs: tuple[str, ...]
    genes: tuple[str, ...]
    targets: tuple[str, ...]
    loadings: np.ndarray
    dag_edges: np.ndarray
    ec50_log10: np.ndarray
    hill: np.ndarray
    emax: np.ndarray
    tau_h: np.ndarray
    interactions: np.ndarray
    total_effect: np.ndarray
    context_shifts: dict[str, np.ndarray]
    latent: Callable[[Sequence[Query]], np.ndarray]
    expected: Callable[[Sequence[Query]], dict[str, np.ndarray]]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def direct_mask(self) -> np.ndarray:
        """``(T, K)`` bool: target acts directly on program (has a Hill curve)."""
        return ~np.isnan(self.ec50_log10)
