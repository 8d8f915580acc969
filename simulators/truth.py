"""The world's parameters as a :class:`~experiment_design.GroundTruth`.

``latent(queries)`` is the noise-free population mean latent of each query:
line baseline plus responder fraction × responder shift (for tissue assays
also the mean cell-type offset and the paracrine gain ``1 + λ``).

``expected(queries)`` gives, for *every* modality and every query, one row:
the noise-free readout of a mean unit (a plug-in at the mean latent with the
cell cycle at its centre; morphology without plate / well effects; spatial
always at the tissue latent, ``cells_per_spot`` cells per spot). Rows of
``rna``, ``adt``, ``morphology`` and ``molecular`` use the query's own
population (the tissue's for spatial assays).

``ec50_log10`` / ``hill`` / ``emax`` are the *direct* Hill curves (target →
program it acts on) in the reference cell line 0 (other lines shift log10
EC50 by ``context_shifts["ec50_shift_log10"]``). ``total_effect`` is the
steady-state shift of a *responding* cell at the top of the target's dose
range in line 0 after linear propagation through the DAG (population means
scale it by ``context_shifts["responder_frac"]``).

``extras["spot_truth"]`` is :meth:`CellWorld.spot_truth`, ``(query, replicate)
→ {"composition": (n_spots, C), "latent": (n_spots, K), "responder_frac":
(n_spots,)}``: the true per-spot cell-type composition and state of a
measured patch, for scoring a model's lift ``L``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from experiment_design import GroundTruth, Perturbation, Query, TargetKind
from experiment_design.assays import Scale
from simulators.operators import OPERATORS, MeanUnit
from simulators.tissue import tissue_mean_latent

if TYPE_CHECKING:
    from simulators.world import CellWorld


def _mean_latents(world: CellWorld, queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Population latent now and ``lag`` earlier, tissue latent, and the query states."""
    p = world.params
    world.validate(queries)
    states = world.query_states(queries)
    k = len(p.programs)
    z, z_lag, z_tissue = (np.zeros((len(queries), k)) for _ in range(3))
    for i, (q, st) in enumerate(zip(queries, states, strict=True)):
        z_tissue[i] = tissue_mean_latent(p, st.line, st.dz)
        if world.space.assay(q.assay).scale is Scale.TISSUE:
            z[i] = z_tissue[i]
            z_lag[i] = tissue_mean_latent(p, st.line, st.dz_lag)
        else:
            rho = p.responder_frac[st.line]
            z[i] = p.line_baseline[st.line] + rho * st.dz
            z_lag[i] = p.line_baseline[st.line] + rho * st.dz_lag
    return z, z_lag, z_tissue, states


def build_truth(world: CellWorld) -> GroundTruth:
    """Collect every ground-truth parameter of ``world`` and its two truth functions."""
    p = world.params
    cfg = world.config

    def latent(queries: Sequence[Query]) -> np.ndarray:
        return _mean_latents(world, list(queries))[0]

    def expected(queries: Sequence[Query]) -> dict[str, np.ndarray]:
        queries = list(queries)
        z, z_lag, z_tis, states = _mean_latents(world, queries)
        n = len(queries)
        out = {m: np.zeros((n, len(names))) for m, names in world.var_names.items()}
        for i, st in enumerate(states):
            unit = MeanUnit(z[i], z_lag[i], z_tis[i], st.site)
            for m in out:
                out[m][i] = OPERATORS[m].expected(p, cfg, unit)
        return out

    top = {kind: hi for kind, (_, hi) in world.space.dose_ranges.items()}
    total = (
        np.stack(
            [world.intervention.steady_state(Perturbation((t.name,), (top[TargetKind(t.kind)],)), 0) for t in p.targets]
        )
        if p.targets
        else np.zeros((0, len(p.programs)))
    )
    return GroundTruth(
        programs=p.programs,
        genes=p.genes,
        targets=tuple(t.name for t in p.targets),
        loadings=p.loadings.copy(),
        dag_edges=p.graph.edges.copy(),
        ec50_log10=p.ec50_log10.copy(),
        hill=p.hill.copy(),
        emax=p.emax.copy(),
        tau_h=p.tau_h.copy(),
        interactions=p.interactions.copy(),
        total_effect=total,
        context_shifts={
            "baseline": p.line_baseline.copy(),
            "ec50_shift_log10": p.line_ec50_shift_log10.copy(),
            "responder_frac": p.responder_frac.copy(),
            "library_log": np.log(p.site_library),
            "gene_batch_log": p.site_gene_batch.copy(),
            "morph_offset": p.site_morph_offset.copy(),
            "adt_scale_log": np.log(p.site_adt_scale),
            "molecular_offset": p.site_mol_offset.copy(),
        },
        latent=latent,
        expected=expected,
        extras={
            "propagation": p.graph.propagation.copy(),
            "delay_h": p.graph.delay_h.copy(),
            "primary_program": p.primary.copy(),
            "triples": p.triples.copy(),
            "base_log_expr": p.base_log_expr.copy(),
            "theta": p.theta.copy(),
            "cc_loadings": p.cc_loadings.copy(),
            "adt_genes": p.adt_genes.copy(),
            "adt_background": p.adt_background.copy(),
            "adt_pi": p.adt_pi.copy(),
            "adt_lag_h": np.array(p.adt_lag_h),
            "molecular_gain": p.mol_gain.copy(),
            "type_offsets": p.type_offsets.copy(),
            "paracrine": np.array(p.scalars["paracrine"]),
            # A function, not an array: (query, replicate) -> per-spot composition / latent of that patch.
            "spot_truth": world.spot_truth,
        },
    )
