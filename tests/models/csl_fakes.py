"""A tiny fake oracle for model tests that need no simulator: random readouts with the right layout."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiment_design import Context, DesignSpace, MeasurementBatch, ModalityData, Query, Target, TargetKind, keys

N_PROGRAMS = 3
FEATURES = {"rna": 12, "adt": 4, "morphology": 5, "molecular": N_PROGRAMS}


def tiny_space() -> DesignSpace:
    """Three targets (two compounds, one knockdown), two contexts."""
    return DesignSpace(
        targets=(
            Target("CMP00", TargetKind.COMPOUND),
            Target("CMP01", TargetKind.COMPOUND),
            Target("KD_G1", TargetKind.KNOCKDOWN),
        ),
        contexts=(Context("line0", "site0"), Context("line1", "site1")),
    )


def specimen_obs(q: Query, replicate: int, modality: str, n_units: int = 1) -> pd.DataFrame:
    """The obs rows of one specimen (replicate) of a query: ``n_units`` cells or one well."""
    return pd.DataFrame(
        {
            keys.QUERY_ID: q.query_id,
            keys.PERTURBATION: q.perturbation.label,
            keys.DOSE_VALUE: q.perturbation.dose_label,
            keys.DOSE_UNIT: "uM",
            keys.TIME: q.time_h,
            keys.TIME_UNIT: "h",
            keys.CELL_LINE: q.context.cell_line,
            keys.SITE: q.context.site,
            keys.BATCH: "b0",
            keys.ASSAY: q.assay,
            keys.MODALITY: modality,
            keys.REPLICATE: replicate,
            keys.SPECIMEN: f"{q.query_id}:{replicate}",
            keys.UNIT: np.arange(n_units),
            keys.PLATE: "P1",
            keys.WELL: f"B{replicate + 2:02d}",
        }
    )


def fake_batch(space: DesignSpace, queries: list[Query], rng: np.random.Generator, units: int = 5) -> MeasurementBatch:
    """Random but well-formed observations of every modality of each query's assay."""
    parts: dict[str, list] = {}
    for q in queries:
        assay = space.assay(q.assay)
        for r in range(q.replicates):
            for mod in assay.modalities:
                if mod not in FEATURES:
                    continue
                n = 1 if mod == "molecular" else units
                F = FEATURES[mod]
                X = rng.poisson(5.0, size=(n, F)) if mod in ("rna", "adt") else rng.normal(size=(n, F))
                obs = specimen_obs(q, r, mod, n)
                names = tuple(f"P{i}" for i in range(F)) if mod == "molecular" else tuple(f"{mod}{i}" for i in range(F))
                parts.setdefault(mod, []).append(ModalityData(obs, X, names))
    return MeasurementBatch.concat(MeasurementBatch({m: d}) for m, ds in parts.items() for d in ds)
