"""``python -m simulators.export`` writes a screen that reads back with scPerturb keys."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from experiment_design import MeasurementBatch, keys
from simulators.export import main


def test_export_writes_rna_and_side_files(tmp_path, capsys):
    out = tmp_path / "screen.h5ad"
    written = main(
        [
            "--world",
            "small",
            "--design",
            "random",
            "--n",
            "12",
            "--out",
            str(out),
            "--seed",
            "4",
            "--assays",
            "scrna,cite_seq,spatial",
        ]
    )
    printed = capsys.readouterr().out
    assert written["rna"][0] == out and str(out) in printed
    rna = ad.read_h5ad(out)
    for col in (*keys.OBS_COLUMNS, keys.PLATE, keys.WELL):
        assert col in rna.obs.columns
    assert set(rna.obs[keys.MODALITY]) == {"rna"} and rna.n_vars == 40
    assert json.loads(rna.uns["cslab"])["seed"] == 4
    files = {p.name for p in tmp_path.iterdir()}
    assert files >= {"screen.h5ad"}
    assert {f"screen.{m}.h5ad" for m in written if m != "rna"} <= files
    back = MeasurementBatch.from_anndata({m: ad.read_h5ad(p) for m, (p, _, _) in written.items()})
    assert len(back.query_ids) <= 12 and set(back.modalities) == set(written)
    # Same command, same data.
    again = tmp_path / "again.h5ad"
    main(["--world", "small", "--n", "12", "--out", str(again), "--seed", "4", "--assays", "scrna,cite_seq,spatial"])
    np.testing.assert_array_equal(ad.read_h5ad(again).X, rna.X)


def test_export_runs_as_a_module(tmp_path):
    out = tmp_path / "s.h5ad"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulators.export",
            "--world",
            "small",
            "--design",
            "grid",
            "--n",
            "5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote" in res.stdout and out.exists()


def test_bad_export_settings_are_one_line_not_a_traceback(tmp_path):
    for argv, message in ((["--assays", "bogus"], "unknown assays ['bogus']"), (["--world", "huge"], "huge")):
        res = subprocess.run(
            [sys.executable, "-m", "simulators.export", "--world", "small", "--out", str(tmp_path / "s.h5ad"), *argv],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "s.h5ad").exists()


def test_scperturb_format_is_read_back_as_the_same_screen(tmp_path):
    """Log-normalised X with counts beside it, non-targeting controls, guide and QC columns: read as written."""
    import scipy.sparse as sp

    from simulators.lab import LabAdapter

    out = tmp_path / "crispr.h5ad"
    main(["--world", "small", "--n", "60", "--targets", "genetic", "--format", "scperturb", "--out", str(out)])
    a = ad.read_h5ad(out)
    assert sp.issparse(a.X) and not np.allclose(a.X.data, np.round(a.X.data))  # log-normalised, as atlases ship it
    counts = a.layers["counts"].toarray()
    assert np.allclose(counts, np.round(counts)) and (counts >= 0).all()
    assert {"perturbation_type", "guide_id", "ncounts", "ngenes"} <= set(a.obs.columns)
    assert set(a.obs["perturbation_type"]) <= {"CRISPRi", "CRISPRa"}
    assert "control" not in set(a.obs[keys.PERTURBATION])
    lab = LabAdapter.from_file(out)
    assert len(lab.space.pool) == 60 and all(t.kind.value != "compound" for t in lab.space.targets)
    rna = lab.batch.modalities["rna"]
    assert rna.var_names == tuple(a.var_names)  # guide_id / ncounts stay metadata
    assert np.allclose(np.sort(rna.X.sum(1)), np.sort(counts.sum(1)))  # the counts, not the log values
    n_ntc = a.obs.loc[a.obs[keys.PERTURBATION] == "non-targeting", keys.QUERY_ID].nunique()
    assert sum(q.perturbation.order == 0 for q in lab.space.pool) == n_ntc  # non-targeting = control


def test_combo_format_is_a_dose_grid_csv_the_adapter_reads(tmp_path, capsys):
    import pandas as pd

    from simulators.lab import LabAdapter

    out = tmp_path / "grid.csv"
    args = ["--world", "small", "--design", "pairs", "--targets", "compound", "--assays", "molecular"]
    main([*args, "--replicates", "2", "--format", "combo", "--out", str(out)])
    df = pd.read_csv(out)
    assert list(df.columns) == ["drug1", "drug2", "conc1", "conc2", "response", "cell_line", "replicate", "time"]
    pairs = df[(df.conc1 > 0) & (df.conc2 > 0)]
    assert pairs.groupby(["drug1", "drug2", "cell_line"]).size().eq(16 * 2).all()  # 4 x 4 doses, 2 replicates
    lab = LabAdapter.from_file(out)
    assert lab.space.max_order == 2 and len(lab.space.pool) == len(df) // 2
    with pytest.raises(SystemExit):
        main([*args[:-1], "scrna", "--format", "combo", "--out", str(tmp_path / "bad.csv")])
    assert "needs a continuous readout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--format", "combo", "--response", "nope", "--out", str(tmp_path / "bad.csv")])
    assert "--response 'nope' is not a feature of molecular" in capsys.readouterr().err
