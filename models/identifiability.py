"""Identifiability of a fitted CSL ensemble: one index in [0, 1] plus named parts.

Two modes, each with a fixed set of part names (so every round's row has the
same columns): ``"truth"`` when a :class:`~experiment_design.GroundTruth` is
given (simulator), ``"practical"`` otherwise (lab data).

Probe set: every target at four doses (0.2, 0.45, 0.7, 0.95 of its encoded
range) × times 4 h and 24 h × the first three open contexts (not held out
for evaluation), plus a control per context and time. Learned latent
dimensions are matched to true programs by the Hungarian algorithm on ``−|corr|`` between ensemble-mean programs and
``truth.latent`` over the probe set (``scipy.optimize.linear_sum_assignment``);
the matched sign orients each dimension. Operator parameters are the ensemble
median. A learned effect with ``|Emax| < 0.1`` (or ``|γ| < 0.1``) counts as
not detected: its direction (sign) is wrong and its log10 EC50, ln slope and
(if none of the target's direct effects is detected) ln τ errors are charged
1.0 each.

Truth parts (raw error ``e`` → part ``p``):

=================  ====================================================  ===================
part               raw error ``e``                                       part ``p``
=================  ====================================================  ===================
``latent_mcc``     1 − mean matched |corr|                               1 − e
``latent_r2``      1 − R² of the affine map model latent → true latent   1 − e (clipped)
``ec50``           mean |Δ log10 EC50| over direct target–program pairs  exp(−e / 0.3)
``hill``           mean |Δ ln Hill slope| over direct pairs              exp(−e / 0.3)
``tau``            mean |Δ ln τ| over targets                            exp(−e / 0.5)
``direction``      1 − sign accuracy of Emax over direct pairs           1 − e
``interaction``    ½(1 − sign acc. over true interacting pairs)          1 − e
                   + ½ · mean |Δγ| / 0.5 over all pairs, capped at 1
``cross_modal``    anchors in the data (≥ 4 specimens with RNA and ADT /  1 − e
                   morphology): 1 − mean corr² between ADT / morphology
                   translated from the RNA-inferred state of the same
                   specimen and the observed ones (:mod:`models.translation`,
                   member 0); no anchors: 1 − mean corr² of decoded vs true
                   ADT / morphology over the probes; 1 if undecoded
``cross_scale``    1 − mean corr² of predicted spots (spatial decoder =   1 − e
                   cells projected through the RNA decoder, ``P``; else the
                   RNA decoder) vs true spot profiles over the probes; with
                   observed spots, averaged (½ / ½) with 1 − cycle R², the
                   mean corr² over genes of log P(L(spots)) vs the observed
                   spots (:mod:`models.cross_scale`); 1 if undecoded
``lift``           mean total-variation distance ½ Σ_t |π̂ − π| between     1 − e
                   the lifted (L) and the true per-spot cell-type
                   composition (learned types mapped to the true type they
                   correlate with most; member 0); 1 without observed spots
=================  ====================================================  ===================

Practical parts (no truth). ``target`` ``j``'s main program is ``argmax_k``
of the ensemble-mean ``|Emax_jk|``; a target whose main ``|Emax|`` is below
0.2 counts as unidentified (contraction 0).

=================  ====================================================  ===================
``contraction``    1 − mean over targets of mean over (log10 EC50, ln h,  1 − e
                   Emax, ln τ) of max(0, 1 − var_ens / var_prior)
``fisher_min``     CRLB sd = 1 / sqrt(λ_min) of the empirical Fisher      exp(−e / 0.3)
                   information (member 0, per-specimen NLL gradients) of
                   those main-program parameters
``fisher_cond``    log10 condition number of that Fisher matrix           exp(−e / 6)
``heldout``        out-of-bag minus in-bag NLL per specimen and feature   exp(−max(e, 0) / 0.5)
                   (bootstrap members); ``e = ∞`` with one member
=================  ====================================================  ===================

Prior variances: log10 EC50 uniform over the kind's dose range (width²/12),
ln h ``0.5²``, Emax ``1``, ln τ ``1``.

The index is the weighted mean of the parts, weights ``ec50`` 2,
``direction`` 2, every other truth part 1; ``contraction`` 2, every other
practical part 1::

    truth:     (latent_mcc + latent_r2 + 2·ec50 + hill + tau + 2·direction + interaction
                + cross_modal + cross_scale + lift) / 12
    practical: (2·contraction + fisher_min + fisher_cond + heldout) / 5

In truth mode the anchors and spots are those of ``data`` (default: the
model's last fit). Not parts, in ``raw``: ``lift_uniform`` (the ``lift`` error
of a uniform composition), ``cycle`` (1 − cycle R²) and ``lift_state_r2`` (R²
of the affine map from the lifted spot states to the true mean spot latents). Not scored (yet): profile likelihoods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from experiment_design import DesignSpace, GroundTruth, MeasurementBatch, Perturbation, Query
from experiment_design.assays import ADT, MORPHOLOGY, RNA, SPATIAL
from models.base import OperatorModel
from models.cross_scale import composition_error, cycle_r2, lift_spots, true_compositions
from models.data import build_well_data
from models.translation import translation_error

TRUTH_WEIGHTS = {
    "latent_mcc": 1.0,
    "latent_r2": 1.0,
    "ec50": 2.0,
    "hill": 1.0,
    "tau": 1.0,
    "direction": 2.0,
    "interaction": 1.0,
    "cross_modal": 1.0,
    "cross_scale": 1.0,
    "lift": 1.0,
}
PRACTICAL_WEIGHTS = {"contraction": 2.0, "fisher_min": 1.0, "fisher_cond": 1.0, "heldout": 1.0}
#: Main-program |Emax| below which a target counts as unidentified (practical mode).
EFFECT_MIN = 0.2
#: |Emax| (or |γ|) below which a learned effect counts as not detected (truth mode).
DETECT_MIN = 0.1
#: Error charged for an EC50 / slope / τ of an effect the model did not detect.
UNDETECTED_ERROR = 1.0


@dataclass
class IdentifiabilityReport:
    """Index, parts and raw errors.

    Attributes:
        index: Weighted mean of the parts, in [0, 1].
        parts: Part name → value in [0, 1] (fixed names per mode).
        raw: Unmapped errors / statistics.
        mode: ``"truth"`` or ``"practical"``.

    """

    index: float
    parts: dict[str, float]
    raw: dict[str, float] = field(default_factory=dict)
    mode: str = "truth"


#: Most contexts the probe set spans (the first open ones, in the space's order).
PROBE_CONTEXTS = 3


def probe_queries(space: DesignSpace) -> list[Query]:
    """The fixed probe set of the module docstring."""
    out = []
    # Contexts held out for evaluation are scored by the risk, not here; at most PROBE_CONTEXTS contexts keep the
    # probe set (and the memory of predicting it) bounded on large worlds (10 cell lines × 3 sites).
    for c in space.open_contexts[:PROBE_CONTEXTS]:
        for t_h in (4.0, 24.0):
            lo, hi = space.time_range_h
            t_h = float(min(max(t_h, lo), hi))
            out.append(Query(Perturbation(), t_h, c, space.assays[0].name))
            for tgt in space.targets:
                for u in (0.2, 0.45, 0.7, 0.95):
                    d = float(space.unit_to_dose(tgt.kind, u))
                    out.append(Query(Perturbation((tgt.name,), (d,)), t_h, c, space.assays[0].name))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(Fa, Fb)`` Pearson correlations between the columns of a and b (0 for constant columns)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    c = (a.T @ b) / np.maximum(np.outer(na, nb), 1e-12)
    return np.where(np.outer(na, nb) > 1e-9, c, 0.0)


def _feature_r2(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over features of corr² between predicted and true columns (varying true columns only)."""
    keep = true.std(0) > 1e-9
    if not keep.any():
        return 0.0
    c = np.array([_corr(pred[:, [i]], true[:, [i]])[0, 0] for i in np.flatnonzero(keep)])
    return float(np.mean(c**2))


def match_programs(model_z: np.ndarray, true_z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Hungarian matching of model latent dims to true programs.

    Returns:
        ``perm`` (true program k ↔ model dim ``perm[k]``), ``sign`` ``(K,)``
        and the mean matched |corr| (MCC).

    """
    c = _corr(model_z, true_z)  # (K_model, K_true)
    rows, cols = linear_sum_assignment(-np.abs(c))
    perm = np.full(true_z.shape[1], -1)
    perm[cols] = rows
    sign = np.sign(c[perm, np.arange(true_z.shape[1])])
    sign[sign == 0] = 1.0
    return perm, sign, float(np.abs(c[rows, cols]).sum() / true_z.shape[1])


def _latent_parts(model, truth: GroundTruth, probe: list[Query]) -> tuple:  # noqa: ANN001
    """The probes' prediction and its ``programs`` matched to the true latents: (pred, perm, sign, MCC, R²)."""
    pred = model.predict(probe)
    mz, tz = pred.mean("programs"), truth.latent(probe)
    perm, sign, mcc = match_programs(mz, tz)
    X = np.c_[mz, np.ones(len(mz))]
    coef, *_ = np.linalg.lstsq(X, tz, rcond=None)
    resid = ((tz - X @ coef) ** 2).sum(0)
    tot = ((tz - tz.mean(0)) ** 2).sum(0)
    return pred, perm, sign, mcc, float(np.mean(1.0 - resid / np.maximum(tot, 1e-12)))


def _truth_parts(model, truth: GroundTruth, probe: list[Query], wd) -> tuple[dict, dict]:  # noqa: ANN001
    pred, perm, sign, mcc, r2 = _latent_parts(model, truth, probe)
    P = model.operator_parameters()
    idx = [model.space.target_index[t] for t in truth.targets]
    ec50 = np.median(P["log10_ec50"], 0)[idx][:, perm]
    hill = np.median(P["hill"], 0)[idx][:, perm]
    emax = np.median(P["emax"], 0)[idx][:, perm] * sign
    tau = np.median(P["tau_h"], 0)[idx]
    gam = np.median(P["interactions"], 0)[np.ix_(idx, idx)]
    mask = truth.direct_mask
    seen = np.abs(emax) >= DETECT_MIN  # an undetected effect has no identified EC50, slope or sign
    err_ec50 = np.where(seen, np.abs(ec50 - truth.ec50_log10), UNDETECTED_ERROR)
    err_hill = np.where(seen, np.abs(np.log(hill) - np.log(truth.hill)), UNDETECTED_ERROR)
    target_seen = (seen & mask).any(1)
    raw = {
        "latent_mcc": 1.0 - mcc,
        "latent_r2": 1.0 - r2,
        "ec50": float(err_ec50[mask].mean()),
        "hill": float(err_hill[mask].mean()),
        "tau": float(np.where(target_seen, np.abs(np.log(tau) - np.log(truth.tau_h)), UNDETECTED_ERROR).mean()),
        "direction": float(1.0 - (seen & (np.sign(emax) == np.sign(truth.emax)))[mask].mean()),
        "ec50_within_0.3": float((err_ec50[mask] <= 0.3).mean()),
    }
    off = ~np.eye(len(idx), dtype=bool)
    true_g = truth.interactions
    inter = off & (true_g != 0)
    gsign = np.where(np.abs(gam) >= DETECT_MIN, np.sign(gam), 0.0)
    sign_err = float(1.0 - (gsign == np.sign(true_g))[inter].mean()) if inter.any() else 0.0
    mag_err = float(np.abs(gam - true_g)[off].mean()) if off.any() else 0.0
    raw["interaction"] = 0.5 * sign_err + 0.5 * min(mag_err / 0.5, 1.0)
    expected = truth.expected(probe)
    translated = translation_error(model, wd) if wd is not None else None
    if translated is not None:
        raw["cross_modal"] = translated
    else:  # no anchors in the data: decoded readouts vs the truth over the probes
        cm = [
            _feature_r2(pred.mean(m), np.log(expected[m] + 1.0) if m == ADT else expected[m])
            for m in (ADT, MORPHOLOGY)
            if m in pred.members and m in expected
        ]
        raw["cross_modal"] = 1.0 - float(np.mean(cm)) if cm else 1.0
    spot_src = SPATIAL if SPATIAL in pred.members else RNA if RNA in pred.members else None
    if spot_src is not None and SPATIAL in expected:
        e = expected[SPATIAL]
        raw["cross_scale"] = 1.0 - _feature_r2(pred.mean(spot_src), np.log(e / e.sum(1, keepdims=True) + 1e-8))
    else:
        raw["cross_scale"] = 1.0
    lifted = lift_spots(model.networks[0], wd) if wd is not None else None
    raw["lift"] = 1.0
    if lifted is not None:
        raw["cycle"] = 1.0 - cycle_r2(lifted)
        raw["cross_scale"] = 0.5 * raw["cross_scale"] + 0.5 * raw["cycle"]
        spot_truth = truth.extras.get("spot_truth")
        if callable(spot_truth):
            true_comp = true_compositions(lifted, wd, spot_truth)
            raw["lift"] = composition_error(lifted.composition, true_comp)
            raw["lift_uniform"] = composition_error(
                np.full_like(lifted.composition, 1.0 / lifted.composition.shape[1]), true_comp
            )
            true_z = true_compositions(lifted, wd, spot_truth, key="latent")
            Xs = np.c_[lifted.state, np.ones(len(true_z))]
            res = true_z - Xs @ np.linalg.lstsq(Xs, true_z, rcond=None)[0]
            r2_state = 1.0 - (res**2).sum(0) / np.maximum(((true_z - true_z.mean(0)) ** 2).sum(0), 1e-12)
            raw["lift_state_r2"] = float(np.mean(r2_state))  # lifted spot state vs true spot latent (affine)
    parts = {
        "latent_mcc": 1.0 - raw["latent_mcc"],
        "latent_r2": float(np.clip(1.0 - raw["latent_r2"], 0.0, 1.0)),
        "ec50": math.exp(-raw["ec50"] / 0.3),
        "hill": math.exp(-raw["hill"] / 0.3),
        "tau": math.exp(-raw["tau"] / 0.5),
        "direction": 1.0 - raw["direction"],
        "interaction": 1.0 - raw["interaction"],
        "cross_modal": 1.0 - raw["cross_modal"],
        "cross_scale": 1.0 - raw["cross_scale"],
        "lift": 1.0 - raw["lift"],
    }
    return parts, raw


def _main_program(P: dict) -> np.ndarray:
    """``(T,)`` main program per target (largest ensemble-mean |Emax|)."""
    return np.abs(P["emax"].mean(0)).argmax(1)


def _contraction(model) -> tuple[float, np.ndarray]:  # noqa: ANN001
    P = model.operator_parameters()
    main = _main_program(P)
    T = len(main)
    rows = np.arange(T)
    eff = np.abs(P["emax"].mean(0))[rows, main]
    width = np.array(
        [
            math.log10(model.space.dose_ranges[t.kind][1]) - math.log10(model.space.dose_ranges[t.kind][0])
            for t in model.space.targets
        ]
    )
    if P["emax"].shape[0] < 2:
        return 0.0, eff
    v = [
        P["log10_ec50"][:, rows, main].var(0, ddof=1) / (width**2 / 12.0),
        np.log(P["hill"][:, rows, main]).var(0, ddof=1) / 0.25,
        P["emax"][:, rows, main].var(0, ddof=1) / 1.0,
        np.log(P["tau_h"]).var(0, ddof=1) / 1.0,
    ]
    c = np.mean([np.clip(1.0 - x, 0.0, 1.0) for x in v], axis=0)
    c = np.where(eff >= EFFECT_MIN, c, 0.0)
    return float(c.mean()), eff


def _fisher(model, wd) -> tuple[float, float]:  # noqa: ANN001
    """Smallest eigenvalue and condition number of the empirical Fisher of the main-program parameters."""
    net = model.networks[0]
    P = model.operator_parameters()
    main = torch.as_tensor(_main_program(P))
    op = net.operator
    rows = torch.arange(op.T)
    net.requires_grad_(True)
    grads = []
    specimens = [(name, i) for name, b in wd.blocks.items() if name in net.decoders for i in range(len(b.query))]
    rng = np.random.default_rng(0)
    if len(specimens) > 200:
        specimens = [specimens[i] for i in np.sort(rng.choice(len(specimens), 200, replace=False))]
    scale = 1.0 if len(specimens) == 0 else sum(len(b.query) for b in wd.blocks.values()) / len(specimens)
    for name, i in specimens:
        b = wd.blocks[name]
        keep = torch.zeros(len(b.query), dtype=torch.bool)
        keep[i] = True
        sub = b.select(keep)
        z = net.latent_seen_by(name, wd.features, net.latent(wd.features), sub.query)
        nll = net.decoders[name].nll(z, wd.features.site[sub.query], sub, torch.ones(1))
        g = torch.autograd.grad(nll, [op.log10_ec50, op.hill_raw, op.emax, op.log_tau], allow_unused=True)
        g = [torch.zeros(op.T) if x is None else x for x in g]
        grads.append(torch.cat([g[0][rows, main], g[1][rows, main], g[2][rows, main], g[3]]).double())
    net.requires_grad_(False)
    if not grads:
        return 0.0, float("inf")
    G = torch.stack(grads)
    F = scale * (G.T @ G)
    ev = torch.linalg.eigvalsh(F).clamp_min(0.0).numpy()
    lam_min, lam_max = float(ev.min()), float(ev.max())
    return lam_min, (lam_max / lam_min) if lam_min > 0 else float("inf")


def _heldout(model, wd) -> float:  # noqa: ANN001
    """Out-of-bag minus in-bag NLL per specimen and feature, averaged over bootstrap members."""
    gaps = []
    for net, st in zip(model.networks, model.states, strict=True):
        w = st.get("weights")
        if w is None:
            continue
        with torch.no_grad():
            for name, b in wd.blocks.items():
                if name not in w or name not in net.decoders or len(w[name]) != len(b.query):
                    continue
                wt = torch.as_tensor(np.array(w[name]), dtype=torch.float32)
                oob, inb = wt == 0, wt > 0
                if not oob.any() or not inb.any():
                    continue
                z = net.latent_seen_by(name, wd.features, net.latent(wd.features))
                per = []  # out-of-bag, in-bag
                for m in (oob, inb):
                    sub = b.select(m)
                    ones = torch.ones(int(m.sum()))
                    nll = net.decoders[name].nll(z[sub.query], wd.features.site[sub.query], sub, ones)
                    per.append(float(nll) / (int(m.sum()) * len(b.var_names)))
                gaps.append(per[0] - per[1])
    return float(np.mean(gaps)) if gaps else float("inf")


def _well_data(model, data: MeasurementBatch | None):  # noqa: ANN001, ANN202
    """Specimens of ``data`` (the model's own aggregate when ``data`` holds exactly the specimens it was fitted on)."""
    if data is None:
        return model.data
    if model.data is not None:
        seen = {s for b in model.data.blocks.values() for s in b.specimens}
        spec = set()
        for m in data.modalities.values():
            spec.update(m.specimen_ids.unique().tolist())
        if spec == seen:
            return model.data
    return build_well_data(model.space, data)


def _partial_score(model, truth: GroundTruth | None) -> IdentifiabilityReport:  # noqa: ANN001
    """The parts a model without operators can have (:class:`models.base.OperatorModel`); the rest and the index NaN.

    Against a simulator's truth these are ``latent_mcc`` and ``latent_r2`` (its ``programs`` readout
    against the true latents); in practical mode every part needs operator parameters.
    """
    weights, mode = (TRUTH_WEIGHTS, "truth") if truth is not None else (PRACTICAL_WEIGHTS, "practical")
    parts = dict.fromkeys(weights, float("nan"))
    if truth is not None:
        _, _, _, mcc, r2 = _latent_parts(model, truth, probe_queries(model.space))
        parts.update(latent_mcc=float(np.clip(mcc, 0.0, 1.0)), latent_r2=float(np.clip(r2, 0.0, 1.0)))
    return IdentifiabilityReport(index=float("nan"), parts=parts, raw={}, mode=mode)


def score(model, data: MeasurementBatch | None = None, truth: GroundTruth | None = None) -> IdentifiabilityReport:  # noqa: ANN001
    """Score a fitted ensemble.

    A model without operators (:class:`models.base.OperatorModel`, e.g. a baseline) gets only the
    parts it can have and a NaN index: the index compares operator recovery like for like, and a
    model that has no operators has none to recover.

    Args:
        model: A fitted :class:`~models.csl.CSLEnsemble` (or any protocol model).
        data: The ledger it was fitted on (default: the specimens of its last fit).
        truth: Ground truth of a simulated world, or None for lab data.

    Returns:
        The report; the formula is in the module docstring.

    Raises:
        RuntimeError: If the model was never fitted.

    """
    if not isinstance(model, OperatorModel):
        return _partial_score(model, truth)
    if model.states is None:
        raise RuntimeError("identifiability.score: the model is not fitted")
    wd = _well_data(model, data)
    if truth is not None:
        parts, raw = _truth_parts(model, truth, probe_queries(model.space), wd)
        weights, mode = TRUTH_WEIGHTS, "truth"
    else:
        contraction, _ = _contraction(model)
        lam_min, cond = _fisher(model, wd)
        gap = _heldout(model, wd)
        sd = 1.0 / math.sqrt(lam_min) if lam_min > 0 else float("inf")
        log_cond = math.log10(cond) if math.isfinite(cond) else float("inf")
        raw = {
            "contraction": 1.0 - contraction,
            "fisher_min": sd,
            "fisher_lambda_min": lam_min,
            "fisher_cond": log_cond,
            "heldout": gap,
        }
        parts = {
            "contraction": contraction,
            "fisher_min": math.exp(-sd / 0.3) if math.isfinite(sd) else 0.0,
            "fisher_cond": math.exp(-log_cond / 6.0) if math.isfinite(log_cond) else 0.0,
            "heldout": math.exp(-max(gap, 0.0) / 0.5) if math.isfinite(gap) else 0.0,
        }
        weights, mode = PRACTICAL_WEIGHTS, "practical"
    parts = {k: float(np.clip(v, 0.0, 1.0)) for k, v in parts.items()}
    index = sum(weights[k] * parts[k] for k in weights) / sum(weights.values())
    return IdentifiabilityReport(index=float(index), parts=parts, raw={k: float(v) for k, v in raw.items()}, mode=mode)
