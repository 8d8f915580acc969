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

from acquisition.additive import AdditiveAcquisition
from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.readouts import build_pool_model, output_variance
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch


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
