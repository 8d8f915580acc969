"""Decoder information per modality (``acquisition.coverage``): what the first specimens of a modality are worth."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from acquisition_fakes import small_space

from acquisition.coverage import ModalityCoverage, observed_specimens
from acquisition.readouts import pool_positions
from experiment_design import MeasurementBatch, ModalityData, keys


def ledger_of(counts: dict[str, int], replicates: int = 1) -> MeasurementBatch:
    """A ledger with ``counts[m]`` queries of modality ``m``, each ``replicates`` specimens of 3 units (cells)."""
    out = {}
    for m, n in counts.items():
        rows = [
            {c: "x" for c in keys.OBS_COLUMNS}
            | {keys.QUERY_ID: f"q{i}", keys.REPLICATE: r, keys.SPECIMEN: f"q{i}:{r}", keys.UNIT: u}
            for i in range(n)
            for r in range(replicates)
            for u in range(3)
        ]
        out[m] = ModalityData(pd.DataFrame(rows), np.zeros((len(rows), 2)), ("a", "b"))
    return MeasurementBatch(out)


def test_specimens_are_counted_per_specimen_not_per_cell():
    seen = observed_specimens(ledger_of({"rna": 4, "adt": 2}, replicates=2))
    assert seen == {"rna": 8, "adt": 4}
    assert observed_specimens(None) == {}


def test_the_first_specimen_of_an_unseen_modality_is_worth_half_log_two_and_later_ones_less():
    # candidates: 0 observes rna only, 1 observes rna + adt (an anchor), 2 observes adt only
    counts = np.array([[1, 0], [1, 1], [0, 1]], dtype=float)
    acqf = ModalityCoverage(counts, seen=np.array([99.0, 0.0]))
    X = pool_positions(3).unsqueeze(-2)
    v = acqf(X)
    assert float(v[2]) == pytest.approx(0.5 * math.log(2.0))  # n0 = 1, nothing seen: ½ log 2
    assert float(v[0]) == pytest.approx(0.5 * math.log1p(1 / 100))  # the 100th RNA specimen is worth little
    assert float(v[1]) == pytest.approx(float(v[0] + v[2]))  # an anchor adds both modalities
    # a pending ADT specimen halves what the next one is worth (the batch is valued jointly)
    acqf.set_X_pending(pool_positions(3)[[2]])
    gain = float(acqf(X[[2]])) - 0.5 * math.log(2.0)
    assert gain == pytest.approx(0.5 * math.log(3 / 2))
    acqf.set_X_pending(None)
    assert float(acqf(X[[2]])) == pytest.approx(0.5 * math.log(2.0))


def test_pool_counts_follow_each_assay_s_modalities():
    space = small_space()
    queries = [q for a in space.assays for q in space.sample(20, np.random.default_rng(0), assays=[a.name])[:1]]
    acqf = ModalityCoverage.of_pool(space, queries, None)
    values = acqf(pool_positions(len(queries)).unsqueeze(-2))
    for q, v in zip(queries, values, strict=True):
        n_mod = len(space.assay(q.assay).modalities)
        assert float(v) == pytest.approx(n_mod * 0.5 * math.log(2.0))
    with pytest.raises(ValueError, match="not a position"):
        acqf(torch.tensor([[[len(queries) + 0.0]]], dtype=torch.float64))


@pytest.fixture(scope="module")
def fitted_without_adt():
    """A small-world ensemble fitted on scRNA and molecular wells only: ADT, morphology and spots never seen."""
    import simulators
    from models import CSLEnsemble

    torch.set_num_threads(1)
    world = simulators.make_world("small", seed=0)
    space = world.space
    queries = space.sample(24, np.random.default_rng(0), assays=["scrna", "molecular"])
    data = world.measure(queries)
    model = CSLEnsemble(space, n_members=2, seed=0, max_steps=60, warm_steps=20)
    model.fit(data)
    return space, model, data


def test_cost_aware_buys_the_first_wells_of_a_modality_it_has_never_seen(fitted_without_adt):
    from acquisition.cost_aware import CostAwareStrategy

    space, model, data = fitted_without_adt
    seen = set(data.modalities)

    def new_modality_wells(share: float, seed: int) -> int:
        strategy = CostAwareStrategy(pool_size=400, coverage_share=share)
        queries = strategy.propose(model, space, data, 12, 150.0, np.random.default_rng(seed))
        return sum(bool(set(space.assay(q.assay).modalities) - seen) for q in queries)

    with_coverage = [new_modality_wells(0.25, s) for s in range(2)]
    without = [new_modality_wells(0.0, s) for s in range(2)]
    assert min(with_coverage) >= 1  # every batch opens at least one unseen modality
    assert sum(with_coverage) > sum(without)
