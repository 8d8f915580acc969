"""The loop's held-out stress sets: the queries each evaluation axis tests, and their leakage rule.

The four axes of the aggregate risk (modality, scale, context, intervention)
each get a set of queries, drawn from a seed: :func:`make_stress_sets` over a
continuous design space (simulated worlds), :func:`pool_stress_sets` over a
pool of measured conditions (lab data). :func:`stress_rule` is their leakage
rule, a :class:`~experiment_design.splits.HoldOut` built from the same
constructors as the splitters: a held-out context (one that only the
``context`` set uses), the target set of a held-out combination at any dose,
and a held-out condition in any assay are never trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from experiment_design.assays import RNA
from experiment_design.contexts import Context
from experiment_design.perturbation import Perturbation
from experiment_design.query import Query
from experiment_design.space import DesignSpace
from experiment_design.splits import HoldOut, any_of, combination_rule, condition_rule, context_rule

#: The evaluation axes of the aggregate risk, in report order.
AXES = ("modality", "scale", "context", "intervention")


def make_stress_sets(space: DesignSpace, rng: np.random.Generator, n_per_axis: int = 8) -> dict[str, list[Query]]:
    """Held-out query sets for the four axes of a design space.

    * ``context``: scRNA queries (controls and singles) in a held-out cell line
      (or site, with one cell line); omitted with a single context.
    * ``intervention``: scRNA queries in the other contexts: held-out pairs
      (when ``max_order >= 2``), single targets at mid doses (an
      interpolation band, unit scale 0.4–0.6) and late times (the last 15% of
      the time range).
    * ``modality``: anchors (``cite_seq``, ``rna_morphology``,
      ``molecular_rna``, those in the space) on singles.
    * ``scale``: ``spatial_dissociated`` (or ``spatial``) on singles.

    The loop measures these once at the start of a run with the run's seed,
    does not charge them to the budget, and keeps out of training every query
    :func:`stress_rule` blocks.

    Returns:
        Axis → queries (one replicate each; axes the space cannot express are
        left out).

    """
    lines = sorted({c.cell_line for c in space.contexts})
    sites = sorted({c.site for c in space.contexts})
    if len(lines) > 1:
        held = lines[int(rng.integers(len(lines)))]
        out_ctx = [c for c in space.contexts if c.cell_line == held]
    elif len(sites) > 1:
        held = sites[int(rng.integers(len(sites)))]
        out_ctx = [c for c in space.contexts if c.site == held]
    else:
        out_ctx = []
    in_ctx = [c for c in space.contexts if c not in out_ctx]
    lo, hi = space.time_range_h
    names = [a.name for a in space.assays]
    rna_assay = "scrna" if "scrna" in names else next((a.name for a in space.assays if RNA in a.modalities), None)

    def single(
        ctxs: list[Context],
        assay: str,
        u: tuple[float, float] = (0.0, 1.0),
        t: tuple[float, float] = (0.0, 0.8),
        order: int = 1,
    ) -> Query:
        idx = rng.choice(len(space.targets), size=order, replace=False)
        tg = [space.targets[i] for i in idx]
        doses = [float(space.unit_to_dose(x.kind, rng.uniform(*u))) for x in tg]
        time_h = lo + float(rng.uniform(*t)) * (hi - lo)
        return Query(
            Perturbation(tuple(x.name for x in tg), tuple(doses)), time_h, ctxs[int(rng.integers(len(ctxs)))], assay
        )

    out: dict[str, list[Query]] = {}
    if out_ctx and rna_assay:
        ctl = [Query(Perturbation(), lo + 0.5 * (hi - lo), c, rna_assay) for c in out_ctx][: max(1, n_per_axis // 4)]
        out["context"] = (ctl + [single(out_ctx, rna_assay) for _ in range(n_per_axis)])[: max(n_per_axis, 1)]
    if rna_assay and space.targets:
        kinds = ["dose", "time"] + (["combination"] if space.max_order >= 2 and len(space.targets) >= 2 else [])
        qs = []
        for i in range(n_per_axis):
            kind = kinds[i % len(kinds)]
            if kind == "dose":
                qs.append(single(in_ctx, rna_assay, u=(0.4, 0.6)))
            elif kind == "time":
                qs.append(single(in_ctx, rna_assay, t=(0.85, 1.0)))
            else:
                qs.append(single(in_ctx, rna_assay, u=(0.3, 0.7), order=2))
        out["intervention"] = qs
    anchors = [a for a in ("cite_seq", "rna_morphology", "molecular_rna") if a in names]
    if anchors and space.targets:
        out["modality"] = [single(in_ctx, anchors[i % len(anchors)]) for i in range(n_per_axis)]
    scale = next((a for a in ("spatial_dissociated", "spatial") if a in names), None)
    if scale and space.targets:
        out["scale"] = [single(in_ctx, scale) for _ in range(n_per_axis)]
    return out


#: Largest share of a pool's conditions one axis of :func:`pool_stress_sets` may block from training.
POOL_AXIS_SHARE = {"context": 1 / 3, "intervention": 1 / 3, "modality": 1 / 4, "scale": 1 / 4}
#: Largest share the stress sets of a pool may block together.
POOL_TOTAL_SHARE = 1 / 2


def pool_stress_sets(space: DesignSpace, rng: np.random.Generator, n_per_axis: int) -> dict[str, list[Query]]:
    """Stress sets drawn from a pool space (measured data): conditions that exist.

    ``context``: conditions of one held-out cell line (when there are several);
    ``intervention``: conditions of held-out combinations (at most a quarter of
    the pool's distinct target sets, so a drug × drug grid keeps most of its
    pairs to learn from), else (one combination, or one that would block more
    than its share) doses of single targets, in the other lines;
    ``modality``: anchor assays; ``scale``: tissue assays.

    What an axis blocks (its :func:`stress_rule`, not only its own conditions)
    is bounded: an axis that would keep more than :data:`POOL_AXIS_SHARE` of
    the pool's conditions from training is left out (a screen of two cell
    lines has no context axis: holding one out would halve the data), and the
    axes together block at most :data:`POOL_TOTAL_SHARE`.
    """
    pool = list(space.pool)
    lines = sorted({q.context.cell_line for q in pool})
    out: dict[str, list[Query]] = {}

    def pick(qs: list[Query]) -> list[Query]:
        idx = rng.permutation(len(qs))[:n_per_axis]
        return [qs[i] for i in sorted(idx)]

    held = lines[int(rng.integers(len(lines)))] if len(lines) > 1 else None
    rest = [q for q in pool if q.context.cell_line != held]
    if held is not None:
        out["context"] = pick([q for q in pool if q.context.cell_line == held])
    sets = sorted({q.perturbation.targets for q in rest if q.perturbation.order >= 2})
    order = rng.permutation(len(sets))
    combos = pick([q for q in rest if q.perturbation.targets in {sets[i] for i in order[: max(1, len(sets) // 4)]}])
    if len(sets) >= 2 and _blocked_share({"intervention": combos}, pool) <= POOL_AXIS_SHARE["intervention"]:
        out["intervention"] = combos
    elif singles := [q for q in rest if q.perturbation.order == 1]:  # held-out doses of single targets
        out["intervention"] = pick(singles)
    anchors = [q for q in rest if space.assay(q.assay).is_anchor]
    if anchors:
        out["modality"] = pick(anchors)
    tissue = [q for q in rest if space.assay(q.assay).scale.value == "tissue"]
    if tissue:
        out["scale"] = pick(tissue)
    return _bounded(out, pool)


def _blocked_share(sets: dict[str, list[Query]], pool: list[Query]) -> float:
    """Share of ``pool`` the stress sets' rule keeps from training."""
    rule = stress_rule(sets)
    return sum(rule.blocks(q) for q in pool) / max(len(pool), 1)


def _bounded(sets: dict[str, list[Query]], pool: list[Query]) -> dict[str, list[Query]]:
    """Drop the axes that would block too much of the pool from training (see :func:`pool_stress_sets`)."""
    kept = {a: qs for a, qs in sets.items() if qs and _blocked_share({a: qs}, pool) <= POOL_AXIS_SHARE[a]}
    for axis in ("context", "intervention", "modality", "scale"):  # the costliest first
        if axis in kept and _blocked_share(kept, pool) > POOL_TOTAL_SHARE:
            del kept[axis]
    return kept


def held_contexts(stress: Mapping[str, Sequence[Query]]) -> tuple[Context, ...]:
    """Contexts held out whole: those of the ``context`` set that no other axis uses (sorted)."""
    other = {q.context for a, qs in stress.items() if a != "context" for q in qs}
    held = {q.context for q in stress.get("context", ())} - other
    return tuple(sorted(held, key=lambda c: (c.cell_line, c.site)))


def held_target_sets(stress: Mapping[str, Sequence[Query]]) -> tuple[tuple[str, ...], ...]:
    """Target sets of the held-out combinations: those of the ``intervention`` set (sorted).

    A combination in another axis's set (a pair measured in the held-out
    line, or by an anchor assay) holds out only its condition: those axes
    test a new context or modality, not a new combination.
    """
    return tuple(sorted({q.perturbation.targets for q in stress.get("intervention", ()) if q.perturbation.order >= 2}))


def stress_rule(stress: Mapping[str, Sequence[Query]]) -> HoldOut:
    """The leakage rule of the stress sets.

    A query is test when it is one of the sets' queries or lies in a held-out
    context; it is blocked from training when it is in a held-out context
    (:func:`held_contexts`), has the target set of a held-out combination
    (:func:`held_target_sets`, any dose), or repeats a held-out condition
    (perturbation, time and context, any assay).
    """
    return any_of(
        "stress",
        context_rule(held_contexts(stress)),
        combination_rule(held_target_sets(stress)),
        condition_rule(q for qs in stress.values() for q in qs),
    )
