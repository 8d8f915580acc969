"""``uncertainty``: the largest epistemic (between-member) variance of the readouts the assay observes."""

from __future__ import annotations

import torch

from acquisition.additive import AdditiveAcquisition
from acquisition.botorch_strategy import EnsemblePoolStrategy
from acquisition.readouts import output_variance
from acquisition.registry import register


class EnsembleVariance(AdditiveAcquisition):
    """Summed epistemic variance of whitened ensemble outputs: ``Σ_{q, o} Var_members f_o(x_q) / σ_o²``.

    Additive over the batch, so pending points add a constant and the greedy
    gain of a candidate is its own variance.

    Args:
        model: Ensemble model with whitened outputs (``PoolEnsembleModel``).
        X_pending: ``(p, d)`` points already chosen.

    """

    def _value(self, X: torch.Tensor) -> torch.Tensor:
        return output_variance(self.model, X).sum(dim=(-2, -1))


@register("uncertainty")
class UncertaintyStrategy(EnsemblePoolStrategy):
    """Pick the candidates whose readouts the ensemble is least sure about."""

    acqf_class = EnsembleVariance
