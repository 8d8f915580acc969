"""``uncertainty``: the largest epistemic (between-member) variance of the readouts the assay observes."""

from __future__ import annotations

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform

from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.readouts import build_pool_model, output_variance
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch


class EnsembleVariance(AcquisitionFunction):
    """Summed epistemic variance of whitened ensemble outputs: ``Σ_{q, o} Var_members f_o(x_q) / σ_o²``.

    Additive over the batch, so pending points add a constant and the greedy
    gain of a candidate is its own variance.

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
        return output_variance(self.model, X).sum(dim=(-2, -1))


@register("uncertainty")
class UncertaintyStrategy(BotorchStrategy):
    """Pick the candidates whose readouts the ensemble is least sure about."""

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
        return EnsembleVariance(pool_model), pool.truncate(n)
