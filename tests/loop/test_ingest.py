"""Prospective mode: propose plates, ingest readouts, with one clear error per malformed input."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulators
from experiment_design.plate_layout import PlateLayout
from loop.config import RunConfig
from loop.ingest import ReadoutError, ingest, readout_table
from loop.ledger import Ledger
from loop.propose import layout_path
from loop.propose import main as propose_main
from loop.rounds import RoundStatus, RoundStore
from loop.storage import read_table
from loop.study import AwaitingReadout, Study


@pytest.fixture(scope="module")
def pending_run(tmp_path_factory) -> Path:
    """A plates-mode run on the small world whose round 0 is proposed and laid out."""
    root = tmp_path_factory.mktemp("plates") / "run"
    study = Study.create(
        root,
        RunConfig(
            world="small", oracle="plates", budget=30, n_members=2, seed=3, initial_size=12, initial_budget_fraction=0.9
        ),
    )
    with pytest.raises(AwaitingReadout):
        study.run()
    assert propose_main(["--run", str(root), "--plate", "96"]) == 0
    return root


@pytest.fixture(scope="module")
def direct(pending_run):
    """What the simulator measures for the laid-out round, and the matching readout table."""
    layout = PlateLayout.from_table(read_table(layout_path(pending_run, 0)).to_pandas())
    batch = simulators.make_world("small", seed=3).measure(
        layout.queries_to_measure(), layout=layout.to_layout_mapping()
    )
    return batch, readout_table(batch), layout


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run(pending_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(pending_run, copy)
    return copy


def test_plates_written_and_round_waits(pending_run):
    files = sorted(p.name for p in (pending_run / "plates" / "round-0000").iterdir())
    assert "plate-01.csv" in files and "plate-01.toml" in files and "plate-01.png" in files
    assert RoundStore(pending_run).read_status(0)["status"] is RoundStatus.PROPOSED


def test_ingest_equals_direct_measurement(run, direct):
    batch, table, _ = direct
    path = run / "readout.csv"
    table.to_csv(path, index=False)
    ingest(run, path)
    got = Ledger(run).read_round(0)
    assert RoundStore(run).read_status(0)["status"] is RoundStatus.MEASURED
    for mod, m in batch.modalities.items():
        g = got.modalities[mod]
        np.testing.assert_array_equal(g.X, m.X)
        cols = list(m.obs.columns)
        pd.testing.assert_frame_equal(g.obs[cols].astype(str), m.obs[cols].astype(str))
    with pytest.raises(ReadoutError, match="never overwritten"):
        ingest(run, path)


def _molecular_row(table: pd.DataFrame, layout: PlateLayout) -> int:
    """A molecular readout row of a perturbed (non-control) well."""
    perturbed = set(layout.table.loc[layout.table["perturbation"].str.contains("[A-Z]", regex=True), "query_id"])
    rows = (table["modality"].to_numpy() == "molecular") & table["query_id"].isin(perturbed).to_numpy()
    return int(np.flatnonzero(rows)[0])


def _rna_col(table: pd.DataFrame) -> str:
    return next(c for c in table.columns if c.startswith("G"))


def _set(table, row, col, value):
    t = table.copy()
    t[col] = t[col].astype(object)
    t.loc[row, col] = value
    return t


def _drop_anchor_modality(table: pd.DataFrame, layout: PlateLayout):
    """The readout without the second modality of one anchor well (e.g. its ADT)."""
    space = simulators.make_world("small", seed=3).space
    plated = layout.table[layout.table["role"] == "sample"]
    qid, assay = next(
        (q, a) for q, a in zip(plated["query_id"], plated["assay"], strict=True) if space.assay(a).is_anchor
    )
    mod = space.assay(assay).modalities[1]
    keep = ~((table["query_id"] == qid) & (table["modality"] == mod)).to_numpy()
    return table[keep], f"{mod} of query {qid}"


def _bad_cases(table: pd.DataFrame, layout: PlateLayout):
    r = _molecular_row(table, layout)
    first = table.iloc[[r]]
    rna_row = int(np.flatnonzero(table["modality"].to_numpy() == "rna")[0])
    empty = layout.table[layout.table["role"] == "empty"].iloc[0]
    ok_meta = layout.table.set_index(["plate", "well"])
    qrow = ok_meta.loc[(table.loc[r, "plate"], table.loc[r, "well"])]
    with_meta = table.assign(perturbation="", dose_value="", dose_unit="", time=np.nan)
    with_meta.loc[r, ["perturbation", "dose_value", "dose_unit", "time"]] = [
        qrow["perturbation"],
        qrow["dose_value"],
        qrow["dose_unit"],
        qrow["time"],
    ]
    feature = next(c for c in table.columns if c.startswith("P"))
    n_targets = len(qrow["perturbation"].split("+"))
    bad_dose, far_dose = "+".join(["abc"] * n_targets), "+".join(["1e9"] * n_targets)
    return {
        "missing column": (table.drop(columns=["well"]), "missing column 'well'"),
        "unknown well": (_set(table, r, "well", "Z99"), "unknown well 'Z99'"),
        "unknown plate": (_set(table, r, "plate", "R9999-P01"), "unknown plate 'R9999-P01'"),
        "nan value": (_set(table, r, feature, np.nan), f"column {feature}: nan is not a finite"),
        "inf value": (_set(table, r, feature, np.inf), "inf is not a finite"),
        "negative count": (_set(table, rna_row, _rna_col(table), -3.0), "negative count -3"),
        "wrong unit": (
            _set(with_meta, r, "dose_unit", "nM" if qrow["dose_unit"] != "nM" else "uM"),
            "column dose_unit",
        ),
        "duplicated well": (pd.concat([table.drop(columns=["unit"]), first.drop(columns=["unit"])]), "duplicated well"),
        "wrong query_id": (_set(table, r, "query_id", "deadbeefdeadbeef"), "does not match the proposal"),
        "non-numeric dose": (_set(with_meta, r, "dose_value", bad_dose), "not numeric"),
        "malformed combination": (_set(with_meta, r, "perturbation", "A+"), "empty target name"),
        "dose mismatch": (_set(with_meta, r, "dose_value", far_dose), "does not match the layout"),
        "missing time": (_set(with_meta, r, "time", "soon"), "column time"),
        "empty well": (
            _set(_set(table, r, "plate", empty["plate"]), r, "well", empty["well"]),
            "is empty in the layout",
        ),
        "wrong modality": (_set(table, r, "modality", "spatial"), "is not measured by assay"),
        "missing wells": (table.iloc[: len(table) // 2], "readout\\(s\\) of the layout are missing"),
        "anchor missing a modality": _drop_anchor_modality(table, layout),
        "bad replicate unit": (_set(table, r, "unit", -1), "not a non-negative integer"),
        "fractional count": (_set(table, rna_row, _rna_col(table), 2.5), "2.5 is not a whole count"),
        "extra numeric column": (table.assign(viability=0.5), r"column\(s\) \['viability'\] are not features"),
        "feature column missing": (table.drop(columns=[_rna_col(table)]), "lacks feature column"),
    }


def test_every_malformed_readout_has_its_own_error_and_writes_nothing(run, direct):
    _, table, layout = direct
    before = _snapshot(run)
    cases = _bad_cases(table, layout)
    for name, (bad, match) in cases.items():
        path = run.parent / f"{name.replace(' ', '_')}.csv"
        bad.to_csv(path, index=False)
        with pytest.raises(ReadoutError, match=match) as err:
            ingest(run, path)
        assert str(path) in str(err.value), name
        assert _snapshot(run) == before, f"{name} changed the run folder"
    files = {
        "empty file": (b"", "file is empty"),
        "bad encoding": (
            table.head(3).to_csv(index=False).encode() + "\ncaf\xe9,\xff\n".encode("latin-1"),
            "not UTF-8",
        ),
        "truncated file": (table.to_csv(index=False).encode()[:-4000] + b'\n"R0', "row|unreadable|truncated"),
    }
    for name, (data, match) in files.items():
        path = run.parent / f"{name.replace(' ', '_')}.csv"
        path.write_bytes(data)
        with pytest.raises(ReadoutError, match=match):
            ingest(run, path)
        assert _snapshot(run) == before, f"{name} changed the run folder"
    assert len(cases) + len(files) >= 15


def test_relayout_replaces_the_round_folder(run):
    before = sorted(p.name for p in (run / "plates" / "round-0000").iterdir())
    assert propose_main(["--run", str(run), "--plate", "384", "--edge", "use", "--max-plates", "1"]) == 0
    after = sorted(p.name for p in (run / "plates" / "round-0000").iterdir())
    assert after == ["layout.parquet", "plate-01.csv", "plate-01.png", "plate-01.toml"] != before
    assert not [p for p in (run / "plates").iterdir() if p.name.startswith(".")]


def test_well_names_with_or_without_zero_padding(run, direct):
    batch, table, _ = direct
    unpadded = table.assign(well=table["well"].str.replace(r"^([A-P])0(\d)$", r"\1\2", regex=True).str.lower())
    assert (unpadded["well"] != table["well"]).any()
    path = run / "readout.csv"
    unpadded.to_csv(path, index=False)
    ingest(run, path)
    got = Ledger(run).read_round(0)
    for mod, m in batch.modalities.items():
        np.testing.assert_array_equal(got.modalities[mod].X, m.X)
        assert got.modalities[mod].obs["well"].tolist() == m.obs["well"].tolist()  # stored as the layout spells them


def test_simulate_readout_command_writes_what_ingest_accepts(run, direct, capsys):
    from loop.simulate_readout import main as simulate_main

    batch, _, _ = direct
    out = run.parent / "dry-run.csv"
    assert simulate_main(["--run", str(run), "--out", str(out)]) == 0
    assert f"ingest it with: python -m loop.ingest --run {run}" in capsys.readouterr().out
    ingest(run, out)
    got = Ledger(run).read_round(0)
    for mod, m in batch.modalities.items():  # the run's own world, plate positions included
        np.testing.assert_array_equal(got.modalities[mod].X, m.X)
    assert simulate_main(["--run", str(run), "--out", str(out)]) == 2  # nothing pending any more
    assert "no proposed round waits for plates (round 0 is measured)" in capsys.readouterr().err
    assert simulate_main(["--run", str(run), "--out", str(run.parent / "x.txt")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err
