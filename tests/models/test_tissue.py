"""Tissue operators: the projection P (cells → spots) and the lift L (spots → composition and state)."""

import numpy as np
import pytest
import torch

from experiment_design import Perturbation, Query
from models import CSLEnsemble
from models.cross_scale import composition_error, cycle_r2, lift_spots, true_compositions
from models.identifiability import score
from models.modules.decoders import CountDecoder
from models.modules.tissue import SpotDecoder, infer_latent_linear, lift_composition, project

simulators = pytest.importorskip("simulators")
from simulators.counts import rna_proportions  # noqa: E402


def _decoder(G=15, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rna = CountDecoder(G, K, 2, g)
    with torch.no_grad():
        rna.loading.copy_(torch.randn(G, K, generator=g))
        rna.bias.copy_(torch.randn(G, generator=g))
        rna.batch.copy_(0.2 * torch.randn(2, G, generator=g))
    return rna, g


def test_projection_is_the_sum_over_cells():
    """E[spot] / N = Σ_t π_t softmax(b + W(z + o_t) + batch): cells of each type, summed."""
    rna, g = _decoder()
    n, C, K = 4, 3, 3
    states = torch.randn(n, C, K, generator=g)
    site = torch.tensor([0, 1, 1, 0])
    comp = torch.softmax(torch.randn(n, C, generator=g), 1)
    by_hand = sum(
        comp[:, t : t + 1] * torch.softmax(rna.bias + states[:, t] @ rna.loading.T + rna.batch[site], 1)
        for t in range(C)
    )
    assert torch.allclose(project(rna, states, site, comp).exp(), by_hand, atol=1e-6)


def test_spot_likelihood_is_negative_binomial_through_the_rna_decoder():
    rna, g = _decoder()
    dec = SpotDecoder(15, 3, 2, rna, g)
    z = torch.randn(5, 3, generator=g)
    site = torch.zeros(5, dtype=torch.long)
    from models.data import WellBlock

    y = torch.poisson(torch.full((5, 15), 30.0, dtype=torch.float32), generator=g)
    block = WellBlock(
        y,
        torch.full((5,), 16.0),
        torch.arange(5),
        torch.zeros(5, dtype=torch.long),
        torch.zeros(5, 3),
        torch.zeros(5, 15),
        tuple("abcdefghijklmno"),
        ("",),
        tuple("vwxyz"),
    )
    mu = y.sum(1, keepdim=True) * dec.log_p(z, site).exp()
    theta = 16.0 * dec.log_theta.exp()
    ref = torch.distributions.NegativeBinomial(total_count=theta, logits=torch.log(mu) - torch.log(theta))
    assert torch.allclose(dec.nll(z, site, block, torch.ones(5)), -ref.log_prob(y).sum(), rtol=1e-4)
    assert set(dict(dec.named_parameters())) == {"offsets", "comp_logits", "platform", "log_theta"}  # RNA not owned


def test_lift_recovers_known_compositions_from_poisson_spots():
    rng = np.random.default_rng(0)
    C, G, n = 3, 60, 200
    refs = rng.dirichlet(np.full(G, 0.5), size=C)
    comp = rng.dirichlet(np.full(C, 0.7), size=n)
    y = rng.poisson(2000.0 * comp @ refs)
    est = lift_composition(torch.as_tensor(refs)[None].expand(n, -1, -1), torch.as_tensor(y, dtype=torch.float32))
    assert composition_error(est.numpy(), comp) < 0.03
    assert composition_error(np.full_like(comp, 1 / C), comp) > 0.2


def test_linear_latent_inference_inverts_the_decoder():
    rna, g = _decoder(G=40, K=3)
    z = torch.randn(6, 3, generator=g)
    site = torch.tensor([0, 1, 0, 1, 0, 1])
    y = torch.poisson(5e4 * rna.log_p(z, site).exp().detach(), generator=g)
    assert torch.allclose(infer_latent_linear(rna, y, site, ridge=1e-6), z, atol=0.1)


def tissue_design(space, assay="spatial_dissociated"):
    """Tissue patches over every target's dose series, plus a molecular + RNA dose series."""
    qs = [
        Query(Perturbation((t.name,), (float(d),)), 24.0, space.contexts[0], assay)
        for t in space.targets
        for d in space.dose_series(t.name, 3)
    ]
    return qs + [
        Query(Perturbation((t.name,), (float(d),)), th, space.contexts[0], "molecular_rna")
        for t in space.targets
        for d in space.dose_series(t.name, 4)
        for th in (2.0, 24.0)
    ]


@pytest.fixture(scope="module")
def tissue_fit():
    world = simulators.make_world("small", seed=0)
    model = CSLEnsemble(world.space, n_members=1, seed=0, max_steps=300, n_cell_types=2)
    model.fit(world.measure(tissue_design(world.space)))
    return world, model


def test_lift_recovers_the_true_composition(tissue_fit):
    """After a fit with spatial + dissociated anchors, L's per-spot composition is within 0.2 (TV) of the truth."""
    world, model = tissue_fit
    lifted = lift_spots(model.networks[0], model.data)
    assert lifted is not None and lifted.refined  # offsets refined on the dissociated cells
    true = true_compositions(lifted, model.data, world.truth.extras["spot_truth"])
    err = composition_error(lifted.composition, true)
    uniform = composition_error(np.full_like(lifted.composition, 0.5), true)
    assert err < 0.2 and err < uniform - 0.2, (err, uniform)
    rep = score(model, truth=world.truth)
    assert abs(rep.parts["lift"] - (1.0 - err)) < 1e-9
    assert rep.raw["lift_uniform"] == pytest.approx(uniform)
    assert rep.raw["lift_state_r2"] > 0.7  # lifted spot states vs true mean spot latents (affine)


def test_cycle_projects_lifted_spots_back_onto_the_spots(tissue_fit):
    """P(L(spots)) explains the spots as well as the true spot states do, and better than the mean composition.

    The ceiling is set by counting noise: the "oracle" projects each spot's TRUE mean latent
    through the simulator's own RNA operator.
    """
    world, model = tissue_fit
    lifted = lift_spots(model.networks[0], model.data)
    r2 = cycle_r2(lifted)
    mean_comp = lifted.composition.mean(0, keepdims=True).repeat(len(lifted.composition), 0)
    flat = lifted.__class__(**{**lifted.__dict__, "log_p_cycle": _project_at(model, lifted, mean_comp)})
    oracle_lp = np.zeros_like(lifted.log_p_cycle)
    for i, (qi, rep, u) in enumerate(zip(lifted.query, lifted.replicate, lifted.unit, strict=True)):
        q = model.data.queries[qi]
        latent = world.spot_truth(q, int(rep))["latent"][[u]]
        oracle_lp[i] = np.log(rna_proportions(world.params, latent, None, world.params.sites.index(q.context.site))[0])
    oracle = cycle_r2(lifted.__class__(**{**lifted.__dict__, "log_p_cycle": oracle_lp}))
    assert r2 > 0.9 * oracle and r2 > cycle_r2(flat) + 0.1, (r2, oracle, cycle_r2(flat))


def _project_at(model, lifted, comp):
    net = model.networks[0]
    dec = net.decoders["spatial"]
    wd = model.data
    with torch.no_grad():
        z = net.latent(wd.features)[torch.as_tensor(lifted.query)]
        states = z[:, None, :] + torch.as_tensor(lifted.offsets, dtype=torch.float32)
        refs = torch.softmax(
            dec.rna.log_p(states, wd.features.site[torch.as_tensor(lifted.query)][:, None].expand(-1, states.shape[1]))
            + dec.platform,
            -1,
        )
        return torch.log((torch.as_tensor(comp)[:, :, None] * refs.double()).sum(1)).numpy()


def test_no_spots_means_no_lift(tissue_fit):
    world, _ = tissue_fit
    sp = world.space
    model = CSLEnsemble(sp, n_members=1, seed=0, max_steps=60)
    model.fit(world.measure([Query(Perturbation(), 24.0, c, "molecular_rna", replicates=2) for c in sp.contexts]))
    assert lift_spots(model.networks[0], model.data) is None
    assert score(model, truth=world.truth).parts["lift"] == 0.0
