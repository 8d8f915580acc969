"""Held-out stress sets of a run: chosen by the seed, measured once, never trained on.

At the start of a run the four evaluation axes (modality, scale, context,
intervention; :mod:`experiment_design.stress`) get their query sets, drawn
from the run's seed; the oracle measures them once, free of the
budget, and each is stored as ``heldout/<axis>.parquet`` (the ledger's Arrow
layout). Every query their rule blocks (:func:`~experiment_design.stress.stress_rule`:
a held-out cell line, the target set of a held-out combination, a held-out
condition) is kept out of training: :meth:`HeldOut.trainable` filters the ledger before each fit, and
the study drops such queries from proposals. For lab data the sets are drawn
from the pool (and so held out of it).

Beside them the study measures the risk's reference controls once
(:func:`reference_queries`, stored as ``heldout/reference/controls.parquet``):
controls any design could measure, never trained on, so that the
mean-of-controls yardstick is the same for every design on a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import DesignSpace, MeasurementBatch, Perturbation, Query, keys
from experiment_design.splits import queries_of_obs
from experiment_design.stress import held_contexts, held_target_sets, make_stress_sets, pool_stress_sets, stress_rule
from loop.config import SettingError
from loop.rounds import RoundStore
from loop.storage import BatchFiles, write_table
from models.evaluation import RiskReport, evaluate


class HeldOut:
    """The stress sets of one run folder.

    Args:
        root: Run folder (sets live in ``root / "heldout"``).
        space: The run's design space.
        seed: Run seed.
        n_per_axis: Queries per axis.
    """

    def __init__(self, root: str | Path, space: DesignSpace, seed: int, n_per_axis: int = 8) -> None:
        self.dir = RoundStore(root).heldout_dir
        self.space = space
        self._files = BatchFiles()  # the sets and the reference are read every round: decoded once
        rng = np.random.default_rng([seed, 0x4E1D])
        drawn = pool_stress_sets(space, rng, n_per_axis) if space.pool else make_stress_sets(space, rng, n_per_axis)
        # What a run measured is its stress sets: a resumed run keeps them even if the drawing rule has
        # changed since (an axis not stored yet is drawn, and measured on resume).
        self.sets = {**drawn, **self._stored()}
        self.rule = stress_rule(self.sets)
        self.blocked: Callable[[Query], bool] = self.rule.blocks

    def _stored(self) -> dict[str, list[Query]]:
        """Axis → the queries of its stored measurements (``heldout/<axis>.parquet``), in stored order."""
        out = {}
        for path in sorted(self.dir.glob("*.parquet")) if self.dir.is_dir() else []:
            batch = self._files.read(path)
            first = pd.concat([m.obs for m in batch.modalities.values()]).drop_duplicates(keys.QUERY_ID)
            out[path.stem] = queries_of_obs(first)
        return out

    def restrict(self, space: DesignSpace) -> DesignSpace:
        """The space to propose from: held-out contexts and combinations closed, pool less blocked conditions."""
        pool = tuple(q for q in space.pool if not self.blocked(q))
        if space.pool and not pool:
            raise SettingError("every condition of the data is held out for evaluation; lower heldout_per_axis")
        return dataclasses.replace(
            space,
            pool=pool,
            held_out_contexts=held_contexts(self.sets),
            held_out_target_sets=held_target_sets(self.sets),
        )

    def specimens(self) -> set[str]:
        """Specimens the stress sets used (lab data: never handed out again)."""
        out: set[str] = set()
        for axis in self.sets:
            if self.path(axis).is_file():
                batch = self._files.read(self.path(axis))
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
        return {a: self._files.read(self.path(a)) for a in self.sets}

    def trainable(self, data: MeasurementBatch) -> MeasurementBatch:
        """``data`` without the queries the stress sets hold out."""
        keep = []
        for m in data.modalities.values():
            first = m.obs.drop_duplicates(keys.QUERY_ID)
            for qid, q in zip(first[keys.QUERY_ID], queries_of_obs(first), strict=True):
                if not self.blocked(q):
                    keep.append(qid)
        return data.subset(pd.unique(pd.Series(keep, dtype=str)))

    @property
    def reference_path(self) -> Path:
        """Stored reference controls (a subfolder: not an axis, so the leakage rule never sees them)."""
        return self.dir / "reference" / "controls.parquet"

    def reference(self) -> MeasurementBatch | None:
        """The reference controls measured at the start of the run, or None (a run from before 2026-12-08)."""
        path = self.reference_path
        return self._files.read(path) if path.is_file() else None

    def store_reference(self, batch: MeasurementBatch) -> None:
        """Store the reference controls atomically."""
        write_table(self.reference_path, batch.to_arrow())

    def score(self, model: object, data: MeasurementBatch, reference: MeasurementBatch | None = None) -> RiskReport:
        """Aggregate risk of ``model`` on the stress sets.

        Args:
            model: The fitted model.
            data: The training data: its singles give the additive baseline, and its controls the
                mean-of-controls baseline of ``details["risk_training_controls"]`` (the definition
                before 2026-12-08).
            reference: Controls measured apart from the design (:func:`reference_queries`) that give
                the mean-of-controls baseline, the same for every design
                (:func:`models.evaluation.evaluate`); default the run's stored ones. Without either
                (a run from before), the baseline comes from ``data``.
        """
        reference = self.reference() if reference is None else reference
        return evaluate(model, self.load(), control_data=data, reference=reference)


#: Replicates of each reference control of a simulated world.
REFERENCE_REPLICATES = 2
#: At most this many specimens of each control condition of measured data make the reference.
REFERENCE_POOL_SPECIMENS = 8


def reference_queries(
    space: DesignSpace,
    blocked: Callable[[Query], bool] | None = None,
    replicates: int = REFERENCE_REPLICATES,
    specimens: Callable[[str], Sequence[str]] | None = None,
) -> list[Query]:
    """Controls any design could measure, measured apart from the design: the risk's yardstick.

    The risk's mean-of-controls baseline taken from the training data depends on the design: a design that
    never measures a control of a modality is scored against the stress set's own mean, a much harder
    yardstick. Measuring these queries at the start of a run (free, never trained on) gives every design
    on a seed the same baseline, as the Virtual Cell Challenge takes its control mean from the evaluation
    data. Only controls the leakage rule lets a design measure are used (``blocked``), so a held-out
    context's baseline is the other contexts' controls, as it was with the training data's.

    Args:
        space: The run's design space (before the stress sets restrict it).
        blocked: The stress sets' leakage rule (:attr:`HeldOut.blocked`); blocked controls are left out.
        replicates: Specimens of each control of a simulated world. The simulator seeds each
            (query, replicate) by itself, so measuring them changes no other measurement.
        specimens: For measured data (a pool space): condition id → its stored specimens. The reference is
            every control condition of the pool, with up to :data:`REFERENCE_POOL_SPECIMENS` of its
            specimens; measuring them does not hand them out (the study never counts them as used).

    Returns:
        Simulated world: a control of every assay in every context, at the middle of the time range.
        Measured data: the pool's control conditions that have specimens.

    Raises:
        ValueError: For a pool space without ``specimens``.
    """
    blocked = blocked or (lambda q: False)
    if space.pool:
        if specimens is None:
            raise ValueError("reference_queries: a pool space needs specimens (condition id -> specimens)")
        out = []
        for q in space.pool:
            n = min(REFERENCE_POOL_SPECIMENS, len(specimens(q.query_id)))
            if q.perturbation.is_control and not blocked(q) and n > 0:
                out.append(dataclasses.replace(q, replicates=n))
        return out
    lo, hi = space.time_range_h
    queries = (
        Query(Perturbation(), lo + 0.5 * (hi - lo), c, a.name, replicates=replicates)
        for a in space.assays
        for c in space.contexts
    )
    return [q for q in queries if not blocked(q)]
