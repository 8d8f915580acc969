"""Tissue: a spatial lattice of spots, each holding a few cells of several types.

A patch is a square lattice of spots (4-neighbourhood). Cell-type
composition varies smoothly over the patch (a smoothed Gaussian field per
type, softmaxed). A cell's state is its line's baseline plus its type's
offset plus its own response, plus a paracrine term: ``λ`` times the mean
response of the neighbouring spots' cells, so neighbours influence each
other. A spot's counts are the sum of its cells' counts (the project
operator ``P``); recovering composition and state from spots is the lift
``L`` a model must learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulators.cells import CellStates, sample_cells
from simulators.params import WorldParams


@dataclass
class Patch:
    """One simulated tissue patch.

    Attributes:
        cells: States of all cells, spot-major: cells of spot ``s`` are
            ``s * cells_per_spot ... (s + 1) * cells_per_spot - 1``.
        cell_type: ``(n_cells,)`` type index per cell.
        xy: ``(n_spots, 2)`` lattice coordinates of the spots.
        cells_per_spot: Cells summed into one spot.

    """

    cells: CellStates
    cell_type: np.ndarray
    xy: np.ndarray
    cells_per_spot: int


def lattice(n_spots: int) -> tuple[np.ndarray, np.ndarray]:
    """Spot coordinates ``(n, 2)`` and row-normalised 4-neighbour adjacency ``(n, n)``."""
    side = math.ceil(math.sqrt(n_spots))
    i = np.arange(n_spots)
    xy = np.stack([i % side, i // side], axis=1)
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    adj = (dist == 1).astype(float)
    deg = adj.sum(axis=1, keepdims=True)
    return xy, np.divide(adj, deg, out=np.zeros_like(adj), where=deg > 0)


def sample_patch(
    p: WorldParams,
    n_spots: int,
    cells_per_spot: int,
    line: int,
    dz: np.ndarray,
    dz_lag: np.ndarray,
    rng: np.random.Generator,
) -> Patch:
    """Draw one patch of a perturbed tissue.

    Args:
        p: World parameters.
        n_spots: Spots in the patch.
        cells_per_spot: Cells per spot.
        line: Cell-line index.
        dz: ``(K,)`` responder shift at the measurement time.
        dz_lag: ``(K,)`` responder shift ``lag`` hours earlier.
        rng: Source of randomness for this patch.

    """
    xy, adj = lattice(n_spots)
    n_types = p.type_offsets.shape[0]
    field = rng.normal(0.0, 1.0, size=(n_spots, n_types))
    for _ in range(2):
        field = 0.5 * (field + adj @ field)
    comp = np.exp(2.0 * field)
    comp /= comp.sum(axis=1, keepdims=True)
    n = n_spots * cells_per_spot
    spot = np.repeat(np.arange(n_spots), cells_per_spot)
    u = rng.uniform(size=n)
    cell_type = np.minimum((u[:, None] > np.cumsum(comp[spot], axis=1)).sum(axis=1), n_types - 1)
    base = p.line_baseline[line] + p.type_offsets[cell_type]
    cells = sample_cells(n, base, dz, dz_lag, p.responder_frac[line], p.scalars, rng)
    spot_resp = cells.response.reshape(n_spots, cells_per_spot).mean(axis=1)
    para = p.scalars["paracrine"] * (adj @ spot_resp)[spot]
    cells.z += para[:, None] * dz
    cells.z_lag += para[:, None] * dz_lag
    return Patch(cells, cell_type, xy, cells_per_spot)


def spot_composition(patch: Patch, n_types: int) -> dict[str, np.ndarray]:
    """True per-spot composition and state of a patch (what the lift ``L`` must recover).

    Args:
        patch: A sampled patch.
        n_types: Number of cell types ``C`` of the world.

    Returns:
        ``composition`` ``(n_spots, C)`` realised cell-type fractions (rows sum
        to 1), ``latent`` ``(n_spots, K)`` mean latent of the spot's cells and
        ``responder_frac`` ``(n_spots,)`` share of responding cells.

    """
    n_spots = patch.xy.shape[0]
    m = patch.cells_per_spot
    onehot = np.eye(n_types)[patch.cell_type]
    k = patch.cells.z.shape[1]
    return {
        "composition": onehot.reshape(n_spots, m, n_types).mean(axis=1),
        "latent": patch.cells.z.reshape(n_spots, m, k).mean(axis=1),
        "responder_frac": (patch.cells.response > 0).reshape(n_spots, m).mean(axis=1),
    }


def tissue_mean_latent(p: WorldParams, line: int, dz: np.ndarray) -> np.ndarray:
    """Population mean latent of a tissue: baseline, mean type offset, response with paracrine gain, ``(K,)``."""
    rho = p.responder_frac[line]
    return p.line_baseline[line] + p.type_offsets.mean(axis=0) + rho * (1.0 + p.scalars["paracrine"]) * dz


def sum_spots(cell_counts: np.ndarray, cells_per_spot: int) -> np.ndarray:
    """Project ``P``: ``(n_spots * cells_per_spot, G)`` cell counts → ``(n_spots, G)`` spot counts."""
    n, g = cell_counts.shape
    return cell_counts.reshape(n // cells_per_spot, cells_per_spot, g).sum(axis=1)
