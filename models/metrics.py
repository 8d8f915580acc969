"""The field's standard perturbation-prediction metrics, as cell-eval and the Virtual Cell Challenge define them.

On pseudobulk profiles (one row per query: the mean readout of its
specimens) with the control profile of each query's context:

* ``pearson_delta``: Pearson correlation of the predicted and the observed
  effect (profile minus control), per query;
* ``mae``: mean absolute error of the profile, per query;
* ``discrimination_score_l1``: per query, ``1 − rank / n``, where ``rank`` is
  the place of the query's own observed effect among all ``n`` observed
  effects of the set, sorted by L1 distance to its predicted effect (1 = its
  own is the nearest);
* ``overlap_at_N``: the share of the top-N genes by observed |effect| that are
  also among the top-N by predicted |effect| (N = ``k``; NaN for a readout of
  N features or fewer, where it would be 1 whatever the prediction);
* ``de_direction_match``: the share of the top-N observed genes whose
  predicted effect has the observed sign.

Each is the mean over the set's queries. Each has a ``_skill`` form in which
the mean-of-controls baseline (or chance, where that baseline has no value)
scores 0 and a perfect prediction 1: ``1 − mae / mae_baseline`` (the
baseline predicts the control profile), ``pearson_delta`` as it is (chance
0), ``(d − d₀) / (1 − d₀)`` with ``d₀ = (n + 1) / (2n)`` the expected
discrimination of a random ranking, ``(o − N/G) / (1 − N/G)`` for overlap
(``G`` features) and ``2·m − 1`` for direction (chance ½).

Where cslab differs from cell-eval, and why: the profiles are cslab's
readouts (log CP10k with a 0.5 pseudocount for RNA, not log1p of normalised
counts), the controls are the observed ones of the query's context, also
for the predicted effect (as in a Challenge submission that carries the real
control cells), the discrimination does not drop the target gene (cslab's
targets are not always genes of the panel), and the top-N genes are ranked
by |effect| of the pseudobulk, where cell-eval ranks genes that pass a
Wilcoxon test at FDR 0.05 by |log2 fold change| (cslab's specimens are too
few for per-gene tests). ``pearson_delta``, ``mae`` and
``discrimination_score_l1`` agree with cell-eval 0.8.2 on the same
pseudobulks (``tests/models/test_metrics.py``).
"""

from __future__ import annotations

import numpy as np

#: The metrics :func:`standard_metrics` returns (each also as ``<name>_skill``).
STANDARD = ("pearson_delta", "mae", "discrimination_score_l1", "overlap_at_N", "de_direction_match")


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n,)`` Pearson correlation of each row pair (NaN where a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def discrimination_l1(pred_effect: np.ndarray, real_effect: np.ndarray) -> np.ndarray:
    """``(n,)`` ``1 − rank / n`` of each query's observed effect by L1 distance to its predicted effect.

    Args:
        pred_effect: ``(n, F)`` predicted effects.
        real_effect: ``(n, F)`` observed effects.
    """
    n = len(real_effect)
    dist = np.abs(real_effect[None, :, :] - pred_effect[:, None, :]).sum(axis=2)  # (pred i, real j)
    order = np.argsort(dist, axis=1, kind="stable")
    rank = np.argmax(order == np.arange(n)[:, None], axis=1)
    return 1.0 - rank / n


def _top(effect: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` indices of the ``k`` largest |effect| per row."""
    return np.argsort(-np.abs(effect), axis=1, kind="stable")[:, :k]


def standard_metrics(
    pert_pred: np.ndarray, pert_real: np.ndarray, ctrl: np.ndarray, k: int = 20, ctrl_pred: np.ndarray | None = None
) -> dict[str, float]:
    """The standard metrics of one set (module docstring), and their ``_skill`` forms.

    Args:
        pert_pred: ``(n, F)`` predicted profiles.
        pert_real: ``(n, F)`` observed profiles.
        ctrl: ``(n, F)`` (or ``(F,)``) the control profile of each query's context.
        k: N of ``overlap_at_N`` and ``de_direction_match`` (at most ``F``).
        ctrl_pred: The control profile the predicted effect is taken against (default ``ctrl``;
            cell-eval takes the model's own prediction of the controls).

    Returns:
        ``{name: value, name_skill: value}`` for every name in :data:`STANDARD`; NaN where a
        metric is not defined (a discrimination of one query, a correlation of constant effects).
    """
    pert_pred, pert_real = np.asarray(pert_pred, float), np.asarray(pert_real, float)
    ctrl = np.broadcast_to(np.asarray(ctrl, float), pert_real.shape)
    n, F = pert_real.shape
    if n == 0:
        return {f"{m}{s}": float("nan") for m in STANDARD for s in ("", "_skill")}
    dp = pert_pred - (ctrl if ctrl_pred is None else np.broadcast_to(np.asarray(ctrl_pred, float), ctrl.shape))
    dr = pert_real - ctrl
    k = max(1, min(int(k), F))
    r = _pearson_rows(dp, dr)
    out = {
        "pearson_delta": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
        "mae": float(np.abs(pert_pred - pert_real).mean()),
    }
    out["discrimination_score_l1"] = float(discrimination_l1(dp, dr).mean()) if n > 1 else float("nan")
    top_r, top_p = _top(dr, k), _top(dp, k)
    out["overlap_at_N"] = (
        float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_r, top_p, strict=True)])) if k < F else float("nan")
    )  # the top N of N features always overlap
    rows = np.arange(n)[:, None]
    out["de_direction_match"] = float((np.sign(dp[rows, top_r]) == np.sign(dr[rows, top_r])).mean())
    base_mae = float(np.abs(ctrl - pert_real).mean())
    d0, o0 = (n + 1) / (2 * n), k / F
    out.update(
        pearson_delta_skill=out["pearson_delta"],
        mae_skill=1.0 - out["mae"] / base_mae if base_mae > 0 else float("nan"),
        discrimination_score_l1_skill=(out["discrimination_score_l1"] - d0) / (1 - d0) if n > 1 else float("nan"),
        overlap_at_N_skill=(out["overlap_at_N"] - o0) / (1 - o0) if o0 < 1 else float("nan"),
        de_direction_match_skill=2.0 * out["de_direction_match"] - 1.0,
    )
    return out
