"""``python -m bench.atlas --quick`` runs end to end (the real figures: README, Performance)."""

import json

import bench.atlas


def test_quick_atlas_bench_writes_its_curve(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.atlas, "RESULTS", tmp_path / "atlas.json")
    result = bench.atlas.main(["--quick"])
    rows = json.loads((tmp_path / "atlas.json").read_text())["rows"]
    assert [(r["cells"], r["mode"]) for r in rows] == [(10_000, "lazy"), (10_000, "eager"), (20_000, "lazy")]
    lazy, eager = rows[0], rows[1]
    assert lazy["cells_handed_out"] == eager["cells_handed_out"] > 0  # the same conditions, the same cells
    assert not lazy["dense_in_memory"] and eager["dense_in_memory"]
    assert all(r["peak_pss_mb"] > 0 and r["samples"] > 0 for r in rows)
    assert result["summary"].startswith("atlas: 20,000 cells")
