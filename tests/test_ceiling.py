"""The ceiling (``bench.ceiling``): the default criterion evaluated with the world's true parameters."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import simulators  # noqa: E402
from bench.ceiling import ceiling_strategy, truth_networks  # noqa: E402
from models import CSLEnsemble  # noqa: E402
from models.identifiability import match_programs, probe_queries  # noqa: E402


@pytest.fixture(scope="module")
def fitted_small_world():
    torch.set_num_threads(1)
    world = simulators.make_world("small", seed=0)
    space = world.space
    rng = np.random.default_rng(0)
    queries = space.sample(24, rng, assays=["scrna", "molecular"])
    data = world.measure(queries)
    model = CSLEnsemble(space, n_members=2, seed=0, max_steps=60, warm_steps=20)
    model.fit(data)
    return world, space, model, data


def test_truth_networks_carry_the_true_parameters_on_the_matched_programs(fitted_small_world):
    world, space, model, _ = fitted_small_world
    truth = world.truth
    nets = truth_networks(model, space, truth)
    probe = probe_queries(space)
    perm, sign, _ = match_programs(model.predict(probe).mean("programs"), truth.latent(probe))
    idx = [space.target_index[t] for t in truth.targets]
    for net, fitted in zip(nets, model.networks, strict=True):
        op = net.operator
        assert op is not fitted.operator  # copies: the fitted model is untouched
        np.testing.assert_allclose(op.tau_h.detach().numpy()[idx], truth.tau_h, rtol=1e-5)
        emax, ec50, hill = (x.detach().double().numpy() for x in (op.emax, op.log10_ec50, op.hill))
        for k, dim in enumerate(perm):
            for t in np.flatnonzero(truth.emax[:, k] != 0):
                assert emax[idx[t], dim] == pytest.approx(sign[k] * truth.emax[t, k], rel=1e-5)
                assert ec50[idx[t], dim] == pytest.approx(truth.ec50_log10[t, k], abs=1e-5)
                assert hill[idx[t], dim] == pytest.approx(truth.hill[t, k], rel=1e-3)
        true_pairs = {(idx[t], perm[k]) for k in range(len(perm)) for t in np.flatnonzero(truth.emax[:, k] != 0)}
        others = [(j, d) for j in range(op.T) for d in range(op.K) if (j, d) not in true_pairs]
        assert all(emax[j, d] == 0.0 for j, d in others)  # no effect where the truth has none


def test_the_ceiling_proposes_a_valid_batch_within_the_round_budget(fitted_small_world):
    world, space, model, data = fitted_small_world
    strategy = ceiling_strategy(world.truth, time_limit_s=300.0)
    queries = strategy.propose(model, space, data, 8, 30.0, np.random.default_rng(1))
    assert 1 <= len(queries) <= 8 and len({q.query_id for q in queries}) == len(queries)
    for q in queries:
        space.validate(q)
    assert space.cost(queries) <= 30.0 + 1e-9 and not queries.truncated
