"""The truth is recoverable where it should be, and design matters."""

from itertools import combinations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from experiment_design import Perturbation, Query, TargetKind, keys
from simulators import make_world
from simulators.tissue import lattice


@pytest.fixture(scope="module")
def world():
    return make_world("default", seed=0)


def _hill4(x, bottom, span, log_ec50, h):
    return bottom + span / (1.0 + 10.0 ** (h * (log_ec50 - x)))


def _fit(doses, y):
    x = np.log10(doses)
    p0 = [y[0], y[-1] - y[0], float(np.median(x)), 1.0]
    popt, _ = curve_fit(_hill4, x, y, p0=p0, maxfev=20000)
    return popt


def _clean_direct_pairs(world):
    """(target index, program) with a Hill curve and no other direct program of the target upstream."""
    t = world.truth
    prop = t.extras["propagation"]
    out = []
    for j in range(len(t.targets)):
        direct = np.flatnonzero(t.direct_mask[j])
        for m in direct:
            if not any(prop[m2, m] != 0 for m2 in direct if m2 != m):
                out.append((j, int(m)))
    return out


def test_hill_fit_on_expected_returns_true_ec50_in_each_cell_line(world):
    t = world.truth
    pairs = _clean_direct_pairs(world)
    assert len(pairs) >= 12
    for line_idx in (0, 1):
        ctx = next(c for c in world.space.contexts if c.cell_line == world.params.cell_lines[line_idx])
        shift = t.context_shifts["ec50_shift_log10"][line_idx]
        for j, m in pairs:
            name = t.targets[j]
            doses = world.space.dose_series(name, 25)
            qs = [Query(Perturbation((name,), (d,)), 48.0, ctx, "molecular") for d in doses]
            y = t.expected(qs)["molecular"][:, m]
            _, span, log_ec50, h = _fit(doses, y)
            assert abs(log_ec50 - (t.ec50_log10[j, m] + shift)) < 0.05, (name, m, line_idx)
            assert abs(h - t.hill[j, m]) < 0.05
            assert np.sign(span) == np.sign(t.emax[j, m])


def test_hill_fit_on_noisy_measurements_recovers_ec50(world):
    t = world.truth
    ctx = world.space.contexts[0]
    compounds = [
        (j, m)
        for j, m in _clean_direct_pairs(world)
        if world.space.targets[j].kind is TargetKind.COMPOUND and abs(t.emax[j, m]) > 1.0
    ]
    assert compounds
    for j, m in compounds[:3]:
        name = t.targets[j]
        doses = world.space.dose_series(name, 13)
        qs = [Query(Perturbation((name,), (d,)), 48.0, ctx, "molecular", replicates=2) for d in doses]
        md = world.measure(qs).modalities["molecular"]
        dose = md.obs[keys.DOSE_VALUE].astype(float).to_numpy()
        _, _, log_ec50, _ = _fit(dose, md.X[:, m].astype(float))
        assert abs(log_ec50 - t.ec50_log10[j, m]) < 0.3, name


def _half_time(times, y):
    y = np.abs(y - y[0])
    return times[np.argmax(y >= 0.5 * y[-1])]


def test_onset_kinetics_follow_tau_and_the_graph(world):
    t = world.truth
    ctx = world.space.contexts[0]
    prop, delay = t.extras["propagation"], t.extras["delay_h"]
    times = np.linspace(0.0, 48.0, 2401)
    single = [j for j in range(len(t.targets)) if t.direct_mask[j].sum() == 1]
    halves, taus, n_down = [], [], 0
    for j in single:
        m = int(np.flatnonzero(t.direct_mask[j])[0])
        name = t.targets[j]
        dose = world.space.dose_ranges[world.space.target(name).kind][1]
        z = t.latent([Query(Perturbation((name,), (dose,)), float(h), ctx, "molecular") for h in times])
        t_m = _half_time(times, z[:, m])
        assert abs(t_m - t.tau_h[j] * np.log(2)) < 0.05, name
        halves.append(t_m)
        taus.append(t.tau_h[j])
        for k in np.flatnonzero((prop[m] != 0) & (np.arange(len(t.programs)) != m)):
            assert _half_time(times, z[:, k]) > t_m + 0.5 * delay[m, k], (name, m, k)
            n_down += 1
    assert n_down >= 3
    assert (np.argsort(halves) == np.argsort(taus)).all()
    ctrl = t.latent([Query(Perturbation.control(), 0.0, ctx, "molecular")])
    at_zero = t.latent([Query(Perturbation.of(CMP00=100.0), 0.0, ctx, "molecular")])
    np.testing.assert_allclose(at_zero, ctrl)


def test_interaction_changes_combination_only_for_interacting_pairs(world):
    t = world.truth
    ctx = world.space.contexts[0]
    acts = t.emax != 0
    dose = {tg.name: 0.5 * world.space.dose_ranges[tg.kind][1] for tg in world.space.targets}

    def lat(*names):
        return t.latent([Query(Perturbation(names, tuple(dose[n] for n in names)), 48.0, ctx, "scrna")])[0]

    ctrl = lat()
    inter, plain = [], []
    for i, j in combinations(range(len(t.targets)), 2):
        if (acts[i] & acts[j]).any():
            continue
        a, b = t.targets[i], t.targets[j]
        excess = np.abs(lat(a, b) - lat(a) - lat(b) + ctrl).max()
        (inter if t.interactions[i, j] != 0 else plain).append(excess)
    assert len(inter) >= 5 and len(plain) >= 20
    assert max(plain) < 1e-9
    assert min(inter) > 0.05


def test_same_program_pairs_follow_dose_equivalence_not_additivity(world):
    t = world.truth
    ctx = world.space.contexts[0]
    prop = t.extras["propagation"]
    top = {tg.name: world.space.dose_ranges[tg.kind][1] for tg in world.space.targets}
    rho = t.context_shifts["responder_frac"][0]
    ctrl = t.latent([Query(Perturbation(), 48.0, ctx, "molecular")])[0]

    def shift(m, *names):
        q = Query(Perturbation(names, tuple(top[n] for n in names)), 48.0, ctx, "molecular")
        return (t.latent([q])[0, m] - ctrl[m]) / rho

    checked = 0
    for i, j in combinations(range(len(t.targets)), 2):
        shared = np.flatnonzero((np.sign(t.emax[i]) == np.sign(t.emax[j])) & (t.emax[i] != 0))
        for m in shared:
            others = [p for p in np.flatnonzero(t.direct_mask[i] | t.direct_mask[j]) if p != m]
            if any(prop[p, m] != 0 for p in others):
                continue
            a, b = t.targets[i], t.targets[j]
            cap = max(abs(t.emax[i, m]), abs(t.emax[j, m]))
            assert abs(shift(m, a, b)) <= cap * 1.001
            assert abs(shift(m, a)) + abs(shift(m, b)) > cap * 1.2
            checked += 1
    assert checked >= 3


def _lognorm(x):
    return np.log1p(x / x.sum(1, keepdims=True) * 1e4)


def _pseudobulk(md):
    y = _lognorm(md.X.astype(float))
    spec = md.obs[keys.SPECIMEN].to_numpy()
    return np.stack([y[spec == s].mean(0) for s in dict.fromkeys(spec)])


def _loading_capture(world, train):
    """Share of the true (gene-centred) loadings inside the top-K PCs of the design's pseudobulk."""
    pb = _pseudobulk(world.measure(train).modalities["rna"])
    k = len(world.params.programs)
    _, _, vt = np.linalg.svd(pb - pb.mean(0), full_matrices=False)
    w = world.truth.loadings - world.truth.loadings.mean(0)
    return float((np.linalg.norm(vt[:k] @ w, axis=0) ** 2 / np.linalg.norm(w, axis=0) ** 2).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_design_matters_perturbing_drivers_recovers_loadings(seed):
    world = make_world("small", seed=seed)
    ctxs = world.space.contexts
    genetic = [tg for tg in world.space.targets if tg.kind is not TargetKind.COMPOUND]
    assert {world.truth.extras["primary_program"][world.space.target_index[g.name]] for g in genetic} == set(
        range(len(world.params.programs))
    )
    levels = (0.25, 0.5, 0.75, 1.0)
    drivers = [
        Query(Perturbation((g.name,), (s,)), 24.0, ctxs[i % len(ctxs)], "scrna")
        for i, (g, s) in enumerate((g, s) for g in genetic for s in levels)
    ]
    controls = [
        Query(Perturbation.control(), 24.0 + 0.01 * i, ctxs[i % len(ctxs)], "scrna") for i in range(len(drivers))
    ]
    good, poor = _loading_capture(world, drivers), _loading_capture(world, controls)
    assert good > 0.55
    assert good > poor + 0.25, (good, poor)


def test_protein_lags_rna(world):
    t = world.truth
    ctx = world.space.contexts[0]
    kd = next(tg.name for tg in world.space.targets if tg.kind is TargetKind.KNOCKDOWN)
    early = t.expected([Query(Perturbation((kd,), (1.0,)), 2.0, ctx, "cite_seq")])
    ctrl = t.expected([Query(Perturbation.control(), 2.0, ctx, "cite_seq")])
    np.testing.assert_allclose(early["adt"], ctrl["adt"])
    assert np.abs(np.log(early["rna"] / ctrl["rna"])).max() > 0.05


def test_rna_counts_match_expected_and_are_overdispersed():
    world = make_world("small", seed=1, cells_per_well=400)
    ctx = world.space.contexts[0]
    q = Query(Perturbation.control(), 24.0, ctx, "scrna", replicates=3)
    x = world.measure([q]).modalities["rna"].X.astype(float)
    mu = world.truth.expected([q])["rna"][0]
    ok = mu > 5
    ratio = x.mean(0)[ok] / mu[ok]
    assert np.corrcoef(np.log(x.mean(0)[ok]), np.log(mu[ok]))[0, 1] > 0.95
    assert 0.7 < np.median(ratio) < 1.3
    assert np.median(x.var(0)[ok] / x.mean(0)[ok]) > 1.5


def test_spots_sum_their_cells_and_tissue_is_spatially_structured():
    world = make_world("small", seed=2)
    ctx = world.space.contexts[0]
    q = Query(Perturbation.control(), 24.0, ctx, "spatial_dissociated", replicates=4)
    b = world.measure([q])
    spot = b.modalities["spatial"].X.sum(1).mean()
    cell = b.modalities["rna"].X.sum(1).mean()
    expected_ratio = world.config.cells_per_spot * world.params.scalars["spatial_capture"]
    assert abs(spot / cell / expected_ratio - 1) < 0.25
    # Composition varies smoothly: a cell-type score is autocorrelated between neighbouring spots (Moran's I).
    world = make_world("small", seed=2, spots_per_patch=64, cells_per_spot=8)
    q = Query(Perturbation.control(), 24.0, ctx, "spatial", replicates=6)
    md = world.measure([q]).modalities["spatial"]
    y = _lognorm(md.X.astype(float))
    direction = world.params.loadings @ (world.params.type_offsets[0] - world.params.type_offsets[1])
    _, adj = lattice(64)
    morans = []
    for r in range(6):
        s = y[md.obs[keys.REPLICATE].to_numpy() == r] @ direction
        s = s - s.mean()
        morans.append(s @ adj @ s / (s @ s))
    assert np.mean(morans) > 0.15
