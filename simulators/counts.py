"""Count operators: scRNA (negative binomial) and ADT protein (totalVI-like mixture).

scRNA: ``μ_cg = l_c · softmax_g(b_g + (W z_c)_g + (A cc_c)_g + batch_sg)``,
``l_c`` log-normal around the site's library size; counts are
``NB(mean μ, inverse dispersion θ_g)``, i.e. torch's
``NegativeBinomial(total_count=θ, logits=log μ − log θ)``.

ADT: for protein ``p`` of gene ``g``, signal ``s_cp = a_p · exp((W z_c(t − lag))_g)``;
with probability ``π_p`` (10–30%) a count is background only,
``NB(β_p)``, otherwise foreground ``NB(β_p + s_cp)``, i.e. ``α = 1 + s / β > 1``
times the ambient mean.
"""

from __future__ import annotations

import numpy as np

from simulators.params import WorldParams


def rna_proportions(p: WorldParams, z: np.ndarray, cc: np.ndarray | None, site: int) -> np.ndarray:
    """Expression proportions ``softmax(b + W z + A cc + batch)``.

    Args:
        p: World parameters.
        z: ``(n, K)`` latent states.
        cc: ``(n, 2)`` cell-cycle coordinates, or None for none.
        site: Site index.

    Returns:
        ``(n, G)`` proportions, rows summing to 1.

    """
    logits = z @ p.loadings.T + (p.base_log_expr + p.site_gene_batch[site])
    if cc is not None:
        logits += cc @ p.cc_loadings.T
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def library_mean_log(p: WorldParams, site: int) -> float:
    """Log-normal location of library sizes so their mean is the site's library."""
    return float(np.log(p.site_library[site]) - 0.5 * p.scalars["library_log_sd"] ** 2)


def nb_sample(mu: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative binomial counts with mean ``mu`` and inverse dispersion ``theta`` (broadcast)."""
    return rng.negative_binomial(theta, theta / (theta + mu))


def sample_rna(
    p: WorldParams, z: np.ndarray, cc: np.ndarray, site: int, rng: np.random.Generator, capture: float = 1.0
) -> np.ndarray:
    """ScRNA counts of ``n`` cells.

    Args:
        p: World parameters.
        z: ``(n, K)`` latent states.
        cc: ``(n, 2)`` cell-cycle coordinates.
        site: Site index.
        rng: Source of randomness.
        capture: Library scale (spatial capture is below 1).

    Returns:
        ``(n, G)`` float32 counts.

    """
    n = z.shape[0]
    lib = capture * np.exp(rng.normal(library_mean_log(p, site), p.scalars["library_log_sd"], size=n))
    mu = rna_proportions(p, z, cc, site)
    mu *= lib[:, None]
    return nb_sample(mu, p.theta, rng).astype(np.float32)


def rna_expected(p: WorldParams, z_mean: np.ndarray, site: int, capture: float = 1.0) -> np.ndarray:
    """Plug-in expected counts at the mean latent (cell cycle at its centre), ``(n, G)``."""
    return capture * p.site_library[site] * rna_proportions(p, np.atleast_2d(z_mean), None, site)


def _adt_signal(p: WorldParams, z_lag: np.ndarray, site: int) -> np.ndarray:
    w = p.loadings[p.adt_genes]
    return p.site_adt_scale[site] * p.adt_signal * np.exp(z_lag @ w.T)


def sample_adt(p: WorldParams, z_lag: np.ndarray, site: int, rng: np.random.Generator) -> np.ndarray:
    """ADT counts of ``n`` cells, ``(n, P)`` float32."""
    n = z_lag.shape[0]
    size = np.exp(rng.normal(-0.5 * p.scalars["adt_size_sd"] ** 2, p.scalars["adt_size_sd"], size=n))[:, None]
    background = p.site_adt_scale[site] * p.adt_background * size
    signal = _adt_signal(p, z_lag, site) * size
    is_bg = rng.uniform(size=signal.shape) < p.adt_pi
    mu = background + np.where(is_bg, 0.0, signal)
    return nb_sample(mu, p.adt_theta, rng).astype(np.float32)


def adt_expected(p: WorldParams, z_lag_mean: np.ndarray, site: int) -> np.ndarray:
    """Plug-in expected ADT counts at the mean lagged latent, ``(n, P)``."""
    signal = _adt_signal(p, np.atleast_2d(z_lag_mean), site)
    return p.site_adt_scale[site] * p.adt_background + (1.0 - p.adt_pi) * signal
