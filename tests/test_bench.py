"""Smoke test of the benchmarks: ``python -m bench --quick --all`` so that none of them rots.

Runs every bench at its tiny sizes in a subprocess, with the JSON files and
logs sent to a temporary folder (``--results``) so the real figures in
``bench/results/`` are never overwritten. Checks that every bench printed its
one-line summary and wrote its JSON, and a few properties of the figures that
hold at any size.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.__main__ import BENCHES  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--all", "--results", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc, out


def test_every_bench_prints_its_summary_and_writes_json(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in BENCHES:
        assert any(line.startswith(f"{name}: ") for line in lines), f"no summary line of {name}:\n{proc.stdout}"
        assert json.loads((out / f"{name}.json").read_text())["quick"] is True, name
    assert lines[-1].startswith(f"{len(BENCHES)} benches in "), lines[-1]


def test_quick_figures_are_consistent(quick_run):
    _, out = quick_run
    read = lambda name: json.loads((out / f"{name}.json").read_text())  # noqa: E731
    e2e = read("e2e")
    # the stages are parts of the wall time; the default run is one process (no Ray), the per-member path
    # fans its fits out over Ray, whose processes the memory sampler follows
    assert 0 < sum(e2e["totals"][s] for s in ("fit_s", "score_s", "acquire_s", "measure_s")) < e2e["wall_s"]
    assert e2e["processes_seen"] == 1 and not e2e["used_ray"] and e2e["peak_rss_gb"] >= e2e["peak_pss_gb"] > 0
    assert e2e["baseline"]["processes_seen"] >= 3 and e2e["baseline"]["used_ray"]
    assert 0 <= e2e["acq_share_total"] <= 1
    # the earlier per-member fit path ran in the same invocation, on the same rounds
    assert e2e["baseline"]["rounds"] == e2e["rounds"] and e2e["baseline"]["totals"]["fit_s"] > 0
    scale = read("scale")
    assert scale["fanout"]["speedup"] > 0 and all(s["seconds"] >= 0 for s in scale["stages"])
    atlas = read("atlas")  # lazy and eager replay of the same atlas file hand out the same cells
    rows = atlas["rows"]
    assert [(r["cells"], r["mode"]) for r in rows] == [(10_000, "lazy"), (10_000, "eager"), (20_000, "lazy")]
    lazy, eager = rows[0], rows[1]
    assert lazy["cells_handed_out"] == eager["cells_handed_out"] > 0
    assert not lazy["dense_in_memory"] and eager["dense_in_memory"]
    assert all(r["peak_pss_mb"] > 0 and r["samples"] > 0 for r in rows)
    assert atlas["summary"].startswith("atlas: 20,000 cells")
    eff = read("efficiency")
    # random against itself needs exactly its own budget, on every seed
    ref = eff["headline"]["identifiability"]["random"][0]
    assert ref["strategy"] == "random" and ref["n_reached"] == ref["n_seeds"] == 2
    assert ref["ratio"] == pytest.approx(1.0)
    # the per-seed table is the one behind the headline: as many seeds reach as it counts, random needs its own
    for metric, by_ref in eff["headline"].items():
        rows = eff["per_seed"][metric]
        for h in by_ref["random"]:
            mine = [r for r in rows if r["strategy"] == h["strategy"]]
            assert len(mine) == h["n_seeds"] and sum(r["need"] == r["need"] for r in mine) == h["n_reached"]
        assert all(r["ratio"] == pytest.approx(1.0) for r in rows if r["strategy"] == "random")


def test_summarising_a_folder_without_a_study_is_a_one_line_error(tmp_path):
    from bench import efficiency

    with pytest.raises(SystemExit) as err:
        efficiency.main(["--no-run", "--out", str(tmp_path / "nothing"), "--no-ceiling"])
    assert str(err.value).startswith("error: ") and "nothing" in str(err.value)


def test_quick_results_go_to_their_own_folder_and_are_written_atomically(tmp_path, monkeypatch):
    from bench import results_dir, write_result

    monkeypatch.delenv("CSLAB_BENCH_RESULTS", raising=False)
    assert results_dir(True) == ROOT / "bench" / "results" / "quick"
    assert results_dir(False) == ROOT / "bench" / "results"
    monkeypatch.setenv("CSLAB_BENCH_RESULTS", str(tmp_path))
    path = write_result("x", {"a": 1}, quick=True)
    assert path == tmp_path / "x.json"
    assert json.loads(path.read_text()) == {"a": 1}
    assert not list(tmp_path.glob("*.tmp"))
