"""Candidates are found by position, never by comparing floats (issue: a pool lookup that broke on AMD CPUs).

The pool-indexed acquisition functions take pool positions, so nothing about
a candidate's encoding (the last bit of a matmul, the order of the pool, the
shape of a batch) can send a lookup to the wrong row. These tests propose
with every registered strategy over many random pools and batch sizes, and
with a shuffled pool, and check the positions contract directly.
"""

import numpy as np
import pytest
import torch
from acquisition_fakes import BumpEnsemble, small_space

import acquisition
from acquisition.base import Proposal
from acquisition.botorch_strategy import BotorchStrategy, EnsemblePoolStrategy, Pool
from acquisition.readouts import PoolEnsembleModel, pool_positions, pool_rows

#: Small settings so that every strategy runs quickly (the property is the same at any size).
SMALL = {"nipv": {"n_train": 32, "mc_points": 32}, "discovery": {"n_samples": 8}}


def _strategy(name: str, pool_size: int):
    cls = acquisition.get(name)
    kwargs = dict(SMALL.get(name, {}))
    if issubclass(cls, BotorchStrategy):
        kwargs["pool_size"] = pool_size
    return cls(time_limit_s=600.0, **kwargs)


def _case(seed: int):
    """A random space, model, pool size and batch size (q from 1 to 32)."""
    rng = np.random.default_rng(seed)
    space = small_space(
        n_compounds=int(rng.integers(2, 7)), n_genes=int(rng.integers(0, 4)), max_order=int(rng.integers(1, 4))
    )
    model = BumpEnsemble(
        space, n_members=int(rng.integers(3, 9)), modalities={"rna": 12, "adt": 4, "morphology": 5}, seed=seed
    )
    q = (1, 32, *rng.integers(2, 32, size=4))[seed % 6]
    return space, model, int(rng.integers(40, 400)), int(q)


@pytest.mark.parametrize("name", acquisition.STRATEGIES.names)
@pytest.mark.parametrize("seed", range(6))
def test_every_strategy_proposes_valid_batches_over_random_pools(name, seed):
    space, model, pool_size, q = _case(seed)
    strategy = _strategy(name, pool_size)
    qs = strategy.propose(model, space, None, q, 1e6, np.random.default_rng(seed))
    assert 1 <= len(qs) <= q
    assert len({x.query_id for x in qs}) == len(qs), "a batch repeats a condition"
    for x in qs:
        space.validate(x)
    assert not Proposal.of(qs).truncated, "a 600 s limit must never bind on this small case"


#: Strategies whose acquisition reads the ensemble pool model, a function of the candidates alone
#: (``nipv`` fits its GP at a seeded random subset of the pool and ``discovery`` draws Monte Carlo
#: member samples, so their values, not only their lookups, depend on the pool's order).
POOL_STRATEGIES = [
    n for n in acquisition.STRATEGIES.names if issubclass(acquisition.get(n), EnsemblePoolStrategy) or n == "cost_aware"
]


@pytest.mark.parametrize("name", POOL_STRATEGIES)
@pytest.mark.parametrize("seed", range(3))
def test_a_shuffled_pool_gives_an_equally_good_batch(name, seed):
    """The batch depends on the candidates, not on where they sit in the pool or on their encodings' bits."""
    space, model, pool_size, q = _case(seed + 10)
    strategy = _strategy(name, pool_size)
    pool = strategy.candidate_pool(space, np.random.default_rng(seed), 1e6)
    perm = np.random.default_rng(seed + 1).permutation(len(pool.queries))
    shuffled = Pool([pool.queries[i] for i in perm], pool.X[perm], pool.cost[perm])
    picks = []
    for p in (pool, shuffled):
        with torch.no_grad():
            acqf, p = strategy.build_acqf(model, space, p, None, np.random.default_rng(7), float("inf"))
            chosen = strategy._greedy(acqf, p, q, 1e6, np.random.default_rng(8), float("inf"))
            X = p.inputs(acqf)[chosen]
            acqf.set_X_pending(None)
            additive = strategy.scores_once(acqf)
            value = float(acqf(X.unsqueeze(-2)).sum() if additive else acqf(X.unsqueeze(0)))
        picks.append(({p.queries[i].query_id for i in chosen}, value))
    (a, va), (b, vb) = picks
    assert len(a) == len(b) == min(q, len(pool.queries))
    # Near-ties may resolve differently; the value of the batch may not.
    assert va == pytest.approx(vb, rel=1e-4, abs=1e-8)
    assert len(a & b) >= 0.5 * len(a)


def test_positions_survive_reshaping_and_reject_anything_else():
    pos = pool_positions(1000)
    rows = torch.as_tensor(np.random.default_rng(0).integers(0, 1000, size=(7, 5)))
    X = pos[rows]  # (7, 5, 1), as the greedy loop builds batches
    assert torch.equal(pool_rows(X, 1000), rows)
    assert torch.equal(pool_rows(X.reshape(35, 1, 1), 1000).reshape(7, 5), rows)
    with pytest.raises(ValueError, match="pool positions of shape"):
        pool_rows(torch.zeros(3, 4), 1000)  # encodings are not positions
    with pytest.raises(ValueError, match="not a position in a pool of 10"):
        pool_rows(torch.tensor([[3.0], [10.0]]), 10)
    with pytest.raises(ValueError, match="not a position"):
        pool_rows(torch.tensor([[2.5]]), 10)


def test_pool_model_reads_rows_by_position_whatever_the_encodings():
    """Two pool rows whose encodings differ only in the last bit are still two distinct candidates."""
    X = torch.rand(50, 6, dtype=torch.float64)
    X[1] = torch.nextafter(X[0], X[0] + 1)  # one ulp apart
    values = torch.randn(50, 4, 3, dtype=torch.float64)
    model = PoolEnsembleModel(X, values)
    out = model(pool_positions(50)[[1, 0, 49]].unsqueeze(0))  # (1, M, 3, O)
    assert torch.equal(out[0].transpose(0, 1), values[[1, 0, 49]])
