import numpy as np
import pandas as pd
import pytest

from experiment_design import MeasurementBatch, ModalityData, keys


def _modality(n: int, f: int, qid: str, modality: str, seed: int) -> ModalityData:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            keys.QUERY_ID: qid,
            keys.PERTURBATION: "A+B",
            keys.DOSE_VALUE: "1.0+0.5",
            keys.DOSE_UNIT: "uM+uM",
            keys.TIME: 6.0,
            keys.TIME_UNIT: "h",
            keys.CELL_LINE: "L0",
            keys.SITE: "S0",
            keys.BATCH: "S0",
            keys.ASSAY: "cite_seq",
            keys.MODALITY: modality,
            keys.REPLICATE: 0,
            keys.SPECIMEN: f"{qid}:0",
            keys.UNIT: np.arange(n),
        }
    )
    return ModalityData(obs, rng.poisson(5, size=(n, f)).astype(np.float32), [f"{modality}{i}" for i in range(f)])


@pytest.fixture
def batch() -> MeasurementBatch:
    return MeasurementBatch({"rna": _modality(7, 5, "q1", "rna", 0), "adt": _modality(7, 3, "q1", "adt", 1)})


def _assert_same(a: MeasurementBatch, b: MeasurementBatch) -> None:
    assert set(a.modalities) == set(b.modalities)
    for name in a.modalities:
        x, y = a.modalities[name], b.modalities[name]
        np.testing.assert_array_equal(x.X, y.X)
        assert x.var_names == y.var_names
        pd.testing.assert_frame_equal(x.obs[list(keys.OBS_COLUMNS)], y.obs[list(keys.OBS_COLUMNS)], check_dtype=False)


def test_arrow_round_trip_is_lossless(batch):
    _assert_same(batch, MeasurementBatch.from_arrow(batch.to_arrow()))


def test_anndata_round_trip_is_lossless_and_pairs_obs_names(batch):
    adatas = batch.to_anndata()
    assert list(adatas["rna"].obs_names) == list(adatas["adt"].obs_names)
    _assert_same(batch, MeasurementBatch.from_anndata(adatas))


def test_concat_and_subset(batch):
    other = MeasurementBatch({"rna": _modality(4, 5, "q2", "rna", 2)})
    both = MeasurementBatch.concat([batch, other])
    assert both.query_ids == ["q1", "q2"]
    assert len(both.modalities["rna"].obs) == 11
    assert len(both.subset(["q2"]).modalities["rna"].obs) == 4
    assert "adt" not in both.subset(["q2"]).modalities


def test_shape_and_schema_errors():
    m = _modality(3, 2, "q", "rna", 0)
    with pytest.raises(ValueError, match="shape"):
        ModalityData(m.obs, np.zeros((3, 3)), m.var_names)
    with pytest.raises(ValueError, match="lacks columns"):
        ModalityData(m.obs.drop(columns=[keys.TIME]), m.X, m.var_names)
    import pyarrow as pa

    with pytest.raises(ValueError, match="not a cslab batch"):
        MeasurementBatch.from_arrow(pa.table({"a": [1]}))
