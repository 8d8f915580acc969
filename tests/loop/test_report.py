import base64
import re

import numpy as np
import pandas as pd
import pytest
from fabricate import fabricate_run, fabricate_study

from loop import report
from loop.recovery import Recovery, RecoveryUnavailable, affine_align, nonadditivity_sign
from loop.report import SECTIONS, dose_points, load_run, render


def _sections(text: str) -> dict[str, str]:
    """Section id → its HTML."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', text, flags=re.S))


def _assert_self_contained(text: str):
    srcs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert srcs, "no figures at all"
    for s in srcs:
        assert not s.startswith(("http://", "https://", "//")), s
        assert s.startswith(("data:image/png;base64,", "#")), s
    assert "http://" not in text and "https://" not in text
    for s in srcs:
        if s.startswith("data:"):
            png = base64.b64decode(s.split(",", 1)[1])
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def fake_recovery(run):
    if run.strategy == "random":
        raise RecoveryUnavailable("no checkpoint for this one")
    if run.strategy == "broken":
        raise TypeError("model API changed")
    dose = np.logspace(-3, 2, 8)
    true = dose / (dose + 1.0)
    panel = {"title": "CMP00 → p0", "dose": dose, "true": true, "mean": true + 0.05, "low": true, "high": true + 0.1}
    return Recovery([panel], (np.array([1, -1, 1]), np.array([1, 1, 1]), ["A+B", "A+C", "B+C"]), note="fake")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    fabricate_study(out, strategies=("random", "eig"), seeds=(0, 1, 2))
    return out


def test_study_report_has_every_section_and_is_self_contained(study):
    path = render(study, recovery=fake_recovery)
    text = path.read_text()
    secs = _sections(text)
    assert list(secs) == list(SECTIONS)
    for sid, title in SECTIONS.items():
        assert f"<h2>{report.html.escape(title)}</h2>" in secs[sid]
    _assert_self_contained(text)
    # figures where there is data
    for sid in ("identifiability", "identifiability-parts", "risk", "spending", "coverage", "timings"):
        assert "<img" in secs[sid], sid
    assert secs["recovery"].count("<img") == 2 and "no checkpoint for this one" in secs["recovery"]
    # headline: eig needs about 30·ln(1/(1−0.8·(1−e^{−100/60})/0.9)) ≈ 40 units vs random's whole budget
    assert "reference" in secs["headline"]
    row = re.search(r"<td>eig</td>\s*<td>3</td>\s*<td>[\d.]+</td>\s*<td>([\d.]+) \[", secs["headline"])
    ratio = float(row.group(1))
    expected = -30 * np.log(1 - 0.8 * (1 - np.exp(-100 / 60)) / 0.9) / 100
    assert ratio == pytest.approx(expected, abs=0.03)
    assert "seed, strategy" in secs["reproducibility"] and "torch" in secs["reproducibility"]


def test_single_run_report_shows_one_trajectory(tmp_path):
    fabricate_run(tmp_path / "run", "eig", seed=4)
    text = render(tmp_path / "run", recovery=None).read_text()
    secs = _sections(text)
    assert list(secs) == list(SECTIONS)
    _assert_self_contained(text)
    assert "cslab run report" in text
    assert "No <code>random</code> run here" in secs["headline"]
    assert "no recovery provider" in secs["recovery"]


def test_risk_not_available_when_all_nan_and_default_recovery_degrades(tmp_path):
    fabricate_run(tmp_path / "run", "random", seed=0, risk=False)
    text = render(tmp_path / "run").read_text()  # default provider: no checkpoint here
    secs = _sections(text)
    assert "not available" in secs["risk"] and "<img" not in secs["risk"]
    assert "not available" in secs["recovery"] and "checkpoint" in secs["recovery"]


def test_unfinished_runs_are_flagged(tmp_path):
    fabricate_run(tmp_path / "runs" / "random-seed0", "random", 0, finished=True)
    fabricate_run(tmp_path / "runs" / "random-seed1", "random", 1, finished=False)
    assert load_run(tmp_path / "runs" / "random-seed0").finished
    assert not load_run(tmp_path / "runs" / "random-seed1").finished
    assert "have not finished yet" in render(tmp_path, recovery=None).read_text()


def test_a_failing_recovery_provider_is_reported_not_fatal(tmp_path):
    fabricate_run(tmp_path / "runs" / "broken-seed0", "random", 0)
    cfg = tmp_path / "runs" / "broken-seed0" / "config.json"
    cfg.write_text(cfg.read_text().replace('"strategy": "random"', '"strategy": "broken"'))
    secs = _sections(render(tmp_path, recovery=fake_recovery).read_text())
    assert "failed — TypeError: model API changed" in secs["recovery"]
    assert "<img" in secs["identifiability"]


def test_cli_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_cli_renders(study, capsys):
    assert report.main([str(study), "--no-recovery"]) == 0
    assert "report:" in capsys.readouterr().out


def test_dose_points_explode_combinations():
    props = pd.DataFrame(
        {
            "strategy": ["a", "a"],
            "perturbation": ["CMP00+KD01", "control"],
            "dose_value": ["10.0+0.5", "0"],
            "time": [6.0, 24.0],
        }
    )
    pts = dose_points(props)
    assert list(pts["target"]) == ["CMP00", "KD01"]
    assert pts["log10_dose"].tolist() == pytest.approx([1.0, np.log10(0.5)])
    assert (pts["order"] == 2).all() and (pts["time"] == 6.0).all()


def test_affine_alignment_recovers_a_transformed_latent():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 3))
    M = rng.normal(size=(3, 3))
    pred = true @ M + 2.0
    A = affine_align(pred, true)
    assert np.hstack([pred, np.ones((50, 1))]) @ A == pytest.approx(true, abs=1e-8)


def test_nonadditivity_sign_follows_effect_direction():
    assert nonadditivity_sign(3.5, 1.0, 1.0, 0.0) == 1  # more than additive upwards: synergy
    assert nonadditivity_sign(1.5, 1.0, 1.0, 0.0) == -1
    assert nonadditivity_sign(-3.5, -1.0, -1.0, 0.0) == 1  # more than additive downwards: synergy
    assert nonadditivity_sign(-1.5, -1.0, -1.0, 0.0) == -1
