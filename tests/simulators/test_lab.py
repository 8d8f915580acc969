"""The lab data adapter: pool mode over an exported screen, and clear errors for bad data files."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulators
from experiment_design import Context, Perturbation, Query, keys
from simulators.export import main as export_main
from simulators.lab import LabAdapter
from simulators.lab_formats import DataFormatError, read_measurements


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("screen") / "screen.h5ad"
    export_main(
        [
            "--world",
            "small",
            "--design",
            "random",
            "--n",
            "40",
            "--out",
            str(out),
            "--seed",
            "5",
            "--assays",
            "scrna,molecular",
            "--replicates",
            "2",
        ]
    )
    return out


def test_pool_space_is_built_from_the_data(screen):
    lab = LabAdapter.from_file(screen)
    world = simulators.make_world("small", seed=5)
    assert len(lab.space.pool) == 40
    assert {t.name for t in lab.space.targets} <= {t.name for t in world.space.targets}
    assert {a.name for a in lab.space.assays} <= {"scrna", "molecular"}
    for q in lab.space.pool:
        lab.space.validate(q)


def test_measure_returns_stored_specimens_without_replacement(screen):
    lab = LabAdapter.from_file(screen)
    world = simulators.make_world("small", seed=5)
    q = next(q for q in lab.space.pool if q.assay == "scrna")
    first = lab.measure([q])
    again = world.measure([q.with_replicates(2)]).modalities["rna"]
    rep0 = again.obs[keys.REPLICATE].to_numpy() == 0
    np.testing.assert_array_equal(first.modalities["rna"].X, again.X[rep0])
    second = lab.measure([q])
    assert set(second.modalities["rna"].obs[keys.SPECIMEN]) == {f"{q.query_id}:1"}
    with pytest.raises(ValueError, match="0 left in the data"):
        lab.measure([q])
    absent = Query(Perturbation.control(), 7.123, lab.space.contexts[0], "scrna")
    with pytest.raises(ValueError, match="not in the candidate pool"):
        lab.measure([absent])


def test_exclude_restores_state_on_resume(screen):
    lab = LabAdapter.from_file(screen)
    q = lab.space.pool[0]
    used = lab.measure([q])
    specimens = {s for m in used.modalities.values() for s in m.obs[keys.SPECIMEN]}
    resumed = LabAdapter.from_file(screen, exclude=specimens)
    assert resumed.available(q.query_id) == lab.available(q.query_id) == 1


def _tidy(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "drug": ["control", "A", "A", "B", "A+B", "B"][:n],
            "dose": ["0", "1.0", "10", "0.5", "1.0+0.5", "5"][:n],
            "hours": [24.0] * n,
            "line": ["HeLa"] * n,
            "viability": np.linspace(1.0, 0.4, n),
        }
    )


def test_tidy_csv_with_column_mapping(tmp_path):
    path = tmp_path / "screen.csv"
    _tidy().to_csv(path, index=False)
    batch = read_measurements(
        path, mapping={"perturbation": "drug", "dose_value": "dose", "time": "hours", "cell_line": "line"}
    )
    m = batch.modalities["molecular"]
    assert m.var_names == ("viability",)
    assert list(m.obs[keys.PERTURBATION]) == ["control", "A", "A", "B", "A+B", "B"]
    lab = LabAdapter(batch)
    assert lab.space.max_order == 2 and lab.space.contexts == (Context("HeLa", "site0"),)


def test_combination_matrix_format(tmp_path):
    path = tmp_path / "combo.csv"
    pd.DataFrame(
        {
            "drug1": ["X", "X", "X"],
            "drug2": ["Y", "Y", ""],
            "conc1": [0.0, 1.0, 2.0],
            "conc2": [0.0, 0.3, 0.0],
            "response": [100.0, 60.0, 70.0],
            "cell_line": ["L"] * 3,
            "replicate": [0, 0, 0],
        }
    ).to_csv(path, index=False)
    obs = read_measurements(path).modalities["molecular"].obs
    assert list(obs[keys.PERTURBATION]) == ["control", "X+Y", "X"]
    assert list(obs[keys.DOSE_VALUE]) == ["0", "1.0+0.3", "2.0"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.drop(columns=["hours"]), r"missing column\(s\) \['time'\]"),
        (lambda d: d.assign(dose=["0", "x", "1", "1", "1+1", "1"]), r"row 3, column dose_value: 'x' is not numeric"),
        (lambda d: d.assign(drug=["control", "A", "A", "B", "A+", "B"]), r"row 6, .*empty target name"),
        (lambda d: d.assign(hours=[24.0, None, 24, 24, 24, 24]), r"row 3, column time"),
        (lambda d: d.assign(viability=[1.0, np.nan, 1, 1, 1, 1]), r"row 3, column viability"),
        (lambda d: d.assign(line=["HeLa", "", "HeLa", "HeLa", "HeLa", "HeLa"]), r"row 3, column cell_line"),
        (
            lambda d: d.assign(dose_unit="pints"),
            r"row 3, column dose_unit: unknown unit 'pints'.*\[data_mapping\] units",
        ),
        (
            lambda d: d.assign(dose=["0", "1", "1", "1", "1", "1"]),
            r"row 6, column dose_value: '1' has 1 values for the 2",
        ),
        (lambda d: d.assign(dose_unit="knockdown"), r"row 4, column dose_value: knockdown 10.0 of 'A' is above 1"),
        (lambda d: d.assign(dose_unit=None, perturbation_type="magic"), r"row 2, column perturbation_type: unknown"),
    ],
)
def test_malformed_tidy_files_name_row_and_column(tmp_path, edit, match):
    path = tmp_path / "bad.csv"
    edit(_tidy()).to_csv(path, index=False)
    mapping = {"perturbation": "drug", "dose_value": "dose", "time": "hours", "cell_line": "line"}
    with pytest.raises(DataFormatError, match=match) as err:
        read_measurements(path, mapping=mapping)
    assert str(path) in str(err.value)


def test_negative_counts_empty_and_undecodable_files(tmp_path):
    counts = _tidy().rename(columns={"viability": "G0"}).assign(modality="rna", G0=[1, 2, -1, 3, 4, 5])
    path = tmp_path / "counts.csv"
    counts.to_csv(path, index=False)
    mapping = {"perturbation": "drug", "dose_value": "dose", "time": "hours", "cell_line": "line"}
    with pytest.raises(DataFormatError, match="row 4, column G0: negative count"):
        read_measurements(path, mapping=mapping)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty"):
        read_measurements(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("perturbation,dose_value,time,cell_line,x\ncaf\xe9,1,2,L,1\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_measurements(latin)
    truncated = tmp_path / "t.h5ad"
    truncated.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataFormatError, match="unreadable or truncated"):
        read_measurements(truncated)


def test_wells_are_specimens_and_zero_doses_are_controls(tmp_path):
    path = tmp_path / "wells.csv"
    pd.DataFrame(
        {
            "perturbation": ["DMSO", "A", "A", "A"],
            "dose_value": ["0", "1.0", "1.0", "1.0"],
            "time": 24.0,
            "cell_line": "L",
            "plate": "P1",
            "well": ["A01", "A02", "B02", "C02"],
            "viability": [1.0, 0.5, 0.6, 0.55],
        }
    ).to_csv(path, index=False)
    obs = read_measurements(path).modalities["molecular"].obs
    assert obs[keys.PERTURBATION].tolist() == ["control", "A", "A", "A"]
    assert obs[keys.REPLICATE].tolist() == [0, 0, 1, 2]
    lab = LabAdapter(read_measurements(path))
    q = next(q for q in lab.space.pool if not q.perturbation.is_control)
    assert lab.available(q.query_id) == 3
    assert len(lab.measure([q.with_replicates(2)]).modalities["molecular"].obs) == 2
