"""Acquisition functions whose batch value is the sum of their points' values."""

from __future__ import annotations

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform


class AdditiveAcquisition(AcquisitionFunction):
    """Base of per-point-additive acquisition functions over an ensemble model.

    Pending points add a constant (cached when they are set), so the greedy
    batch loop scores the pool once and the gain of a candidate is its own
    value. Subclasses implement :meth:`_value`.

    Args:
        model: Ensemble model with whitened outputs (``PoolEnsembleModel``).
        X_pending: ``(p, d)`` points already chosen.
    """

    def __init__(self, model, X_pending: torch.Tensor | None = None) -> None:  # noqa: ANN001
        super().__init__(model)
        self.set_X_pending(X_pending)

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Set the pending points and cache their value."""
        super().set_X_pending(X_pending)
        self._pending_value = 0.0 if X_pending is None else float(self._value(X_pending.unsqueeze(0)))

    @t_batch_mode_transform()
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` joint values of ``X`` ``(b, q, d)`` with the pending points."""
        return self._value(X) + self._pending_value

    def _value(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` summed value of the points of ``X`` ``(b, q, d)``."""
        raise NotImplementedError
