"""Well-level and image operators: morphology (Cell Painting-like) and the molecular panel.

Morphology of a cell: ``m_c = tanh(z_c A1 + b1) A2 + cc_c C + site offset
+ plate offset + row / column gradient + edge offset + ε``, ``ε`` Gaussian.
The molecular (phospho / pathway) panel reads one value per program per
well: ``y_k = gain_k · mean_c z_ck + site offset_k + ε``.
"""

from __future__ import annotations

import numpy as np

from simulators.params import WorldParams


def morphology_map(p: WorldParams, z: np.ndarray, cc: np.ndarray | None, site: int) -> np.ndarray:
    """Noise- and position-free morphology features, ``(n, F)``.

    Args:
        p: World parameters.
        z: ``(n, K)`` latent states.
        cc: ``(n, 2)`` cell-cycle coordinates or None.
        site: Site index.

    """
    out = np.tanh(np.atleast_2d(z) @ p.morph_a1 + p.morph_b1) @ p.morph_a2 + p.site_morph_offset[site]
    if cc is not None:
        out = out + cc @ p.morph_cc
    return out


def sample_morphology(
    p: WorldParams,
    z: np.ndarray,
    cc: np.ndarray,
    site: int,
    position: tuple[float, float, bool],
    plate_offset: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Morphology features of ``n`` cells in one well, ``(n, F)`` float32.

    Args:
        p: World parameters.
        z: ``(n, K)`` latent states.
        cc: ``(n, 2)`` cell-cycle coordinates.
        site: Site index.
        position: ``(row, col, is_edge)`` from :func:`simulators.positions.position_features`.
        plate_offset: ``(F,)`` the plate's offset.
        rng: Source of randomness.

    """
    row, col, edge = position
    shift = plate_offset + row * p.morph_row + col * p.morph_col + (p.morph_edge if edge else 0.0)
    base = morphology_map(p, z, cc, site) + shift
    return (base + rng.normal(0.0, p.scalars["morph_noise_sd"], size=base.shape)).astype(np.float32)


def molecular_expected(p: WorldParams, z_mean: np.ndarray, site: int) -> np.ndarray:
    """Noise-free molecular panel at mean latent ``(n, K)`` → ``(n, K)``."""
    return np.atleast_2d(z_mean) * p.mol_gain + p.site_mol_offset[site]


def sample_molecular(p: WorldParams, z: np.ndarray, site: int, rng: np.random.Generator) -> np.ndarray:
    """One well's panel from its cells ``(n, K)``: ``(1, K)`` float32."""
    y = molecular_expected(p, z.mean(axis=0), site)
    return (y + rng.normal(0.0, p.scalars["mol_noise_sd"], size=y.shape)).astype(np.float32)
