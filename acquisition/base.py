"""Strategies: each round, choose the next batch of queries.

Contract
--------
``Strategy.propose(model, space, ledger, q, budget_left, rng) -> list[Query]``:

* every query is valid in ``space`` and respects ``space.max_order``;
* the batch costs at most ``budget_left`` (``space.cost``); near the end of
  the budget it fills with what still fits, and returns ``[]`` only when
  nothing fits;
* at most ``q`` queries (replicates of one condition count once each);
* deterministic given the model state, the ledger and the generator's state:
  what it proposes is set by counts (pool size, chunks, greedy steps), never
  by the clock;
* returns within ``time_limit_s`` (best found so far), a safety net that sets
  :attr:`Strategy.truncated` when it binds (then, and only then, the batch may
  depend on the machine's speed).

``model`` may be ``None`` for baselines that ignore it (``random``,
``sobol``, ``dose_grid``); ``ledger`` is every observation so far (``None`` or
empty before the first round).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from experiment_design import DesignSpace, MeasurementBatch, Query

#: Default safety limit of one proposal, seconds (far above what a proposal takes: it is never the design's limit).
DEFAULT_TIME_LIMIT_S = 300.0


class Strategy(ABC):
    """Base class of every acquisition strategy.

    Args:
        time_limit_s: Wall-clock safety limit of one ``propose`` call, seconds.

    """

    #: Whether ``propose`` needs a fitted model.
    needs_model: bool = False
    #: Whether the last ``propose`` was cut short by its time limit (then it depends on machine speed).
    truncated: bool = False

    def __init__(self, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> None:
        self.time_limit_s = time_limit_s

    @abstractmethod
    def propose(
        self,
        model: object | None,
        space: DesignSpace,
        ledger: MeasurementBatch | None,
        q: int,
        budget_left: float,
        rng: np.random.Generator,
    ) -> list[Query]:
        """Propose up to ``q`` queries costing at most ``budget_left``."""

    @staticmethod
    def fit_budget(queries: Sequence[Query], space: DesignSpace, budget_left: float) -> list[Query]:
        """Keep queries in order while they fit in ``budget_left``; skip those that do not."""
        out, spent = [], 0.0
        for query in queries:
            c = space.cost([query])
            if spent + c <= budget_left + 1e-9:
                out.append(query)
                spent += c
        return out
