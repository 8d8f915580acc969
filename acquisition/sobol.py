"""``sobol``: a space-filling (scrambled Sobol) design over the query encoding."""

from __future__ import annotations

import numpy as np
import torch
from torch.quasirandom import SobolEngine

from acquisition.base import Strategy
from acquisition.random_design import fill_budget
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch, Query


def sobol_queries(
    space: DesignSpace,
    engine: SobolEngine,
    n: int,
    assays: list[str],
) -> list[Query]:
    """``n`` queries from the next ``n`` Sobol points of ``engine``.

    Each categorical column maps ``u ∈ [0, 1)`` to category ``⌊u · n_categories⌋``
    (the assay column over ``assays`` only); continuous columns are used as
    they are. Target slots may come out empty (fewer targets) or repeated
    (decoding keeps one), so the order varies from control to ``max_order``.

    """
    enc = space.encoding
    U = engine.draw(n, dtype=torch.float64)
    X = U.clone()
    for dim, n_cat in enc.n_categories.items():
        if dim == enc.assay_dim:
            continue
        X[:, dim] = torch.clamp(torch.floor(U[:, dim] * n_cat), max=n_cat - 1)
    allowed = torch.tensor([space.assay_index[a] for a in assays], dtype=torch.float64)
    pick = torch.clamp(torch.floor(U[:, enc.assay_dim] * len(assays)), max=len(assays) - 1).long()
    X[:, enc.assay_dim] = allowed[pick]
    if space.pool:
        return nearest_pool_members(space, X, assays)
    return space.decode(X)


def nearest_pool_members(space: DesignSpace, X: torch.Tensor, assays: list[str]) -> list[Query]:
    """For each row of ``X`` (in order), the nearest pool member not taken yet (encoding scaled to [0, 1])."""
    members = [query for query in space.pool if query.assay in assays]
    if not members:
        return []
    scale = space.encoding.bounds[1].clamp(min=1.0)
    P = space.encode(members) / scale
    dist = torch.cdist(X / scale, P)  # (n, n_members)
    out: list[Query] = []
    for row in dist:
        row = row.clone()
        row[[members.index(query) for query in out]] = float("inf")
        if torch.isinf(row).all():
            break
        out.append(members[int(row.argmin())])
    return out


@register("sobol")
class SobolStrategy(Strategy):
    """Scrambled Sobol points over the encoding, decoded to queries.

    With a candidate pool (``space.pool``) each point is replaced by its
    nearest pool member.

    The scrambling seed comes from ``rng``; the sequence is fast-forwarded by
    the number of queries already in the ledger, so consecutive rounds under
    one seed continue one low-discrepancy sequence.
    """

    def propose(
        self,
        model: object | None,
        space: DesignSpace,
        ledger: MeasurementBatch | None,
        q: int,
        budget_left: float,
        rng: np.random.Generator,
    ) -> list[Query]:
        """Return the next ``q`` Sobol queries that fit in ``budget_left``."""
        engine = SobolEngine(space.encoding.dim, scramble=True, seed=int(rng.integers(2**31 - 1)))
        engine.fast_forward(len(ledger.query_ids) if ledger is not None and len(ledger) else 0)
        return fill_budget(lambda n, assays: sobol_queries(space, engine, n, assays), space, q, budget_left)
