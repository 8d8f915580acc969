"""Properties of the science: where strategies look, what cost-awareness buys, what memory it takes."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from acquisition_fakes import BumpEnsemble, rna_adt_space, small_space
from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance

import acquisition
from acquisition.cost_aware import CostAwareStrategy
from acquisition.eig import EnsembleEIG
from acquisition.nipv import ClosedFormNIPV
from acquisition.readouts import build_pool_model, pool_positions

POOL = 800


def _region_share(space, queries):
    return float(np.mean([BumpEnsemble.in_region(space, query) for query in queries]))


@pytest.fixture(scope="module")
def world():
    space = small_space()
    return space, BumpEnsemble(space, modalities={"rna": 20, "adt": 6, "morphology": 5})


@pytest.mark.parametrize("name", ["uncertainty", "disagreement", "eig", "nipv"])
def test_information_strategies_propose_where_the_ensemble_disagrees(world, name):
    space, model = world
    kwargs = {"mc_points": 128} if name == "nipv" else {}
    strategy = acquisition.get(name)(time_limit_s=5.0, pool_size=POOL, **kwargs)
    qs = strategy.propose(model, space, None, 8, 100.0, np.random.default_rng(1))
    # The region holds ~8% of random draws; an information strategy should put most of its batch there.
    # nipv sees the ensemble only through a GP fitted at 256 points, which also is unsure where it has no data.
    assert len(qs) == 8 and _region_share(space, qs) >= (0.6 if name == "nipv" else 0.75)


@pytest.mark.parametrize("name", ["random", "sobol", "dose_grid"])
def test_baselines_ignore_the_disagreement(world, name):
    space, model = world
    shares = [
        _region_share(space, acquisition.get(name)().propose(model, space, None, 16, 100.0, np.random.default_rng(s)))
        for s in range(3)
    ]
    assert np.mean(shares) <= 0.3


def _anchors(model, space, base, cost_exponent=1.0):
    strategy = CostAwareStrategy(base, time_limit_s=5.0, pool_size=400, cost_exponent=cost_exponent)
    qs = strategy.propose(model, space, None, 8, 100.0, np.random.default_rng(0))
    assert len(qs) == 8
    return sum(space.assay(query.assay).is_anchor for query in qs)


@pytest.mark.parametrize("base", ["disagreement", "eig"])
def test_cost_aware_buys_the_anchor_only_when_it_pays(base):
    space = rna_adt_space()  # scRNA costs 1.0, CITE-seq (RNA + ADT) 2.5
    # Case 1: the protein readout is sharp and the members disagree on it: an
    # anchor carries far more than 2.5x the information of an RNA-only well.
    sharp_adt = BumpEnsemble(space, modalities={"rna": 20, "adt": 6}, noise_var={"adt": 0.01})
    assert _anchors(sharp_adt, space, base) >= 6
    # Case 2: the members agree on protein: the anchor adds nothing for 2.5x the price.
    flat_adt = BumpEnsemble(space, modalities={"rna": 20, "adt": 6}, scales={"adt": 0.0})
    assert _anchors(flat_adt, space, base) == 0
    # Without the cost division the same information strategy buys anchors anyway.
    assert _anchors(flat_adt, space, base, cost_exponent=0.0) > 0


def test_discovery_finds_the_synergistic_pair():
    space = small_space(max_order=2)
    model = BumpEnsemble(space, synergy=3.0, amplitude=0.0)
    rng = np.random.default_rng(0)
    hits = acquisition.get("discovery")(pool_size=POOL, target="synergy").propose(model, space, None, 8, 100.0, rng)
    pair = [q for q in hits if q.perturbation.targets == ("CMP00", "CMP01")]
    assert len(pair) >= 6  # ~2% of random draws are this pair
    # The response objective is not about interactions: it does not single the pair out.
    resp = acquisition.get("discovery")(pool_size=POOL).propose(
        BumpEnsemble(space, amplitude=0.0), space, None, 8, 100.0, np.random.default_rng(0)
    )
    assert sum(q.perturbation.targets == ("CMP00", "CMP01") for q in resp) <= 2


def test_eig_is_submodular_and_bald_additive(world):
    space, model = world
    queries = [q for q in space.sample(200, np.random.default_rng(0)) if BumpEnsemble.in_region(space, q)][:2]
    X = space.encode(queries)
    pool_model, _ = build_pool_model(model, space, queries, X, np.random.default_rng(0))
    eig = EnsembleEIG(pool_model)
    positions = pool_positions(len(queries))
    with torch.no_grad():
        one = eig(positions[:1].unsqueeze(0))
        twice = eig(positions[[0, 0]].unsqueeze(0))
    assert 0 < twice < 2 * one  # repeating a query gains less than the first time


def test_closed_form_nipv_matches_botorch_qnipv(world):
    space, model = world
    strategy = acquisition.get("nipv")(pool_size=300, n_train=48, mc_points=32)
    rng = np.random.default_rng(0)
    pool = strategy.candidate_pool(space, rng, 100.0)
    acqf, _ = strategy.build_acqf(model, space, pool, None, rng, float("inf"))
    gp = acqf.model
    # BoTorch fantasises with the mean training noise (in the standardised space).
    noise = float(gp.likelihood.noise.mean() * gp.outcome_transform.stdvs.pow(2).squeeze())
    ours = ClosedFormNIPV(gp, acqf.mc_points, noise, X_pending=pool.X[:2])
    ref = qNegIntegratedPosteriorVariance(gp, mc_points=acqf.mc_points, X_pending=pool.X[:2])
    with torch.no_grad():
        a, b = ours(pool.X[2:10].unsqueeze(-2)), ref(pool.X[2:10].unsqueeze(-2))
    prior = acqf.prior_value()
    assert torch.allclose(a - prior, b - prior, rtol=1e-3, atol=1e-12)
    assert (a > prior).all()  # observing more lowers the integrated variance
    # The pooled, incremental version used by the strategy gives the joint formula's numbers.
    joint = ClosedFormNIPV(gp, acqf.mc_points, acqf.noise_var, acqf.noise_dim, X_pending=pool.X[:3])
    positions = pool_positions(len(pool.queries))
    acqf.set_X_pending(positions[:3])
    with torch.no_grad():
        fast, slow = acqf(positions[3:40].unsqueeze(-2)), joint(pool.X[3:40].unsqueeze(-2))
    assert torch.allclose(fast - prior, slow - prior, rtol=1e-6, atol=1e-12)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import importlib.util, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("acquisition_fakes", sys.argv[1])
    fakes = importlib.util.module_from_spec(spec); sys.modules["acquisition_fakes"] = fakes
    spec.loader.exec_module(fakes)
    import acquisition
    from experiment_design import Context, DesignSpace, Target
    targets = [Target(f"CMP{i:02d}", "compound") for i in range(8)] + [Target(f"KD{i:02d}", "knockdown")
                                                                      for i in range(8)]
    space = DesignSpace(tuple(targets), tuple(Context(f"L{i}", f"S{j}") for i in range(3) for j in range(2)))
    model = fakes.BumpEnsemble(space, n_members=8, n_programs=8, modalities={
        "rna": 200, "adt": 30, "morphology": 48, "molecular": 8, "spatial": 200})
    strategy = acquisition.get(sys.argv[2])(time_limit_s=10.0, pool_size=int(sys.argv[3]))
    def rss_kb():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
    before = rss_kb()
    qs = strategy.propose(model, space, None, 16, 100.0, np.random.default_rng(0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((peak - before) / 1024, len(qs))
    """
)


def test_peak_memory_of_one_proposal_is_small():
    fakes = Path(__file__).with_name("fakes.py")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(fakes), "eig", "4000"],
        capture_output=True,
        text=True,
        check=True,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    peak_mb, n = out.stdout.split()
    assert int(n) == 16
    assert float(peak_mb) < 1024, f"peak {peak_mb} MB above the process's memory before the proposal"
