"""The evaluation blueprint: stress-test sets, calibration and the aggregate risk.

The aggregate risk (the CSL perspective) is

    ``R = Σ_a w_a · mean_{D ∈ stress(a)} ℓ_a(F(ŷ_D), F(y_D))``

over the axes ``modality``, ``scale``, ``context`` and ``intervention``,
weights ``w_a`` summing to one over the axes present (default equal).

A stress-test set ``D`` is one modality of one held-out batch. The loss of a
set is in *baseline units*, so the axes are comparable:

    ``ℓ = ½ · min(1, nMSE) + ½ · disc``    (``ℓ = min(1, nMSE)`` for one query)

* ``nMSE = MSE(F(ŷ), F(y)) / MSE(F(b), F(y))`` with ``b`` the mean of the
  controls (same cell line and site where the controls have them); floored at
  no skill, ``min(1, ·)`` is one minus the skill score clipped at zero. The
  loop takes the controls from reference wells measured at the start of a run
  apart from the design (controls of every assay in every trainable context),
  so every design on a seed is scored with the same yardstick; until
  2026-12-08 it took them from the training data, whose controls depend on
  the design (kept as ``risk_training_controls``);
* ``disc`` is twice the mean discrimination rank (cell-eval style): for each
  query, the fraction of the other queries' predictions closer to its
  observation than its own prediction (ties count half).

So perfect predictions give ``ℓ = 0``; the mean-of-controls baseline gives
``ℓ = 1`` (it has no skill and, predicting the same for every query, ties);
predictions shuffled across queries give ``disc ≈ 1`` and ``nMSE ≥ 1``
whenever effects vary more across queries than their mean shift, hence
``ℓ ≈ 1``, the baseline's risk. A readout the model does not predict scores
``ℓ = 1``.

``F`` is the modality readout on the model's scale
(:mod:`models.readouts`), or for ``rna`` / ``spatial`` the program / pathway
activity when gene sets are given. Calibration (``calibration_90``) is the
empirical coverage of the central 90% Gaussian predictive interval
``mean ± 1.645 · sd`` on the modality readouts of every set, with
``sd² = epistemic + aleatoric / n_specimens`` (the observation is a mean over
the query's specimens).

The held-out sets come from :func:`experiment_design.stress.make_stress_sets`:
the loop measures them once at the start of a run (fixed by the seed, not
charged to the budget) and keeps every query that their rule
(:func:`experiment_design.stress.stress_rule`) blocks out of training and out
of the acquisition pool.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri  # the normal cdf and its inverse, without scipy.stats' 1 s import

from experiment_design import MeasurementBatch, Query, keys
from experiment_design.assays import RNA, SPATIAL
from experiment_design.modalities import axis_modalities
from experiment_design.splits import queries_of_obs
from experiment_design.stress import AXES
from models.base import PROGRAMS
from models.metrics import STANDARD, standard_metrics
from models.readouts import ObservedReadout, de_agreement, observed_readout, program_activity


# ------------------------------------------------------------------ calibration
def interval_coverage(y: np.ndarray, mean: np.ndarray, var: np.ndarray, level: float = 0.9) -> float:
    """Fraction of ``y`` inside the central ``level`` interval of ``N(mean, var)``."""
    if not 0 < level < 1:
        raise ValueError(f"interval_coverage: level must be in (0, 1), got {level}")
    z = ndtri(0.5 + level / 2)
    sd = np.sqrt(np.maximum(np.asarray(var, dtype=float), 1e-12))
    return float(np.mean(np.abs(np.asarray(y, dtype=float) - mean) <= z * sd))


def crps_gaussian(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of ``N(mean, var)`` at ``y`` (same units as ``y``; lower is better)."""
    sd = np.sqrt(np.maximum(np.asarray(var, dtype=float), 1e-12))
    z = (np.asarray(y, dtype=float) - mean) / sd
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return sd * (z * (2 * ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def gaussian_nll(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Negative log density of ``N(mean, var)`` at ``y`` (nats)."""
    v = np.maximum(np.asarray(var, dtype=float), 1e-12)
    return 0.5 * (np.log(2 * math.pi * v) + (np.asarray(y, dtype=float) - mean) ** 2 / v)


# ---------------------------------------------------------------------- losses
def normalised_error(pred: np.ndarray, obs: np.ndarray, baseline: np.ndarray) -> float:
    """``MSE(pred, obs) / MSE(baseline, obs)``; all ``(n, F)``. 0 / 0 counts as 0."""
    err = float(np.mean((np.asarray(pred) - obs) ** 2))
    base = float(np.mean((np.asarray(baseline) - obs) ** 2))
    if base <= 1e-12:
        return 0.0 if err <= 1e-12 else 1.0
    return err / base


def discrimination(pred: np.ndarray, obs: np.ndarray) -> float:
    """Mean over queries of the fraction of other predictions closer to its observation (ties half).

    Args:
        pred: ``(n, F)`` predictions, ``n >= 2``.
        obs: ``(n, F)`` observations.

    Returns:
        In [0, 1]: 0 when every prediction is the closest to its own
        observation, about 0.5 for uninformative predictions.

    """
    D = ((np.asarray(pred)[None, :, :] - np.asarray(obs)[:, None, :]) ** 2).sum(-1)  # D[i, j] = |pred_j − obs_i|²
    own = np.diag(D)[:, None]
    n = len(D)
    off = ~np.eye(n, dtype=bool)
    scale = np.maximum(np.abs(own), 1.0) * 1e-9
    closer = ((D < own - scale) & off).sum(1) + 0.5 * ((np.abs(D - own) <= scale) & off).sum(1)
    return float(np.mean(closer / (n - 1)))


def set_loss(pred: np.ndarray, obs: np.ndarray, baseline: np.ndarray) -> float:
    """``ℓ`` of one stress set in baseline units (module docstring)."""
    nmse = min(1.0, normalised_error(pred, obs, baseline))
    if len(obs) < 2:
        return nmse
    return 0.5 * nmse + 0.5 * 2.0 * discrimination(pred, obs)


def additive_baseline(
    queries: Sequence[Query], reference: Sequence[Query], values: np.ndarray, control: np.ndarray
) -> np.ndarray:
    """The additive combination of single effects: ``control + Σ_t (single_t − control)``.

    Args:
        queries: ``n`` queries to predict (combinations; singles and controls work too).
        reference: Measured queries whose readouts are ``values``; the single
            of target ``t`` at the same dose (relative tolerance 1e-6) in the
            same cell line is used, averaged if measured more than once.
        values: ``(len(reference), F)`` observed readouts of ``reference``.
        control: ``(n, F)`` control readout of each query's context.

    Returns:
        ``(n, F)``; rows with a component single missing are NaN.

    """
    out = np.array(control, dtype=float, copy=True)
    for i, q in enumerate(queries):
        for t, d in zip(q.perturbation.targets, q.perturbation.doses, strict=True):
            rows = [
                j
                for j, r in enumerate(reference)
                if r.perturbation.targets == (t,)
                and math.isclose(r.perturbation.doses[0], d, rel_tol=1e-6)
                and r.context.cell_line == q.context.cell_line
            ]
            if not rows:
                out[i] = np.nan
                break
            out[i] += values[rows].mean(axis=0) - control[i]
    return out


# ------------------------------------------------------------------- reports
@dataclass
class RiskReport:
    """One round's evaluation.

    Attributes:
        risk: Aggregate risk ``R`` in baseline units (0 perfect, 1 the
            mean-of-controls baseline).
        parts: ``{"risk_modality": ..., "risk_scale": ..., "risk_context":
            ..., "risk_intervention": ...}``; NaN for an axis without sets.
        calibration_90: Empirical coverage of the central 90% interval.
        details: Further numbers: ``calibration_50``, ``crps``, ``nll``,
            ``nmse_<axis>`` (vs mean of controls), ``nmse_additive`` (vs the
            additive combination of singles, combinations only),
            ``de_overlap``, ``de_direction`` (top-20 DE, RNA sets), ``n_sets``.
        standard: The field's standard metrics (:mod:`models.metrics`), mean over every
            set: ``<metric>`` and ``<metric>_skill`` (0 = mean of controls or chance,
            1 = perfect); per axis ``<metric>_<axis>``.

    """

    risk: float
    parts: dict[str, float]
    calibration_90: float
    details: dict[str, float] = field(default_factory=dict)
    standard: dict[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        """Flat row for ``metrics.parquet``.

        Risk, its parts, the risk against the training data's controls, calibration_90 and the standard metrics.
        """
        old = self.details.get("risk_training_controls", self.risk)
        return {
            "risk": self.risk,
            **self.parts,
            "risk_training_controls": old,
            "calibration_90": self.calibration_90,
            **self.standard,
        }


def _predict(model: object, queries: Sequence[Query], readouts: Sequence[str]) -> object:
    if "readouts" in inspect.signature(model.predict).parameters:
        return model.predict(queries, readouts=(PROGRAMS, *readouts))
    return model.predict(queries)


def _contexts(batch: MeasurementBatch) -> dict[str, tuple[str, str]]:
    out = {}
    for m in batch.modalities.values():
        first = m.obs.drop_duplicates(keys.QUERY_ID)
        out.update(
            zip(
                first[keys.QUERY_ID].astype(str),
                zip(first[keys.CELL_LINE].astype(str), first[keys.SITE].astype(str), strict=True),
                strict=True,
            )
        )
    return out


def _queries_by_id(batch: MeasurementBatch) -> dict[str, Query]:
    obs = pd.concat([m.obs for m in batch.modalities.values()], ignore_index=True)
    ids = obs.drop_duplicates(keys.QUERY_ID)[keys.QUERY_ID].astype(str)
    return dict(zip(ids, queries_of_obs(obs), strict=True))


def _readout_or_none(batch: MeasurementBatch, modality: str) -> ObservedReadout | None:
    return observed_readout(batch, modality) if modality in batch.modalities else None


def _controls_only(readout: ObservedReadout | None, queries: Sequence[Query]) -> ObservedReadout | None:
    if readout is None:
        return None
    keep = np.array([q.perturbation.is_control for q in queries], dtype=bool)
    if not keep.any():
        return None
    return ObservedReadout(
        [q for q, k in zip(readout.query_ids, keep, strict=True) if k],
        readout.values[keep],
        readout.n_specimens[keep],
        readout.var_names,
    )


def _baseline(obs: ObservedReadout, ctx: dict, controls: ObservedReadout | None, control_ctx: dict) -> np.ndarray:
    """``(n, F)`` mean of controls of the same cell line and site, else cell line, else all."""
    if controls is None or controls.values.shape[1] != obs.values.shape[1] or not len(controls.query_ids):
        return np.broadcast_to(obs.values.mean(axis=0), obs.values.shape)
    cctx = [control_ctx[q] for q in controls.query_ids]
    out = np.empty_like(obs.values)
    for i, q in enumerate(obs.query_ids):
        line, site = ctx[q]
        for keep in ([c == (line, site) for c in cctx], [c[0] == line for c in cctx], [True] * len(cctx)):
            if any(keep):
                out[i] = controls.values[np.asarray(keep)].mean(axis=0)
                break
    return out


def evaluate(
    model: object,
    heldout: Mapping[str, MeasurementBatch],
    control_data: MeasurementBatch | None = None,
    *,
    reference: MeasurementBatch | None = None,
    weights: Mapping[str, float] | None = None,
    gene_sets: Mapping[str, Sequence[str]] | None = None,
    k_de: int = 20,
) -> RiskReport:
    """Score a model on the held-out stress sets; the loop calls this once per round.

    Args:
        model: Anything with ``predict(queries[, readouts=...]) -> Prediction``
            (:class:`models.base.Prediction`: ``members[r]`` ``(M, n, F)``,
            ``aleatoric[r]`` ``(n, F)`` per specimen).
        heldout: Axis → held-out batch measured at run start. A key is an
            axis name or ``"<axis>/<name>"`` (several batches per axis).
        control_data: Reference measurements from training: its controls
            give the mean-of-controls baseline (without controls of a
            modality, the baseline is the mean of the set's own observations);
            its single-target queries give the additive baseline of
            combinations (``details["nmse_additive"]``).
        reference: Controls that give the mean-of-controls baseline instead
            of ``control_data``'s (which still gives the additive baseline).
            With the training data as the source, the yardstick depends on
            the design: a design that never measured a control of a modality
            is scored against the set's own mean, one that did against its
            controls. Controls of every assay and trainable context measured
            apart from the design (:func:`loop.heldout.reference_queries`)
            make the yardstick the same for every design; the loop scores
            this way. The risk against ``control_data``'s controls (the
            definition before 2026-12-08) is kept as
            ``details["risk_training_controls"]`` (equal to ``risk`` without
            a reference).
        weights: Axis → weight (default equal); renormalised over the axes
            present.
        gene_sets: Optional gene sets (e.g. :func:`models.readouts.parse_gmt`);
            ``F`` of ``rna`` / ``spatial`` is then their activity.
        k_de: Genes in the top-DE comparison.

    Returns:
        A :class:`RiskReport`.

    Raises:
        ValueError: On an unknown axis, a negative weight or a prediction
            whose shape does not match the held-out data.

    """
    w = {a: 1.0 for a in AXES} if weights is None else {a: float(weights.get(a, 0.0)) for a in AXES}
    if any(v < 0 for v in w.values()) or set(weights or {}) - set(AXES):
        raise ValueError(f"evaluate: weights must be non-negative over axes {AXES}, got {dict(weights or {})}")
    losses: dict[str, list[float]] = {a: [] for a in AXES}
    losses_training: dict[str, list[float]] = {a: [] for a in AXES}  # against the training data's controls
    nmses: dict[str, list[float]] = {a: [] for a in AXES}
    standard: dict[str, list[dict]] = {a: [] for a in AXES}
    ys, mus, vs, de_o, de_d = [], [], [], [], []
    control_ctx = _contexts(control_data) if control_data is not None else {}
    control_queries = _queries_by_id(control_data) if control_data is not None else {}
    ref_ctx = _contexts(reference) if reference is not None else control_ctx
    ref_queries = _queries_by_id(reference) if reference is not None else {}
    nadd: list[float] = []
    for key, batch in heldout.items():
        axis = key.split("/")[0]
        if axis not in AXES:
            raise ValueError(f"evaluate: held-out key {key!r} names no axis; use one of {AXES} or '<axis>/<name>'")
        mods = [m for m in batch.modalities if m in axis_modalities(axis)]  # the predicted side, per descriptor
        if not mods:
            continue
        obs_all = pd.concat([batch.modalities[m].obs for m in batch.modalities], ignore_index=True)
        queries = queries_of_obs(obs_all)
        row = {q: i for i, q in enumerate(obs_all.drop_duplicates(keys.QUERY_ID)[keys.QUERY_ID].astype(str))}
        pred = _predict(model, queries, mods)
        ctx = _contexts(batch)
        for m in mods:
            o = observed_readout(batch, m)
            if m not in pred.members:
                losses[axis].append(1.0)
                losses_training[axis].append(1.0)
                continue
            idx = np.array([row[q] for q in o.query_ids])
            mu = np.asarray(pred.mean(m))[idx]
            if mu.shape != o.values.shape:
                raise ValueError(f"evaluate: {key}/{m}: prediction has shape {mu.shape}, observed {o.values.shape}")
            alea = np.asarray(pred.aleatoric[m])[idx] / o.n_specimens[:, None] if m in pred.aleatoric else 0.0
            var = np.asarray(pred.epistemic(m))[idx] + alea
            ctrl = _readout_or_none(control_data, m) if control_data is not None else None
            ctrl_q = [control_queries[q] for q in ctrl.query_ids] if ctrl is not None else []
            if reference is None:
                ref, ref_q = ctrl, ctrl_q
            else:
                ref = _readout_or_none(reference, m)
                ref_q = [ref_queries[q] for q in ref.query_ids] if ref is not None else []
            base = _baseline(o, ctx, _controls_only(ref, ref_q), ref_ctx)
            f = _feature_map(m, o.var_names, gene_sets)
            losses[axis].append(set_loss(f(mu), f(o.values), f(base)))
            if reference is None:
                losses_training[axis].append(losses[axis][-1])
            else:
                own = _baseline(o, ctx, _controls_only(ctrl, ctrl_q), control_ctx)
                losses_training[axis].append(set_loss(f(mu), f(o.values), f(own)))
            standard[axis].append(standard_metrics(f(mu), f(o.values), f(base), k_de))
            if ctrl is not None:
                add = additive_baseline([queries[row[q]] for q in o.query_ids], ctrl_q, ctrl.values, base)
                ok = np.isfinite(add).all(axis=1) & np.array(
                    [queries[row[q]].perturbation.order >= 2 for q in o.query_ids]
                )
                if ok.any():
                    nadd.append(normalised_error(f(mu[ok]), f(o.values[ok]), f(add[ok])))
            nmses[axis].append(normalised_error(f(mu), f(o.values), f(base)))
            ys.append(o.values.ravel())
            mus.append(mu.ravel())
            vs.append(var.ravel())
            if m == RNA and ctrl is not None:
                ov, dr = de_agreement(mu - base, o.values - base, k_de)
                de_o.append(ov)
                de_d.append(dr)
    rep = _report(losses, nmses, w, ys, mus, vs, de_o, de_d)
    rep.details["nmse_additive"] = float(np.mean(nadd)) if nadd else float("nan")
    rep.details["risk_training_controls"] = _aggregate(losses_training, w)
    rep.standard = _standard_summary(standard)
    return rep


def _standard_summary(standard: dict[str, list[dict]]) -> dict[str, float]:
    """Mean of each standard metric over every set, and of the raw ones per axis (NaN where none)."""

    def mean(sets: list[dict], name: str) -> float:
        v = np.array([d[name] for d in sets], dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    every = [d for sets in standard.values() for d in sets]
    out = {f"{m}{s}": mean(every, f"{m}{s}") for m in STANDARD for s in ("", "_skill")}
    out.update({f"{m}_{a}": mean(standard[a], m) for m in STANDARD for a in AXES})
    return out


def _feature_map(modality: str, var_names: Sequence[str], gene_sets: Mapping | None) -> Callable:
    if gene_sets and modality in (RNA, SPATIAL) and set(var_names) & {g for s in gene_sets.values() for g in s}:
        sets = {k: v for k, v in gene_sets.items() if set(v) & set(var_names)}
        return lambda X: program_activity(X, var_names, sets)
    return lambda X: np.asarray(X, dtype=float)


def _aggregate(losses: dict[str, list[float]], w: dict[str, float]) -> float:
    """``Σ_a w_a · mean(losses[a]) / Σ_a w_a`` over the axes with sets and weight; NaN if none."""
    present = [a for a in AXES if losses[a] and w[a] > 0]
    total_w = sum(w[a] for a in present)
    return float(sum(w[a] * np.mean(losses[a]) for a in present) / total_w) if total_w > 0 else float("nan")


def _report(losses: dict, nmses: dict, w: dict, ys: list, mus: list, vs: list, de_o: list, de_d: list) -> RiskReport:
    parts = {f"risk_{a}": float(np.mean(v)) if v else float("nan") for a, v in losses.items()}
    risk = _aggregate(losses, w)
    details: dict[str, float] = {f"nmse_{a}": float(np.mean(v)) if v else float("nan") for a, v in nmses.items()}
    details["n_sets"] = float(sum(len(v) for v in losses.values()))
    cal90 = float("nan")
    if ys:
        y, mu, v = np.concatenate(ys), np.concatenate(mus), np.concatenate(vs)
        cal90 = interval_coverage(y, mu, v, 0.9)
        details.update(
            calibration_50=interval_coverage(y, mu, v, 0.5),
            crps=float(np.mean(crps_gaussian(y, mu, v))),
            nll=float(np.mean(gaussian_nll(y, mu, v))),
        )
    if de_o:
        details.update(
            de_overlap=float(np.mean(np.concatenate(de_o))), de_direction=float(np.mean(np.concatenate(de_d)))
        )
    return RiskReport(risk, parts, cal90, details)
