"""Recovered vs true operators of a simulator run: dose–response curves and interaction signs.

The default provider, :func:`checkpoint_recovery`, rebuilds the run's model
from its last checkpoint (``checkpoints/model-NNNN.pt``) and the run's world
from ``simulators.make_world(world, seed)``, then compares the model's
program activities with the truth's noise-free latent state. The model's
programs are only identified up to an affine map, so predictions are first
aligned to the true latent by least squares on a probe set (the dose series
plus random queries) — the same alignment the identifiability score uses.
Anything missing (a lab run, no checkpoint, the model or simulator API not
there) raises :class:`RecoveryUnavailable` and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from experiment_design import DesignSpace, GroundTruth, Perturbation, Query

if TYPE_CHECKING:
    from loop.report import RunData


class RecoveryUnavailable(RuntimeError):
    """The run has no model or no truth to compare (the reason is the message)."""


@dataclass
class Recovery:
    """What the report's recovery section draws for one run.

    Attributes:
        panels: Dose–response panels: ``title``, ``dose`` (n,), ``true`` (n,),
            ``mean``, ``low``, ``high`` (n,) recovered program activity.
        signs: ``(true (P,), learned (P,), labels)`` interaction signs of
            target pairs (+1 synergy, −1 antagonism), or None.
        note: One sentence on how the numbers were made.
    """

    panels: list[dict] = field(default_factory=list)
    signs: tuple | None = None
    note: str = ""


def affine_align(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Least-squares affine map from predicted to true latent.

    Args:
        pred: ``(n, K)`` predicted programs.
        true: ``(n, K')`` true latent.

    Returns:
        ``(K + 1, K')`` matrix ``A``; aligned = ``[pred, 1] @ A``.
    """
    X = np.hstack([pred, np.ones((len(pred), 1))])
    return np.linalg.lstsq(X, true, rcond=None)[0]


def nonadditivity_sign(y_ab: np.ndarray, y_a: np.ndarray, y_b: np.ndarray, y_0: np.ndarray) -> int:
    """Synergy (+1) or antagonism (−1) of a pair on one readout.

    The combination's excess over the additive prediction, signed by the
    direction of the additive effect: a combination that goes further in the
    direction its parts push is synergistic.

    Args:
        y_ab: Readout (scalar) of the pair.
        y_a: Readout of the first target alone.
        y_b: Readout of the second target alone.
        y_0: Readout of the control.
    """
    excess = y_ab - y_a - y_b + y_0
    direction = np.sign(y_a + y_b - 2 * y_0) or 1.0
    return int(np.sign(excess * direction) or 0)


def _ground_truth(world: object) -> GroundTruth:
    truth = getattr(world, "truth", None)
    if isinstance(truth, GroundTruth):
        return truth
    for name in ("ground_truth", "to_ground_truth"):
        fn = getattr(truth, name, None) or getattr(world, name, None)
        if callable(fn):
            gt = fn()
            if isinstance(gt, GroundTruth):
                return gt
    raise RecoveryUnavailable("the simulator exposes no GroundTruth (world.truth)")


def _load(run: RunData) -> tuple[object, GroundTruth, DesignSpace]:
    if run.config["config"].get("oracle", "sim") != "sim":
        raise RecoveryUnavailable("lab data has no ground truth")
    import simulators
    from loop.parameters import NoParameters, load_last_model

    try:
        model, space, config = load_last_model(run.root)
    except NoParameters as exc:  # no checkpoint
        raise RecoveryUnavailable(str(exc)) from None
    world = simulators.make_world(config.world, seed=config.seed, **config.world_overrides)
    return model, _ground_truth(world), space


def _probes(
    space: DesignSpace, gt: GroundTruth, chosen: list[int], n_doses: int, max_pairs: int, seed: int
) -> tuple[list[Query], dict, dict]:
    """Probe queries: the control, a dose series per chosen target, each pair with its singles, 200 draws.

    Returns:
        The probes, target → (doses, first probe index), pair → probe index
        of the pair (its singles follow).
    """
    ctx, t_h = space.open_contexts[0], float(space.time_range_h[1])
    assay = space.rna_assay()
    names = list(gt.targets)

    def q(pert: Perturbation) -> Query:
        return Query(pert, t_h, ctx, assay)

    probes = [q(Perturbation.control())]
    series = {}
    for j in chosen:
        doses = space.dose_series(names[j], n_doses)
        series[j] = (doses, len(probes))
        probes += [q(Perturbation((names[j],), (float(d),))) for d in doses]
    inter = np.asarray(gt.interactions)
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))] if space.max_order >= 2 else []
    pair_at = {}
    for a, b in sorted(pairs, key=lambda p: -abs(inter[p]))[:max_pairs]:
        da = float(space.unit_to_dose(space.target(names[a]).kind, 0.7))
        db = float(space.unit_to_dose(space.target(names[b]).kind, 0.7))
        pair_at[(a, b)] = len(probes)
        probes += [
            q(Perturbation((names[a], names[b]), (da, db))),
            q(Perturbation((names[a],), (da,))),
            q(Perturbation((names[b],), (db,))),
        ]
    probes += space.sample(200, np.random.default_rng([seed, 0xA11]))
    return probes, series, pair_at


def _dose_panels(gt: GroundTruth, series: dict, true: np.ndarray, aligned: np.ndarray) -> list[dict]:
    """One panel per target: its most responsive program, true vs the members' aligned curves."""
    names = list(gt.targets)
    panels = []
    for j, (doses, i0) in series.items():
        sl = slice(i0, i0 + len(doses))
        k = int(np.argmax(np.abs(true[sl] - true[0]).max(axis=0)))
        m = aligned[:, sl, k]
        panels.append(
            {
                "title": f"{names[j]} → {gt.programs[k] if k < len(gt.programs) else k}",
                "dose": doses,
                "true": true[sl, k],
                "mean": m.mean(axis=0),
                "low": m.min(axis=0),
                "high": m.max(axis=0),
            }
        )
    return panels


def _interaction_signs(gt: GroundTruth, pair_at: dict, true: np.ndarray, mean: np.ndarray) -> tuple | None:
    """True and learnt signs of the excess over additivity, on each pair's most non-additive program."""
    if not pair_at:
        return None
    names = list(gt.targets)
    t_s, l_s = [], []
    for i in pair_at.values():
        k = int(np.argmax(np.abs(true[i] - true[i + 1] - true[i + 2] + true[0])))
        t_s.append(nonadditivity_sign(true[i, k], true[i + 1, k], true[i + 2, k], true[0, k]))
        l_s.append(nonadditivity_sign(mean[i, k], mean[i + 1, k], mean[i + 2, k], mean[0, k]))
    return np.array(t_s), np.array(l_s), [f"{names[a]}+{names[b]}" for a, b in pair_at]


def checkpoint_recovery(run: RunData, n_targets: int = 3, n_doses: int = 12, max_pairs: int = 12) -> Recovery:
    """Recovered vs true dose–response and interaction signs of a run's last model.

    Args:
        run: A loaded run folder.
        n_targets: Targets drawn (those with the largest true total effect).
        n_doses: Doses per curve (evenly spaced on the target's search scale).
        max_pairs: Target pairs whose interaction signs are compared (true γ ≠ 0 first).

    Raises:
        RecoveryUnavailable: Lab run, no checkpoint, or the model / simulator API missing.
    """
    model, gt, space = _load(run)
    strength = np.abs(np.asarray(gt.total_effect)).max(axis=1)
    chosen = [int(j) for j in np.argsort(-strength)[:n_targets]]
    probes, series, pair_at = _probes(space, gt, chosen, n_doses, max_pairs, run.seed)
    members = np.asarray(model.predict(probes).members["programs"], float)  # (M, n, K)
    true = np.asarray(gt.latent(probes), float)  # (n, K')
    A = affine_align(members.mean(axis=0), true)
    aligned = np.einsum("mnk,kj->mnj", np.concatenate([members, np.ones(members.shape[:2] + (1,))], axis=2), A)
    ctx, t_h = space.open_contexts[0], float(space.time_range_h[1])
    note = (
        f"Last checkpoint; context {ctx.cell_line}/{ctx.site}, {t_h:g} h, {space.rna_assay()}. Model programs aligned "
        "to the true latent by an affine least-squares map on probe queries; band = range over ensemble members. "
        "Pairs at 70% of each dose range; sign of the excess over additivity on the most non-additive program."
    )
    return Recovery(
        _dose_panels(gt, series, true, aligned), _interaction_signs(gt, pair_at, true, aligned.mean(0)), note
    )
