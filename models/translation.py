"""Cross-modal translation on anchors: predict ADT or morphology from the RNA-level state of the same specimen.

For every anchor specimen (observed by RNA and by ADT or morphology — CITE-seq,
RNA + morphology) the latent state is inferred from the specimen's RNA
pseudobulk alone, by MAP through the RNA decoder: start at the linearised
least-squares solution (:func:`~models.modules.tissue.infer_latent_linear`),
then :data:`MAP_STEPS` Adam steps on the decoder's NB negative log-likelihood
plus a weak ``N(0, 3²)`` prior per dimension. The operator is used for one
thing only: ADT trails RNA by the decoder's learned lag, so the ADT decoder
reads ``ẑ + (z_op(t − lag) − z_op(t))``. Morphology is decoded at ``ẑ`` with the
specimen's learned plate and position effects (so it is comparable with the
observed well mean).

The error is ``1 − mean over features of corr²`` (over anchor specimens)
between the translated and the observed readout of the same specimens: log
counts per cell ``log(y / n + 1)`` vs ``log(exp(pred) + 1)`` for ADT, well means
for morphology. A modality with fewer than :data:`MIN_ANCHORS` anchors is
skipped (none left gives None); one the network does not decode scores 0.
"""

from __future__ import annotations

import numpy as np
import torch

from experiment_design.assays import ADT, MORPHOLOGY, RNA
from models.data import QueryFeatures, WellData
from models.ensemble_fit import StackedAdam
from models.modules.network import CSLNetwork
from models.modules.tissue import infer_latent_linear

#: Adam steps of the per-specimen MAP latent.
MAP_STEPS = 60
#: Anchor specimens needed to score a modality (corr² over specimens).
MIN_ANCHORS = 4
#: Prior sd of the MAP latent (latent units).
PRIOR_SD = 3.0


def infer_latent_from_rna(net: CSLNetwork, wd: WellData, rows: torch.Tensor) -> torch.Tensor:
    """MAP latent states ``(n, K)`` of RNA block rows ``rows`` from their RNA counts only."""
    dec = net.decoders[RNA]
    sub = wd.blocks[RNA].select(torch.isin(torch.arange(len(wd.blocks[RNA].query)), rows))
    order = torch.argsort(torch.argsort(rows))  # select() keeps block order; map back to ``rows`` order
    site = wd.features.site[sub.query]
    z0 = infer_latent_linear(dec, sub.y, site).float()
    # Adam as :class:`StackedAdam` (one row): torch.optim's first optimiser of a process imports
    # torch._dynamo and sympy (1.6 s here), and this runs in every process that scores
    flat = z0.reshape(1, -1).clone().requires_grad_(True)
    opt = StackedAdam(flat, torch.ones(flat.shape[1], dtype=torch.bool))
    lr, active = torch.tensor([0.05]), torch.tensor([True])
    ones = torch.ones(len(sub.query))
    for _ in range(MAP_STEPS):
        flat.grad = None
        z = flat.view_as(z0)
        loss = dec.nll(z, site, sub, ones) + 0.5 * (z**2).sum() / PRIOR_SD**2
        loss.backward()
        opt.step(lr, active)
    return flat.detach().view_as(z0)[order]


def _corr2(pred: np.ndarray, obs: np.ndarray) -> float:
    """Mean over varying features of corr² between columns of pred and obs ``(n, F)``."""
    keep = obs.std(0) > 1e-9
    if not keep.any():
        return 0.0
    o, p = obs[:, keep] - obs[:, keep].mean(0), pred[:, keep] - pred[:, keep].mean(0)
    r = (o * p).sum(0) / np.maximum(np.linalg.norm(o, axis=0) * np.linalg.norm(p, axis=0), 1e-12)
    return float(np.mean(r**2))


def translation_r2(net: CSLNetwork, wd: WellData, plates: list[str] | None = None) -> dict[str, float]:
    """Corr² of the translation RNA → ADT / morphology on the anchors of ``wd``, per modality.

    Args:
        net: One fitted member.
        wd: Specimens (the anchors are those with RNA and ADT / morphology).
        plates: The plate names the network's morphology plate effects belong to
            (its state's ``"plates"``); plates of ``wd`` not among them get no
            plate effect. None: ``wd`` is the data the network was fitted on.

    Returns:
        Modality → mean corr² over features, for modalities with at least
        :data:`MIN_ANCHORS` anchors (0 when the network has no decoder for
        it); empty if none.

    """
    out: dict[str, float] = {}
    if RNA not in wd.blocks or RNA not in net.decoders:
        return out
    rna_rows = {s: i for i, s in enumerate(wd.blocks[RNA].specimens)}
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)  # only the per-specimen latents are optimised
    try:
        return _translate(net, wd, rna_rows, out, plates)
    finally:
        for p, f in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(f)


def _plate_effect(
    dec: torch.nn.Module, block_plates: tuple[str, ...], plate: torch.Tensor, plates: list[str] | None
) -> torch.Tensor:
    """``(n, F)`` learned plate effects of the specimens (zero for plates the network never saw)."""
    if plates is None:
        return dec.plate[plate]
    known = {p: i for i, p in enumerate(plates) if i < dec.plate.shape[0]}
    idx = torch.as_tensor([known.get(block_plates[i], -1) for i in plate.tolist()])
    eff = dec.plate[idx.clamp_min(0)]
    return eff * (idx >= 0)[:, None]


def _translate(
    net: CSLNetwork, wd: WellData, rna_rows: dict[str, int], out: dict[str, float], plates: list[str] | None
) -> dict[str, float]:
    for m in (ADT, MORPHOLOGY):
        if m not in wd.blocks:
            continue
        blk = wd.blocks[m]
        pairs = [(i, rna_rows[s]) for i, s in enumerate(blk.specimens) if s in rna_rows]
        if len(pairs) < MIN_ANCHORS:
            continue
        if m not in net.decoders:
            out[m] = 0.0  # anchors to translate to, but no decoder: nothing is predicted
            continue
        mi = torch.as_tensor([p[0] for p in pairs])
        ri = torch.as_tensor([p[1] for p in pairs])
        z = infer_latent_from_rna(net, wd, ri)
        sub = blk.select(torch.isin(torch.arange(len(blk.query)), mi))
        z = z[torch.argsort(mi)]  # rows of ``sub`` are in block order
        site = wd.features.site[sub.query]
        dec = net.decoders[m]
        with torch.no_grad():
            if m == ADT:
                f = wd.features.take(sub.query)
                lagged = QueryFeatures(
                    f.target, f.log10_dose, (f.time_h - dec.lag_h).clamp_min(0.0), f.cell_line, f.site
                )
                z = z + net.operator(lagged) - net.operator(f)
                pred = np.log(np.exp(dec.log_mean(z, site).double().numpy()) + 1.0)
                obs = np.log(sub.y.double().numpy() / sub.n_units.double().numpy()[:, None] + 1.0)
            else:
                effect = _plate_effect(dec, sub.plates, sub.plate, plates)
                pred = (dec.mean(z, site) + effect + sub.position @ dec.position).double().numpy()
                obs = sub.y.double().numpy()
        out[m] = _corr2(pred, obs)
    return out


def translation_error(model, wd: WellData | None = None) -> float | None:  # noqa: ANN001
    """``1 − mean corr²`` of the RNA → ADT / morphology translation on anchors, member 0 (None without anchors)."""
    plates = list(model.states[0].get("plates", []))
    wd = wd if wd is not None else model.data
    r2 = translation_r2(model.networks[0], wd, plates)
    return 1.0 - float(np.mean(list(r2.values()))) if r2 else None
