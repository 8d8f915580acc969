"""The batched ensemble fit is the members' own fits, computed at once."""

import math

import numpy as np
import pytest
import torch
from csl_fakes import fake_batch, tiny_space

from models.data import build_well_data
from models.ensemble_fit import EnsembleFit, StackedAdam, cosine_lr, fit_members
from models.fitting import FitConfig, FitJob, fit_member, prepare_member
from simulators import make_world


def _jobs(space, wd, cfg, n=3, states=None):
    n = n if states is None else len(states)
    return [
        FitJob(space, wd, cfg, seed=11 + i, member=i, state=None if states is None else states[i]) for i in range(n)
    ]


@pytest.fixture(scope="module")
def world_data():
    """The small world's data with every assay (spatial patches decoded through the RNA decoder included)."""
    world = make_world("small", seed=0)
    space = world.space
    rng = np.random.default_rng(3)
    qs = [q for a in space.assays for q in space.sample(3, rng, assays=[a.name])]
    return space, build_well_data(space, world.measure(qs))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.8)])
def test_stacked_adam_is_torch_adam_per_member(betas):
    torch.manual_seed(0)
    M, P = 3, 7
    start = torch.randn(M, P)
    target = torch.randn(M, P)
    lrs = torch.tensor([0.1, 0.03, 0.2])
    active_until = [40, 25, 40]  # member 1 stops at step 25 and stays frozen
    flat = start.clone().requires_grad_(True)
    cols = torch.tensor([True] * 5 + [False] * 2)  # the last two parameters are not optimised
    opt = StackedAdam(flat, cols, betas)
    for step in range(40):
        flat.grad = None
        ((flat - target) ** 4).sum().backward()
        opt.step(lrs, torch.tensor([step < a for a in active_until]))
    for i in range(M):
        p = start[i, :5].clone().requires_grad_(True)
        ref = torch.optim.Adam([p], lr=float(lrs[i]), betas=betas)
        for _ in range(active_until[i]):
            ref.zero_grad()
            ((p - target[i, :5]) ** 4).sum().backward()
            ref.step()
        assert torch.allclose(flat[i, :5].detach(), p.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(flat[i, 5:].detach(), start[i, 5:])


def test_cosine_rate_is_torch_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30, eta_min=0.05 * 0.05)
    for t in range(30):
        got = float(cosine_lr(0.05, torch.tensor([t]), torch.tensor([30]))[0])
        assert math.isclose(got, opt.param_groups[0]["lr"], rel_tol=1e-9)
        opt.step()
        sched.step()


def test_batched_losses_are_each_members_loss(world_data):
    """vmap over members with their own bootstrap weights = each network's own loss (zero weights, priors)."""
    space, wd = world_data
    assert "spatial" in wd.blocks and "rna" in wd.blocks
    prepared = [prepare_member(j) for j in _jobs(space, wd, FitConfig(), n=4)]
    # member 3 sees no RNA at all: neither the RNA likelihood nor, through spatial, a missing prior
    prepared[3].weights["rna"] = torch.zeros_like(prepared[3].weights["rna"])
    fit = EnsembleFit([p.net for p in prepared], wd, [p.weights for p in prepared])
    with torch.no_grad():
        total, parts = fit.losses()
        for i, p in enumerate(prepared):
            own = p.net.loss(wd, p.weights)
            assert math.isclose(float(total[i]), float(own.total), rel_tol=1e-5)
            for k, v in own.parts.items():
                assert math.isclose(float(parts[k][i]), float(v), rel_tol=1e-5, abs_tol=1e-6)
        assert float(parts["nll_rna"][3]) == 0.0


@pytest.mark.parametrize("warm", [False, True])
def test_batched_fit_equals_member_fits(warm):
    """Same steps (each member's own early stop) and, up to rounding, the same optimum, cold and warm."""
    space = tiny_space()
    rng = np.random.default_rng(0)
    qs = space.sample(24, rng, assays=["cite_seq", "rna_morphology", "molecular_rna"])
    wd = build_well_data(space, fake_batch(space, qs, rng))
    cfg = FitConfig(max_steps=150, warm_steps=100, tol=0.02)  # a tolerance some members reach, others not
    states = [r["state"] for r in fit_members(_jobs(space, wd, cfg))] if warm else None
    jobs = _jobs(space, wd, cfg, states=states)
    one_by_one = [fit_member(j) for j in jobs]
    batched = fit_members(jobs)
    steps = [r["summary"]["steps"] for r in one_by_one]
    assert [r["summary"]["steps"] for r in batched] == steps
    assert all(r["summary"]["warm"] is warm for r in batched)
    for a, b in zip(one_by_one, batched, strict=True):
        assert math.isclose(a["summary"]["total"], b["summary"]["total"], rel_tol=1e-3)
        for k, v in a["state"]["net"].items():
            assert torch.allclose(v, b["state"]["net"][k], atol=2e-3, rtol=1e-3), k
        assert (a["state"]["weights"] is None) == (b["state"]["weights"] is None)


def test_members_that_cannot_share_a_batch_are_fitted_apart():
    space = tiny_space()
    rng = np.random.default_rng(1)
    wd = build_well_data(space, fake_batch(space, space.sample(12, rng, assays=["molecular_rna"]), rng))
    cfg = FitConfig(max_steps=40, warm_steps=20)
    first = fit_members(_jobs(space, wd, cfg, n=2))
    mixed = fit_members(_jobs(space, wd, cfg, states=[first[0]["state"], None]))
    assert [r["summary"]["warm"] for r in mixed] == [True, False]
    assert [r["summary"]["steps"] for r in mixed] == [20, 40]


@pytest.mark.parametrize("bad", [{"beta1": 1.0}, {"beta2": 1.2}, {"beta1": -0.1}])
def test_an_adam_decay_outside_0_1_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FitConfig(**bad)
