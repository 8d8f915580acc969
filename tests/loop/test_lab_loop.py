"""Pool mode end to end: a screen exported by simulators.export, replayed through the lab adapter."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from experiment_design import keys
from loop.config import RunConfig
from loop.ledger import Ledger
from loop.rounds import RoundStore
from loop.study import Study
from simulators.export import main as export_main
from simulators.lab import LabAdapter


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    out = tmp_path_factory.mktemp("screen") / "screen.h5ad"
    export_main(
        [
            "--world",
            "small",
            "--design",
            "random",
            "--n",
            "60",
            "--out",
            str(out),
            "--seed",
            "4",
            "--assays",
            "scrna,molecular,cite_seq",
            "--replicates",
            "2",
        ]
    )
    return out


def test_pool_mode_runs_end_to_end_from_the_pool_only(screen, tmp_path):
    root = tmp_path / "run"
    config = RunConfig(
        oracle="lab",
        data=str(screen),
        budget=30,
        batch_size=6,
        n_members=2,
        initial_size=6,
        heldout_per_axis=3,
        strategy="eig",
        seed=1,
        model_options={"max_steps": 120, "warm_steps": 40},
    )
    study = Study.create(root, config)
    metrics = study.run()
    pool = {q.query_id for q in LabAdapter.from_file(screen).space.pool}
    store = RoundStore(root)
    proposed = [q for r in metrics["round"] for q in store.read_proposal(r)]
    assert {q.query_id for q in proposed} <= pool
    data = Ledger(root).load()
    for m in data.modalities.values():  # replicates are handed out without replacement
        assert not m.obs.drop_duplicates([keys.SPECIMEN, keys.UNIT]).duplicated([keys.SPECIMEN, keys.UNIT]).any()
        assert m.obs.groupby(keys.SPECIMEN)[keys.UNIT].apply(lambda u: u.is_unique).all()
    held = {q.query_id for qs in study.heldout.sets.values() for q in qs}
    assert held and not held & set(data.query_ids)  # the stress sets are held out of the pool
    assert {"ident_contraction", "ident_fisher_min", "ident_fisher_cond", "ident_heldout"} <= set(metrics.columns)
    assert metrics["spent"].iloc[-1] <= 30 + 1e-9 and (root / "checkpoints" / "finished.json").is_file()
    # the risk's yardstick: the pool's control conditions (the trainable ones), handed out to nobody
    reference = study.heldout.reference()
    assert reference is not None and metrics["risk"].notna().all() and metrics["risk_training_controls"].notna().all()
    obs = pd.concat([m.obs for m in reference.modalities.values()])
    ref_ids = set(obs[keys.QUERY_ID])
    controls = {q.query_id for q in study.heldout.space.pool if q.perturbation.is_control}
    controls -= {q.query_id for q in study.heldout.space.pool if study.heldout.blocked(q)}
    assert ref_ids == controls and controls
    assert not set(obs[keys.SPECIMEN]) & study._used_specimens(-1)  # what counts as handed out before round 0


def _one_sample_atlas(path, cells: int = 12, genes: int = 30):
    """A CRISPRi atlas subset as scPerturb writes it: one sample per condition, its cells the units."""
    rng = np.random.default_rng(1)
    labels = ["non-targeting", "KLF1", "GATA1", "CEBPA", "SPI1", "GATA1+KLF1", "CEBPA+SPI1"]
    rows = [(lab, line) for line in ("K562", "RPE1") for lab in labels]
    obs = pd.DataFrame(
        [
            {"perturbation": lab, "perturbation_type": "CRISPRi", "cell_line": line, "time": 96.0}
            for lab, line in rows
            for _ in range(cells)
        ]
    )
    effect = rng.normal(0, 0.5, (len(rows), genes))
    X = rng.poisson(np.exp(1.0 + np.repeat(effect, cells, 0))).astype(np.float32)
    ad.AnnData(
        X=X,
        obs=obs.set_axis([f"c{i}" for i in range(len(obs))]),
        var=pd.DataFrame(index=[f"G{j}" for j in range(genes)]),
    ).write_h5ad(path)
    return len(rows)


def test_one_sample_per_condition_never_asks_for_more_than_the_data_holds(tmp_path):
    screen = tmp_path / "atlas.h5ad"
    n_conditions = _one_sample_atlas(screen)
    # The initial design takes a control per context, then a space-filling set from the same few conditions.
    config = RunConfig(
        oracle="lab",
        data=str(screen),
        budget=14,
        batch_size=4,
        n_members=2,
        initial_size=12,
        initial_budget_fraction=0.9,
        heldout_per_axis=0,
        strategy="random",
        seed=2,
        model_options={"max_steps": 60, "warm_steps": 20},
    )
    metrics = Study.create(tmp_path / "run", config).run()
    obs = Ledger(tmp_path / "run").load().modalities["rna"].obs
    assert (obs.groupby(keys.SPECIMEN)[keys.ROUND].nunique() == 1).all()  # each sample handed out once
    assert obs[keys.SPECIMEN].nunique() <= n_conditions and len(metrics) >= 1
    assert set(obs[keys.PERTURBATION]) >= {"control", "GATA1+KLF1"}


def test_a_directory_of_per_line_files_is_one_screen_from_the_command_line(tmp_path):
    """Atlases ship one file per plate or cell line: ``--data DIR`` (or a glob) replays them together, lazily."""
    from loop.run import main

    whole = tmp_path / "whole.h5ad"
    _one_sample_atlas(whole)
    a = ad.read_h5ad(whole)
    plates = tmp_path / "plates"
    plates.mkdir()
    for line in ("K562", "RPE1"):
        a[a.obs["cell_line"] == line].copy().write_h5ad(plates / f"{line}.h5ad")
    with pytest.raises(ValueError, match="no file matches"):
        RunConfig(oracle="lab", data=str(tmp_path / "nowhere" / "*.h5ad")).validate()
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        'oracle = "lab"\nbudget = 10\nbatch_size = 4\nn_members = 2\ninitial_size = 8\nheldout_per_axis = 0\n'
        'strategy = "random"\nmodel_options = {max_steps = 40, warm_steps = 20}\ndata_mapping = {lazy = true}\n'
    )
    root = tmp_path / "run"
    assert (
        main(["--config", str(cfg), "--data", str(plates / "*.h5ad"), "--out", str(root), "--quiet", "--no-report"])
        == 0
    )
    obs = Ledger(root).load().modalities["rna"].obs
    assert set(obs[keys.CELL_LINE]) == {"K562", "RPE1"}  # conditions of both files were measured
    assert (root / "checkpoints" / "finished.json").is_file()
