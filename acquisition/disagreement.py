"""``disagreement``: BALD mutual information for a Gaussian ensemble, over the assay's readouts.

For Gaussian members with mean ``f_m(x)`` and noise ``σ²`` the mutual
information between an observation and the member index is approximately
``½ · log(total variance / aleatoric variance) = ½ · log(1 + Var_m f_m / σ²)``,
summed over readout features (SCIENCE.md, Acquisition). BoTorch's
``qBayesianActiveLearningByDisagreement`` expects a fully Bayesian GP, so this
is written as an ``AcquisitionFunction`` over the ensemble posterior.
"""

from __future__ import annotations

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform

from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.readouts import build_pool_model, output_variance
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch


class EnsembleBALD(AcquisitionFunction):
    """``Σ_{q, o} ½ log(1 + Var_members f_o(x_q))`` on whitened ensemble outputs.

    Args:
        model: Ensemble model with whitened outputs (``PoolEnsembleModel``).
        X_pending: ``(p, d)`` points already chosen.

    """

    #: The value of a batch is the sum of its points' values (the greedy loop scores once).
    additive = True

    def __init__(self, model, X_pending: torch.Tensor | None = None) -> None:  # noqa: ANN001
        super().__init__(model)
        self.set_X_pending(X_pending)

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Set the pending points and cache their value (the function is additive over points)."""
        super().set_X_pending(X_pending)
        self._pending_value = 0.0 if X_pending is None else float(self._value(X_pending.unsqueeze(0)))

    @t_batch_mode_transform()
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` joint values of ``X`` ``(b, q, d)`` with the pending points."""
        return self._value(X) + self._pending_value

    def _value(self, X: torch.Tensor) -> torch.Tensor:
        var = output_variance(self.model, X)  # (b, q, O)
        return 0.5 * torch.log1p(var).sum(dim=(-2, -1))


@register("disagreement")
class DisagreementStrategy(BotorchStrategy):
    """Pick the candidates where ensemble members disagree most relative to noise (BALD)."""

    def _acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        pool_model, n = build_pool_model(model, space, pool.queries, pool.X, rng, deadline=deadline)
        return EnsembleBALD(pool_model), pool.truncate(n)
