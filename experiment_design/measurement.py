"""What an oracle returns: a tidy batch of observations, per modality.

Each modality holds one obs row per unit (cell, spot or well) with the
query's metadata under the :mod:`experiment_design.keys` names, and a dense
``(n_units, n_features)`` float32 matrix. Counts are stored as float32
(exact for counts below 2**24). Units measured together on one specimen share
their obs names across modalities (``"<query_id>:<replicate>:<unit>"``), so
``to_anndata()`` gives AnnData objects that pair up cell by cell.

The Arrow form (``to_arrow``) is the ledger's on-disk layout: one row per
(modality, unit), the obs columns, a ``features`` ``list<float32>`` column and
the feature names per modality as JSON in the schema metadata
(``b"cslab.var_names"``). Both conversions are lossless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from experiment_design import keys

VAR_NAMES_META = b"cslab.var_names"
FEATURES = "features"


@dataclass
class ModalityData:
    """Observations of one modality.

    Attributes:
        obs: ``(n_units, ...)`` metadata; includes :data:`keys.OBS_COLUMNS`.
        X: ``(n_units, n_features)`` float32 readouts.
        var_names: Feature names, length ``n_features``.

    """

    obs: pd.DataFrame
    X: np.ndarray
    var_names: tuple[str, ...]

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float32)
        self.var_names = tuple(self.var_names)
        if self.X.ndim != 2 or self.X.shape != (len(self.obs), len(self.var_names)):
            raise ValueError(
                f"ModalityData: X has shape {self.X.shape}, expected ({len(self.obs)}, {len(self.var_names)})"
            )
        missing = [c for c in keys.OBS_COLUMNS if c not in self.obs.columns]
        if missing:
            raise ValueError(f"ModalityData: obs lacks columns {missing}")
        self.obs = self.obs.reset_index(drop=True)

    @property
    def specimen_ids(self) -> pd.Series:
        """``(n_units,)`` the specimen of each row, as text: the unit of aggregation (a well, sample or patch)."""
        return self.obs[keys.SPECIMEN].astype(str)

    @property
    def obs_names(self) -> pd.Index:
        """``"<query_id>:<replicate>:<unit>"`` per row."""
        o = self.obs
        return pd.Index(
            o[keys.QUERY_ID].astype(str) + ":" + o[keys.REPLICATE].astype(str) + ":" + o[keys.UNIT].astype(str)
        )


@dataclass
class MeasurementBatch:
    """Observations of several modalities, from one or many queries.

    Attributes:
        modalities: Modality name → :class:`ModalityData`.

    """

    modalities: dict[str, ModalityData]

    def __len__(self) -> int:
        return sum(len(m.obs) for m in self.modalities.values())

    @property
    def query_ids(self) -> list[str]:
        """Distinct query ids, in first-seen order."""
        ids: dict[str, None] = {}
        for m in self.modalities.values():
            ids.update(dict.fromkeys(m.obs[keys.QUERY_ID].tolist()))
        return list(ids)

    def subset(self, query_ids: Iterable[str]) -> MeasurementBatch:
        """Only the rows of the given queries."""
        ids = set(query_ids)
        out = {}
        for name, m in self.modalities.items():
            mask = m.obs[keys.QUERY_ID].isin(ids).to_numpy()
            if mask.any():
                out[name] = ModalityData(m.obs[mask], m.X[mask], m.var_names)
        return MeasurementBatch(out)

    @classmethod
    def concat(cls, batches: Iterable[MeasurementBatch]) -> MeasurementBatch:
        """Stack batches modality by modality.

        Raises:
            ValueError: If one modality has different feature names in two batches.

        """
        parts: dict[str, list[ModalityData]] = {}
        for b in batches:
            for name, m in b.modalities.items():
                parts.setdefault(name, []).append(m)
        out = {}
        for name, ms in parts.items():
            if any(m.var_names != ms[0].var_names for m in ms):
                raise ValueError(f"concat: modality {name!r} has different features across batches")
            out[name] = ModalityData(
                pd.concat([m.obs for m in ms], ignore_index=True),
                np.concatenate([m.X for m in ms]),
                ms[0].var_names,
            )
        return cls(out)

    # ------------------------------------------------------------ AnnData
    def to_anndata(self) -> dict:
        """One ``anndata.AnnData`` per modality; obs names shared across modalities."""
        import anndata as ad

        out = {}
        for name, m in self.modalities.items():
            obs = m.obs.copy()
            obs.index = m.obs_names
            out[name] = ad.AnnData(X=m.X.copy(), obs=obs, var=pd.DataFrame(index=pd.Index(m.var_names)))
        return out

    @classmethod
    def from_anndata(cls, adatas: dict) -> MeasurementBatch:
        """Inverse of :meth:`to_anndata`."""
        out = {}
        for name, a in adatas.items():
            X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
            out[name] = ModalityData(a.obs.reset_index(drop=True), X, tuple(map(str, a.var_names)))
        return cls(out)

    # -------------------------------------------------------------- Arrow
    def to_arrow(self) -> pa.Table:
        """Tidy Arrow table: one row per (modality, unit); see the module docstring."""
        tables = []
        for m in self.modalities.values():
            t = pa.Table.from_pandas(m.obs, preserve_index=False)
            flat = pa.array(m.X.reshape(-1), type=pa.float32())
            offsets = pa.array(np.arange(0, m.X.size + 1, max(m.X.shape[1], 1), dtype=np.int32)[: len(m.obs) + 1])
            if m.X.shape[1] == 0:
                offsets = pa.array(np.zeros(len(m.obs) + 1, dtype=np.int32))
            t = t.append_column(FEATURES, pa.ListArray.from_arrays(offsets, flat))
            tables.append(t)
        if not tables:
            return pa.table({}).replace_schema_metadata({VAR_NAMES_META: b"{}"})
        table = pa.concat_tables(tables, promote_options="permissive")
        meta = {n: list(m.var_names) for n, m in self.modalities.items()}
        return table.replace_schema_metadata({VAR_NAMES_META: json.dumps(meta).encode()})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> MeasurementBatch:
        """Inverse of :meth:`to_arrow`.

        Raises:
            ValueError: If the table lacks the var-names metadata or a column.

        """
        meta = (table.schema.metadata or {}).get(VAR_NAMES_META)
        if meta is None:
            raise ValueError("from_arrow: table has no cslab.var_names metadata; not a cslab batch")
        var_names = json.loads(meta)
        if not var_names:
            return cls({})
        for col in (*keys.OBS_COLUMNS, FEATURES):
            if col not in table.column_names:
                raise ValueError(f"from_arrow: table lacks column {col!r}")
        out = {}
        modality = table.column(keys.MODALITY).to_numpy(zero_copy_only=False)
        for name, names in var_names.items():
            idx = np.flatnonzero(modality == name)
            sub = table.take(pa.array(idx))
            feats = sub.column(FEATURES).combine_chunks()
            X = feats.flatten().to_numpy(zero_copy_only=False).reshape(len(idx), len(names))
            obs = sub.drop_columns([FEATURES]).to_pandas()
            obs = obs.dropna(axis=1, how="all") if len(obs) else obs
            for col in keys.OBS_COLUMNS:
                if col not in obs.columns:
                    obs[col] = sub.column(col).to_pandas()
            out[name] = ModalityData(obs, X, tuple(names))
        return cls(out)
