"""``disagreement``: BALD mutual information for a Gaussian ensemble, over the assay's readouts.

For Gaussian members with mean ``f_m(x)`` and noise ``σ²`` the mutual
information between an observation and the member index is approximately
``½ · log(total variance / aleatoric variance) = ½ · log(1 + Var_m f_m / σ²)``,
summed over readout features (SCIENCE.md, Acquisition). BoTorch's
``qBayesianActiveLearningByDisagreement`` expects a fully Bayesian GP, so this
is written as an ``AcquisitionFunction`` over the ensemble posterior.
"""

from __future__ import annotations

import torch

from acquisition.additive import AdditiveAcquisition
from acquisition.botorch_strategy import EnsemblePoolStrategy
from acquisition.readouts import output_variance
from acquisition.registry import register


class EnsembleBALD(AdditiveAcquisition):
    """``Σ_{q, o} ½ log(1 + Var_members f_o(x_q))`` on whitened ensemble outputs.

    Args:
        model: Ensemble model with whitened outputs (``PoolEnsembleModel``).
        X_pending: ``(p, d)`` points already chosen.

    """

    def _value(self, X: torch.Tensor) -> torch.Tensor:
        var = output_variance(self.model, X)  # (b, q, O)
        return 0.5 * torch.log1p(var).sum(dim=(-2, -1))


@register("disagreement")
class DisagreementStrategy(EnsemblePoolStrategy):
    """Pick the candidates where ensemble members disagree most relative to noise (BALD)."""

    acqf_class = EnsembleBALD
