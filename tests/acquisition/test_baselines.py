"""The baselines behave as documented: dose-series order and continuation, Sobol stratification."""

import numpy as np
import pandas as pd
from acquisition_fakes import small_space

from acquisition.dose_grid import DoseGridStrategy, middle_out
from acquisition.sobol import SobolStrategy
from experiment_design import MeasurementBatch, ModalityData, keys


def ledger_of(queries):
    """A minimal ledger: one RNA row per query."""
    obs = pd.DataFrame({c: [""] * len(queries) for c in keys.OBS_COLUMNS})
    obs[keys.QUERY_ID] = [q.query_id for q in queries]
    return MeasurementBatch({"rna": ModalityData(obs, np.zeros((len(queries), 1)), ("g0",))})


def test_middle_out_visits_every_index_once():
    assert middle_out(5) == [2, 3, 1, 4, 0]
    assert sorted(middle_out(6)) == list(range(6))


def test_dose_grid_is_scrna_round_robin_controls_first():
    space = small_space()
    strategy = DoseGridStrategy(times_h=(6.0, 24.0))
    n_ctrl = 2 * len(space.contexts)
    n_level = len(space.contexts) * len(space.targets)
    qs = strategy.propose(None, space, None, n_ctrl + n_level, 1e6, np.random.default_rng(0))
    assert {q.assay for q in qs} == {"scrna"}
    assert all(q.perturbation.is_control for q in qs[:n_ctrl])
    first_level = qs[n_ctrl:]
    # one dose level at one time visits every target in every context before the next level
    assert len({(q.perturbation.targets, q.context) for q in first_level}) == n_level
    compounds = [q for q in first_level if q.perturbation.targets[0].startswith("CMP")]
    assert len({(q.time_h, q.perturbation.doses) for q in compounds}) == 1


def test_dose_grid_continues_where_the_ledger_left_off():
    space = small_space()
    strategy = DoseGridStrategy()
    rng = np.random.default_rng(0)
    first = strategy.propose(None, space, None, 10, 100.0, rng)
    second = strategy.propose(None, space, ledger_of(first), 10, 100.0, rng)
    both = strategy.propose(None, space, None, 20, 100.0, rng)
    assert [q.query_id for q in first + second] == [q.query_id for q in both]


def test_dose_grid_reaches_pairs_after_the_singles():
    space = small_space()
    strategy = DoseGridStrategy(n_doses=2, times_h=(24.0,))
    n_singles = len(space.contexts) * (1 + 2 * len(space.targets))
    qs = strategy.propose(None, space, None, n_singles + 3, 1e6, np.random.default_rng(0))
    assert max(q.perturbation.order for q in qs[:n_singles]) == 1
    assert all(q.perturbation.order == 2 for q in qs[n_singles:])


def test_sobol_stratifies_time_better_than_random():
    space = small_space()
    qs = SobolStrategy().propose(None, space, None, 16, 1e6, np.random.default_rng(0))
    bins = {int(q.time_h // 3.0) for q in qs}  # 16 bins of 3 h over 0-48 h
    assert len(qs) == 16 and len(bins) == 16  # a scrambled Sobol net puts one point in each bin
