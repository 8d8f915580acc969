"""``random``: uniform draws over the design space, the honest baseline.

With a candidate pool (``space.pool``, lab data in pool mode) the draws are
uniform over the pool members instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from acquisition.base import Strategy
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch, Query


def fill_budget(
    draw: Callable[[int, list[str]], list[Query]],
    space: DesignSpace,
    q: int,
    budget_left: float,
) -> list[Query]:
    """Draw queries until ``q`` are chosen or none fits; each draw only uses assays that still fit.

    Args:
        draw: ``draw(n, assays) -> list[Query]``, ``n`` queries over the named assays.
        space: The design space.
        q: Largest batch size.
        budget_left: Budget in cost units.

    Returns:
        At most ``q`` queries costing at most ``budget_left`` in total.

    """
    out: list[Query] = []
    seen: set[str] = set()
    spent = 0.0
    while len(out) < q:
        affordable = [a.name for a in space.assays if a.cost <= budget_left - spent + 1e-9]
        if not affordable:
            break
        n_before = len(out)
        for query in draw(q - len(out), affordable):
            c = space.cost([query])
            # A decoded point may land where the space admits no query (a held-out context).
            if query.query_id not in seen and spent + c <= budget_left + 1e-9 and space.admissible(query):
                out.append(query)
                seen.add(query.query_id)
                spent += c
        if len(out) == n_before:  # nothing new fits (e.g. a small candidate pool is used up)
            break
    return out


@register("random")
class RandomStrategy(Strategy):
    """Uniform random queries (``DesignSpace.sample``: orders 5/60/30/10 %, assays and contexts uniform)."""

    def propose(
        self,
        model: object | None,
        space: DesignSpace,
        ledger: MeasurementBatch | None,
        q: int,
        budget_left: float,
        rng: np.random.Generator,
    ) -> list[Query]:
        """Draw ``q`` queries uniformly among those that fit in ``budget_left``."""
        return fill_budget(lambda n, assays: space.sample(n, rng, assays=assays), space, q, budget_left)
