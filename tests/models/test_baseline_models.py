"""The baselines recover what they model, and the mean of controls is the risk's own reference."""

import numpy as np
import pandas as pd
import pytest
from csl_fakes import specimen_obs, tiny_space

from experiment_design import MeasurementBatch, ModalityData, Perturbation, Query
from models.base import PROGRAMS
from models.baselines import AdditiveModel, LinearModel, MeanOfControls
from models.evaluation import evaluate
from models.identifiability import score
from models.registry import MODELS

SPACE = tiny_space()
CTX = SPACE.contexts
F = 3


def molecular_batch(
    queries: list[Query], f, replicates: int = 2, noise: float = 0.0, seed: int = 0
) -> MeasurementBatch:
    """A ``molecular`` batch whose specimens read ``f(q)`` (+ Gaussian noise), one row per specimen."""
    rng = np.random.default_rng(seed)
    obs = [specimen_obs(q, r, "molecular") for q in queries for r in range(replicates)]
    X = np.array([f(q) + noise * rng.normal(size=F) for q in queries for _ in range(replicates)]).reshape(-1, F)
    frame = pd.concat(obs, ignore_index=True) if obs else pd.DataFrame()
    return MeasurementBatch({"molecular": ModalityData(frame, X, ("P0", "P1", "P2"))})


def q(targets=(), doses=(), time_h=24.0, ctx=0) -> Query:
    return Query(Perturbation(tuple(targets), tuple(doses)), time_h, CTX[ctx], "molecular")


def u(dose: float) -> float:
    return float(SPACE.dose_to_unit(SPACE.targets[0].kind, dose))


BASE = {0: np.array([1.0, 0.0, -1.0]), 1: np.array([2.0, 0.5, 0.0])}
SLOPE = {"CMP00": np.array([1.5, -1.0, 0.0]), "CMP01": np.array([0.0, 2.0, 1.0])}


def truth(qq: Query) -> np.ndarray:
    """Context level plus, per compound, a slope times the unit dose: exactly additive and linear."""
    ctx = SPACE.context_index[qq.context]
    return BASE[ctx] + sum(
        (SLOPE[t] * u(d) for t, d in zip(qq.perturbation.targets, qq.perturbation.doses, strict=True)), np.zeros(F)
    )


DOSES = (0.003, 0.03, 0.3, 3.0, 30.0)
TRAIN = (
    [q(ctx=c) for c in (0, 1)]
    + [q(["CMP00"], [d], ctx=c) for d in DOSES for c in (0, 1)]
    + [q(["CMP01"], [d], ctx=c) for d in DOSES for c in (0, 1)]
)


def test_every_baseline_is_registered():
    assert {"mean", "additive", "linear"} <= set(MODELS.names)


def test_mean_of_controls_predicts_the_risk_reference_exactly():
    data = molecular_batch(TRAIN, truth, noise=0.1)
    model = MeanOfControls(SPACE, n_members=1)
    model.fit(data)
    held = [q(["CMP00"], [1.0], ctx=0), q(["CMP01"], [0.1], ctx=1), q(["CMP00", "CMP01"], [1.0, 1.0], ctx=0)]
    rep = evaluate(model, {"intervention": molecular_batch(held, truth, replicates=1)}, data)
    assert rep.details["nmse_intervention"] == pytest.approx(1.0, abs=1e-9)
    ctl = [t for t in TRAIN if t.perturbation.is_control]
    obs = molecular_batch(ctl, truth, noise=0.1).modalities["molecular"].X  # same seed: same control specimens
    np.testing.assert_allclose(
        model.predict([q(["CMP00"], [1.0], ctx=1)]).mean("molecular")[0], obs[2:4].mean(axis=0), atol=1e-12
    )


@pytest.mark.parametrize("cls", [AdditiveModel, LinearModel])
def test_additive_and_linear_predict_an_unseen_combination(cls):
    data = molecular_batch(TRAIN, truth, noise=0.02)
    model = cls(SPACE, n_members=4, seed=1)
    model.fit(data)
    held = [q(["CMP00", "CMP01"], [d0, d1], ctx=c) for d0, d1, c in ((0.3, 3.0, 0), (3.0, 0.03, 1), (0.03, 0.3, 0))]
    pred = model.predict(held)
    err = np.abs(pred.mean("molecular") - np.stack([truth(x) for x in held])).max()
    assert err < 0.35, err
    mean = MeanOfControls(SPACE, n_members=4, seed=1)
    mean.fit(data)
    rep = evaluate(model, {"intervention": molecular_batch(held, truth, replicates=1)}, data)
    base = evaluate(mean, {"intervention": molecular_batch(held, truth, replicates=1)}, data)
    assert rep.details["nmse_intervention"] < 0.25 < 0.9 < base.details["nmse_intervention"]
    assert pred.members["molecular"].shape == (4, 3, F)
    assert (pred.epistemic("molecular") > 0).any(), "bootstrap members differ"
    assert pred.members[PROGRAMS].shape[:2] == (4, 3)


def test_additive_effects_fade_to_zero_at_the_lowest_dose():
    data = molecular_batch(TRAIN, truth)
    model = AdditiveModel(SPACE, n_members=1)
    model.fit(data)
    low, high = model.predict([q(["CMP00"], [0.001]), q(["CMP00"], [100.0])]).mean("molecular")
    np.testing.assert_allclose(low, BASE[0], atol=0.15)
    np.testing.assert_allclose(high, BASE[0] + SLOPE["CMP00"] * u(30.0), atol=0.35)


def test_state_round_trip_and_no_operator_scores():
    data = molecular_batch(TRAIN, truth, noise=0.05)
    model = LinearModel(SPACE, n_members=3, seed=2)
    model.fit(data)
    again = LinearModel(SPACE, n_members=3, seed=2)
    again.load_state_dict(model.state_dict())
    probe = [q(["CMP01"], [0.5], ctx=1)]
    np.testing.assert_array_equal(again.predict(probe).members["molecular"], model.predict(probe).members["molecular"])
    rep = score(model, data)
    assert np.isnan(rep.index) and all(np.isnan(v) for v in rep.parts.values())
    with pytest.raises(ValueError, match="3 members"):
        LinearModel(SPACE, n_members=2).load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="fit"):
        LinearModel(SPACE).predict(probe)


def test_botorch_view_has_the_members_of_predict():
    import torch

    data = molecular_batch(TRAIN, truth, noise=0.05)
    model = AdditiveModel(SPACE, n_members=3)
    model.fit(data)
    queries = [q(["CMP00"], [0.3]), q(ctx=1)]
    X = SPACE.encode(queries)
    post = model.to_botorch(readout="molecular").posterior(X.unsqueeze(0))
    want = model.predict(SPACE.decode(X), readouts=("molecular",)).members["molecular"]
    np.testing.assert_allclose(post.values[0].detach().numpy(), want, rtol=1e-6)
    assert post.values.dtype == torch.float64


def test_baselines_need_data():
    empty = MeasurementBatch({})
    with pytest.raises(ValueError, match="no measurements"):
        MeanOfControls(SPACE).fit(empty)
