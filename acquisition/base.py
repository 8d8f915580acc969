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
* returns within ``time_limit_s`` (best found so far), a safety net; a
  :class:`Proposal` says when it bound (``truncated``: then, and only then, the
  batch may depend on the machine's speed).

``propose`` returns a :class:`Proposal`: the queries (it is a list) and the
strategy's diagnostics about them. The loop reads the diagnostics from it,
never from the strategy object.

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


class Proposal(list):
    """One proposal: the queries (a ``list`` of :class:`Query`) and what the strategy reports about them.

    Args:
        queries: The proposed queries, in order.
        diagnostics: Named facts about this proposal (``{"truncated": True}`` when the time
            limit shaped it); the loop stores ``truncated`` as ``acquire_truncated``.
    """

    def __init__(self, queries: Sequence[Query] = (), diagnostics: dict | None = None) -> None:
        super().__init__(queries)
        self.diagnostics = dict(diagnostics or {})

    @property
    def truncated(self) -> bool:
        """Whether the time limit cut this proposal short (it may then differ on another machine)."""
        return bool(self.diagnostics.get("truncated", False))

    @classmethod
    def of(cls, queries: Sequence[Query]) -> Proposal:
        """``queries`` as a proposal (unchanged if it is one): a plain list has no diagnostics."""
        return queries if isinstance(queries, Proposal) else cls(queries)


class Strategy(ABC):
    """Base class of every acquisition strategy.

    Args:
        time_limit_s: Wall-clock safety limit of one ``propose`` call, seconds.

    """

    #: Whether ``propose`` needs a fitted model.
    needs_model: bool = False

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
    ) -> Proposal | list[Query]:
        """Propose up to ``q`` queries costing at most ``budget_left`` (a :class:`Proposal`, or a plain list)."""

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
