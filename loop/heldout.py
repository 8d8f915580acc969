"""Held-out stress sets of a run: chosen by the seed, measured once, never trained on.

At the start of a run the four evaluation axes (modality, scale, context,
intervention; :func:`models.evaluation.make_stress_sets`) get their query
sets, drawn from the run's seed; the oracle measures them once, free of the
budget, and each is stored as ``heldout/<axis>.parquet`` (the ledger's Arrow
layout). Every query the stress sets would leak into (a held-out cell line,
the target set of a held-out combination, a held-out condition) is kept out of
training: :meth:`HeldOut.trainable` filters the ledger before each fit, and
the study drops such queries from proposals. For lab data the sets are drawn
from the pool (and so held out of it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import DesignSpace, MeasurementBatch, Query, keys
from experiment_design.splits import queries_of_obs
from loop.config import SettingError
from loop.storage import read_table, write_table
from models.evaluation import RiskReport, evaluate, make_stress_sets, stress_blocks

AXES = ("modality", "scale", "context", "intervention")


def pool_stress_sets(space: DesignSpace, rng: np.random.Generator, n_per_axis: int) -> dict[str, list[Query]]:
    """Stress sets drawn from a pool space (measured data): conditions that exist.

    ``context``: conditions of one held-out cell line (when there are several);
    ``intervention``: combinations, else singles, in the other lines;
    ``modality``: anchor assays; ``scale``: tissue assays.
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
    combos = [q for q in rest if q.perturbation.order >= 2] or [q for q in rest if q.perturbation.order == 1]
    if combos:
        out["intervention"] = pick(combos)
    anchors = [q for q in rest if space.assay(q.assay).is_anchor]
    if anchors:
        out["modality"] = pick(anchors)
    tissue = [q for q in rest if space.assay(q.assay).scale.value == "tissue"]
    if tissue:
        out["scale"] = pick(tissue)
    # Half of the stored conditions at most, so training keeps the larger part.
    return {a: qs for a, qs in out.items() if qs and len(qs) < max(2, len(pool) // 2)}


class HeldOut:
    """The stress sets of one run folder.

    Args:
        root: Run folder (sets live in ``root / "heldout"``).
        space: The run's design space.
        seed: Run seed.
        n_per_axis: Queries per axis.
    """

    def __init__(self, root: str | Path, space: DesignSpace, seed: int, n_per_axis: int = 8) -> None:
        self.dir = Path(root) / "heldout"
        rng = np.random.default_rng([seed, 0x4E1D])
        self.sets = pool_stress_sets(space, rng, n_per_axis) if space.pool else make_stress_sets(space, rng, n_per_axis)
        self._blocks = stress_blocks(self.sets)
        held_ids = {q.query_id for qs in self.sets.values() for q in qs}
        self.blocked: Callable[[Query], bool] = lambda q: q.query_id in held_ids or self._blocks(q)

    @property
    def held_contexts(self) -> tuple:
        """Contexts held out whole (those of the ``context`` set no other axis uses)."""
        other = {q.context for a, qs in self.sets.items() if a != "context" for q in qs}
        held = {q.context for q in self.sets.get("context", ())} - other
        return tuple(sorted(held, key=lambda c: (c.cell_line, c.site)))

    @property
    def held_target_sets(self) -> tuple:
        """Target sets of the held-out combinations (never proposed at any dose)."""
        return tuple(
            sorted({q.perturbation.targets for qs in self.sets.values() for q in qs if q.perturbation.order >= 2})
        )

    def restrict(self, space: DesignSpace) -> DesignSpace:
        """The space to propose from: held-out contexts and combinations closed, pool less blocked conditions."""
        import dataclasses

        pool = tuple(q for q in space.pool if not self.blocked(q))
        if space.pool and not pool:
            raise SettingError("every condition of the data is held out for evaluation; lower heldout_per_axis")
        return dataclasses.replace(
            space, pool=pool, held_out_contexts=self.held_contexts, held_out_target_sets=self.held_target_sets
        )

    def specimens(self) -> set[str]:
        """Specimens the stress sets used (lab data: never handed out again)."""
        out: set[str] = set()
        for axis in self.sets:
            if self.path(axis).is_file():
                batch = MeasurementBatch.from_arrow(read_table(self.path(axis)))
                out.update(s for m in batch.modalities.values() for s in m.obs[keys.SPECIMEN])
        return out

    def path(self, axis: str) -> Path:
        """Stored measurements of one axis."""
        return self.dir / f"{axis}.parquet"

    def missing(self) -> list[str]:
        """Axes whose measurements are not stored yet."""
        return [a for a in self.sets if not self.path(a).is_file()]

    def store(self, axis: str, batch: MeasurementBatch) -> None:
        """Store one axis's measurements atomically."""
        write_table(self.path(axis), batch.to_arrow())

    def load(self) -> dict[str, MeasurementBatch]:
        """Axis → measurements."""
        return {a: MeasurementBatch.from_arrow(read_table(self.path(a))) for a in self.sets}

    def trainable(self, data: MeasurementBatch) -> MeasurementBatch:
        """``data`` without the queries the stress sets hold out."""
        keep = []
        for m in data.modalities.values():
            first = m.obs.drop_duplicates(keys.QUERY_ID)
            for qid, q in zip(first[keys.QUERY_ID], queries_of_obs(first), strict=True):
                if not self.blocked(q):
                    keep.append(qid)
        return data.subset(pd.unique(pd.Series(keep, dtype=str)))

    def score(self, model: object, data: MeasurementBatch) -> RiskReport:
        """Aggregate risk of ``model`` on the stress sets (controls from the training data)."""
        return evaluate(model, self.load(), control_data=data)
