"""``cost_aware``: information per unit cost across assays, on top of an information strategy.

The default strategy of cslab, over ``fisher`` (information on the
intervention parameters the identifiability index scores, blended with the
readouts' EIG). Each greedy step takes the candidate with the largest marginal
information gain divided by ``(cost + slot price) ** cost_exponent`` (default
1: information per budget unit), and a round spends at most
:func:`~acquisition.botorch_strategy.round_budget` (pacing: a quarter of what is
left, or ``q`` median wells); the slot price ``round budget / q`` is what one
of the round's ``q`` wells is worth, so while wells rather than budget limit a
round, richer assays are bought. Because a query's information sums over its assay's modalities
(:mod:`acquisition.readouts`), a cross-level anchor (CITE-seq, RNA +
morphology, spatial + dissociated) is bought only when what it adds per
budget unit beats the single-modality wells; with a joint information measure
(``eig``, ``nipv``) the gain is conditional on the batch so far, so an anchor
also loses when its parts are already bought. At most half of a round's wells
(:data:`COMBINATION_SHARE`) perturb two or more targets: the parameter
criterion alone would spend nearly all of them on combinations.
"""

from __future__ import annotations

import numpy as np
from botorch.acquisition import AcquisitionFunction

from acquisition.base import DEFAULT_TIME_LIMIT_S
from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.registry import STRATEGIES, register
from experiment_design import DesignSpace, MeasurementBatch

#: Default pacing: a round spends at most a quarter of what is left (or q median wells).
PACE = 4.0
#: Default cap on the share of a round's wells that perturb two or more targets. Uncapped, the Laplace
#: criterion spent ~97 % of the perturbation wells on combinations (a combination's specimen informs every
#: slot's target at once in the linearisation), whose targets' EC50s and onsets the fit then recovered worse
#: than random's; capped at half, 5 paired seeds on the default world reach random's final identifiability
#: with 0.57 [0.46, 0.74] × its budget (uncapped >= 0.81) and its final risk with 0.74 [0.64, 0.85] (>= 0.85)
#: (200 warm fit steps; with 100, the default since, 0.47 and 0.77). A quarter did no better (0.61, >= 0.73).
COMBINATION_SHARE = 0.5
#: Strategies whose acquisition value is an information measure.
INFORMATION_STRATEGIES = ("disagreement", "eig", "fisher", "nipv", "uncertainty")


@register("cost_aware")
class CostAwareStrategy(BotorchStrategy):
    """Information per unit cost.

    Args:
        base: Name of the information strategy whose acquisition is divided by cost.
        time_limit_s: Wall-clock limit of one proposal, seconds.
        pool_size: Candidates drawn per proposal.
        chunk_size: Candidates scored per acquisition call (``None``: the base's).
        cost_exponent: λ in gain / (cost + slot price)^λ.
        pace: Pacing of the budget over rounds (:func:`acquisition.botorch_strategy.round_budget`);
            ``None`` spends freely.
        combination_share: At most this share of a round's wells perturb two or more targets
            (:data:`COMBINATION_SHARE`); ``None``: no cap.
        **base_kwargs: Further arguments of the base strategy.

    Raises:
        ValueError: If ``base`` is not an information strategy.

    """

    def __init__(
        self,
        base: str = "fisher",
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        pool_size: int = 2000,
        chunk_size: int | None = None,
        cost_exponent: float = 1.0,
        pace: float | None = PACE,
        combination_share: float | None = COMBINATION_SHARE,
        **base_kwargs: object,
    ) -> None:
        if base not in INFORMATION_STRATEGIES:
            raise ValueError(f"CostAwareStrategy: base must be one of {INFORMATION_STRATEGIES}, got {base!r}")
        self.base = STRATEGIES.get(base)(time_limit_s=time_limit_s, pool_size=pool_size, **base_kwargs)
        super().__init__(time_limit_s, pool_size, chunk_size or self.base.chunk_size, cost_exponent)
        self.shortlist = self.base.shortlist
        if pace is not None and pace < 1.0:
            raise ValueError(f"CostAwareStrategy: pace must be >= 1 (or None), got {pace}")
        self.pace = pace
        if combination_share is not None and not 0.0 <= combination_share <= 1.0:
            raise ValueError(f"CostAwareStrategy: combination_share must be in [0, 1] or None, got {combination_share}")
        self.combination_share = combination_share

    def build_acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        """The base strategy's acquisition function (the cost enters through ``cost_exponent``)."""
        return self.base.build_acqf(model, space, pool, ledger, rng, deadline)

    def information_offset(self, acqf: AcquisitionFunction) -> float:
        """The base strategy's value of the empty batch."""
        return self.base.information_offset(acqf)

    def scores_once(self, acqf: AcquisitionFunction) -> bool:
        """As the base strategy."""
        return self.base.scores_once(acqf)
