"""The true per-spot composition and state of a tissue patch (what a model's lift L is scored against)."""

import numpy as np
import pytest

from experiment_design import Perturbation, Query, keys
from experiment_design.assays import SPATIAL
from simulators import make_world
from simulators.counts import rna_proportions


@pytest.fixture(scope="module")
def world():
    return make_world("small", seed=4)


def _tissue_queries(world):
    sp = world.space
    t = sp.targets[0]
    return [
        Query(
            Perturbation((t.name,), (float(sp.dose_series(t.name, 3)[-1]),)),
            24.0,
            sp.contexts[0],
            "spatial_dissociated",
            replicates=2,
        ),
        Query(Perturbation(), 12.0, sp.contexts[1], "spatial"),
    ]


def test_spot_truth_shapes_and_determinism(world):
    qs = _tissue_queries(world)
    n_spots = world.space.assay("spatial").units_of(SPATIAL)
    for q in qs:
        for r in range(q.replicates):
            a, b = world.spot_truth(q, r), world.truth.extras["spot_truth"](q, r)
            assert a["composition"].shape == (n_spots, world.config.n_cell_types)
            assert a["latent"].shape == (n_spots, world.config.n_programs)
            np.testing.assert_allclose(a["composition"].sum(1), 1.0)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    # Replicates are different patches; measuring other queries first changes nothing.
    assert not np.array_equal(world.spot_truth(qs[0], 0)["composition"], world.spot_truth(qs[0], 1)["composition"])


def test_spot_truth_matches_the_measured_spots(world):
    """The true spot latent predicts the measured spot profiles far better than another spot's latent."""
    q = _tissue_queries(world)[0]
    data = world.measure([q]).modalities[SPATIAL]
    obs = data.obs
    rows = (obs[keys.REPLICATE] == 1).to_numpy()
    y = np.asarray(data.X)[rows][np.argsort(obs[keys.UNIT].to_numpy()[rows])]
    st = world.spot_truth(q, 1)
    site = world.params.sites.index(q.context.site)
    prop = rna_proportions(world.params, st["latent"], None, site)  # (n_spots, G) at each spot's true mean latent

    def loglik(p):  # multinomial log-likelihood of the spot counts, up to a constant
        return float((y * np.log(p)).sum())

    shuffled = [loglik(prop[np.random.default_rng(s).permutation(len(prop))]) for s in range(10)]
    assert loglik(prop) > max(shuffled) + 100.0, (loglik(prop), max(shuffled))
    # Composition varies over the patch (the lift has something to recover).
    assert st["composition"].std(0).mean() > 0.2


def test_spot_truth_rejects_non_tissue_queries_and_bad_replicates(world):
    sp = world.space
    with pytest.raises(ValueError, match="not a tissue assay"):
        world.spot_truth(Query(Perturbation(), 6.0, sp.contexts[0], "scrna"))
    with pytest.raises(ValueError, match="replicate"):
        world.spot_truth(_tissue_queries(world)[1], 1)
