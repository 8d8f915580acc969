"""Pool mode end to end: a screen exported by simulators.export, replayed through the lab adapter."""

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
    export_main(["--world", "small", "--design", "random", "--n", "60", "--out", str(out), "--seed", "4",
                 "--assays", "scrna,molecular,cite_seq", "--replicates", "2"])
    return out


def test_pool_mode_runs_end_to_end_from_the_pool_only(screen, tmp_path, ray_session):
    root = tmp_path / "run"
    config = RunConfig(oracle="lab", data=str(screen), budget=30, batch_size=6, n_members=2, initial_size=6,
                       heldout_per_axis=3, strategy="eig", seed=1, model={"max_steps": 120, "warm_steps": 40})
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
