"""Cross-scale operators on data: lift the observed spots of a fitted network, project them back, score.

:func:`lift_spots` applies the lift ``L`` of :mod:`models.modules.tissue` to
every spot in a :class:`~models.data.WellData`: reference type states
``z_q + o_t`` (offsets refined on the dissociated cells of the same tissues
when there are any, :func:`~models.modules.tissue.refine_offsets`), then
Poisson deconvolution of each spot onto their projections (each type's
profile ``softmax(b + W(z_q + o_t) + batch + platform)``). It returns the
compositions, the spot states ``Σ_t π_st (z_q + o_t)`` and the cycle
``P(L(spots)) = Σ_t π_st · profile_t``. Member 0 is used when scoring.

:func:`composition_error` scores a lift against the true per-spot composition
(``truth.extras["spot_truth"]``): learned types are mapped to true types
(each learned type to the true type its per-spot fractions correlate with
most; fractions of learned types mapped to the same true type add up), then
the error is the mean total-variation distance ``½ Σ_t |π̂_st − π_st|`` over
spots, in [0, 1]. :func:`cycle_r2` is the mean over genes of corr² between
``log P(L(spots))`` and the observed log spot proportions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from experiment_design.assays import RNA, SPATIAL
from models.data import WellData
from models.modules.network import CSLNetwork
from models.modules.tissue import SpotDecoder, infer_latent_linear, lift_composition, refine_offsets

#: At most this many spots are lifted when scoring (the first, in ledger order), to keep scoring cheap.
MAX_SPOTS = 4096


@dataclass
class LiftResult:
    """The lift of the observed spots.

    Attributes:
        composition: ``(n, C)`` estimated type fractions per spot.
        state: ``(n, K)`` estimated mean latent state per spot.
        log_p_cycle: ``(n, G)`` ``log P(L(spot))``: log proportions of the lifted spot projected back.
        counts: ``(n, G)`` the observed spot counts.
        specimen: ``(n,)`` specimen id of each spot.
        query: ``(n,)`` row of each spot's query in ``WellData.queries``.
        replicate: ``(n,)`` replicate of each spot's specimen.
        unit: ``(n,)`` spot index within its patch.
        offsets: ``(C, K)`` type offsets used as references.
        refined: Whether the offsets were refined on dissociated cells.

    """

    composition: np.ndarray
    state: np.ndarray
    log_p_cycle: np.ndarray
    counts: np.ndarray
    specimen: np.ndarray
    query: np.ndarray
    replicate: np.ndarray
    unit: np.ndarray
    offsets: np.ndarray
    refined: bool


def lift_spots(net: CSLNetwork, wd: WellData, max_spots: int = MAX_SPOTS) -> LiftResult | None:
    """Lift every observed spot (up to ``max_spots``) of ``wd`` with member ``net``.

    Returns:
        The lift, or None when ``wd`` has no spot-level data or ``net`` does not
        decode spatial spots through its RNA decoder.

    """
    dec = net.decoders[SPATIAL] if SPATIAL in net.decoders else None
    if not isinstance(dec, SpotDecoder) or SPATIAL not in wd.units:
        return None
    su, block = wd.units[SPATIAL], wd.blocks[SPATIAL]
    take = slice(0, min(len(su.x), max_spots))
    rows = torch.as_tensor(su.row[take])
    q = block.query[rows]
    with torch.no_grad():
        z_all = net.latent(wd.features)
        offsets, refined = dec.offsets.detach(), False
        if RNA in wd.units and RNA in wd.blocks:
            cu = wd.units[RNA]
            cq = wd.blocks[RNA].query[torch.as_tensor(cu.row)]
            site = wd.features.site[cq]
            z_cells = infer_latent_linear(dec.rna, torch.as_tensor(cu.x), site)
            offsets, refined = refine_offsets(offsets, z_cells - z_all[cq]), True
        states = z_all[q][:, None, :] + offsets  # (n, C, K)
        site = wd.features.site[q]
        C = offsets.shape[0]
        lp = dec.rna.log_p(states, site[:, None].expand(-1, C))  # (n, C, G) cell profiles
        refs = torch.softmax(lp + dec.platform, dim=-1)
        y = torch.as_tensor(su.x[take])
        comp = lift_composition(refs, y)
        log_p = torch.log((comp[:, :, None].double() * refs.double()).sum(1).clamp_min(1e-30))
    specimens = np.asarray(block.specimens)[su.row[take]]
    return LiftResult(
        composition=comp.numpy().astype(np.float64),
        state=(comp[:, :, None] * states).sum(1).numpy().astype(np.float64),
        log_p_cycle=log_p.numpy(),
        counts=su.x[take].astype(np.float64),
        specimen=specimens,
        query=q.numpy(),
        replicate=su.replicate[su.row[take]],
        unit=su.unit[take],
        offsets=offsets.numpy().astype(np.float64),
        refined=refined,
    )


def true_compositions(lift: LiftResult, wd: WellData, spot_truth: Callable, key: str = "composition") -> np.ndarray:
    """``(n, C_true)`` true compositions of the lifted spots, from ``spot_truth(query, replicate)[key]``.

    ``key="latent"`` gives the true ``(n, K_true)`` mean spot latents instead.
    """
    out = None
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i, (qi, rep, u) in enumerate(zip(lift.query, lift.replicate, lift.unit, strict=True)):
        qr = (int(qi), int(rep))
        if qr not in cache:
            cache[qr] = np.asarray(spot_truth(wd.queries[qr[0]], qr[1])[key])
        comp = cache[qr]
        if out is None:
            out = np.zeros((len(lift.query), comp.shape[1]))
        out[i] = comp[int(u)]
    return out if out is not None else np.zeros((0, 1))


def composition_error(est: np.ndarray, true: np.ndarray) -> float:
    """Mean total-variation distance between estimated ``(n, C)`` and true ``(n, C_true)`` compositions.

    Each learned type is mapped to the true type its fractions correlate with
    most over spots; mapped fractions add up. In [0, 1].
    """
    if len(est) == 0:
        return 1.0
    a = est - est.mean(0)
    b = true - true.mean(0)
    c = a.T @ b / np.maximum(np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)), 1e-12)
    target = c.argmax(1)
    mapped = np.zeros_like(true)
    for t, tt in enumerate(target):
        mapped[:, tt] += est[:, t]
    return float(0.5 * np.abs(mapped - true).sum(1).mean())


def cycle_r2(lift: LiftResult) -> float:
    """Mean over genes of corr² (over spots) between ``log P(L(spots))`` and observed log proportions."""
    y = lift.counts + 0.5
    obs = np.log(y / y.sum(1, keepdims=True))
    pred = lift.log_p_cycle
    keep = obs.std(0) > 1e-9
    if len(obs) < 3 or not keep.any():
        return 0.0
    o, p = obs[:, keep] - obs[:, keep].mean(0), pred[:, keep] - pred[:, keep].mean(0)
    r = (o * p).sum(0) / np.maximum(np.linalg.norm(o, axis=0) * np.linalg.norm(p, axis=0), 1e-12)
    return float(np.mean(r**2))
