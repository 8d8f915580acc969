"""``eig``: D-optimal expected information gain of the batch jointly.

For a locally linear model, ``EIG = ½ log det(I + J Σ Jᵀ / σ²)`` with ``J``
the readout Jacobian with respect to the operator parameters and ``Σ`` their
covariance. With an ensemble standing in for the parameter posterior,
``J Σ Jᵀ`` is the covariance across members of the batch's readouts, so on
whitened outputs ``EIG(batch) = ½ log det(I + A Aᵀ)`` with ``A`` the centred
member outputs of the whole batch (``M × q·O``, divided by ``√(M−1)``). By
Sylvester's identity this is an ``M × M`` determinant, cheap for any width.
Two candidates that move the members the same way share information, so the
joint batch value diversifies the greedy selection.
"""

from __future__ import annotations

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform

from acquisition.botorch_strategy import EnsemblePoolStrategy
from acquisition.readouts import batch_gram
from acquisition.registry import register


class EnsembleEIG(AcquisitionFunction):
    """Joint ``½ log det(I + Cov_members(f(X_batch)))`` on whitened ensemble outputs.

    Args:
        model: Ensemble model with whitened outputs (``PoolEnsembleModel``).
        X_pending: ``(p, d)`` points already chosen; they enter the joint
            determinant, so a candidate's marginal gain is conditional on them.

    """

    def __init__(self, model, X_pending: torch.Tensor | None = None) -> None:  # noqa: ANN001
        super().__init__(model)
        self.set_X_pending(X_pending)

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Set the pending points and cache their member Gram matrix ``A_p A_pᵀ`` (``M × M``)."""
        super().set_X_pending(X_pending)
        self._pending_gram = None if X_pending is None else self._gram(X_pending.unsqueeze(0))[0]

    @t_batch_mode_transform()
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` joint values of ``X`` ``(b, q, d)`` with the pending points.

        The Gram matrix of a concatenated batch is the sum of its parts'
        Gram matrices, so pending points cost one ``M × M`` addition.
        """
        gram = self._gram(X)
        if self._pending_gram is not None:
            gram = gram + self._pending_gram
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        return 0.5 * torch.logdet(eye + gram)

    def _gram(self, X: torch.Tensor) -> torch.Tensor:
        """``(b, M, M)`` Gram matrix ``A Aᵀ`` of the centred members over the batch's outputs."""
        return batch_gram(self.model, X)


@register("eig")
class EIGStrategy(EnsemblePoolStrategy):
    """Pick the batch that most increases the log-determinant of the (ensemble) Fisher information."""

    acqf_class = EnsembleEIG
