"""The base of every BoTorch-backed strategy: pool, encoding, time limit, greedy batches, budget.

A subclass builds only its acquisition function (:meth:`BotorchStrategy.build_acqf`).
The base

1. draws a candidate pool (``space.sample``, seeded by ``rng``, deduplicated,
   only queries that fit in the budget), encodes it;
2. asks the subclass for a BoTorch ``AcquisitionFunction`` over the pool;
3. picks the batch by sequential greedy selection: step ``j`` scores every
   remaining affordable candidate jointly with the ``j`` already chosen (set
   as ``X_pending``; joint acquisition functions therefore diversify the
   batch) and takes the largest *marginal gain* per ``cost ** cost_exponent``
   (``cost_exponent = 0`` for plain strategies, 1 for ``cost_aware``); where
   :meth:`BotorchStrategy.scores_once` says the batch value is the sum of its
   points' values, the pool is scored once and the gains reused;
4. what it proposes is set by counts (pool size, chunks, greedy steps); the
   time limit is only a safety net, far above what a proposal takes, that
   marks the :class:`~acquisition.base.Proposal` ``truncated`` when it binds:
   the pool is drawn in blocks until 20 % of the limit, set-up (prediction,
   surrogate fit) stops at 50 %, the pool is scored in chunks in a seeded random
   order and a step that runs out of time uses the best chunk scores found so
   far; once the limit is reached the batch is filled from the last scores.

Why not ``optimize_acqf_discrete`` as is: it has neither a time limit nor a
cost constraint, and its greedy step maximises the joint value rather than the
gain per cost; the loop here is the same greedy scheme with both added.
Chosen candidates leave the pool, so a batch never repeats a condition.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction

from acquisition.additive import AdditiveAcquisition
from acquisition.base import DEFAULT_TIME_LIMIT_S, Proposal, Strategy
from acquisition.readouts import build_pool_model, pool_positions
from experiment_design import DesignSpace, MeasurementBatch, Query

#: Share of the time limit that pool prediction and acquisition set-up may use.
SETUP_SHARE = 0.5
#: Share of the time limit that drawing the candidate pool may use.
POOL_SHARE = 0.2
#: Candidates drawn per block.
DRAW_BLOCK = 1000
#: Share of the time limit after which no new chunk is scored (one chunk may still be running).
SCORE_SHARE = 0.95


@dataclass
class Pool:
    """Candidates of one proposal.

    Attributes:
        queries: Candidate queries (one replicate each, distinct conditions).
        X: ``(n, d)`` float64 encodings.
        cost: ``(n,)`` cost of each candidate in budget units.

    """

    queries: list[Query]
    X: torch.Tensor
    cost: np.ndarray

    def truncate(self, n: int) -> Pool:
        """The first ``n`` candidates."""
        return Pool(self.queries[:n], self.X[:n], self.cost[:n])

    def inputs(self, acqf: AcquisitionFunction) -> torch.Tensor:
        """``(n, d')`` rows to hand ``acqf``: positions for a pool-indexed one, else the encodings.

        An acquisition function is pool-indexed when it, or its model, sets ``indexed = True``.
        """
        indexed = getattr(acqf, "indexed", False) or getattr(acqf.model, "indexed", False)
        return pool_positions(len(self.queries)) if indexed else self.X


class BotorchStrategy(Strategy):
    """Greedy, cost- and time-limited batch selection over a candidate pool.

    Args:
        time_limit_s: Wall-clock limit of one ``propose`` call, seconds.
        pool_size: Candidates drawn per proposal (up to 1e4).
        chunk_size: Candidates scored per acquisition call (bounds memory).
        cost_exponent: Score = marginal gain / cost ** cost_exponent.

    """

    needs_model = True
    #: After the first greedy step only this many best candidates (gain per cost) stay in the race
    #: (``None``: all). A count, so the design is the same on every machine; for acquisition functions
    #: whose step costs grow with the pool (:mod:`acquisition.fisher`).
    shortlist: int | None = None
    #: Pacing (``None``: off): a round spends at most ``max(left / pace, q × median assay cost)`` and each
    #: well is charged its cost plus the slot price ``round budget / q`` (:func:`round_budget`).
    pace: float | None = None
    #: At most ``floor(share × q)`` of a round's ``q`` wells perturb two or more targets (``None``: no cap).
    combination_share: float | None = None

    def __init__(
        self,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        pool_size: int = 2000,
        chunk_size: int = 1024,
        cost_exponent: float = 0.0,
    ) -> None:
        super().__init__(time_limit_s)
        if not 1 <= pool_size <= 100_000:
            raise ValueError(f"{type(self).__name__}: pool_size must be in [1, 1e5], got {pool_size}")
        if chunk_size < 1:
            raise ValueError(f"{type(self).__name__}: chunk_size must be >= 1, got {chunk_size}")
        self.pool_size = pool_size
        self.chunk_size = chunk_size
        self.cost_exponent = float(cost_exponent)

    # ------------------------------------------------------------ subclass API
    @abstractmethod
    def build_acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        """Build the acquisition function over (a prefix of) ``pool``.

        Returns:
            The acquisition function (maps ``(b, q, d)`` pool rows to ``(b,)``)
            and the pool it covers (a prefix of ``pool`` when set-up ran out
            of time).

        """

    def information_offset(self, acqf: AcquisitionFunction) -> float:
        """Acquisition value of the empty batch (0 for information measures)."""
        return 0.0

    def scores_once(self, acqf: AcquisitionFunction) -> bool:
        """Whether the batch value is the sum of its points' values, so the greedy loop scores the pool once.

        True for :class:`~acquisition.additive.AdditiveAcquisition`; a
        strategy that ranks candidates by their own value overrides it.
        """
        return isinstance(acqf, AdditiveAcquisition)

    # ---------------------------------------------------------------- propose
    def propose(
        self,
        model: object | None,
        space: DesignSpace,
        ledger: MeasurementBatch | None,
        q: int,
        budget_left: float,
        rng: np.random.Generator,
    ) -> Proposal:
        """Propose up to ``q`` queries costing at most ``budget_left`` (see :mod:`acquisition.base`).

        Raises:
            ValueError: If ``model`` is ``None`` or ``q`` < 0.

        """
        start = time.monotonic()
        name = type(self).__name__
        if model is None:
            raise ValueError(f"{name}: needs a fitted model, got None")
        if q < 0:
            raise ValueError(f"{name}: q must be >= 0, got {q}")
        pool = self.candidate_pool(space, rng, budget_left, start + POOL_SHARE * self.time_limit_s)
        truncated = time.monotonic() > start + POOL_SHARE * self.time_limit_s
        if q == 0 or not pool.queries:
            return Proposal([], {"truncated": truncated})
        deadline = start + SCORE_SHARE * self.time_limit_s
        spend, slot_price = budget_left, 0.0
        if self.pace is not None:
            spend = round_budget(space, budget_left, q, self.pace)
            slot_price = spend / q
        with torch.no_grad():
            n_drawn = len(pool.queries)
            acqf, pool = self.build_acqf(model, space, pool, ledger, rng, start + SETUP_SHARE * self.time_limit_s)
            chosen = self._greedy(acqf, pool, q, spend, rng, deadline, slot_price)
        # The time limit shaped this proposal (pool, set-up or scoring cut short): it may differ on another machine.
        truncated = truncated or len(pool.queries) < n_drawn or time.monotonic() > deadline
        return Proposal([pool.queries[i] for i in chosen], {"truncated": truncated})

    def candidate_pool(
        self, space: DesignSpace, rng: np.random.Generator, budget_left: float, deadline: float = float("inf")
    ) -> Pool:
        """Draw up to ``pool_size`` distinct queries that each fit in ``budget_left``.

        Draws come in blocks of :data:`DRAW_BLOCK`; no new block is drawn
        after ``deadline`` (``time.monotonic()``), so a tight time limit gets
        a smaller pool. With a candidate pool in the space (pool mode) the
        draw is one permutation of its affordable members.
        """
        affordable = [a.name for a in space.assays if a.cost <= budget_left + 1e-9]
        seen: dict[str, Query] = {}
        while affordable and len(seen) < self.pool_size:
            n = self.pool_size if space.pool else min(DRAW_BLOCK, self.pool_size - len(seen))
            before = len(seen)
            for query in space.sample(n, rng, assays=affordable):
                seen.setdefault(query.query_id, query)
            if space.pool or len(seen) == before or time.monotonic() > deadline:
                break
        queries = list(seen.values())
        if not queries:
            return Pool([], torch.zeros(0, space.encoding.dim, dtype=torch.float64), np.zeros(0))
        cost = np.array([space.assay(query.assay).cost for query in queries])
        return Pool(queries, space.encode(queries), cost)

    # ----------------------------------------------------------------- greedy
    def _score(self, acqf: AcquisitionFunction, X: torch.Tensor, idx: np.ndarray, deadline: float) -> np.ndarray:
        """Acquisition values of rows ``idx`` of ``X``, in chunks; NaN for chunks left when time runs out."""
        out = np.full(len(idx), np.nan)
        for s in range(0, len(idx), self.chunk_size):
            if s > 0 and time.monotonic() > deadline:
                break
            rows = idx[s : s + self.chunk_size]
            out[s : s + len(rows)] = acqf(X[rows].unsqueeze(-2)).double().numpy()
        return out

    def _greedy(
        self,
        acqf: AcquisitionFunction,
        pool: Pool,
        q: int,
        budget_left: float,
        rng: np.random.Generator,
        deadline: float,
        slot_price: float = 0.0,
    ) -> list[int]:
        """Sequential greedy batch: marginal gain per (cost + slot price)^λ, pending points, budget, time limit."""
        order = rng.permutation(len(pool.queries))
        X = pool.inputs(acqf)  # candidates by position for pool-indexed acquisition: no float lookups
        divisor = (pool.cost[order] + slot_price) ** self.cost_exponent
        free = np.ones(len(order), dtype=bool)
        chosen: list[int] = []
        spent, baseline = 0.0, self.information_offset(acqf)
        last_gain: np.ndarray | None = None
        additive = self.scores_once(acqf)
        if self.combination_share is not None:
            combo = np.array([len(pool.queries[i].perturbation.targets) > 1 for i in order], dtype=bool)
            max_combos = math.floor(self.combination_share * q + 1e-9)
        while len(chosen) < q:
            fits = free & (pool.cost[order] <= budget_left - spent + 1e-9)
            if self.combination_share is not None and int(combo[chosen].sum()) >= max_combos:
                fits &= ~combo  # the round's combinations are capped: single targets fill the other wells
            if not fits.any():
                break
            if last_gain is not None and (additive or time.monotonic() > deadline):
                # Additive acquisition: gains do not change with the batch. Out of time: fill from the last scores.
                gain = np.where(fits, last_gain, np.nan)
                value = None
            else:
                acqf.set_X_pending(X[[order[i] for i in chosen]] if chosen else None)
                cand = np.flatnonzero(fits)
                value = np.full(len(order), np.nan)
                value[cand] = self._score(acqf, X, order[cand], deadline)
                gain = (value - baseline) / divisor
                last_gain = gain
            if np.all(np.isnan(gain[fits])):
                break
            best = int(np.nanargmax(np.where(fits, gain, np.nan)))
            if not chosen and self.shortlist is not None and value is not None:
                ranked = np.argsort(-np.where(fits, np.nan_to_num(gain, nan=-np.inf), -np.inf), kind="stable")
                free[ranked[self.shortlist :]] = False
            if value is not None:
                baseline = float(value[best])
            chosen.append(best)
            free[best] = False
            spent += float(pool.cost[order[best]])
        acqf.set_X_pending(None)
        return [int(order[i]) for i in chosen]


def round_budget(space: DesignSpace, budget_left: float, q: int, pace: float) -> float:
    """What one paced round may spend: ``min(left, max(left / pace, q × median assay cost))``.

    A quarter of what is left (``pace = 4``) keeps the budget from going in the first rounds, so later
    rounds choose with a better model; the floor of ``q`` typical wells keeps the tail short. Charging
    every well ``cost + round budget / q`` is the Lagrangian of the two limits of a round, its budget and
    its ``q`` wells: while wells are the scarcer, a well's information counts more than its price, and
    richer assays (anchors) are bought; when the budget is, information per unit cost decides.

    Args:
        space: The design space (assay costs).
        budget_left: Budget units left.
        q: Wells per round.
        pace: Rounds over which what is left would be spread at the least.
    """
    median = float(np.median([a.cost for a in space.assays]))
    return float(min(budget_left, max(budget_left / pace, q * median)))


class EnsemblePoolStrategy(BotorchStrategy):
    """A strategy whose acquisition reads the ensemble's whitened readouts on the pool.

    Subclasses set :attr:`acqf_class` (``uncertainty``, ``disagreement``,
    ``eig``); the pool model (:func:`acquisition.readouts.build_pool_model`) is
    built here once for all of them.
    """

    #: Acquisition function class, built as ``acqf_class(pool_model)``.
    acqf_class: type[AcquisitionFunction]

    def build_acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        """The batch acquisition function of the base class's ``acqf_class`` over a pool ensemble model."""
        pool_model, n = build_pool_model(model, space, pool.queries, pool.X, rng, deadline=deadline)
        return self.acqf_class(pool_model), pool.truncate(n)
