"""Screens written the way labs and atlases write them: scPerturb obs keys, guides, knockdowns, MOI, controls.

Every fixture is generated here, small, in the layout of its kind (not by cslab's own exporter).
"""

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from experiment_design import keys
from loop.config import RunConfig
from simulators.lab import LabAdapter
from simulators.lab_formats import DataFormatError, feature_columns, is_control_name, read_measurements


def _crispr_atlas(path, n_genes: int = 12):
    """An scPerturb-style CRISPRi/CRISPRa subset: gene labels, no doses, controls by several names, QC obs."""
    rng = np.random.default_rng(0)
    labels = [
        "non-targeting",
        "NTC_2",
        "control",
        "KLF1",
        "KLF1",
        "GATA1",
        "GATA1+KLF1",
        "safe-targeting_0003",
        "CEBPA",
        "CEBPA",
    ]
    obs = pd.DataFrame(
        {
            "perturbation": labels,
            "perturbation_type": ["CRISPRi"] * 7 + ["CRISPRa"] * 3,
            "cell_line": ["K562"] * 5 + ["RPE1"] * 5,
            "time": 96.0,
            "guide_id": [f"sg{i}" for i in range(10)],
            "ncounts": rng.integers(2000, 5000, 10).astype(float),
            "percent_mito": rng.uniform(1, 8, 10),
            "nperts": [0, 0, 0, 1, 1, 1, 2, 0, 1, 1],
        },
        index=[f"cell{i}" for i in range(10)],
    )
    X = rng.poisson(3.0, (10, n_genes)).astype(np.float32)
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))
    a.write_h5ad(path)
    return a


def test_crispr_atlas_reads_guides_types_controls_and_keeps_qc_as_metadata(tmp_path):
    path = tmp_path / "atlas.h5ad"
    _crispr_atlas(path)
    m = read_measurements(path).modalities["rna"]
    assert m.var_names == tuple(f"G{j}" for j in range(12))  # QC obs columns are not features
    labels = m.obs[keys.PERTURBATION].tolist()
    assert labels[:3] == ["control"] * 3 and labels[7] == "control"  # non-targeting, NTC_2, safe-targeting_0003
    assert labels[6] == "GATA1+KLF1"
    genetic = m.obs[m.obs[keys.PERTURBATION] != "control"]
    assert set(genetic[keys.DOSE_UNIT]) <= {"fraction", "fraction+fraction"}
    assert set(genetic[keys.DOSE_VALUE]) == {"1.0", "1.0+1.0"}  # a guide present is full strength
    lab = LabAdapter.from_file(path)
    assert {t.name: t.kind for t in lab.space.targets} == dict.fromkeys(["CEBPA", "GATA1", "KLF1"], "knockdown")


@pytest.mark.parametrize(
    ("unit", "doses", "expected"),
    [
        ("knockdown", ["0.25", "0.9", "0.5+0.9"], ["0.25", "0.9", "0.5+0.9"]),
        ("Knockdown", ["0.25", "0.9", "0.5+0.9"], ["0.25", "0.9", "0.5+0.9"]),
        ("percent", ["25", "90", "50+90"], ["0.25", "0.9", "0.5+0.9"]),
        ("%", ["25", "90", "50+90"], ["0.25", "0.9", "0.5+0.9"]),
        ("sgRNA", ["1", "2", "1+1"], ["1.0", "1.0", "1.0+1.0"]),
        (
            "MOI",
            ["0.3", "3", "0.3+1"],
            [repr(-math.expm1(-0.3)), repr(-math.expm1(-3.0)), f"{-math.expm1(-0.3)!r}+{-math.expm1(-1.0)!r}"],
        ),
    ],
)
def test_knockdown_screen_units_become_strengths(tmp_path, unit, doses, expected):
    path = tmp_path / "kd.csv"
    pd.DataFrame(
        {
            "perturbation": ["NTC", "A", "B", "A+B"],
            "dose_value": ["0", *doses],
            "dose_unit": unit,
            "time": 48,
            "cell_line": "HEK293T",
            "G0": [3, 4, 5, 6],
            "G1": [1, 0, 2, 2],
        }
    ).assign(modality="rna").to_csv(path, index=False)
    obs = read_measurements(path).modalities["rna"].obs
    assert obs[keys.PERTURBATION].tolist() == ["control", "A", "B", "A+B"]
    assert obs[keys.DOSE_VALUE].tolist()[1:] == expected
    assert set(obs[keys.DOSE_UNIT].tolist()[1:]) <= {"fraction", "fraction+fraction"}


def test_compound_grid_units_any_case_and_vehicle_in_a_combination(tmp_path):
    path = tmp_path / "grid.csv"
    pd.DataFrame(
        {
            "perturbation": ["DMSO", "drugA", "drugA", "DMSO+drugB", "drugA+drugB"],
            "dose_value": ["0.1", "100", "0.5", "0.1+2000", "1+1"],
            "dose_unit": ["%", "nM", "uM", "%+NM", "µM"],
            "time": 72,
            "cell_line": "A549",
            "viability": [1.0, 0.9, 0.7, 0.8, 0.4],
            "compound_name": ["vehicle", "drugA", "drugA", "drugB", "A and B"],
            "plate_barcode": "P0001",
        }
    ).to_csv(path, index=False)
    m = read_measurements(path).modalities["molecular"]
    assert m.var_names == ("viability",)  # text columns are metadata
    assert m.obs[keys.PERTURBATION].tolist() == ["control", "drugA", "drugA", "drugB", "drugA+drugB"]
    assert m.obs[keys.DOSE_VALUE].tolist() == ["0", "0.1", "0.5", "2.0", "1.0+1.0"]
    assert m.obs[keys.DOSE_UNIT].tolist()[1:] == ["uM", "uM", "uM", "uM+uM"]


def test_unknown_unit_names_row_value_and_the_config_mapping_that_fixes_it(tmp_path):
    path = tmp_path / "odd.csv"
    frame = pd.DataFrame(
        {
            "perturbation": ["control", "A", "A"],
            "dose_value": ["0", "2", "4"],
            "dose_unit": ["", "copies", "copies"],
            "time": 24,
            "cell_line": "L",
            "score": [0, 1, 2],
        }
    )
    frame.to_csv(path, index=False)
    with pytest.raises(
        DataFormatError,
        match=r"row 3, column dose_unit: unknown unit 'copies'.*"
        r'\[data_mapping\] units = \{"copies" = "uM"\}',
    ):
        read_measurements(path)
    obs = read_measurements(path, units={"copies": "guide"}).modalities["molecular"].obs
    assert obs[keys.DOSE_VALUE].tolist() == ["0", "1.0", "1.0"] and obs[keys.DOSE_UNIT].iloc[1] == "fraction"
    with pytest.raises(DataFormatError, match="data_mapping units"):
        read_measurements(path, units={"copies": "furlongs"})


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (dict(dose_unit="knockdown", dose_value=["0", "1.5"]), r"row 3, column dose_value: knockdown 1.5 of 'A'"),
        (dict(dose_unit="percent", dose_value=["0", "150"]), r"row 3, column dose_value: percent 150.0 of 'A'"),
        (dict(dose_unit="uM", dose_value=["0", ""]), r"row 3, column dose_value: missing concentration of 'A'"),
        (dict(dose_unit="uM", dose_value=["0", "-1"]), r"row 3, column dose_value: dose -1.0 of 'A' is negative"),
        (
            dict(dose_unit=None, dose_value=["0", "1"], perturbation_type=["control", "telepathy"]),
            r"row 3, column perturbation_type: unknown type 'telepathy'",
        ),
    ],
)
def test_bad_genetic_or_compound_doses_name_the_row(tmp_path, frame, match):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"perturbation": ["control", "A"], "time": 24, "cell_line": "L", "score": [0.0, 1.0], **frame}).to_csv(
        path, index=False
    )
    with pytest.raises(DataFormatError, match=match):
        read_measurements(path)


def test_features_rule_metadata_columns_and_a_stray_text_value(tmp_path):
    frame = pd.DataFrame(
        {
            "perturbation": ["control", "A", "B", "A"],
            "dose_value": ["0", "1", "1", "2"],
            "time": 24,
            "cell_line": "L",
            "guide_id": ["g0", "g1", "g2", "g3"],
            "n_counts": [10, 11, 12, 13],
            "well_note": ["ok", "edge", "ok", "ok"],
            "g1": [1.0, 2.0, 3.0, 4.0],
            "g2": [1.0, 2.0, 3.0, 4.0],
        }
    )
    assert feature_columns(frame) == ["g1", "g2"]
    path = tmp_path / "t.csv"
    frame.assign(g2=["1.0", "2.0", "abc", "4.0"]).to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"row 4, column g2: 'abc' is not a finite number"):
        read_measurements(path)
    frame.assign(g2=[1.0, 2.0, None, 4.0]).to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"row 4, column g2: missing \(empty or NaN\)"):
        read_measurements(path)
    only = read_measurements(path, features=["g1"]).modalities["molecular"]
    assert only.var_names == ("g1",)
    with pytest.raises(DataFormatError, match=r"feature column\(s\) \['g9'\]"):
        read_measurements(path, features=["g9"])


@pytest.mark.parametrize(
    "name",
    [
        "control",
        "CTRL",
        "non-targeting",
        "NonTargeting_12",
        "NTC",
        "ntc-3",
        "DMSO",
        "vehicle",
        "safe_targeting",
        "Scrambled",
        "mock",
        "untreated",
    ],
)
def test_control_names(name):
    assert is_control_name(name)


@pytest.mark.parametrize("name", ["NT5E", "NT5C2", "CTRLX", "MOCKA", "DMSO2X", "KLF1", "NONEX"])
def test_genes_that_look_like_controls_are_not(name):
    assert not is_control_name(name)


def test_run_config_carries_the_data_mapping(tmp_path):
    path = tmp_path / "odd.csv"
    pd.DataFrame(
        {
            "drug": ["vehicle", "A", "A", "B"],
            "conc": ["0", "2", "4", "1"],
            "unit": "copies",
            "hours": 24,
            "line": "L",
            "score": [0.0, 1.0, 2.0, 0.5],
        }
    ).to_csv(path, index=False)
    mapping = {
        "columns": {
            "perturbation": "drug",
            "dose_value": "conc",
            "dose_unit": "unit",
            "time": "hours",
            "cell_line": "line",
        },
        "units": {"copies": "guide"},
    }
    RunConfig(oracle="lab", data=str(path), data_mapping=mapping).validate()
    from simulators.lab import LabFactory

    lab = LabFactory(str(path), mapping)()
    assert {t.name: t.kind for t in lab.space.targets} == {"A": "knockdown", "B": "knockdown"}
    with pytest.raises(ValueError, match=r"data_mapping: unknown keys \['colums'\]"):
        RunConfig(oracle="lab", data=str(path), data_mapping={"colums": {}}).validate()


def _log_normalised(counts: np.ndarray) -> np.ndarray:
    """scanpy's normalize_total(1e4) + log1p, as atlases store X."""
    return np.log1p(1e4 * counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("where", ["layers", "raw"])
def test_log_normalised_x_with_the_counts_beside_it_reads_the_counts(tmp_path, where):
    path = tmp_path / "atlas.h5ad"
    a = _crispr_atlas(path)
    counts = a.X.copy()
    if where == "layers":
        a.layers["counts"] = counts
    else:
        a.raw = a.copy()
    a.X = _log_normalised(counts)
    a.write_h5ad(path)
    m = read_measurements(path).modalities["rna"]
    np.testing.assert_array_equal(m.X, counts)


def test_log_normalised_x_alone_is_refused_naming_the_value_and_the_fix(tmp_path):
    path = tmp_path / "atlas.h5ad"
    a = _crispr_atlas(path)
    a.X = _log_normalised(a.X)
    a.write_h5ad(path)
    with pytest.raises(DataFormatError) as info:
        read_measurements(path)
    msg = str(info.value)
    assert "column G0" in msg and "is not a count" in msg and "log-normalised" in msg
    assert "layers['counts']" in msg and "\n" not in msg


def test_a_continuous_modality_keeps_its_non_integer_values(tmp_path):
    df = pd.DataFrame(
        {
            "perturbation": ["control", "DRUG1"],
            "dose_value": ["0", "1.5"],
            "dose_unit": ["uM", "uM"],
            "time": [24.0, 24.0],
            "cell_line": ["A549", "A549"],
            "modality": "molecular",
            "P0": [0.25, 1.75],
            "P1": [2.5, -0.5],
        }
    )
    df.to_csv(tmp_path / "panel.csv", index=False)
    m = read_measurements(tmp_path / "panel.csv").modalities["molecular"]
    np.testing.assert_allclose(m.X, [[0.25, 2.5], [1.75, -0.5]])


def _plate_table(line: str, drug: str, bad: bool = False) -> pd.DataFrame:
    """One plate of a viability screen: a vehicle well and three doses of one drug."""
    return pd.DataFrame(
        {
            "perturbation": ["DMSO"] + [drug] * 3,
            "dose_value": ["0", "0.1", "1", "10"],
            "dose_unit": "uM",
            "time": 24.0,
            "viability": [1.0, 0.9, 0.6, "n/a" if bad else 0.2],
            "plate_barcode": [f"P-{line}"] * 4,
        }
    )


def test_a_partitioned_parquet_dataset_and_a_glob_of_csvs_are_one_screen(tmp_path):
    """Labs write one file per plate or line; a Parquet dataset keeps cell_line in its folder names."""
    root = tmp_path / "dataset"
    for line, drug in (("A549", "drugX"), ("MCF7", "drugY")):
        (root / f"cell_line={line}").mkdir(parents=True)
        _plate_table(line, drug).to_parquet(root / f"cell_line={line}" / "part-0.parquet")
    (root / "_SUCCESS").write_text("")  # Spark / pyarrow markers are not data
    batch = read_measurements(root, features=["viability"])
    obs = batch.modalities["molecular"].obs
    assert sorted(set(obs[keys.CELL_LINE])) == ["A549", "MCF7"] and len(obs) == 8
    assert batch.modalities["molecular"].var_names == ("viability",)
    plates = tmp_path / "plates"
    plates.mkdir()
    for i, (line, drug) in enumerate((("A549", "drugX"), ("MCF7", "drugY"))):
        _plate_table(line, drug, bad=i == 1).assign(cell_line=line).to_csv(plates / f"plate{i}.csv", index=False)
    with pytest.raises(DataFormatError, match=r"plate1\.csv: row 5, column viability"):
        read_measurements(plates / "plate*.csv", features=["viability"])
    (plates / "plate1.csv").unlink()
    assert len(read_measurements(plates / "plate*.csv", features=["viability"]).modalities["molecular"].obs) == 4
    (plates / "extra.h5ad").write_text("")
    with pytest.raises(DataFormatError, match="both .h5ad files and tables"):
        read_measurements(plates)
