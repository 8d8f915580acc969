"""Tissue: the projection ``P`` (cell states → spots) and the lift ``L`` (spots → composition and state).

A tissue specimen of condition ``q`` (latent ``z_q`` from the operator) holds
cells of ``C`` learned types; type ``t`` sits at the latent state
``s_t = z_q + o_t`` (``o_t`` a learned type offset, shared by all tissues).

Project ``P``. A cell in state ``s`` has expected RNA proportions
``p(s) = softmax_g(b + W s + batch_site)`` — the RNA decoder's. A spot's
expected counts are the sum over its cells; cells' libraries are i.i.d., so
with composition ``π`` (type fractions of its cells) and library ``N`` (cells ×
capture × library per cell)::

    E[y_spot] = N · softmax_g(log Σ_t π_t p_g(z_q + o_t) + platform_g)

``platform`` is a small per-gene spatial-platform offset. A patch pseudobulk
(all its spots summed) is the same with the patch's mean composition; the
spatial likelihood (:class:`SpotDecoder`) uses the learned mean composition
``π̄ = softmax(κ)`` and the observed library as offset, NB with inverse
dispersion ``n_spots · θ_g``.

Lift ``L`` (:func:`lift_composition`), reference-based deconvolution in the
spirit of cell2location / DestVI: the reference profiles of a specimen are
``R_t = P(z_q + o_t)`` (one per type, through the RNA decoder); each spot's
non-negative type abundances ``a_s`` maximise the Poisson likelihood of its
counts under ``y_s ≈ Σ_t a_st R_t`` (KL-NMF multiplicative updates with the
references fixed, vectorised over spots); composition ``π_s = a_s / Σ_t a_st``
and state ``Σ_t π_st s_t``. :func:`refine_offsets` re-estimates the type
offsets from dissociated single cells of the same tissues (the reference step
of cell2location): each cell's latent is inferred by linearised least squares
through the RNA decoder (:func:`infer_latent_linear`) and k-means, started at
the learned offsets, clusters the cells' deviations from ``z_q``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.data import WellBlock
from models.modules.likelihoods import nb_log_prob

CP10K = math.log(1e4)
#: Prior sd of the type offsets (latent units) and of the platform offsets (log scale).
OFFSET_SD, PLATFORM_SD = 0.7, 0.2


def project(rna: nn.Module, states: torch.Tensor, site: torch.Tensor, composition: torch.Tensor) -> torch.Tensor:
    """Project ``P``: log expected proportions of spots.

    Args:
        rna: The RNA :class:`~models.modules.decoders.CountDecoder` (cell-level decoder).
        states: ``(n, C, K)`` latent state of each cell type in each spot.
        site: ``(n,)`` site index.
        composition: ``(n, C)`` type fractions (rows sum to 1).

    Returns:
        ``(n, G)`` log of ``Σ_t π_t p(s_t)`` (rows are log proportions).

    """
    return project_log(rna, states, site, torch.log(composition.clamp_min(1e-12)))


def project_log(rna: nn.Module, states: torch.Tensor, site: torch.Tensor, log_comp: torch.Tensor) -> torch.Tensor:
    """:func:`project` with log composition ``(n, C)`` or ``(C,)`` (fewer operations in the training loop)."""
    logits = states @ rna.loading.T + (rna.bias + rna.batch[site])[:, None, :]  # (n, C, G)
    lp = torch.log_softmax(logits, dim=-1)
    lc = log_comp if log_comp.dim() == 2 else log_comp.expand(len(states), -1)
    return torch.logsumexp(lp + lc[:, :, None], dim=1)


class SpotDecoder(nn.Module):
    """Spatial spots decoded through the RNA decoder (the projection ``P``).

    Args:
        n_features: ``G`` (the RNA decoder's genes, same order).
        n_programs: ``K``.
        n_types: Learned cell types ``C``.
        rna: The network's RNA decoder; referenced, not owned (its parameters
            live, and are saved, under the RNA decoder).
        generator: Initialisation randomness.

    """

    def __init__(
        self, n_features: int, n_programs: int, n_types: int, rna: nn.Module, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        object.__setattr__(self, "rna", rna)  # not a submodule: no duplicate parameters or prior
        self.offsets = nn.Parameter(0.3 * torch.randn(n_types, n_programs, generator=generator))
        self.comp_logits = nn.Parameter(torch.zeros(n_types))
        self.platform = nn.Parameter(torch.zeros(n_features))
        self.log_theta = nn.Parameter(torch.full((n_features,), math.log(20.0)))
        self.register_buffer("log_lib", torch.full((1,), math.log(1e3)))
        self.register_buffer("n_units", torch.tensor(64.0))

    @property
    def composition(self) -> torch.Tensor:
        """``(C,)`` mean tissue composition ``π̄``."""
        return torch.softmax(self.comp_logits, 0)

    def type_states(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, C, K)`` latent state of each type given the condition latent ``z`` ``(n, K)``."""
        return z[:, None, :] + self.offsets

    def log_p(self, z: torch.Tensor, site: torch.Tensor, composition: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, G)`` log expected spot proportions (mean composition unless ``composition`` ``(n, C)`` is given)."""
        states = z[:, None, :] + self.offsets
        if composition is None:
            mix = project_log(self.rna, states, site, torch.log_softmax(self.comp_logits, 0))
        else:
            mix = project(self.rna, states, site, composition)
        return torch.log_softmax(mix + self.platform, dim=-1)

    def calibrate(self, block: WellBlock, site: torch.Tensor, n_sites: int) -> None:
        """Store the mean log library per spot and the typical spots per specimen (for readouts)."""
        self.log_lib.fill_(float(torch.log(block.y.sum(1).clamp_min(1.0) / block.n_units).mean()))
        self.n_units.fill_(float(block.n_units.median()))

    def nll(self, z: torch.Tensor, site: torch.Tensor, block: WellBlock, w: torch.Tensor) -> torch.Tensor:
        """Weighted NB negative log-likelihood of the patches' summed spot counts."""
        log_mu = torch.log(block.y.sum(1, keepdim=True).clamp_min(1.0)) + self.log_p(z, site)
        log_theta = torch.log(block.n_units)[:, None] + self.log_theta
        return -(nb_log_prob(block.y, log_mu, log_theta, block.log_y_factorial).sum(1) * w).sum()

    def readout(self, z: torch.Tensor, site: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log expected CP10k of a spot ``(n, G)`` and its variance for one patch."""
        lp = self.log_p(z, site)
        mu = torch.exp(lp + self.log_lib) * self.n_units
        return lp + CP10K, 1.0 / mu + torch.exp(-self.log_theta) / self.n_units

    def penalty(self) -> torch.Tensor:
        """Type offsets ~ N(0, 0.7²), platform ~ N(0, 0.2²), κ ~ N(0, 1), log θ ~ N(log 10, 1)."""
        return (
            0.5 * (self.offsets**2).sum() / OFFSET_SD**2
            + 0.5 * (self.platform**2).sum() / PLATFORM_SD**2
            + 0.5 * (self.comp_logits**2).sum()
            + 0.5 * ((self.log_theta - math.log(10.0)) ** 2).sum()
        )


def infer_latent_linear(rna: nn.Module, counts: torch.Tensor, site: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """Latent states of cells (or specimens) from their counts, by linearised least squares through the decoder.

    Solves ``min_z ||C (W z − (log p̂ − b − batch))||² + ridge ||z||²`` with
    ``p̂ = (y + 0.5) / Σ (y + 0.5)`` and ``C`` the centring over genes (the
    softmax normaliser is unknown), weighting each gene by its expected count
    share (Poisson variance of a log count ≈ 1 / count).

    Args:
        rna: RNA :class:`~models.modules.decoders.CountDecoder`.
        counts: ``(n, G)`` counts.
        site: ``(n,)`` site index.
        ridge: Ridge penalty, relative to the mean diagonal of the normal matrix.

    Returns:
        ``(n, K)`` latent states.

    """
    with torch.no_grad():
        y = counts.double() + 0.5
        target = torch.log(y / y.sum(1, keepdim=True)) - (rna.bias + rna.batch[site]).double()
        wgt = y / y.sum(1, keepdim=True)  # (n, G) weights summing to 1 per row
        W = rna.loading.double()  # (G, K)
        # Weighted centring over genes (Σ_g w_g = 1): A = Wᵀ diag(w) W − W̄ W̄ᵀ, b = Wᵀ (w ⊙ t) − W̄ (wᵀ t).
        Wbar = wgt @ W  # (n, K)
        A = torch.einsum("gk,ng,gl->nkl", W, wgt, W) - Wbar[:, :, None] * Wbar[:, None, :]
        b = (wgt * target) @ W - Wbar * (wgt * target).sum(1, keepdim=True)
        scale = torch.diagonal(A, dim1=1, dim2=2).mean(1).clamp_min(1e-12)[:, None, None]
        A = A + ridge * scale * torch.eye(W.shape[1], dtype=W.dtype)
        return torch.linalg.solve(A, b).to(counts.dtype if counts.is_floating_point() else torch.float32)


def refine_offsets(offsets: torch.Tensor, deviations: torch.Tensor, n_iter: int = 20) -> torch.Tensor:
    """K-means of cells' latent deviations from their condition, started at the learned type offsets.

    Args:
        offsets: ``(C, K)`` learned type offsets (the starting centres; they fix the type labels).
        deviations: ``(n, K)`` inferred cell latent minus its condition latent ``z_q``.
        n_iter: Lloyd iterations.

    Returns:
        ``(C, K)`` refined offsets (a centre that loses all its cells is moved to the
        worst-fitted cell, so no type collapses).

    """
    c = offsets.detach().double().clone()
    x = deviations.double()
    if len(x) < len(c):
        return offsets.detach().clone()
    for _ in range(n_iter):
        d = torch.cdist(x, c)
        lab = d.argmin(1)
        for t in range(len(c)):
            m = lab == t
            if m.any():
                c[t] = x[m].mean(0)
            else:
                c[t] = x[d.min(1).values.argmax()]
    return c.to(offsets.dtype)


def lift_composition(refs: torch.Tensor, counts: torch.Tensor, n_iter: int = 60) -> torch.Tensor:
    """Lift ``L``: per-spot type composition by Poisson-likelihood deconvolution onto fixed references.

    KL-NMF multiplicative updates with the references fixed:
    ``a ← a ⊙ (R (y / (a R)))`` (rows of ``R`` sum to 1), from ``a = N / C``;
    each update does not decrease the Poisson likelihood of ``y`` under the
    mean ``a R``.

    Args:
        refs: ``(n, C, G)`` reference proportions of each type for each spot
            (rows sum to 1; they depend on the spot's condition and site).
        counts: ``(n, G)`` spot counts.
        n_iter: Multiplicative updates.

    Returns:
        ``(n, C)`` compositions (rows sum to 1).

    """
    with torch.no_grad():
        R = refs.double()
        y = counts.double()
        a = (y.sum(1, keepdim=True) / R.shape[1]).expand(-1, R.shape[1]).clone().clamp_min(1e-6)
        a = a[:, None, :]  # (n, 1, C): batched matrix products are far faster than einsum here
        y = y[:, None, :]
        Rt = R.transpose(1, 2)
        for _ in range(n_iter):
            mu = torch.bmm(a, R).clamp_min(1e-12)  # (n, 1, G)
            a = a * torch.bmm(y / mu, Rt)
        a = a[:, 0, :]
        comp = a / a.sum(1, keepdim=True).clamp_min(1e-12)
        return comp.to(torch.float32)
