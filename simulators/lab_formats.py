"""Reading measured screens into a :class:`MeasurementBatch`, with validation.

Three inputs are understood:

* **AnnData** ``.h5ad`` with scPerturb obs keys (``perturbation``,
  ``dose_value``, ``dose_unit``, ``time``, ``cell_line``; combinations as
  ``A+B`` with doses ``1.0+0.5``). Its modality is ``obs["modality"]`` or
  ``rna``; sibling files ``<stem>.<modality>.h5ad`` (as
  ``simulators.export`` writes them) are read too.
* **Tidy tables** (``.csv`` / ``.parquet``): one row per well or cell, the
  metadata columns plus numeric feature columns. ``mapping`` renames the
  user's columns to cslab's (``{"perturbation": "drug", "time": "hours"}``);
  ``modality`` (default ``molecular``) names the readout when the table has no
  ``modality`` column.
* **Combination dose–response matrices** as published combination screens
  share them: one row per well with ``drug1``, ``drug2``, ``conc1``,
  ``conc2`` (µM), ``response``, ``cell_line`` and optionally ``replicate``
  and ``time``; read as a well-level ``molecular`` readout named ``response``.

Missing optional metadata is filled: ``site`` → ``"site0"``, ``assay`` →
``"scrna"`` for rna and ``"<modality>"`` otherwise, ``time_unit`` → ``h``,
``replicate`` → 0, ``specimen`` → ``<query_id>:<replicate>``, ``unit`` → the
row's index within its specimen. ``query_id`` is always recomputed from the
metadata, so it agrees with :attr:`Query.query_id`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import Context, MeasurementBatch, ModalityData, Perturbation, Query, keys
from experiment_design.assays import MODALITIES

REQUIRED = (keys.PERTURBATION, keys.DOSE_VALUE, keys.TIME, keys.CELL_LINE)
COUNT_MODALITIES = ("rna", "adt", "spatial")
COMBO_COLUMNS = ("drug1", "drug2", "conc1", "conc2", "response")
DOSE_UNITS = {"uM": 1.0, "µM": 1.0, "nM": 1e-3, "mM": 1e3, "fraction": 1.0}


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file, row and column."""


def read_measurements(path: str | Path, mapping: dict[str, str] | None = None,
                      modality: str = "molecular") -> MeasurementBatch:
    """Read a measured screen.

    Args:
        path: ``.h5ad``, ``.csv`` or ``.parquet`` file.
        mapping: cslab column name → the file's column name.
        modality: Modality of tidy-table features without a ``modality`` column.

    Raises:
        DataFormatError: Naming the file, the row or column, and what is accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return _read_h5ad(path)
    if suffix in (".csv", ".parquet"):
        df = _read_table(path)
        if mapping:
            df = df.rename(columns={v: k for k, v in mapping.items()})
        if set(COMBO_COLUMNS) <= set(df.columns):
            return table_to_batch(combo_to_tidy(df, path), path, "molecular")
        return table_to_batch(df, path, modality)
    raise DataFormatError(f"{path}: unknown file type {suffix!r}; accepted: .h5ad, .csv, .parquet")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, encoding="utf-8", dtype={keys.DOSE_VALUE: str, keys.WELL: str})
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable or truncated table ({exc})") from None


def _read_h5ad(path: Path) -> MeasurementBatch:
    import anndata as ad

    files = [path] + sorted(path.parent.glob(f"{path.name[: -len('.h5ad')]}.*.h5ad"))
    parts = []
    for f in files:
        try:
            a = ad.read_h5ad(f)
        except Exception as exc:  # noqa: BLE001 - h5py raises many types for a damaged file
            raise DataFormatError(f"{f}: unreadable or truncated .h5ad ({type(exc).__name__}: {exc})") from None
        X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
        obs = a.obs.reset_index(drop=True).copy()
        default = f.name[len(path.name[: -len(".h5ad")]) + 1: -len(".h5ad")] if f != path else "rna"
        mod = str(obs[keys.MODALITY].iloc[0]) if keys.MODALITY in obs and len(obs) else default
        df = pd.concat([obs, pd.DataFrame(X, columns=list(map(str, a.var_names)))], axis=1)
        parts.append(table_to_batch(df, f, mod, features=list(map(str, a.var_names))))
    return MeasurementBatch.concat(parts)


def combo_to_tidy(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Combination-matrix rows → tidy rows (``A+B`` labels, ``c1+c2`` doses)."""
    labels, doses = [], []
    for i, row in enumerate(df.itertuples(index=False)):
        names, concs = [], []
        for drug, conc in ((row.drug1, row.conc1), (row.drug2, row.conc2)):
            c = _number(conc, path, i, "conc1/conc2")
            if c < 0:
                raise DataFormatError(f"{path}: row {i + 2}, concentration {c} is negative; doses are >= 0 µM")
            if isinstance(drug, str) and drug.strip() and c > 0:
                names.append(drug.strip())
                concs.append(c)
        labels.append("+".join(names) or keys.CONTROL)
        doses.append("+".join(repr(c) for c in concs) or "0")
    out = pd.DataFrame({
        keys.PERTURBATION: labels, keys.DOSE_VALUE: doses, keys.DOSE_UNIT: "uM",
        keys.TIME: df["time"] if "time" in df else 72.0, keys.CELL_LINE: df[keys.CELL_LINE] if keys.CELL_LINE in df
        else None, keys.REPLICATE: df[keys.REPLICATE] if keys.REPLICATE in df else 0,
        keys.ASSAY: "viability", "response": df["response"],
    })
    return out


def _number(value: object, path: Path, i: int, column: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: row {i + 2}, column {column}: {value!r} is not a number") from None
    if not np.isfinite(x):
        raise DataFormatError(f"{path}: row {i + 2}, column {column}: {value!r} is not finite")
    return x


def table_to_batch(df: pd.DataFrame, path: Path, modality: str, features: list[str] | None = None
                   ) -> MeasurementBatch:
    """Validate a tidy table and turn it into a batch (one modality per ``modality`` value).

    Raises:
        DataFormatError: Missing column, unparsable perturbation or dose, NaN /
            inf / negative counts, unknown modality, naming file, row and column.
    """
    if len(df) == 0:
        raise DataFormatError(f"{path}: no rows")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; required: {list(REQUIRED)} "
                              "(map other names with a column mapping)")
    meta_cols = set(keys.OBS_COLUMNS) | {keys.PLATE, keys.WELL, keys.ROUND, "x", "y", "role", "row", "column"}
    if features is None:
        features = [c for c in df.columns if c not in meta_cols]
    if not features:
        raise DataFormatError(f"{path}: no feature columns besides the metadata")
    df = df.reset_index(drop=True)
    mods = df[keys.MODALITY].astype(str) if keys.MODALITY in df else pd.Series(modality, index=df.index)
    parts = []
    for mod in pd.unique(mods):
        if mod not in MODALITIES:
            raise DataFormatError(f"{path}: unknown modality {mod!r}; accepted: {list(MODALITIES)}")
        sub = df[mods == mod]
        parts.append(_modality(sub, path, mod, features))
    return MeasurementBatch({m.obs[keys.MODALITY].iloc[0]: m for m in parts})


def _modality(df: pd.DataFrame, path: Path, mod: str, features: list[str]) -> ModalityData:
    values = df[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataFormatError(f"{path}: row {df.index[i] + 2}, column {features[j]}: "
                              f"{df[features[j]].iloc[i]!r} is not a finite number")
    if mod in COUNT_MODALITIES and (values < 0).any():
        i, j = np.argwhere(values < 0)[0]
        raise DataFormatError(f"{path}: row {df.index[i] + 2}, column {features[j]}: negative count "
                              f"{values[i, j]}; {mod} counts must be >= 0")
    # Metadata is parsed once per distinct combination, then broadcast to its rows.
    meta_in = [c for c in (*REQUIRED, keys.DOSE_UNIT, keys.SITE, keys.BATCH, keys.ASSAY, keys.REPLICATE)
               if c in df.columns]
    codes = df[meta_in].astype(str).groupby(meta_in, sort=False, dropna=False).ngroup().to_numpy()
    _, first = np.unique(codes, return_index=True)
    parsed = {int(codes[i]): _meta(df.iloc[i].to_dict(), path, int(df.index[i]), mod) for i in first}
    obs = pd.DataFrame([parsed[int(c)] for c in codes])
    for col in (keys.PLATE, keys.WELL, "x", "y"):
        if col in df.columns:
            obs[col] = df[col].to_numpy()
    if keys.REPLICATE not in df.columns and keys.WELL in df.columns:
        # Without replicate numbers, each well of a condition is its own specimen (replicate).
        wells = obs[keys.WELL].astype(str)
        if keys.PLATE in obs.columns:
            wells = obs[keys.PLATE].astype(str) + "/" + wells
        rank = obs.assign(_well=wells).groupby(keys.QUERY_ID)["_well"].rank(method="dense")
        obs[keys.REPLICATE] = rank.astype(int) - 1
        obs[keys.SPECIMEN] = obs[keys.QUERY_ID] + ":" + obs[keys.REPLICATE].astype(str)
    obs[keys.UNIT] = obs.groupby(keys.SPECIMEN).cumcount() if keys.UNIT not in df else df[keys.UNIT].to_numpy()
    return ModalityData(obs, values.astype(np.float32), tuple(features))


def _meta(row: dict, path: Path, i: int, mod: str) -> dict:
    where = f"{path}: row {i + 2}"
    time = row.get(keys.TIME)
    try:
        time = float(time)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}, column time: {time!r} is not a number of hours") from None
    if not np.isfinite(time) or time < 0:
        raise DataFormatError(f"{where}, column time: missing or negative time {time!r}; give hours >= 0")
    label = row.get(keys.PERTURBATION)
    if not isinstance(label, str) or not label.strip():
        raise DataFormatError(f"{where}, column perturbation: missing label; use 'A', 'A+B' or 'control'")
    try:
        pert = Perturbation.parse(label, row.get(keys.DOSE_VALUE, "0"))
    except ValueError as exc:
        raise DataFormatError(f"{where}, column perturbation/dose_value: {exc}") from None
    unit = str(row.get(keys.DOSE_UNIT) or ("uM" if pert.targets else ""))
    units = unit.split("+") if pert.targets else []
    if pert.targets and len(units) not in (1, len(pert.targets)):
        raise DataFormatError(f"{where}, column dose_unit: {unit!r} does not match {len(pert.targets)} targets")
    units = units * len(pert.targets) if len(units) == 1 else units
    doses = []
    for d, u in zip(pert.doses, units, strict=True):
        if u not in DOSE_UNITS:
            raise DataFormatError(f"{where}, column dose_unit: unknown unit {u!r}; accepted: {list(DOSE_UNITS)}")
        if d < 0:
            raise DataFormatError(f"{where}, column dose_value: negative dose {d}")
        doses.append(d * DOSE_UNITS[u])
    # A target at dose 0 (e.g. "DMSO" at 0) is no perturbation: it is dropped, so "DMSO@0" is a control.
    kept = [(t, d, u) for t, d, u in zip(pert.targets, doses, units, strict=True) if d > 0]
    pert = Perturbation(tuple(t for t, _, _ in kept), tuple(d for _, d, _ in kept))
    units = ["fraction" if u == "fraction" else "uM" for _, _, u in kept]
    cell_line = row.get(keys.CELL_LINE)
    if cell_line is None or (isinstance(cell_line, float) and np.isnan(cell_line)) or str(cell_line) == "":
        raise DataFormatError(f"{where}, column cell_line: missing cell line")
    site = str(row.get(keys.SITE) or "site0")
    site = "site0" if site == "nan" else site
    assay = row.get(keys.ASSAY)
    assay = str(assay) if isinstance(assay, str) and assay else ("scrna" if mod == "rna" else mod)
    rep = row.get(keys.REPLICATE, 0)
    rep = 0 if rep is None or (isinstance(rep, float) and np.isnan(rep)) else int(rep)
    q = Query(pert, time, Context(str(cell_line), site), assay)
    return {
        keys.QUERY_ID: q.query_id, keys.PERTURBATION: pert.label, keys.DOSE_VALUE: pert.dose_label,
        keys.DOSE_UNIT: "+".join(units), keys.TIME: time, keys.TIME_UNIT: keys.HOURS,
        keys.CELL_LINE: str(cell_line), keys.SITE: site, keys.BATCH: str(row.get(keys.BATCH) or site),
        keys.ASSAY: assay, keys.MODALITY: mod, keys.REPLICATE: rep,
        keys.SPECIMEN: f"{q.query_id}:{rep}", keys.UNIT: 0,
    }
