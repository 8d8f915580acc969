"""``fisher``: the Laplace posterior over intervention parameters and its targeted A-optimal gain."""

import math

import numpy as np
import pytest
import torch
from acquisition_fakes import small_space

from acquisition.fisher import ParameterInformation
from acquisition.readouts import pool_positions
from experiment_design import Context, DesignSpace, Perturbation, Query, Target
from experiment_design.assays import MOLECULAR, Assay, Scale
from models.data import features_from_queries
from models.laplace import Layout, MemberPosterior, _decoder_weight, _latent_jacobian, information_factors
from models.modules.network import CSLNetwork

EC50_LOG10 = 0.0  # 1 µM
HILL = 1.5


def one_target_space() -> DesignSpace:
    """One compound, one context, a molecular panel (reads the programs directly)."""
    assays = (Assay("molecular", (MOLECULAR,), Scale.MOLECULAR, 0.5, (1,)),)
    return DesignSpace(
        targets=(Target("CMP00", "compound"),), contexts=(Context("L0", "S0"),), max_order=1, assays=assays
    )


def hill_net(n_targets: int = 1, max_order: int = 1) -> CSLNetwork:
    """A member with a known Hill curve on program 0 (Emax 1, EC50 1 µM, slope 1.5) and no effect on program 1."""
    torch.manual_seed(0)
    net = CSLNetwork(n_targets, 2, 1, 1, torch.zeros(n_targets), {MOLECULAR: 2}, propagate=False)
    op = net.operator
    with torch.no_grad():
        op.log10_ec50.fill_(EC50_LOG10)
        op.hill_raw.fill_(math.log((HILL - 0.3) / 5.7 / (1 - (HILL - 0.3) / 5.7)))
        op.emax.zero_()
        op.emax[:, 0] = 1.0
        op.log_tau.fill_(math.log(0.5))
        op.inter_u.normal_(0.0, 0.5)
    return net


def dose_queries(space: DesignSpace, log10_doses: np.ndarray) -> list[Query]:
    return [Query(Perturbation(("CMP00",), (float(10**x),)), 24.0, space.contexts[0], "molecular") for x in log10_doses]


def test_layout_gives_every_parameter_one_index_and_empty_slots_the_dummy():
    lay = Layout(T=4, K=3)
    assert lay.P == 3 * 4 * 3 + 4 + 6
    target = torch.tensor([[0, 4, 4], [1, 2, 4], [3, 0, 2]])
    idx = lay.support(target)
    assert idx.shape == (3, 3 * lay.block + 3)
    assert (idx[0, lay.block :] == lay.P).all()  # one target: the other slots and all pairs are dummies
    assert (idx[1, : 2 * lay.block] < lay.P).all() and (idx[1, 2 * lay.block : 3 * lay.block] == lay.P).all()
    assert idx[1, 3 * lay.block] == 3 * 4 * 3 + 4 + 3  # pair (1, 2): row 1 of the triangle starts at 3
    assert idx[1, 3 * lay.block + 1 :].eq(lay.P).all()
    # every real parameter of every target appears exactly once over the single-target blocks
    all_single = lay.support(torch.tensor([[j, 4, 4] for j in range(4)]))[:, : lay.block]
    assert sorted(all_single.reshape(-1).tolist()) == list(range(3 * 4 * 3 + 4))
    pairs = lay.support(torch.tensor([[a, b, 4] for a in range(4) for b in range(4) if a < b]))[:, 3 * lay.block]
    assert sorted(pairs.tolist()) == list(range(3 * 4 * 3 + 4, lay.P))
    assert (
        lay.support(torch.tensor([[2, 1, 4]]))[0, 3 * lay.block]
        == lay.support(torch.tensor([[1, 2, 4]]))[0, 3 * lay.block]
    )


def test_decoder_jacobians_import_no_compiler_stack():
    """The decoder Jacobians (every fisher proposal) leave torch._dynamo and sympy unimported (1.6 s a process)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, torch; from models.laplace import _decoder_weight; "
        "from models.modules.decoders import CountDecoder; "
        "w = _decoder_weight(CountDecoder(20, 4, 2), torch.randn(3, 4), torch.tensor([0, 1, 0])); "
        "print(tuple(w.shape), [m for m in ('torch._dynamo', 'sympy') if m in sys.modules])"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(3, 4, 4) []"


@pytest.mark.parametrize("project_spatial", [False, True])
def test_decoder_weight_is_the_jacobian_sandwich_of_every_decoder(project_spatial):
    """``D_zᵀ diag(1/var) D_z`` by the double-backward trick equals the one from ``torch.func.jacfwd``, per decoder."""
    from experiment_design.assays import ADT, MORPHOLOGY, RNA, SPATIAL

    torch.manual_seed(3)
    dims = {RNA: 12, SPATIAL: 12, ADT: 5, MORPHOLOGY: 6, MOLECULAR: 3}
    net = CSLNetwork(2, 3, 2, 2, torch.zeros(2), dims, n_plates=2, project_spatial=project_spatial)
    with torch.no_grad():
        for p in net.decoders.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the initialisation's symmetries
    z, site = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    for name, dec in net.decoders.items():
        with torch.no_grad():  # as models.laplace.decoder_roots calls it
            inv = 1.0 / dec.readout(z, site)[1].clamp_min(1e-6)
            D = torch.func.vmap(torch.func.jacfwd(lambda zz, ss, d=dec: d.readout(zz[None], ss[None])[0][0]))(z, site)
            expected = torch.einsum("nfk,nf,nfl->nkl", D, inv, D)
            got = _decoder_weight(dec, z, site)
        assert got.shape == (4, 3, 3), name
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
        assert float(expected.abs().max()) > 1e-3, name  # not a comparison of zeros


def test_latent_jacobian_matches_finite_differences():
    space = small_space(n_compounds=3, n_genes=0, max_order=3)
    net = hill_net(n_targets=3, max_order=3)
    op = net.operator
    queries = [
        Query(Perturbation(("CMP00", "CMP02"), (0.5, 3.0)), 6.0, space.contexts[0], "scrna"),
        Query(Perturbation(("CMP01",), (2.0,)), 2.0, space.contexts[0], "scrna"),
        Query(Perturbation(("CMP00", "CMP01", "CMP02"), (0.2, 1.0, 8.0)), 12.0, space.contexts[0], "scrna"),
    ]
    f = features_from_queries(space, queries)
    J = _latent_jacobian(op, f)
    lay = Layout(3, 2)
    slots = op.slot_parameters(f)
    eps = 1e-3
    checks = [
        ("log10_ec50", (0, 1, 0), 0, 1.0),
        ("hill", (2, 2, 0), 2 * lay.block + 2, "log"),
        ("emax", (1, 0, 0), 4, 1.0),
        ("tau_h", (2, 1), 1 * lay.block + 6, "log"),
        ("gamma", (0, 0), 3 * lay.block, 1.0),
    ]
    for name, where, col, kind in checks:
        row = where[0]
        up = {k: v.detach().clone() for k, v in slots.items()}
        dn = {k: v.detach().clone() for k, v in slots.items()}
        step = eps * (float(slots[name].detach()[where]) if kind == "log" else 1.0)  # d/d ln x = x d/dx
        up[name][where] += step
        dn[name][where] -= step
        fd = (op(f, up) - op(f, dn))[row] / (2 * eps)
        torch.testing.assert_close(J[row, :, col], fd, atol=2e-3, rtol=2e-2, msg=f"{name} {where}")


def test_latent_jacobian_in_one_pass_equals_one_pass_per_program(monkeypatch):
    """The one-backward path (few conditions, each repeated K times) gives the K-pass path's numbers."""
    import models.laplace as laplace

    space = small_space(n_compounds=3, n_genes=0, max_order=3)
    torch.manual_seed(1)
    net = CSLNetwork(3, 4, 2, 1, torch.zeros(3), {MOLECULAR: 4}, propagate=True)  # programs read each other
    with torch.no_grad():
        for p in net.operator.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    queries = [
        Query(
            Perturbation(
                tuple(rng.choice(["CMP00", "CMP01", "CMP02"], size=k, replace=False)), tuple(rng.uniform(0.01, 10, k))
            ),
            float(rng.uniform(0.5, 24)),
            space.contexts[0],
            "scrna",
        )
        for k in rng.integers(1, 4, size=40)
    ]
    f = features_from_queries(space, queries)
    assert len(f.target) * net.operator.K <= laplace.ONE_PASS_ROWS
    one = _latent_jacobian(net.operator, f)
    monkeypatch.setattr(laplace, "ONE_PASS_ROWS", 0)
    per_program = _latent_jacobian(net.operator, f)
    assert one.shape == per_program.shape == (40, 4, Layout(3, 4).support(f.target[:1]).shape[1])
    assert float(one.abs().max()) > 0.1
    # the same per-row arithmetic: equal here, but the last bit of a vectorised exp may depend on where a row
    # falls in its tensor on another CPU, so a tolerance, not identity
    torch.testing.assert_close(one, per_program, rtol=1e-6, atol=1e-7)


def test_gain_equals_the_variance_drop_of_the_woodbury_update_and_the_direct_inverse():
    space = one_target_space()
    net = hill_net()
    m = MemberPosterior(net, space, None)
    f = features_from_queries(space, dose_queries(space, np.array([-0.5, 0.3])))
    L = information_factors(net, f, [(MOLECULAR,)] * 2).double()
    idx = m.layout.support(f.target)
    after = m.update(m.sigma0, idx[0], L[0])
    P = m.layout.P
    direct = torch.linalg.inv(torch.linalg.inv(m.sigma0[:P, :P]) + _dense(L[0], idx[0], P))
    torch.testing.assert_close(after[:P, :P], direct, rtol=1e-6, atol=1e-9)
    gain = m.gains(m.sigma0, idx[:1], L[:1])[0]
    assert float(gain) == pytest.approx(m.score(m.sigma0) - m.score(after), rel=1e-4)
    # a second well at another dose is worth less once the first is in (diminishing returns)
    assert float(m.gains(after, idx[1:], L[1:])[0]) < float(m.gains(m.sigma0, idx[1:], L[1:])[0])


def _dense(L: torch.Tensor, idx: torch.Tensor, P: int) -> torch.Tensor:
    F = torch.zeros(P + 1, P + 1, dtype=torch.float64)
    F[idx[:, None], idx[None, :]] += L @ L.T
    return F[:P, :P]


def test_ec50_information_peaks_at_the_ec50_and_vanishes_on_the_flat_tails():
    """c-optimal design for one Hill curve: the EC50 is learned best from doses near it."""
    space = one_target_space()
    net = hill_net()
    m = MemberPosterior(net, space, None)
    m.c = torch.zeros_like(m.c)
    m.c[0] = 1.0  # only log10 EC50 of (target 0, program 0)
    x = np.linspace(-3.0, 2.0, 101)
    f = features_from_queries(space, dose_queries(space, x))
    L = information_factors(net, f, [(MOLECULAR,)] * len(x))
    g = m.gains(m.sigma0, m.layout.support(f.target), L).numpy()
    # at the EC50 itself when Emax and slope are known; their prior spread here pulls it a little lower
    assert abs(x[g.argmax()] - EC50_LOG10) < 0.35
    assert g[0] < 0.05 * g.max() and g[-1] < 0.05 * g.max()  # 1000-fold below / 100-fold above the EC50


def test_acquisition_picks_a_spread_batch_and_matches_its_own_joint_value():
    space = one_target_space()
    nets = [hill_net(), hill_net()]
    with torch.no_grad():
        nets[1].operator.log10_ec50.fill_(0.5)  # members disagree about the EC50
    x = np.linspace(-3.0, 2.0, 51)
    f = features_from_queries(space, dose_queries(space, x))
    members = [MemberPosterior(n, space, None) for n in nets]
    factors = [information_factors(n, f, [(MOLECULAR,)] * len(x)) for n in nets]
    acqf = ParameterInformation(members, members[0].layout.support(f.target), factors)
    X = pool_positions(len(x))
    first = acqf(X.unsqueeze(-2))
    best = int(first.argmax())
    acqf.set_X_pending(X[[best]])
    second = acqf(X.unsqueeze(-2))
    assert float(second.max() - first[best]) < float(first.max())  # the second well adds less than the first
    assert abs(x[int(second.argmax())] - x[best]) > 0.2  # and sits elsewhere on the curve
    acqf.set_X_pending(None)
    assert torch.equal(acqf(X.unsqueeze(-2)), first)  # the pending cache resets exactly
    joint = acqf(X[[best, int(second.argmax())]].unsqueeze(0))  # q = 2 in one call, nothing pending
    assert float(joint) == pytest.approx(float(second.max()), rel=1e-4)
    with pytest.raises(ValueError, match="not a position"):
        acqf(torch.tensor([[[0.5]]], dtype=torch.float64))


def test_a_model_without_an_operator_falls_back_to_readout_eig():
    from acquisition_fakes import BumpEnsemble

    from acquisition.eig import EnsembleEIG
    from acquisition.fisher import FisherStrategy

    space = small_space()
    model = BumpEnsemble(space)
    strat = FisherStrategy()
    pool = strat.candidate_pool(space, np.random.default_rng(0), 100.0)
    acqf, _ = strat.build_acqf(model, space, pool, None, np.random.default_rng(0), float("inf"))
    assert isinstance(acqf, EnsembleEIG)
    assert len(strat.propose(model, space, None, 4, 100.0, np.random.default_rng(0))) == 4


def test_cost_aware_paces_the_budget_over_rounds():
    from acquisition_fakes import BumpEnsemble

    from acquisition.botorch_strategy import round_budget
    from acquisition.cost_aware import CostAwareStrategy

    space = small_space()
    median = float(np.median([a.cost for a in space.assays]))
    assert round_budget(space, 200.0, 4, 4.0) == 50.0  # a quarter of what is left
    assert round_budget(space, 8.0, 4, 4.0) == pytest.approx(min(8.0, 4 * median))  # q median wells at the end
    model = BumpEnsemble(space)
    paced = CostAwareStrategy(pool_size=300).propose(model, space, None, 12, 40.0, np.random.default_rng(0))
    free = CostAwareStrategy(pool_size=300, pace=None).propose(model, space, None, 12, 40.0, np.random.default_rng(0))
    assert space.cost(paced) <= round_budget(space, 40.0, 12, 4.0) + 1e-9
    # while the round's 12 wells, not its budget, are the limit, the slot price buys richer wells per slot
    assert space.cost(paced) / len(paced) > space.cost(free) / len(free)
    tight = CostAwareStrategy(pool_size=300).propose(model, space, None, 12, 200.0, np.random.default_rng(0))
    assert space.cost(tight) <= round_budget(space, 200.0, 12, 4.0) + 1e-9 <= 50.0 + 1e-9
    with pytest.raises(ValueError, match="pace must be >= 1"):
        CostAwareStrategy(pace=0.5)


def test_a_posterior_too_large_to_hold_falls_back_to_the_readout_eig(monkeypatch):
    """Past ``MAX_PARAMETERS`` nothing is allocated (the large world's Λ alone would be 12 GB): EIG instead."""
    import simulators
    from acquisition.fisher import FisherStrategy
    from models import CSLEnsemble
    from models import laplace as laplace_module
    from models.base import PosteriorTooLarge

    torch.set_num_threads(1)
    world = simulators.make_world("small", seed=0)
    space = world.space
    data = world.measure(space.sample(12, np.random.default_rng(0), assays=["scrna", "molecular"]))
    model = CSLEnsemble(space, n_members=2, seed=0, max_steps=20, warm_steps=10)
    model.fit(data)
    P = Layout(len(space.targets), model.networks[0].operator.K).P
    model.laplace(space.sample(4, np.random.default_rng(1)))  # at the limit's default: a posterior
    monkeypatch.setattr(laplace_module, "MAX_PARAMETERS", P - 1)
    with pytest.raises(PosteriorTooLarge, match=f"^{P} intervention parameters"):
        model.laplace(space.sample(4, np.random.default_rng(1)))
    with pytest.warns(UserWarning, match="readouts' EIG instead"):
        queries = list(FisherStrategy(pool_size=200).propose(model, space, data, 6, 50.0, np.random.default_rng(2)))
    assert len(queries) == 6
    for q in queries:
        space.validate(q)


def test_cost_aware_caps_the_share_of_combinations_in_a_round():
    from acquisition_fakes import BumpEnsemble

    from acquisition.cost_aware import COMBINATION_SHARE, CostAwareStrategy

    space = small_space()
    model = BumpEnsemble(space)

    def combos(share: float | None) -> tuple[int, int]:
        batch = CostAwareStrategy(pool_size=300, pace=None, combination_share=share).propose(
            model, space, None, 12, 200.0, np.random.default_rng(0)
        )
        return sum(len(q.perturbation.targets) > 1 for q in batch), len(batch)

    free, n_free = combos(None)
    assert free > 3 and n_free == 12  # uncapped, this model's information buys combinations
    for share in (0.0, 0.25, COMBINATION_SHARE):
        n_combos, n = combos(share)
        assert n_combos <= math.floor(share * 12) and n == 12, share  # single targets fill the other wells
    assert CostAwareStrategy().combination_share == COMBINATION_SHARE == 0.5
    with pytest.raises(ValueError, match="combination_share must be in"):
        CostAwareStrategy(combination_share=1.5)
