"""cslab's standard metrics agree with cell-eval on the same cells, and mean what they say."""

import numpy as np
import pytest

from models.metrics import STANDARD, discrimination_l1, standard_metrics

GENES, PERTS, CELLS = 30, 6, 40


def cells(seed: int = 0):
    """Cell-level real and predicted log-expression: a control and six perturbations with distinct effects."""
    rng = np.random.default_rng(seed)
    base = rng.normal(2.0, 0.5, GENES)
    effects = rng.normal(0.0, 1.0, (PERTS, GENES)) * (rng.random((PERTS, GENES)) < 0.3)
    pred_effects = effects + rng.normal(0.0, 0.4, effects.shape)  # a good but imperfect model
    labels = np.repeat(["non-targeting", *[f"G{i}" for i in range(PERTS)]], CELLS)
    real = np.concatenate(
        [base + rng.normal(0, 0.3, (CELLS, GENES))] + [base + e + rng.normal(0, 0.3, (CELLS, GENES)) for e in effects]
    )
    pred = np.concatenate(
        [base + rng.normal(0, 0.3, (CELLS, GENES))]
        + [base + e + rng.normal(0, 0.3, (CELLS, GENES)) for e in pred_effects]
    )
    return labels, real, pred


def pseudobulk(labels, X):
    """Per-perturbation means (sorted perturbation names, control excluded) and the control mean."""
    perts = sorted(set(labels) - {"non-targeting"})
    return np.stack([X[labels == p].mean(0) for p in perts]), X[labels == "non-targeting"].mean(0)


def test_pearson_delta_mae_and_discrimination_agree_with_cell_eval():
    ad = pytest.importorskip("anndata")
    pd = pytest.importorskip("pandas")
    ce = pytest.importorskip("cell_eval.metrics")
    from cell_eval._types import PerturbationAnndataPair

    labels, real, pred = cells()
    obs = pd.DataFrame({"target": labels}, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=[f"g{i}" for i in range(GENES)])
    pair = PerturbationAnndataPair(
        real=ad.AnnData(real.astype(np.float32), obs=obs, var=var),
        pred=ad.AnnData(pred.astype(np.float32), obs=obs.copy(), var=var),
        pert_col="target",
        control_pert="non-targeting",
    )
    theirs = {
        "pearson_delta": np.mean(list(ce.pearson_delta(pair).values())),
        "mae": np.mean(list(ce.mae(pair).values())),
        "discrimination_score_l1": np.mean(list(ce.discrimination_score(pair, metric="l1").values())),
    }
    R, ctrl_r = pseudobulk(labels, real.astype(np.float32).astype(float))
    P, ctrl_p = pseudobulk(labels, pred.astype(np.float32).astype(float))
    ours = standard_metrics(P, R, ctrl_r, ctrl_pred=ctrl_p)  # cell-eval: predicted effect vs predicted controls
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    assert 0.5 < ours["pearson_delta"] < 1.0 and ours["discrimination_score_l1"] > 0.8


def test_a_perfect_prediction_scores_one_and_the_mean_of_controls_zero():
    labels, real, _ = cells(1)
    R, ctrl = pseudobulk(labels, real)
    perfect = standard_metrics(R, R, ctrl, k=5)
    assert perfect["mae"] == 0 and all(perfect[f"{m}_skill"] == pytest.approx(1.0) for m in STANDARD)
    baseline = standard_metrics(np.broadcast_to(ctrl, R.shape), R, ctrl, k=5)
    assert baseline["mae_skill"] == pytest.approx(0.0) and np.isnan(baseline["pearson_delta"])
    assert baseline["de_direction_match"] == 0.0, "a zero effect matches no direction"


def test_discrimination_finds_a_shuffled_prediction_out():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(8, 20))
    assert np.all(discrimination_l1(real, real) == 1.0)
    shuffled = standard_metrics(real[::-1] + 5.0, real + 5.0, np.full(20, 5.0))
    assert shuffled["discrimination_score_l1"] < 0.7 and shuffled["discrimination_score_l1_skill"] < 0.2
    assert np.isnan(standard_metrics(real[:1], real[:1], np.zeros(20))["discrimination_score_l1"])
