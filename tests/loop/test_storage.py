import numpy as np
import pandas as pd
import pytest

from experiment_design import MeasurementBatch, ModalityData, keys
from loop.ledger import Ledger
from loop.rounds import RoundStatus, RoundStore
from loop.storage import atomic_write, clean_temporaries, read_json, read_table, write_json


def _batch(qid: str, n: int = 4) -> MeasurementBatch:
    obs = pd.DataFrame({c: "x" for c in keys.OBS_COLUMNS}, index=range(n))
    obs[keys.QUERY_ID] = qid
    obs[keys.MODALITY] = "rna"
    obs[keys.TIME] = 6.0
    obs[keys.REPLICATE] = 0
    obs[keys.UNIT] = np.arange(n)
    return MeasurementBatch({"rna": ModalityData(obs, np.arange(n * 3).reshape(n, 3), ("g0", "g1", "g2"))})


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})

    def boom(fh):
        fh.write(b'{"v": 2')
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_clean_temporaries_removes_only_strays(tmp_path):
    (tmp_path / "ledger").mkdir()
    stray = tmp_path / "ledger" / ".round-0001.parquet.tmp-123"
    stray.write_bytes(b"half")
    keep = tmp_path / "ledger" / "round-0000.parquet"
    keep.write_bytes(b"x")
    assert clean_temporaries(tmp_path) == [stray]
    assert keep.exists() and not stray.exists()


def test_ledger_appends_and_reloads_losslessly(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(0, _batch("q0"))
    ledger.append(1, _batch("q1", 2))
    assert ledger.rounds() == [0, 1]
    data = ledger.load()
    assert data.query_ids == ["q0", "q1"]
    np.testing.assert_array_equal(data.modalities["rna"].X[:4], _batch("q0").modalities["rna"].X)
    assert list(data.modalities["rna"].obs[keys.ROUND]) == [0] * 4 + [1] * 2
    assert ledger.load(upto=0).query_ids == ["q0"]


def test_truncated_shard_is_a_clear_error(tmp_path):
    ledger = Ledger(tmp_path)
    path = ledger.append(0, _batch("q0"))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="round-0000.parquet: unreadable Parquet"):
        ledger.load()
    with pytest.raises(ValueError, match="unreadable Parquet"):
        read_table(path)


def test_ledger_decodes_each_shard_version_once_and_hands_out_copies(tmp_path, monkeypatch):
    decoded = []
    from_arrow = MeasurementBatch.from_arrow.__func__
    monkeypatch.setattr(
        MeasurementBatch, "from_arrow", classmethod(lambda cls, t: decoded.append(1) or from_arrow(cls, t))
    )
    ledger = Ledger(tmp_path)
    path = ledger.append(0, _batch("q0"))
    ledger.load()
    ledger.load(upto=0)
    first = ledger.read_round(0)
    assert len(decoded) == 1, "an unchanged shard is decoded once"
    first.modalities["rna"].X[:] = -1.0  # what a caller does with its batch never reaches the next reader
    ledger.load().modalities["rna"].X[:] = -2.0
    assert ledger.read_round(0).modalities["rna"].X.min() == 0.0
    ledger.append(0, _batch("q9"))  # a rewritten shard is read again, never served stale
    assert ledger.load().query_ids == ["q9"] and len(decoded) == 2
    path.write_bytes(path.read_bytes()[:50])  # ... and so is one damaged after it was read
    with pytest.raises(ValueError, match="round-0000.parquet: unreadable Parquet"):
        ledger.load()


def test_round_status_and_metrics(tmp_path):
    store = RoundStore(tmp_path)
    assert store.last_round() is None and store.read_status(0) is None
    store.write_status(0, RoundStatus.PROPOSED, acquire_s=1.0)
    store.write_status(0, RoundStatus.MEASURED, measure_s=2.0)
    rec = store.read_status(0)
    assert rec["status"] is RoundStatus.MEASURED and rec["acquire_s"] == 1.0 and rec["measure_s"] == 2.0
    row = {"round": 0, "spent": 5.0, "n_queries": 3, "identifiability": 0.2, "ident_a": 0.1, "wall_s": 1.0}
    store.write_metric_row(row)
    df = store.write_metric_row({**row, "identifiability": 0.3})
    assert len(df) == 1 and df["identifiability"].iloc[0] == 0.3
    assert list(df.columns[:4]) == ["round", "spent", "n_queries", "identifiability"]
    assert df.columns[4] == "ident_a"
