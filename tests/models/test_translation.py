"""Cross-modal translation: ADT and morphology predicted from the RNA-level state of the same specimen."""

import numpy as np
import pytest
import torch

from experiment_design import Perturbation, Query
from models import CSLEnsemble
from models.data import build_well_data
from models.identifiability import score
from models.translation import translation_error, translation_r2

simulators = pytest.importorskip("simulators")


def _design(space, assays, contexts, n_doses=4, times=(6.0, 24.0)):
    return [
        Query(Perturbation((t.name,), (float(d),)), th, c, a)
        for t in space.targets
        for d in space.dose_series(t.name, n_doses)
        for th in times
        for c in contexts
        for a in assays
    ]


@pytest.fixture(scope="module")
def fits():
    world = simulators.make_world("small", seed=0)
    sp = world.space
    ctx = sp.contexts[:1]
    anchored = CSLEnsemble(sp, n_members=1, seed=0, max_steps=300)
    anchored.fit(world.measure(_design(sp, ["rna_morphology", "cite_seq"], ctx)))
    # The same conditions, RNA and morphology measured on separate specimens, no CITE-seq.
    separate = CSLEnsemble(sp, n_members=1, seed=0, max_steps=300)
    separate.fit(world.measure(_design(sp, ["scrna", "cell_painting"], ctx)))
    heldout = build_well_data(
        sp, world.measure(_design(sp, ["rna_morphology", "cite_seq"], sp.contexts[1:], n_doses=3, times=(12.0,)))
    )
    return world, anchored, separate, heldout


def test_anchored_model_translates_better_than_one_fitted_without_anchors(fits):
    _, anchored, separate, heldout = fits
    e_anchor, e_sep = translation_error(anchored, heldout), translation_error(separate, heldout)
    assert e_anchor < e_sep - 0.2, (e_anchor, e_sep)
    r2 = translation_r2(anchored.networks[0], heldout, anchored.states[0]["plates"])
    assert set(r2) == {"adt", "morphology"} and min(r2.values()) > 0.4, r2


def test_translation_uses_the_specimens_own_rna(fits):
    """Translating from another specimen's RNA (shuffled anchors) is much worse."""
    _, anchored, _, heldout = fits
    good = translation_r2(anchored.networks[0], heldout, anchored.states[0]["plates"])
    rna = heldout.blocks["rna"]
    perm = torch.as_tensor(np.random.default_rng(0).permutation(len(rna.query)))
    heldout.blocks["rna"] = rna.__class__(**{**rna.__dict__, "y": rna.y[perm]})
    try:
        bad = translation_r2(anchored.networks[0], heldout, anchored.states[0]["plates"])
    finally:
        heldout.blocks["rna"] = rna
    for m in good:
        assert good[m] > bad[m] + 0.2, (good, bad)


def test_cross_modal_part_uses_anchors_when_present(fits):
    world, anchored, separate, heldout = fits
    rep = score(anchored, truth=world.truth)
    assert rep.parts["cross_modal"] == pytest.approx(1.0 - translation_error(anchored))
    # Without anchors in its data the part falls back to decoded-vs-true readouts over the probes.
    assert translation_error(separate) is None
    assert 0.0 <= score(separate, truth=world.truth).parts["cross_modal"] <= 1.0
