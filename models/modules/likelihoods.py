"""Assay-true log-likelihoods, written out so they are cheap and testable.

Each function returns elementwise log densities (same shape as the broadcast
inputs); the caller weights and sums. They agree with ``torch.distributions``
(tested): ``NegativeBinomial(total_count=θ, logits=log μ − log θ)``,
``Normal(μ, σ)``, ``StudentT(ν, μ, σ)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def nb_log_prob(
    y: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor, log_y_factorial: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative binomial log pmf with mean ``μ`` and inverse dispersion ``θ`` (Var = μ + μ²/θ).

    Args:
        y: Counts (float tensor, >= 0).
        log_mu: log mean, broadcastable to ``y``.
        log_theta: log inverse dispersion, broadcastable to ``y``.
        log_y_factorial: ``lgamma(y + 1)`` in float64 (:func:`log_factorial`), when the caller keeps it:
            it depends on the data alone, so a fit computes it once rather than at every step.

    Returns:
        Elementwise log probability, in the dtype of ``log_mu``. Computed in
        float64: with pseudobulk counts (``y``, ``θ`` in the thousands)
        ``lgamma(y + θ) − lgamma(θ)`` cancels badly in float32.

    """
    dtype = log_mu.dtype
    y, log_mu, log_theta = y.double(), log_mu.double(), log_theta.double()
    theta = log_theta.exp()
    log_mu_theta = torch.logaddexp(log_mu, log_theta)
    return (
        torch.lgamma(y + theta)
        - torch.lgamma(theta)
        - (log_factorial(y) if log_y_factorial is None else log_y_factorial)
        + theta * (log_theta - log_mu_theta)
        + y * (log_mu - log_mu_theta)
    ).to(dtype)


def log_factorial(y: torch.Tensor) -> torch.Tensor:
    """``lgamma(y + 1)`` in float64, elementwise (the NB log pmf's data-only term)."""
    return torch.lgamma(y.double() + 1.0)


def normal_log_prob(y: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Gaussian log density with variance ``exp(log_var)``."""
    return -0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var) + 1.8378770664093453)


def student_t_log_prob(y: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor, df: float) -> torch.Tensor:
    """Student-t log density with ``df`` degrees of freedom and scale ``exp(log_scale)``."""
    z = (y - mu) * torch.exp(-log_scale)
    dft = torch.as_tensor(df, dtype=y.dtype)
    return (
        torch.lgamma((dft + 1) / 2)
        - torch.lgamma(dft / 2)
        - 0.5 * torch.log(dft * torch.pi)
        - log_scale
        - (dft + 1) / 2 * torch.log1p(z**2 / dft)
    )


@dataclass
class LossOutput:
    """A loss with its named parts (scvi-tools style).

    Attributes:
        total: Scalar to minimise (negative log posterior per specimen).
        parts: Name → scalar tensor (negative log-likelihood per modality,
            penalties); ``total`` is their sum.
        n_obs: Weighted number of specimens per modality in the loss (scalar tensors).

    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    n_obs: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """Parts and total as plain floats (for logging)."""
        return {"total": float(self.total), **{k: float(v) for k, v in self.parts.items()}}
