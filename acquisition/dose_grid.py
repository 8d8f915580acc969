"""``dose_grid``: what labs do today, a fixed dose series per target, round-robin, scRNA only.

The design is one fixed, ordered sequence of conditions:

1. a control per time point and context;
2. every single target on ``n_doses`` log-spaced doses (evenly spaced on the
   target's search scale) at ``times_h``, round-robin over targets: level by
   level (time, then dose from the middle outwards), each level visiting
   every context and target before the next;
3. then pairs on a fixed ``n_pair_doses × n_pair_doses`` grid (if
   ``max_order >= 2``), pair by pair, same times and contexts.

A proposal continues where the ledger left off: it walks the sequence and
returns the first ``q`` conditions not yet in the ledger (by ``query_id``), so
the position is derived from the ledger, not stored. When the sequence is
exhausted it starts over (replicates of the earliest conditions).

With a candidate pool (``space.pool``, lab data in pool mode) the sequence is
the pool's members of that assay (all members if none), singles before pairs
before triplets, then by time, context, targets and dose.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations, product

import numpy as np

from acquisition.base import DEFAULT_TIME_LIMIT_S, Strategy
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch, Perturbation, Query


def middle_out(n: int) -> list[int]:
    """Indices ``0..n-1`` from the middle outwards: 5 → [2, 3, 1, 4, 0]."""
    mid = (n - 1) // 2
    out = [mid]
    for k in range(1, n):
        for j in (mid + k, mid - k):
            if 0 <= j < n and j not in out:
                out.append(j)
    return out[:n]


@register("dose_grid")
class DoseGridStrategy(Strategy):
    """Fixed dose series per target at fixed times, round-robin, then a pair grid.

    Args:
        time_limit_s: Wall-clock limit (the sequence is cheap to walk).
        n_doses: Doses per single target.
        times_h: Time points, hours (clipped into the space's time range).
        n_pair_doses: Doses per target in the pair grid.

    """

    def __init__(
        self,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        n_doses: int = 5,
        times_h: Sequence[float] = (6.0, 24.0),
        n_pair_doses: int = 3,
    ) -> None:
        super().__init__(time_limit_s)
        if n_doses < 1 or n_pair_doses < 1 or not times_h:
            raise ValueError("DoseGridStrategy: n_doses, n_pair_doses and times_h must be positive / non-empty")
        self.n_doses = n_doses
        self.times_h = tuple(float(t) for t in times_h)
        self.n_pair_doses = n_pair_doses

    def sequence(self, space: DesignSpace) -> Iterator[Query]:
        """The fixed design, in order (lazy; pairs grow as targets² · n_pair_doses²)."""
        lo, hi = space.time_range_h
        times = [min(max(t, lo), hi) for t in self.times_h]
        assay = space.rna_assay()
        if space.pool:
            members = [query for query in space.pool if query.assay == assay] or list(space.pool)
            yield from sorted(
                members,
                key=lambda query: (
                    query.perturbation.order,
                    query.time_h,
                    space.context_index[query.context],
                    query.perturbation.targets,
                    query.perturbation.doses,
                    query.assay,
                ),
            )
            return
        for t, ctx in product(times, space.open_contexts):
            yield Query(Perturbation.control(), t, ctx, assay)
        series = {tg.name: space.dose_series(tg.name, self.n_doses) for tg in space.targets}
        for t, d in product(times, middle_out(self.n_doses)):
            for ctx, tg in product(space.open_contexts, space.targets):
                yield Query(Perturbation((tg.name,), (float(series[tg.name][d]),)), t, ctx, assay)
        if space.max_order < 2:
            return
        pair_series = {tg.name: space.dose_series(tg.name, self.n_pair_doses) for tg in space.targets}
        levels = list(product(middle_out(self.n_pair_doses), repeat=2))
        for a, b in combinations(space.targets, 2):
            for t, (i, j), ctx in product(times, levels, space.open_contexts):
                doses = (float(pair_series[a.name][i]), float(pair_series[b.name][j]))
                yield Query(Perturbation((a.name, b.name), doses), t, ctx, assay)

    def propose(
        self,
        model: object | None,
        space: DesignSpace,
        ledger: MeasurementBatch | None,
        q: int,
        budget_left: float,
        rng: np.random.Generator,
    ) -> list[Query]:
        """The next ``q`` conditions of :meth:`sequence` not in the ledger, within ``budget_left``."""
        done = set(ledger.query_ids) if ledger is not None and len(ledger) else set()
        out = Strategy.fit_budget(self._walk(space, done, q), space, budget_left)
        return [space.validate(query) for query in out]

    def _walk(self, space: DesignSpace, done: set[str], n: int) -> list[Query]:
        """First ``n`` conditions not in ``done``; start over (replicates) when the sequence runs out."""
        out: list[Query] = []
        if n <= 0:
            return out
        for query in self.sequence(space):
            if query.query_id not in done:
                out.append(query)
                if len(out) == n:
                    return out
        taken = {query.query_id for query in out}
        for query in self.sequence(space):  # exhausted: repeat from the start
            if query.query_id not in taken:
                out.append(query)
                if len(out) == n:
                    break
        return out
