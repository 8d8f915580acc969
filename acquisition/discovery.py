"""``discovery``: hunt the strongest responses (qUCB over the ensemble), for users after hits.

Two objectives, on an ensemble member's programs ``f`` from the model's
BoTorch view, with ``f̄`` the ensemble mean:

* ``"response"``: the size of the response,
  ``‖f(x) − f̄(control at the same time and context)‖₂`` (the control row is
  ``x`` with every target slot emptied);
* ``"synergy"``: the size of the interaction of a combination,
  ``‖f(x) − Σ_i f̄(slot i alone) + (K − 1) f̄(control)‖₂`` over the ``K``
  slots (an empty slot alone is the control), i.e. the departure from
  additive effects; 0 for single targets. Only ``f(x)`` is sampled, so the
  bound reflects the members' spread at the combination itself.
 BoTorch's
``qUpperConfidenceBound`` with an ``IndexSampler`` (one sample = one member)
scores each candidate (q = 1), and the batch is the top-q candidates by that
bound (:meth:`DiscoveryStrategy.scores_once`). A joint qUCB batch values
only its maximum, so after the first pick the greedy gains are ~0 and the
rest of the batch is noise; a hit hunter wants the q best candidates instead.
"""

from __future__ import annotations

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction, qUpperConfidenceBound
from botorch.acquisition.objective import GenericMCObjective
from botorch.sampling.index_sampler import IndexSampler

from acquisition.base import DEFAULT_TIME_LIMIT_S
from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch


def response_objective(botorch_model, space: DesignSpace) -> GenericMCObjective:  # noqa: ANN001
    """MC objective ``‖Y − mean f(control at X)‖₂`` over the program outputs.

    Args:
        botorch_model: The model's BoTorch view (outputs = programs).
        space: The design space (for the encoding's slot columns).

    """
    enc = space.encoding

    def objective(samples: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        X_ctrl = X.clone()
        X_ctrl[..., enc.target_dims] = 0.0
        X_ctrl[..., enc.dose_dims] = 0.0
        baseline = botorch_model.posterior(X_ctrl).mean.to(samples)  # (b, q, K)
        return (samples - baseline).norm(dim=-1)

    return GenericMCObjective(objective)


def synergy_objective(botorch_model, space: DesignSpace) -> GenericMCObjective:  # noqa: ANN001
    """MC objective ``‖Y − Σ_i mean f(slot i alone) + (K − 1) mean f(control)‖₂`` (see the module docstring)."""
    enc = space.encoding

    def objective(samples: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        X_ctrl = X.clone()
        X_ctrl[..., enc.target_dims] = 0.0
        X_ctrl[..., enc.dose_dims] = 0.0
        alone = []
        for i in range(enc.n_slots):
            Xi = X_ctrl.clone()
            Xi[..., enc.target_dims[i]] = X[..., enc.target_dims[i]]
            Xi[..., enc.dose_dims[i]] = X[..., enc.dose_dims[i]]
            alone.append(Xi)
        means = botorch_model.posterior(torch.cat([X_ctrl, *alone], dim=-2)).mean.to(samples)
        parts = means.split(X.shape[-2], dim=-2)  # control, then slot i alone
        additive = sum(parts[1:]) - (enc.n_slots - 1) * parts[0]
        return (samples - additive).norm(dim=-1)

    return GenericMCObjective(objective)


OBJECTIVES = {"response": response_objective, "synergy": synergy_objective}


@register("discovery")
class DiscoveryStrategy(BotorchStrategy):
    """Upper confidence bound on the response size.

    Args:
        time_limit_s: Wall-clock limit of one proposal, seconds.
        pool_size: Candidates drawn per proposal.
        chunk_size: Candidates scored per acquisition call.
        cost_exponent: Score = marginal gain / cost ** cost_exponent.
        beta: UCB exploration weight.
        n_samples: Member draws of the ``IndexSampler``.
        target: ``"response"`` or ``"synergy"`` (see the module docstring).

    Raises:
        ValueError: On an unknown ``target``.

    """

    def __init__(
        self,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        pool_size: int = 2000,
        chunk_size: int = 1024,
        cost_exponent: float = 0.0,
        beta: float = 2.0,
        n_samples: int = 64,
        target: str = "response",
    ) -> None:
        super().__init__(time_limit_s, pool_size, chunk_size, cost_exponent)
        if target not in OBJECTIVES:
            raise ValueError(f"DiscoveryStrategy: target must be one of {sorted(OBJECTIVES)}, got {target!r}")
        self.beta = beta
        self.n_samples = n_samples
        self.target = target

    def build_acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        """QUCB of the chosen objective over the model's BoTorch view (one sample per member)."""
        view = model.to_botorch()
        sampler = IndexSampler(torch.Size([self.n_samples]), seed=int(rng.integers(2**31 - 1)))
        objective = OBJECTIVES[self.target](view, space)
        return qUpperConfidenceBound(view, beta=self.beta, sampler=sampler, objective=objective), pool

    def scores_once(self, acqf: AcquisitionFunction) -> bool:
        """Rank candidates by their own bound (see the module docstring)."""
        return True
