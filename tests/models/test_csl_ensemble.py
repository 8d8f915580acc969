"""Ensemble mechanics on fake data: batched fit or map_fn fan-out, warm start, checkpoints, predictions, registry."""

import pickle

import numpy as np
import pytest
import torch
from csl_fakes import FEATURES, N_PROGRAMS, fake_batch, tiny_space

from models import CSLEnsemble
from models.base import Model, Prediction
from models.registry import get


@pytest.fixture(scope="module")
def fitted():
    space = tiny_space()
    rng = np.random.default_rng(0)
    qs = space.sample(30, rng, assays=["cite_seq", "rna_morphology", "molecular_rna"])
    data = fake_batch(space, qs, rng)
    calls = []

    def counting_map(fn, jobs):
        jobs = list(jobs)
        calls.append(len(jobs))
        # Members must survive pickling (a Ray map ships them to workers).
        return [pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(j))) for j in jobs]

    model = CSLEnsemble(space, n_members=3, seed=0, max_steps=150, warm_steps=60)
    first = model.fit(data, map_fn=counting_map)
    return space, qs, data, model, first, calls


def test_registered_and_protocol(fitted):
    space, *_ = fitted
    assert get("csl") is CSLEnsemble
    assert isinstance(CSLEnsemble(space), Model)


def test_members_fitted_as_one_batch_or_through_map_fn(fitted):
    space, _, data, _, first, calls = fitted
    assert calls == []  # batched (the default): one computation here, map_fn unused
    assert [m["member"] for m in first["members"]] == [0, 1, 2]
    assert all(np.isfinite(m["total"]) for m in first["members"])
    seen = []
    one_each = CSLEnsemble(space, n_members=2, seed=0, max_steps=20, batched=False)
    one_each.fit(data, map_fn=lambda fn, jobs: [seen.append(j.member) or fn(j) for j in jobs])
    assert seen == [0, 1]


def test_prediction_shapes_and_uncertainty(fitted):
    space, qs, _, model, *_ = fitted
    pred = model.predict(qs[:7])
    assert isinstance(pred, Prediction)
    assert pred.members["programs"].shape == (3, 7, N_PROGRAMS)
    for mod, F in FEATURES.items():
        assert pred.members[mod].shape == (3, 7, F)
        assert pred.aleatoric[mod].shape == (7, F) and (pred.aleatoric[mod] > 0).all()
    assert (pred.epistemic("programs") > 0).any()  # bootstrap members disagree
    small = model.predict(qs[:7], readouts=("programs",))
    assert set(small.members) == {"programs"}
    assert np.allclose(small.mean(), pred.mean())


def test_warm_start_continues_from_previous_parameters(fitted):
    space, qs, data, model, first, _ = fitted
    second = model.fit(data)
    assert all(m["warm"] for m in second["members"]) and not any(m["warm"] for m in first["members"])
    # Member 0 (all data, no bootstrap) resumes at the loss where it stopped, far below a cold start.
    m0, w0 = first["members"][0], second["members"][0]
    assert abs(w0["initial_total"] - m0["total"]) < 0.02 * abs(m0["total"]) + 0.05
    assert m0["initial_total"] - m0["total"] > 10 * abs(w0["initial_total"] - m0["total"])
    assert w0["total"] <= m0["total"] + 0.05


def test_state_dict_round_trip(fitted):
    space, qs, _, model, *_ = fitted
    state = pickle.loads(pickle.dumps(model.state_dict()))
    clone = CSLEnsemble(space, n_members=3)
    clone.load_state_dict(state)
    assert np.allclose(clone.predict(qs[:5]).members["rna"], model.predict(qs[:5]).members["rna"])
    # The posteriors a design is built on (after a resume) see the data the members were fitted on.
    (a, *_), _, _ = model.laplace(qs[:3])
    (b, *_), _, _ = clone.laplace(qs[:3])
    assert torch.allclose(a.sigma0, b.sigma0)
    clone.data = None  # what a checkpoint without the data gave: the prior alone
    (prior, *_), _, _ = clone.laplace(qs[:3])
    assert a.score(a.sigma0) < 0.9 * prior.score(prior.sigma0)
    with pytest.raises(ValueError, match="members"):
        CSLEnsemble(space, n_members=2).load_state_dict(state)


def test_predict_before_fit_raises():
    space = tiny_space()
    with pytest.raises(RuntimeError, match="fit"):
        CSLEnsemble(space).predict(space.sample(2, np.random.default_rng(0)))


def test_botorch_view_shapes_and_gradients(fitted):
    from botorch.posteriors.ensemble import EnsemblePosterior

    space, qs, _, model, *_ = fitted
    bm = model.to_botorch()
    assert bm.num_outputs == N_PROGRAMS
    X = space.encode(qs[:12]).reshape(4, 3, -1).clone().requires_grad_(True)
    post = bm.posterior(X)
    assert isinstance(post, EnsemblePosterior)
    assert post.mean.shape == (4, 3, N_PROGRAMS) and post.variance.shape == (4, 3, N_PROGRAMS)
    assert post.rsample(torch.Size([5])).shape == (5, 4, 3, N_PROGRAMS)
    assert post.values.shape == (4, 3, 3, N_PROGRAMS)  # batch x members x q x outputs
    post.mean.sum().backward()
    enc = space.encoding
    g = X.grad
    assert torch.isfinite(g).all()
    assert g[..., enc.cat_dims].abs().sum() == 0  # categorical dims are rounded
    perturbed = X.detach()[..., enc.target_dims[0]] > 0
    assert (g[..., enc.time_dim][perturbed].abs() > 0).any()
    assert (g[..., enc.dose_dims[0]][perturbed].abs() > 0).any()
    # The encoding path agrees with the query path.
    direct = bm(space.encode(qs[:6]))
    assert np.allclose(direct.detach().numpy(), model.predict(qs[:6]).members["programs"], atol=1e-4)
    # A selected readout with selected features, and a plain q x d input.
    rna = model.to_botorch(readout="rna", feature_idx=[0, 3])
    assert rna.posterior(space.encode(qs[:2])).mean.shape == (2, 2)


def test_botorch_acquisition_runs_on_the_view(fitted):
    from botorch.acquisition.monte_carlo import qSimpleRegret
    from botorch.acquisition.objective import LinearMCObjective

    space, qs, _, model, *_ = fitted
    acq = qSimpleRegret(model.to_botorch(), objective=LinearMCObjective(torch.ones(N_PROGRAMS, dtype=torch.float64)))
    X = space.encode(qs[:8]).reshape(4, 2, -1).clone().requires_grad_(True)
    val = acq(X)
    assert val.shape == (4,)
    val.sum().backward()
    assert torch.isfinite(X.grad).all() and X.grad.abs().sum() > 0


def test_many_candidates_programs_only(fitted):
    space, qs, _, model, *_ = fitted
    cands = space.sample(5000, np.random.default_rng(3))
    pred = model.predict(cands, readouts=("programs",))
    assert pred.members["programs"].shape == (3, 5000, N_PROGRAMS)
    assert np.allclose(pred.members["programs"][:, 4990:], model.predict(cands[4990:]).members["programs"], atol=1e-5)
