"""The risk's reference controls, and ``bench.rescore``: both definitions of the risk reproduced from checkpoints."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import TINY_RUN  # noqa: E402

from bench import rescore  # noqa: E402
from experiment_design import Perturbation  # noqa: E402
from loop.config import RunConfig  # noqa: E402
from loop.heldout import REFERENCE_POOL_SPECIMENS, REFERENCE_REPLICATES, HeldOut, reference_queries  # noqa: E402
from loop.study import Study  # noqa: E402

FAST = {**TINY_RUN, "budget": 12.0}


def test_reference_controls_are_every_assay_in_every_trainable_context():
    import simulators
    from experiment_design.stress import held_contexts

    space = simulators.make_world("small", seed=0).space
    qs = reference_queries(space)
    assert {(q.assay, q.context) for q in qs} == {(a.name, c) for a in space.assays for c in space.contexts}
    assert len(qs) == len(space.assays) * len(space.contexts)
    lo, hi = space.time_range_h
    assert all(q.perturbation.is_control and q.time_h == lo + 0.5 * (hi - lo) for q in qs)
    assert all(q.replicates == REFERENCE_REPLICATES for q in qs)
    # what the leakage rule blocks no design can measure, so it is not part of the yardstick either
    held = HeldOut(Path("/nonexistent-run"), space, seed=0, n_per_axis=2)
    kept = reference_queries(space, held.blocked)
    gone = held_contexts(held.sets)
    assert gone and kept and not any(q.context in gone for q in kept)
    assert len(kept) == len(space.assays) * (len(space.contexts) - len(gone))


def test_reference_controls_of_measured_data_are_its_control_conditions():
    import simulators

    space = simulators.make_world("small", seed=0).space
    controls = reference_queries(space)[:3]
    treated = [dataclasses.replace(q, perturbation=Perturbation(("T1",), (1.0,))) for q in controls[:2]]
    pooled = dataclasses.replace(space, pool=(*controls, *treated))
    stored = {controls[0].query_id: ("a", "b"), controls[1].query_id: tuple("abcdefghijk"), controls[2].query_id: ()}
    qs = reference_queries(pooled, specimens=lambda qid: stored.get(qid, ("x",)))
    # every control condition with specimens, with up to REFERENCE_POOL_SPECIMENS of them; no treated one
    assert [(q.query_id, q.replicates) for q in qs] == [
        (controls[0].query_id, 2),
        (controls[1].query_id, REFERENCE_POOL_SPECIMENS),
    ]
    with pytest.raises(ValueError, match="specimens"):
        reference_queries(pooled)


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
        # every round's checkpoint and training data give back both risks the run stored (same machine: exact)
        assert (table["risk_reference"] - metrics["risk"].to_numpy()).abs().max() <= 1e-9
        assert (table["risk_training_controls"] - metrics["risk_training_controls"].to_numpy()).abs().max() <= 1e-9
        assert rescore.reproduction_error(table) <= 1e-9
        parts = [f"risk_{a}_reference" for a in ("modality", "scale", "context", "intervention")]
        assert table[parts].notna().any().all()
    # resumable: a second call reads the cache instead of rescoring
    before = (study / "rescored" / "random-seed0.parquet").stat().st_mtime_ns
    assert rescore.main([str(study)]) == 0
    assert (study / "rescored" / "random-seed0.parquet").stat().st_mtime_ns == before


def test_a_folder_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert rescore.main([str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_a_run_scores_against_its_reference_and_an_earlier_run_keeps_its_yardstick(study, tmp_path, monkeypatch):
    import shutil

    from experiment_design import MeasurementBatch, keys
    from experiment_design.splits import queries_of_obs
    from loop import faults
    from loop.storage import read_table

    run = study / "runs" / "random-seed0"
    # the reference is stored apart from the ledger and the axes: controls only, of every assay
    reference = MeasurementBatch.from_arrow(read_table(run / "heldout" / "reference" / "controls.parquet"))
    obs = pd.concat([m.obs for m in reference.modalities.values()]).drop_duplicates(keys.QUERY_ID)
    queries = queries_of_obs(obs)
    assert queries and all(q.perturbation.is_control for q in queries)
    assert {q.assay for q in queries} == {a.name for a in Study.open(run).space.assays}
    metrics = pd.read_parquet(run / "metrics.parquet")
    assert (metrics["risk"] - metrics["risk_training_controls"]).abs().max() > 1e-6, "two yardsticks, two risks"

    # A run scored before the reference existed: resumed, it keeps the training data's yardstick throughout.
    root = tmp_path / "earlier"
    monkeypatch.setenv(faults.ENV, "0:scored")
    with pytest.raises(faults.InjectedCrash):
        Study.create(root, RunConfig(**FAST, strategy="random", seed=0)).run()
    monkeypatch.delenv(faults.ENV)
    shutil.rmtree(root / "heldout" / "reference")
    earlier = pd.read_parquet(root / "metrics.parquet")
    earlier["risk"] = earlier["risk_training_controls"]  # what a run of before stored
    earlier.drop(columns="risk_training_controls").to_parquet(root / "metrics.parquet")
    Study.open(root).run()
    assert not (root / "heldout" / "reference").exists()
    resumed = pd.read_parquet(root / "metrics.parquet")
    assert resumed["round"].tolist() == metrics["round"].tolist()
    np.testing.assert_allclose(resumed["risk"], metrics["risk_training_controls"], rtol=0, atol=1e-12)
