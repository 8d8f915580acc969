"""Measurement operators ``M[s, m]``: one decoder per modality, per specimen.

Every decoder has ``nll(z, site, block, w)`` — the weighted negative
log-likelihood of what was observed in ``block`` given latent states ``z``
``(W, K)`` of its specimens — and ``readout(z, site)`` — the expected readout
of ONE specimen and its aleatoric variance on the same scale, ``(n, F)`` each.

* :class:`CountDecoder` (RNA; spatial spots only when they cannot be decoded
  through the RNA decoder — otherwise :class:`~models.modules.tissue.SpotDecoder`,
  the projection ``P``): pseudobulk NB,
  ``μ_wg = N_w · softmax_g(b_g + (W z)_g + batch_site,g)`` with the observed
  library ``N_w`` as offset and inverse dispersion ``n_w θ_g``. Readout:
  log expected CP10k; variance by the delta method ``1/μ + 1/(nθ)``.
* :class:`AdtDecoder`: per cell a background ``exp(β_p)`` plus a foreground
  ``exp(a_p + (V z)_p)`` (both times a site factor), ``z`` taken a learned
  lag earlier (proteins trail RNA), summed over ``n_w`` cells:
  NB with mean ``n_w · (bg + fg)`` and inverse dispersion ``n_w θ_p``.
  Readout: log expected counts per cell.
* :class:`GaussianDecoder` (morphology): well means,
  ``y = b + A2 tanh(A1 z + b1) + site + plate + position + ε``, Gaussian.
* :class:`MolecularDecoder`: ``y_k = a_k z_k + b_site,k + ε`` with ``a_k > 0``,
  which anchors latent dimension ``k`` to program ``k``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.data import WellBlock
from models.modules.likelihoods import nb_log_prob, normal_log_prob

CP10K = math.log(1e4)


def _init(shape: tuple[int, ...], scale: float, g: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter(scale * torch.randn(*shape, generator=g))


class CountDecoder(nn.Module):
    """Pseudobulk negative binomial over genes (RNA) or spot genes (spatial).

    Args:
        n_features: ``G``.
        n_programs: ``K``.
        n_sites: Sites (each gets a per-gene batch offset).
        generator: Initialisation randomness.

    """

    def __init__(self, n_features: int, n_programs: int, n_sites: int, generator: torch.Generator | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.loading = _init((n_features, n_programs), 0.05, generator)
        self.batch = nn.Parameter(torch.zeros(n_sites, n_features))
        self.log_theta = nn.Parameter(torch.full((n_features,), math.log(20.0)))
        self.register_buffer("log_lib", torch.full((n_sites,), math.log(1e3)))
        self.register_buffer("n_units", torch.tensor(100.0))

    def log_p(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``(n, G)`` log expression fractions."""
        return torch.log_softmax(self.bias + z @ self.loading.T + self.batch[site], dim=-1)

    def calibrate(self, block: WellBlock, site: torch.Tensor, n_sites: int) -> None:
        """Store mean log library per unit and site, and typical units per specimen (for readouts)."""
        lib = torch.log(block.y.sum(1).clamp_min(1.0) / block.n_units)
        for s in range(n_sites):
            m = site == s
            if m.any():
                self.log_lib[s] = lib[m].mean()
        self.n_units.fill_(float(block.n_units.median()))

    def nll(self, z: torch.Tensor, site: torch.Tensor, block: WellBlock, w: torch.Tensor) -> torch.Tensor:
        """Weighted NB negative log-likelihood of the specimens' summed counts."""
        log_n = torch.log(block.y.sum(1, keepdim=True).clamp_min(1.0))
        log_mu = log_n + self.log_p(z, site)
        log_theta = torch.log(block.n_units)[:, None] + self.log_theta
        return -(nb_log_prob(block.y, log_mu, log_theta, block.log_y_factorial).sum(1) * w).sum()

    def readout(self, z: torch.Tensor, site: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log expected CP10k ``(n, G)`` and its variance for one specimen."""
        lp = self.log_p(z, site)
        mu = torch.exp(lp + self.log_lib[site][:, None]) * self.n_units
        var = 1.0 / mu + torch.exp(-self.log_theta) / self.n_units
        return lp + CP10K, var

    def penalty(self) -> torch.Tensor:
        """Shrink loadings and batch offsets; log θ ~ N(log 10, 1)."""
        return (
            0.5 * (self.loading**2).sum()
            + 0.5 * (self.batch**2).sum() / 0.1
            + 0.5 * ((self.log_theta - math.log(10.0)) ** 2).sum()
        )


class AdtDecoder(nn.Module):
    """ADT counts with an ambient background component (pseudobulk NB)."""

    def __init__(self, n_features: int, n_programs: int, n_sites: int, generator: torch.Generator | None = None):
        super().__init__()
        self.log_bg = nn.Parameter(torch.full((n_features,), math.log(5.0)))
        self.fg_bias = nn.Parameter(torch.full((n_features,), math.log(20.0)))
        self.loading = _init((n_features, n_programs), 0.05, generator)
        self.site = nn.Parameter(torch.zeros(n_sites, 1))
        self.log_theta = nn.Parameter(torch.full((n_features,), math.log(10.0)))
        self.lag_raw = nn.Parameter(torch.tensor(math.log(math.expm1(2.0))))
        self.register_buffer("n_units", torch.tensor(100.0))

    @property
    def lag_h(self) -> torch.Tensor:
        """Protein lag behind the latent state (RNA level), hours; the network evaluates ``z(t − lag)``."""
        return nn.functional.softplus(self.lag_raw)

    def log_mean(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``(n, P)`` log expected counts per cell."""
        fg = self.fg_bias + z @ self.loading.T
        return torch.logaddexp(self.log_bg.expand_as(fg), fg) + self.site[site]

    def calibrate(self, block: WellBlock, site: torch.Tensor, n_sites: int) -> None:
        """Store the typical number of cells per specimen."""
        self.n_units.fill_(float(block.n_units.median()))

    def nll(self, z: torch.Tensor, site: torch.Tensor, block: WellBlock, w: torch.Tensor) -> torch.Tensor:
        """Weighted NB negative log-likelihood of summed ADT counts."""
        log_n = torch.log(block.n_units)[:, None]
        lp = nb_log_prob(block.y, log_n + self.log_mean(z, site), log_n + self.log_theta, block.log_y_factorial)
        return -(lp.sum(1) * w).sum()

    def readout(self, z: torch.Tensor, site: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log expected counts per cell ``(n, P)`` and their variance for one specimen."""
        lm = self.log_mean(z, site)
        var = torch.exp(-lm) / self.n_units + torch.exp(-self.log_theta) / self.n_units
        return lm, var

    def penalty(self) -> torch.Tensor:
        """Shrink loadings and site factors; log θ ~ N(log 10, 1)."""
        return (
            0.5 * (self.loading**2).sum()
            + 0.5 * (self.site**2).sum() / 0.1
            + 0.5 * ((self.log_theta - math.log(10.0)) ** 2).sum()
        )


class GaussianDecoder(nn.Module):
    """Morphology well means: a one-hidden-layer map of ``z`` plus site, plate and position covariates.

    ``y = b + A2 tanh(A1 z + b1) + site + plate + row · r + col · c + edge · e + ε``.
    """

    def __init__(
        self,
        n_features: int,
        n_programs: int,
        n_sites: int,
        n_plates: int,
        generator: torch.Generator | None = None,
        hidden: int = 16,
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.a1 = _init((n_programs, hidden), 0.5, generator)
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.loading = _init((hidden, n_features), 0.05, generator)
        self.site = nn.Parameter(torch.zeros(n_sites, n_features))
        self.plate = nn.Parameter(torch.zeros(max(n_plates, 1), n_features))
        self.position = nn.Parameter(torch.zeros(3, n_features))
        self.log_var = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("sem2", torch.zeros(n_features))

    def calibrate(self, block: WellBlock, site: torch.Tensor, n_sites: int) -> None:
        """Start the bias and noise at the feature means and variances (cold start only)."""
        self.sem2.copy_(block.sem2.median(0).values)
        if float(self.bias.detach().abs().sum()) == 0.0:
            with torch.no_grad():
                self.bias.copy_(block.y.mean(0))
                if len(block.y) > 1:
                    self.log_var.copy_(torch.log(block.y.var(0).clamp_min(1e-4)))

    def mean(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``(n, F)`` expected well mean at the plate centre of an average plate."""
        return self.bias + torch.tanh(z @ self.a1 + self.b1) @ self.loading + self.site[site]

    def nll(self, z: torch.Tensor, site: torch.Tensor, block: WellBlock, w: torch.Tensor) -> torch.Tensor:
        """Weighted Gaussian NLL of the well means; variance = well-level + observed cell sampling (sem²)."""
        mu = self.mean(z, site) + self.plate[block.plate] + block.position @ self.position
        log_var = torch.log(self.log_var.exp() + block.sem2)
        return -(normal_log_prob(block.y, mu, log_var).sum(1) * w).sum()

    def readout(self, z: torch.Tensor, site: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected well means ``(n, F)`` and their variance (well level + typical cell sampling)."""
        mu = self.mean(z, site)
        return mu, (self.log_var.exp() + self.sem2).expand_as(mu)

    def penalty(self) -> torch.Tensor:
        """Shrink weights; plates and sites are random effects with N(0, 0.5²) priors."""
        return (
            0.5 * (self.loading**2).sum()
            + 0.5 * (self.a1**2).sum()
            + 2.0 * (self.plate**2).sum()
            + 2.0 * (self.site**2).sum()
            + 0.5 * ((self.log_var - math.log(0.01)) ** 2).sum() / 4.0
        )


class MolecularDecoder(nn.Module):
    """Molecular panel: one feature per program, a positive scale and a site offset."""

    def __init__(self, n_programs: int, n_sites: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(n_programs))
        self.site = nn.Parameter(torch.zeros(n_sites, n_programs))
        self.log_var = nn.Parameter(torch.full((n_programs,), math.log(0.05)))

    def calibrate(self, block: WellBlock, site: torch.Tensor, n_sites: int) -> None:
        """Nothing to calibrate (the operator's baseline absorbs the level)."""

    def mean(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` expected panel readout."""
        return z * self.log_scale.exp() + self.site[site]

    def nll(self, z: torch.Tensor, site: torch.Tensor, block: WellBlock, w: torch.Tensor) -> torch.Tensor:
        """Weighted Gaussian negative log-likelihood of the panel."""
        return -(normal_log_prob(block.y, self.mean(z, site), self.log_var).sum(1) * w).sum()

    def readout(self, z: torch.Tensor, site: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected panel ``(n, K)`` and its variance."""
        mu = self.mean(z, site)
        return mu, self.log_var.exp().expand_as(mu)

    def penalty(self) -> torch.Tensor:
        """Keep the scale near 1 and site offsets small, so ``z`` stays on the program scale; noise sd ~ 0.1."""
        return (
            0.5 * (self.log_scale**2).sum() / 0.25
            + 0.5 * (self.site**2).sum() / 0.25
            + 0.5 * ((self.log_var - math.log(0.01)) ** 2).sum() / 4.0
        )
