"""The loss covers exactly what was observed: unobserved modalities change nothing."""

import numpy as np
import torch
from csl_fakes import fake_batch, tiny_space

from models.data import WellBlock, build_well_data
from models.fitting import FitConfig, build_network


def _setup():
    space = tiny_space()
    rng = np.random.default_rng(1)
    qs = space.sample(12, rng, assays=["molecular_rna"])
    data = build_well_data(space, fake_batch(space, qs, rng))
    net, _ = build_network(space, data, FitConfig(), seed=0, state=None)
    return space, data, net


def _net_with_all_decoders(space, data):
    """A network that also decodes ADT and morphology (as after a round that measured them)."""
    rng = np.random.default_rng(2)
    qs = space.sample(6, rng, assays=["cite_seq", "rna_morphology", "molecular"])
    wide = build_well_data(space, fake_batch(space, qs, rng))
    net, _ = build_network(space, wide, FitConfig(), seed=0, state=None)
    assert set(net.decoders) == {"rna", "adt", "morphology", "molecular"}
    return net


def test_garbage_in_unobserved_decoders_does_not_change_the_loss():
    space, data, _ = _setup()
    net = _net_with_all_decoders(space, data)
    before = net.loss(data)
    with torch.no_grad():
        for name in ("adt", "morphology"):
            for p in net.decoders[name].parameters():
                p.copy_(torch.randn_like(p) * 100.0)
    after = net.loss(data)
    assert set(before.parts) == {"nll_rna", "nll_molecular", "prior"}
    assert after.total.item() == before.total.item()


def test_zero_weight_garbage_block_is_masked_exactly():
    space, data, _ = _setup()
    net = _net_with_all_decoders(space, data)
    base = net.loss(data)
    W = 5
    garbage = WellBlock(
        y=torch.full((W, 4), float("nan")),
        n_units=torch.ones(W),
        query=torch.zeros(W, dtype=torch.long),
        plate=torch.zeros(W, dtype=torch.long),
        position=torch.zeros(W, 3),
        sem2=torch.zeros(W, 4),
        var_names=tuple("abcd"),
        plates=("P",),
        specimens=tuple(f"g{i}" for i in range(W)),
    )
    data.blocks["adt"] = garbage
    weights = {k: torch.ones(len(b.query)) for k, b in data.blocks.items()}
    weights["adt"] = torch.zeros(W)
    masked = net.loss(data, weights)
    assert torch.isfinite(masked.total)
    assert masked.parts["nll_rna"].item() == base.parts["nll_rna"].item()
    assert masked.parts["nll_molecular"].item() == base.parts["nll_molecular"].item()
    assert abs(masked.total.item() - base.total.item()) < 1e-6 * abs(base.total.item())


def test_loss_is_sum_of_named_parts():
    space, data, net = _setup()
    out = net.loss(data)
    n = sum(out.n_obs.values())
    parts = sum(out.parts[f"nll_{k}"] * out.n_obs[k] for k in out.n_obs) / n + out.parts["prior"]
    assert torch.allclose(out.total, parts, rtol=1e-5)
