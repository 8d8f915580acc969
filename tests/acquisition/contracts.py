"""``StrategyContract``: the properties every acquisition strategy must have.

A strategy's test class inherits the mixin and defines ``make(time_limit_s)``
(a strategy instance with small, test-sized settings); the mixin supplies the
space and model (overridable) and the tests.
"""

import time

import numpy as np
import torch
from acquisition_fakes import BumpEnsemble, small_space

from experiment_design import DesignSpace


class StrategyContract:
    """Mixin of contract tests; subclasses define ``make``."""

    #: Slack on the time limit, seconds (one chunk may finish after the limit).
    time_slack_s = 1.5

    def make(self, time_limit_s: float = 5.0):
        raise NotImplementedError

    def space(self, max_order: int = 2) -> DesignSpace:
        return small_space(max_order=max_order)

    def model(self, space: DesignSpace) -> BumpEnsemble:
        return BumpEnsemble(space, modalities={"rna": 20, "adt": 6, "morphology": 5})

    def propose(self, q=6, budget=20.0, seed=0, max_order=2, strategy=None, ledger=None):
        space = self.space(max_order)
        strategy = strategy or self.make()
        return space, strategy.propose(self.model(space), space, ledger, q, budget, np.random.default_rng(seed))

    # ------------------------------------------------------------------ tests
    def test_queries_are_valid_distinct_and_at_most_q(self):
        space, qs = self.propose(q=6)
        assert 1 <= len(qs) <= 6
        for query in qs:
            space.validate(query)
        assert len({query.query_id for query in qs}) == len(qs), "a batch repeats a condition"

    def test_batch_stays_within_budget(self):
        for budget in (20.0, 3.7):
            space, qs = self.propose(q=8, budget=budget)
            assert space.cost(qs) <= budget + 1e-9

    def cheapest_cost(self, space: DesignSpace) -> float:
        """Cost of the cheapest query the strategy may propose."""
        return min(a.cost for a in space.assays)

    def test_fills_what_still_fits_near_the_end(self):
        space = self.space()
        cheapest = self.cheapest_cost(space)
        budget = cheapest * 1.5  # only one query of the cheapest assay fits
        _, qs = self.propose(q=4, budget=budget)
        assert len(qs) == 1 and space.cost(qs) <= budget
        _, none = self.propose(q=4, budget=cheapest * 0.5)
        assert none == []

    def test_deterministic_under_the_seed(self):
        _, a = self.propose(seed=3)
        _, b = self.propose(seed=3)
        assert [query.to_dict() for query in a] == [query.to_dict() for query in b]

    def test_max_order_respected(self):
        space, qs = self.propose(q=8, max_order=1)
        assert qs and max(query.perturbation.order for query in qs) <= space.max_order == 1

    def test_time_limit_respected(self):
        # A 1e4 pool and q = 32 take several seconds without a limit; with 1 s the strategy must stop in time.
        limit = 1.0
        strategy = self.make(time_limit_s=limit)
        if hasattr(strategy, "pool_size"):
            strategy.pool_size = 10_000
        # CPU time of this process, on one torch thread: it cannot exceed the wall time the strategy stops at,
        # and unlike wall time it does not grow when other jobs load the machine (no flaky timing).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.process_time()
            _, qs = self.propose(q=32, budget=1e4, strategy=strategy)
            elapsed = time.process_time() - t0
        finally:
            torch.set_num_threads(threads)
        assert qs, "no proposal within the time limit"
        assert elapsed <= limit + self.time_slack_s, f"took {elapsed:.2f} s for a {limit} s limit"

    def test_pool_mode_proposes_only_pool_members(self):
        base = self.space()
        rng = np.random.default_rng(5)
        members = base.grid(
            n_doses=3, times_h=(6.0, 24.0), orders=(0, 1), assays=("scrna", "cell_painting"), contexts=base.contexts[:1]
        )
        pool = tuple(members[i] for i in rng.choice(len(members), size=24, replace=False))
        space = DesignSpace(base.targets, base.contexts, base.assays, max_order=base.max_order, pool=pool)
        qs = self.make().propose(self.model(space), space, None, 30, 100.0, np.random.default_rng(0))
        ids = {query.query_id for query in qs}
        assert qs and ids <= space.pool_ids and len(ids) == len(qs)
