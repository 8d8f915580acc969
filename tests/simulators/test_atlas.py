"""Atlas-scale screens opened lazily: the same batches and refusals as the eager reader, bounded memory.

Every fixture is small (at most a few thousand cells) and generated here, in the layouts atlases use:
CSR counts with scPerturb obs keys, log-normalised ``X`` beside ``layers["counts"]`` or ``.raw``, one
file per plate.
"""

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import simulators.atlas as atlas
from experiment_design import MeasurementBatch, keys
from simulators.atlas import LazyScreen, open_h5ad, open_screen
from simulators.export import main as export_main
from simulators.lab import LabAdapter
from simulators.lab_formats import DataFormatError, read_measurements

DRUGS = ["DMSO", "drugA", "drugB", "drugC"]


def _obs(n: int, rng: np.random.Generator, plate: str = "plate0", drugs: list[str] = DRUGS) -> pd.DataFrame:
    """scPerturb-style obs of ``n`` shuffled cells: drugs at two doses in two cell lines, QC columns."""
    drug = rng.choice(drugs, n)
    return pd.DataFrame(
        {
            "perturbation": drug,
            "dose_value": np.where(drug == "DMSO", 0.0, rng.choice([0.5, 5.0], n)),
            "dose_unit": "uM",
            "time": 24.0,
            "cell_line": rng.choice(["A549", "MCF7"], n),
            "plate": plate,
            "ncounts": rng.uniform(1e3, 5e3, n),
            "barcode": [f"{plate}-{i}" for i in range(n)],
        },
        index=[f"{plate}-c{i}" for i in range(n)],
    )


def _counts(n: int, g: int, rng: np.random.Generator, density: float = 0.1) -> sp.csr_matrix:
    X = sp.random(n, g, density=density, format="csr", random_state=rng, dtype=np.float32)
    X.data = 1 + rng.poisson(3.0, X.nnz).astype(np.float32)
    return X


def _write(path, n: int = 600, g: int = 30, seed: int = 0, fmt: str = "csr", **obs_kw) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = _counts(n, g, rng)
    X = {"csr": X, "csc": X.tocsc(), "dense": X.toarray()}[fmt]
    a = ad.AnnData(X=X, obs=_obs(n, rng, **obs_kw), var=pd.DataFrame(index=[f"G{j}" for j in range(g)]))
    a.write_h5ad(path)
    return a


def assert_same_batch(a: MeasurementBatch, b: MeasurementBatch) -> None:
    assert list(a.modalities) == list(b.modalities)
    for name, m in a.modalities.items():
        pd.testing.assert_frame_equal(m.obs, b.modalities[name].obs)
        np.testing.assert_array_equal(m.X, b.modalities[name].X)
        assert m.var_names == b.modalities[name].var_names


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """cslab's own export: four modalities in sibling files, two replicates a condition."""
    out = tmp_path_factory.mktemp("screen") / "screen.h5ad"
    args = ["--world", "small", "--design", "random", "--n", "30", "--out", str(out), "--seed", "3"]
    export_main([*args, "--assays", "scrna,molecular,cite_seq,cell_painting", "--replicates", "2"])
    return out


def test_lazy_screen_equals_the_eager_batch_and_hands_out_the_same_specimens(exported):
    eager, lazy = read_measurements(exported), open_h5ad(exported)
    assert set(lazy.modalities) == {"rna", "adt", "molecular", "morphology"}
    assert_same_batch(eager, lazy.to_batch())
    a, b = LabAdapter(eager), LabAdapter(lazy)
    assert a.space == b.space and a.var_names == b.var_names
    for q in a.space.pool[:12]:
        assert a.specimens(q.query_id) == b.specimens(q.query_id)
    qs = list(a.space.pool[:6])
    assert_same_batch(a.measure(qs), b.measure(qs))
    assert_same_batch(a.measure(qs), b.measure(qs))  # the second replicates
    with pytest.raises(ValueError, match="0 left in the data"):
        b.measure(qs[:1])


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_every_storage_of_x_reads_the_same(tmp_path, fmt):
    path = tmp_path / "atlas.h5ad"
    _write(path, fmt=fmt)
    assert_same_batch(read_measurements(path), open_h5ad(path).to_batch())


@pytest.mark.parametrize("where", ["layers", "raw"])
def test_log_normalised_x_reads_the_counts_beside_it(tmp_path, where):
    path = tmp_path / "atlas.h5ad"
    a = _write(path)
    counts = a.X.copy()
    if where == "layers":
        a.layers["counts"] = counts
    else:
        a.raw = a.copy()
    a.X = sp.csr_matrix(np.log1p(counts.toarray()))
    a.write_h5ad(path)
    lazy = open_h5ad(path)
    assert lazy.modalities["rna"]._sources[0][1] == ("layers/counts" if where == "layers" else "raw/X")
    np.testing.assert_array_equal(lazy.to_batch().modalities["rna"].X, counts.toarray())
    assert_same_batch(read_measurements(path), lazy.to_batch())


def _refusal(fn, path) -> str:
    with pytest.raises(DataFormatError) as info:
        fn(path)
    return str(info.value)


@pytest.mark.parametrize("bad", ["lognorm", "nan", "inf", "negative", "fraction_after_nan"])
def test_refusals_match_the_eager_reader_even_in_a_late_chunk(tmp_path, monkeypatch, bad):
    monkeypatch.setattr(atlas, "CHUNK_NNZ", 97)  # many chunks: the refused value is far from the first
    path = tmp_path / "atlas.h5ad"
    a = _write(path)
    X = a.X.tolil()
    if bad == "lognorm":
        X = sp.lil_matrix(np.log1p(a.X.toarray()))
    else:
        X[450, 7] = {"nan": np.nan, "inf": np.inf, "negative": -2.0, "fraction_after_nan": 0.5}[bad]
        if bad == "fraction_after_nan":
            X[500, 3] = np.nan  # a non-finite value comes first in the eager reader's order
    a.X = X.tocsr()
    a.write_h5ad(path)
    eager, lazy = _refusal(read_measurements, path), _refusal(open_h5ad, path)
    assert lazy == eager
    if bad == "lognorm":
        assert "is not a count" in lazy and "layers['counts']" in lazy
    if bad == "fraction_after_nan":
        assert "row 502, column G3: missing (empty or NaN)" in lazy


def test_metadata_refusals_match(tmp_path):
    path = tmp_path / "atlas.h5ad"
    a = _write(path)
    a.obs["dose_unit"] = np.where(np.arange(a.n_obs) == 123, "copies", "uM")
    a.write_h5ad(path)
    msg = _refusal(open_h5ad, path)
    assert msg == _refusal(read_measurements, path)
    assert "unknown unit 'copies'" in msg and "row 125" in msg
    screen = open_h5ad(path, units={"copies": "uM"})
    assert_same_batch(read_measurements(path, units={"copies": "uM"}), screen.to_batch())
    screen.close()  # the file may be written again
    a.obs = a.obs.drop(columns=["cell_line"])
    a.write_h5ad(path)
    assert _refusal(open_h5ad, path) == _refusal(read_measurements, path)


def test_per_plate_files_are_one_screen(tmp_path):
    d = tmp_path / "plates"
    d.mkdir()
    for k in range(3):  # DMSO on every plate: one condition spread over three files
        _write(d / f"plate{k}.h5ad", n=400, seed=k, plate=f"plate{k}", drugs=["DMSO", f"drug{k}"])
    eager = read_measurements(d)
    lazy = open_h5ad(d)
    assert_same_batch(eager, lazy.to_batch())
    assert_same_batch(eager, open_h5ad(tmp_path / "plates" / "plate*.h5ad").to_batch())
    obs = eager.modalities["rna"].obs
    assert len(obs) == 1200 and set(obs[keys.PLATE]) == {"plate0", "plate1", "plate2"}
    assert not obs.duplicated([keys.SPECIMEN, keys.UNIT]).any()  # units numbered across files
    control = obs[obs[keys.PERTURBATION] == "control"]
    assert control.groupby(keys.QUERY_ID)[keys.PLATE].nunique().max() == 3
    a, b = LabAdapter(eager), LabAdapter.from_file(d, lazy=True)
    assert isinstance(b.batch, LazyScreen)
    qs = [q for q in a.space.pool if q.perturbation.order == 0]
    assert_same_batch(a.measure(qs), b.measure(qs))


def test_files_of_one_screen_must_share_features(tmp_path):
    d = tmp_path / "plates"
    d.mkdir()
    _write(d / "plate0.h5ad", g=30)
    _write(d / "plate1.h5ad", g=31, seed=1)
    msg = _refusal(open_h5ad, d)
    assert msg == _refusal(read_measurements, d)
    assert "plate1.h5ad" in msg and "plate0.h5ad" in msg and "var_names" in msg
    with pytest.raises(DataFormatError, match="no .h5ad, .csv or .parquet files"):
        open_h5ad(tmp_path / "nothing*.h5ad")


def test_a_file_of_several_modalities(tmp_path):
    path = tmp_path / "mixed.h5ad"
    a = _write(path)
    a.obs["modality"] = np.where(np.arange(a.n_obs) % 3 == 0, "adt", "rna")
    a.write_h5ad(path)
    lazy = open_h5ad(path)
    assert set(lazy.modalities) == {"rna", "adt"}
    assert_same_batch(read_measurements(path), lazy.to_batch())


def test_the_lazy_oracle_holds_no_readout_matrix(tmp_path):
    """Obs only, a few bytes a cell whatever the number of genes; readouts read per hand-out."""
    sizes = {}
    for g in (20, 400):
        path = tmp_path / f"g{g}.h5ad"
        _write(path, n=3000, g=g)
        lab = LabAdapter.from_file(path, lazy=True)
        m = lab.batch.modalities["rna"]
        assert not hasattr(m, "X")
        sizes[g] = m.obs.memory_usage(deep=True).sum() + m.totals.nbytes + m.detected.nbytes
        assert sizes[g] / 3000 < 120  # bytes a cell
        got = lab.measure(lab.space.pool[:2]).modalities["rna"]
        assert got.X.shape == (len(got.obs), g) and got.X.dtype == np.float32
    assert sizes[20] == sizes[400]


def test_stats_come_from_the_one_scan(exported):
    lazy, eager = open_h5ad(exported), read_measurements(exported)
    stats = lazy.stats.set_index([keys.MODALITY, keys.QUERY_ID])
    for name, m in eager.modalities.items():
        by = pd.DataFrame(m.X).assign(q=m.obs[keys.QUERY_ID].to_numpy()).groupby("q")
        expect = by.sum().sum(axis=1) / by.size()
        got = stats.loc[name]["mean_total"].reindex(expect.index)
        np.testing.assert_allclose(got.to_numpy(), expect.to_numpy(), rtol=1e-6)
        assert stats.loc[name]["n_units"].sum() == len(m.obs)
        assert (stats.loc[name]["n_specimens"] == 2).all()


def test_size_decides_lazy_unless_told(tmp_path, monkeypatch):
    path = tmp_path / "atlas.h5ad"
    _write(path, n=200, g=10)
    assert isinstance(open_screen(path), MeasurementBatch)  # 2,000 values: eager
    monkeypatch.setattr(atlas, "LAZY_VALUES", 1_000)
    assert isinstance(open_screen(path), LazyScreen)
    assert isinstance(open_screen(path, lazy=False), MeasurementBatch)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"perturbation": ["A"], "time": [1.0], "cell_line": ["X"], "v": [1.0]}).to_csv(csv, index=False)
    with pytest.raises(DataFormatError, match="lazy reading is for .h5ad"):
        open_screen(csv, lazy=True)
    with pytest.raises(DataFormatError, match="no such file"):
        open_screen(tmp_path / "absent.h5ad")


def test_a_lazy_adapter_pickles_and_reopens_its_files(tmp_path):
    path = tmp_path / "atlas.h5ad"
    _write(path)
    lab = LabAdapter.from_file(path, lazy=True)
    first = lab.measure(lab.space.pool[:1])
    clone = pickle.loads(pickle.dumps(lab))  # e.g. to a Ray actor; the open h5py file is not sent
    assert_same_batch(clone.measure(lab.space.pool[1:2]), lab.measure(lab.space.pool[1:2]))
    assert len(first) > 0
