"""Cell heterogeneity: the latent states of the cells of one specimen.

A cell's state is ``z_c = base + r_c · Δz(t) + ε_c`` with ``r_c = 0`` for
non-responders and log-normal around 1 for responders, ``ε_c ~ N(0, σ²)``,
plus a cell-cycle nuisance ``(cos φ_c, sin φ_c) · a`` kept outside ``z``
(it moves genes and morphology, not programs). Protein readouts see the
same cells at ``t − lag`` (:attr:`CellStates.z_lag`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CellStates:
    """Latent states of ``n`` cells.

    Attributes:
        z: ``(n, K)`` latent state at the measurement time.
        z_lag: ``(n, K)`` latent state ``lag`` hours earlier (for proteins).
        cc: ``(n, 2)`` cell-cycle nuisance coordinates.
        response: ``(n,)`` response magnitude ``r_c`` (0 for non-responders).

    """

    z: np.ndarray
    z_lag: np.ndarray
    cc: np.ndarray
    response: np.ndarray

    def take(self, idx: np.ndarray | slice) -> CellStates:
        """The cells at ``idx``."""
        return CellStates(self.z[idx], self.z_lag[idx], self.cc[idx], self.response[idx])

    def __len__(self) -> int:
        return self.z.shape[0]


def sample_cells(
    n: int,
    base: np.ndarray,
    dz: np.ndarray,
    dz_lag: np.ndarray,
    responder_frac: float,
    scalars: dict,
    rng: np.random.Generator,
) -> CellStates:
    """Draw the cells of one specimen.

    Args:
        n: Number of cells.
        base: ``(K,)`` or ``(n, K)`` unperturbed latent state.
        dz: ``(K,)`` or ``(n, K)`` responder shift at the measurement time.
        dz_lag: Same shape, shift ``lag`` hours earlier.
        responder_frac: Probability that a cell responds.
        scalars: Noise levels (``cell_noise_sd``, ``response_sd``, ``cc_amplitude``).
        rng: Source of randomness for this specimen.

    Returns:
        The cells' states.

    """
    k = np.shape(base)[-1]
    sd = scalars["response_sd"]
    responds = rng.uniform(size=n) < responder_frac
    r = responds * np.exp(rng.normal(-0.5 * sd**2, sd, size=n))
    eps = rng.normal(0.0, scalars["cell_noise_sd"], size=(n, k))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
    cc = scalars["cc_amplitude"] * np.stack([np.cos(phase), np.sin(phase)], axis=1)
    z = base + r[:, None] * dz + eps
    z_lag = base + r[:, None] * dz_lag + eps
    return CellStates(z, z_lag, cc, r)
