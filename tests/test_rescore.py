"""``bench.rescore``: the stored risk reproduced from checkpoints, and the same risk against reference controls."""

import dataclasses
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import rescore  # noqa: E402
from loop.config import RunConfig  # noqa: E402
from loop.heldout import REFERENCE_REPLICATES, reference_queries  # noqa: E402
from loop.study import Study  # noqa: E402

FAST = dict(
    world="small",
    budget=12.0,
    batch_size=4,
    n_members=2,
    initial_size=4,
    heldout_per_axis=2,
    time_limit_s=60.0,
    model_options={"max_steps": 30, "warm_steps": 10},  # the plumbing of the rescoring, not the model's science
)


def test_reference_controls_cover_every_assay_and_context_and_refuse_pools():
    import simulators

    space = simulators.make_world("small", seed=0).space
    qs = reference_queries(space)
    assert {(q.assay, q.context) for q in qs} == {(a.name, c) for a in space.assays for c in space.contexts}
    assert len(qs) == len(space.assays) * len(space.contexts)
    lo, hi = space.time_range_h
    assert all(q.perturbation.is_control and q.time_h == lo + 0.5 * (hi - lo) for q in qs)
    assert all(q.replicates == REFERENCE_REPLICATES for q in qs)
    with pytest.raises(ValueError, match="pool"):
        reference_queries(dataclasses.replace(space, pool=tuple(qs[:2])))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescore")
    for strategy in ("random", "uncertainty"):
        Study.create(root / "runs" / f"{strategy}-seed0", RunConfig(**FAST, strategy=strategy, seed=0)).run()
    return root


def test_rescoring_reproduces_the_stored_risk_and_adds_the_reference_one(study, capsys):
    assert rescore.main([str(study)]) == 0
    out = capsys.readouterr().out
    assert "2 runs rescored" in out and "ratio_reference" in out and "uncertainty" in out
    for run in ("random-seed0", "uncertainty-seed0"):
        table = pd.read_parquet(study / "rescored" / f"{run}.parquet")
        metrics = pd.read_parquet(study / "runs" / run / "metrics.parquet").sort_values("round")
        assert table["round"].tolist() == metrics["round"].tolist()
        # every round's checkpoint and training data give back the risk the run stored
        assert (table["risk_stored"] - metrics["risk"].to_numpy()).abs().max() <= 1e-9  # same machine: exact
        assert table["risk_reference"].between(0, 2).all()
        parts = [f"risk_{a}_reference" for a in ("modality", "scale", "context", "intervention")]
        assert table[parts].notna().any().all()
    # resumable: a second call reads the cache instead of rescoring
    before = (study / "rescored" / "random-seed0.parquet").stat().st_mtime_ns
    assert rescore.main([str(study)]) == 0
    assert (study / "rescored" / "random-seed0.parquet").stat().st_mtime_ns == before


def test_a_folder_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert rescore.main([str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
