"""``python -m simulators.export`` writes a screen that reads back with scPerturb keys."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np

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
