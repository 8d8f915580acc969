"""Per-modality accumulation of observation blocks into ``ModalityData``.

Each specimen contributes one block per modality: its feature rows and the
query metadata, repeated over its units. Metadata is expanded once at the end
with ``numpy.repeat`` (no per-unit Python work).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiment_design import MeasurementBatch, ModalityData, Query, keys

#: Extra obs columns besides ``keys.OBS_COLUMNS``.
EXTRA_COLUMNS = (keys.PLATE, keys.WELL)
#: Spot coordinates of spatial rows (lattice units).
X_COORD, Y_COORD = "x", "y"


def specimen_meta(query: Query, replicate: int, modality: str, plate: str, well: str, dose_unit: str) -> dict:
    """Metadata shared by every unit of one specimen in one modality."""
    p = query.perturbation
    return {
        keys.QUERY_ID: query.query_id,
        keys.PERTURBATION: p.label,
        keys.DOSE_VALUE: p.dose_label,
        keys.DOSE_UNIT: dose_unit,
        keys.TIME: query.time_h,
        keys.TIME_UNIT: keys.HOURS,
        keys.CELL_LINE: query.context.cell_line,
        keys.SITE: query.context.site,
        keys.BATCH: query.context.site,
        keys.ASSAY: query.assay,
        keys.MODALITY: modality,
        keys.REPLICATE: replicate,
        keys.SPECIMEN: f"{query.query_id}:{replicate}",
        keys.PLATE: plate,
        keys.WELL: well,
    }


@dataclass
class _Blocks:
    metas: list[dict] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    xs: list[np.ndarray] = field(default_factory=list)
    coords: list[np.ndarray | None] = field(default_factory=list)


class ObsBuilder:
    """Collects blocks and builds a :class:`MeasurementBatch`.

    Args:
        var_names: Modality → feature names.

    """

    def __init__(self, var_names: dict[str, tuple[str, ...]]) -> None:
        self.var_names = var_names
        self._blocks: dict[str, _Blocks] = {}

    def add(self, modality: str, meta: dict, x: np.ndarray, coords: np.ndarray | None = None) -> None:
        """Add one specimen's ``(n_units, n_features)`` rows (``coords`` ``(n_units, 2)`` for spots)."""
        b = self._blocks.setdefault(modality, _Blocks())
        b.metas.append(meta)
        b.counts.append(x.shape[0])
        b.xs.append(x)
        b.coords.append(coords)

    def build(self) -> MeasurementBatch:
        """All blocks as one batch, modalities in first-added order."""
        out = {}
        for modality, b in self._blocks.items():
            counts = np.asarray(b.counts)
            cols = {}
            for col in (*keys.OBS_COLUMNS, *EXTRA_COLUMNS):
                if col == keys.UNIT:
                    starts = np.repeat(np.cumsum(counts) - counts, counts)
                    cols[col] = np.arange(counts.sum(), dtype=np.int64) - starts
                    continue
                values = [m[col] for m in b.metas]
                dtype = {keys.TIME: np.float64, keys.REPLICATE: np.int64}.get(col, object)
                cols[col] = np.repeat(np.asarray(values, dtype=dtype), counts)
            if any(c is not None for c in b.coords):
                xy = np.concatenate(
                    [c if c is not None else np.full((n, 2), np.nan) for c, n in zip(b.coords, counts, strict=True)]
                )
                cols[X_COORD] = xy[:, 0].astype(np.float64)
                cols[Y_COORD] = xy[:, 1].astype(np.float64)
            out[modality] = ModalityData(pd.DataFrame(cols), np.concatenate(b.xs), self.var_names[modality])
        return MeasurementBatch(out)
