"""Reading measured screens into a :class:`MeasurementBatch`, with validation.

Three inputs are understood:

* **AnnData** ``.h5ad`` with scPerturb obs keys (``perturbation``,
  ``dose_value``, ``dose_unit``, ``time``, ``cell_line``; combinations as
  ``A+B`` with doses ``1.0+0.5``). Its modality is ``obs["modality"]`` or
  ``rna``; sibling files ``<stem>.<modality>.h5ad`` (as
  ``simulators.export`` writes them) are read too. A directory or glob of
  ``.h5ad`` files (one per plate or cell line, as atlases ship them) is read
  as one screen (:func:`h5ad_files`), and so is a directory or glob of tidy
  tables, e.g. a partitioned Parquet dataset (:func:`table_files`). Screens too large to densify are opened
  lazily by :mod:`simulators.atlas` instead, with the same checks.
* **Tidy tables** (``.csv`` / ``.parquet``): one row per well or cell, the
  metadata columns plus numeric feature columns. ``mapping`` renames the
  user's columns to cslab's (``{"perturbation": "drug", "time": "hours"}``);
  ``modality`` (default ``molecular``) names the readout when the table has no
  ``modality`` column.
* **Combination dose–response matrices** as published combination screens
  share them: one row per well with ``drug1``, ``drug2``, ``conc1``,
  ``conc2`` (µM), ``response``, ``cell_line`` and optionally ``replicate``
  and ``time``; read as a well-level ``molecular`` readout named ``response``.

**Perturbations as labs record them.** ``dose_unit`` is read case-insensitively:
concentrations ``uM`` / ``µM`` / ``μM`` / ``micromolar``, ``nM``, ``pM``, ``mM`` (stored
in µM); genetic perturbations as a strength in ``[0, 1]`` (stored as ``fraction``):
``fraction`` / ``strength`` / ``knockdown`` / ``activation`` / ``efficiency`` (the value
itself), ``%`` / ``percent`` (value / 100), ``guide`` / ``sgRNA`` / ``gRNA`` / ``shRNA`` /
``siRNA`` / ``ORF`` (present: 1 for a value > 0, a missing value counts as present) and
``MOI`` (the infected fraction, ``1 − exp(−MOI)``). Without a ``dose_unit``, an scPerturb
``perturbation_type`` column (``CRISPRi``, ``CRISPRa``, ``CRISPR-cas9``, ``knockout``,
``ORF``, ``shRNA``, ``siRNA`` → genetic; ``drug``, ``compound``, ``small molecule`` →
µM) says which; without either, doses are µM. Controls by their usual names
(:data:`CONTROL_PATTERN`: ``control``, ``ctrl``, ``non-targeting…``, ``NTC…``,
``safe-targeting…``, ``vehicle``, ``DMSO``, ``mock``, ``scramble…``, ``unperturbed``,
``untreated``) and any target at dose 0 are no perturbation; in a combination they are
dropped (``DMSO+drugA`` is ``drugA``). A unit or type that cannot be mapped is one error
naming the file, row, column and value and the config mapping that fixes it
(``[data_mapping] units = {"<value>" = "uM"}``).

**Features and metadata.** The features of an ``.h5ad`` are its ``var_names``; of a
tidy table, the ``features`` given (a config ``[data_mapping] features = [...]``), or
else every column that is not metadata. Metadata columns are cslab's own
(``keys.OBS_COLUMNS``, plate, well, coordinates), the per-cell QC and annotation
columns of scPerturb / scanpy (:data:`METADATA_COLUMNS`: ``ncounts``, ``percent_mito``,
``guide_id``, ``celltype``, …) and any column whose values are mostly not numbers
(text such as guide identities, gene names, notes); a feature column with a stray
non-number is an error naming the row.

Missing optional metadata is filled: ``site`` → ``"site0"``, ``assay`` →
``"scrna"`` for rna and ``"<modality>"`` otherwise, ``time_unit`` → ``h``,
``replicate`` → 0, ``specimen`` → ``<query_id>:<replicate>``, ``unit`` → the
row's index within its specimen. ``query_id`` is always recomputed from the
metadata, so it agrees with :attr:`Query.query_id`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import Context, MeasurementBatch, ModalityData, Perturbation, Query, keys
from experiment_design.modalities import is_counts, modality_names

#: Columns every file needs (``dose_value`` may be absent for guide-level genetic screens).
REQUIRED = (keys.PERTURBATION, keys.TIME, keys.CELL_LINE)
COMBO_COLUMNS = ("drug1", "drug2", "conc1", "conc2", "response")
#: Tidy-table file types.
TABLE_SUFFIXES = (".csv", ".parquet")
#: Concentration units (lower case) → factor to µM.
CONCENTRATION_UNITS = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micromolar": 1.0,
    "nm": 1e-3,
    "nanomolar": 1e-3,
    "pm": 1e-6,
    "picomolar": 1e-6,
    "mm": 1e3,
    "millimolar": 1e3,
}
#: Genetic-perturbation units (lower case) → how the value becomes a strength in [0, 1].
GENETIC_UNITS = {
    **dict.fromkeys(("fraction", "strength", "knockdown", "activation", "efficiency"), "strength"),
    **dict.fromkeys(("%", "percent"), "percent"),
    **dict.fromkeys(
        ("guide", "guides", "sgrna", "sgrnas", "grna", "grnas", "shrna", "sirna", "orf", "crispr"), "present"
    ),
    "moi": "moi",
}
#: scPerturb ``perturbation_type`` values (lower case, ``-``/``_``/space ignored) → the unit they imply.
PERTURBATION_TYPES = {
    **dict.fromkeys(
        (
            "crispr",
            "crispri",
            "crispra",
            "crisprcas9",
            "crisprko",
            "crisprcas9knockout",
            "knockout",
            "ko",
            "knockdown",
            "orf",
            "overexpression",
            "shrna",
            "sirna",
            "rnai",
            "genetic",
        ),
        "guide",
    ),
    **dict.fromkeys(("drug", "drugs", "compound", "compounds", "smallmolecule", "chemical", "chemicals"), "um"),
    **dict.fromkeys(("control", "ctrl", "none", "unperturbed", "vehicle"), "guide"),  # a control's unit is unused
}
#: Every ``dose_unit`` value understood (case-insensitive).
DOSE_UNITS = (*CONCENTRATION_UNITS, *GENETIC_UNITS)
#: Target names that mean "no perturbation" (case-insensitive; numbered or suffixed variants too).
CONTROL_PATTERN = re.compile(
    r"^(control|ctrl|non[-_ ]?targeting|nt|ntc|safe[-_ ]?targeting|vehicle|dmso|unperturbed|untreated|mock|"
    r"scrambled?|none|sgnt|pbs)(\d*|[-_ .:].*)$",
    re.IGNORECASE,
)
#: Per-cell QC and annotation columns of scPerturb / scanpy obs, metadata even where numeric.
METADATA_COLUMNS = frozenset(
    {
        "perturbation_type",
        "guide_id",
        "guide_ids",
        "guide",
        "sgrna",
        "gene",
        "gene_id",
        "target",
        "target_gene",
        "nperts",
        "ncounts",
        "ngenes",
        "n_counts",
        "n_genes",
        "total_counts",
        "n_genes_by_counts",
        "ncount_rna",
        "nfeature_rna",
        "percent_mito",
        "percent_ribo",
        "pct_counts_mt",
        "pct_counts_ribo",
        "umi_count",
        "celltype",
        "cell_type",
        "tissue_type",
        "cancer",
        "disease",
        "organism",
        "sex",
        "age",
        "library",
        "lane",
        "barcode",
        "cell_barcode",
        "gem_group",
        "sample",
        "donor",
        "notes",
        "comment",
        "qc",
        "doublet",
    }
)


def is_control_name(name: str) -> bool:
    """Whether a target name means "no perturbation" (:data:`CONTROL_PATTERN`)."""
    return bool(CONTROL_PATTERN.match(name.strip()))


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file, row and column."""


def read_measurements(
    path: str | Path,
    mapping: dict[str, str] | None = None,
    modality: str = "molecular",
    units: dict[str, str] | None = None,
    features: list[str] | None = None,
) -> MeasurementBatch:
    """Read a measured screen.

    Args:
        path: ``.h5ad``, ``.csv`` or ``.parquet`` file, or a directory or glob of ``.h5ad`` files
            (:func:`h5ad_files`) or of tables (:func:`table_files`; a partitioned Parquet dataset's
            ``key=value`` folders become columns) read as one screen.
        mapping: cslab column name → the file's column name.
        modality: Modality of tidy-table features without a ``modality`` column.
        units: The file's ``dose_unit`` values → units cslab knows (:data:`DOSE_UNITS`), e.g.
            ``{"copies": "guide"}``.
        features: Feature columns of a tidy table (default: every column that is not metadata).

    Raises:
        DataFormatError: Naming the file, the row or column, and what is accepted.
    """
    path = Path(path)
    if is_screen_pattern(path):
        _check_unit_map(units)
        tables = table_files(path)
        if tables:
            parts = [_read_tidy(f, mapping, modality, features, units, _partition_columns(path, f)) for f in tables]
            return number_units(concat_files(parts, tables), {})  # a specimen's rows may span files
        return _read_h5ad(path, units)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    _check_unit_map(units)
    if suffix == ".h5ad":
        return _read_h5ad(path, units)
    if suffix in TABLE_SUFFIXES:
        return _read_tidy(path, mapping, modality, features, units)
    raise DataFormatError(f"{path}: unknown file type {suffix!r}; accepted: .h5ad, .csv, .parquet")


def _read_tidy(
    path: Path,
    mapping: dict[str, str] | None,
    modality: str,
    features: list[str] | None,
    units: dict[str, str] | None,
    partition: dict[str, str] | None = None,
) -> MeasurementBatch:
    """One tidy table (or combination matrix); ``partition`` adds Hive path columns (``cell_line=A``) it lacks."""
    df = _read_table(path)
    if mapping:
        df = df.rename(columns={v: k for k, v in mapping.items()})
    for col, value in (partition or {}).items():
        if col not in df.columns:
            df[col] = value
    if set(COMBO_COLUMNS) <= set(df.columns):
        return table_to_batch(combo_to_tidy(df, path), path, "molecular", unit_map=units)
    return table_to_batch(df, path, modality, features, unit_map=units)


def table_files(path: str | Path) -> list[Path]:
    """The ``.csv`` / ``.parquet`` files of a table screen; ``[]`` when it holds ``.h5ad`` files.

    A directory is searched recursively (Parquet datasets are partitioned into ``key=value``
    folders); a glob matches in its folder. Hidden and ``_``-prefixed files (``_SUCCESS``) are skipped.

    Raises:
        DataFormatError: When it mixes ``.h5ad`` files with tables, or tables of both suffixes.
    """
    path = Path(path)
    found = sorted(path.rglob("*")) if path.is_dir() else sorted(path.parent.glob(path.name))
    found = [f for f in found if f.is_file() and not f.name.startswith((".", "_"))]
    tables = [f for f in found if f.suffix.lower() in TABLE_SUFFIXES]
    if tables and any(f.suffix.lower() == ".h5ad" for f in found):
        raise DataFormatError(f"{path}: holds both .h5ad files and tables; point --data at one kind")
    if len({f.suffix.lower() for f in tables}) > 1:
        raise DataFormatError(f"{path}: holds both .csv and .parquet files; a screen's tables share one format")
    return tables


def _partition_columns(root: Path, f: Path) -> dict[str, str]:
    """Hive partition columns of ``f`` under ``root`` (``root/cell_line=A/plate=3/part-0.parquet``)."""
    base = root if root.is_dir() else root.parent
    parts = f.relative_to(base).parts[:-1] if f.is_relative_to(base) else ()
    return dict(p.split("=", 1) for p in parts if "=" in p)


def read_options(data_mapping: dict | None) -> dict:
    """:func:`read_measurements` keyword arguments from a run config's ``[data_mapping]`` table.

    Args:
        data_mapping: ``columns`` (cslab column → the file's column), ``units`` (the file's
            ``dose_unit`` value → a unit of :data:`DOSE_UNITS`), ``features`` (feature columns of a
            tidy table), ``modality`` (of a tidy table without a ``modality`` column), ``lazy`` (open an
            ``.h5ad`` screen lazily: ``true`` / ``false``; default: by size, :func:`simulators.atlas.open_screen`).

    Raises:
        ValueError: For an unknown key or a value of the wrong type, naming it.
    """
    d = dict(data_mapping or {})
    known = {"columns": dict, "units": dict, "features": list, "modality": str, "lazy": bool}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"data_mapping: unknown keys {unknown}; known: {sorted(known)}")
    for key, kind in known.items():
        if key in d and not isinstance(d[key], kind):
            raise ValueError(f"data_mapping.{key} must be a {kind.__name__}, got {d[key]!r}")
    _check_unit_map(d.get("units"))
    out = {
        "mapping": d.get("columns") or None,
        "units": d.get("units") or None,
        "features": [str(f) for f in d["features"]] if d.get("features") else None,
    }
    for key in ("modality", "lazy"):
        if key in d:
            out[key] = d[key]
    return out


def _check_unit_map(units: dict[str, str] | None) -> None:
    """Every target of a ``units`` mapping must be a unit cslab reads (:data:`DOSE_UNITS`)."""
    bad = {k: v for k, v in (units or {}).items() if str(v).strip().lower() not in DOSE_UNITS}
    if bad:
        raise DataFormatError(f"data_mapping units {bad}: map each to one of {list(DOSE_UNITS)}")


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


def is_screen_pattern(path: str | Path) -> bool:
    """Whether ``path`` names several files of one screen: a directory, or a glob (``plates/*.h5ad``)."""
    return Path(path).is_dir() or any(ch in str(path) for ch in "*?[")


def h5ad_files(path: str | Path) -> list[tuple[Path, str]]:
    """The files of an ``.h5ad`` screen, each with the modality its rows have without a ``modality`` column.

    * ``screen.h5ad``: it (``rna``) and its siblings ``screen.<modality>.h5ad``.
    * A directory (every ``*.h5ad`` in it) or a glob such as ``plates/*.h5ad`` (atlases ship one file per
      plate or cell line), read as one screen: ``<name>.<modality>.h5ad`` where ``<modality>`` is one of
      a registered modality, ``rna`` otherwise.

    Raises:
        DataFormatError: When a directory or glob holds no ``.h5ad`` file.
    """
    path = Path(path)
    if not is_screen_pattern(path):
        stem = path.name[: -len(".h5ad")]
        siblings = sorted(path.parent.glob(f"{stem}.*.h5ad"))
        return [(path, "rna")] + [(f, f.name[len(stem) + 1 : -len(".h5ad")]) for f in siblings]
    files = sorted(path.glob("*.h5ad")) if path.is_dir() else sorted(path.parent.glob(path.name))
    files = [f for f in files if f.is_file() and f.suffix.lower() == ".h5ad"]
    if not files:
        raise DataFormatError(f"{path}: no .h5ad, .csv or .parquet files")
    out = []
    for f in files:
        inner = f.name[: -len(".h5ad")].rsplit(".", 1)
        out.append((f, inner[1] if len(inner) == 2 and inner[1] in modality_names() else "rna"))
    return out


def number_units(batch: MeasurementBatch, unit_given: dict[str, bool]) -> MeasurementBatch:
    """Units numbered per specimen over every file of a modality (a specimen may span files).

    Args:
        batch: The screen, its files' rows stacked in file order.
        unit_given: Modality → whether its files carry their own ``unit`` column (then kept).
    """
    for mod, m in batch.modalities.items():
        if not unit_given.get(mod, False):
            m.obs[keys.UNIT] = m.obs.groupby(keys.SPECIMEN, observed=True).cumcount().to_numpy()
    return batch


def _read_h5ad(path: Path, units: dict[str, str] | None = None) -> MeasurementBatch:
    import anndata as ad

    parts, unit_given = [], {}
    for f, default in h5ad_files(path):
        try:
            a = ad.read_h5ad(f)
        except Exception as exc:  # noqa: BLE001 - h5py raises many types for a damaged file
            raise DataFormatError(f"{f}: unreadable or truncated .h5ad ({type(exc).__name__}: {exc})") from None
        obs = a.obs.reset_index(drop=True).copy()
        mod = str(obs[keys.MODALITY].iloc[0]) if keys.MODALITY in obs and len(obs) else default
        X = _count_matrix(a) if mod in modality_names() and is_counts(mod) else _dense(a.X)
        df = pd.concat([obs, pd.DataFrame(X, columns=list(map(str, a.var_names)))], axis=1)
        parts.append(table_to_batch(df, f, mod, features=list(map(str, a.var_names)), unit_map=units))
        for name in parts[-1].modalities:
            unit_given[name] = unit_given.get(name, False) or keys.UNIT in obs
    return number_units(concat_files(parts, [f for f, _ in h5ad_files(path)]), unit_given)


def concat_files(parts: list, files: list[Path]) -> MeasurementBatch:
    """Stack the batches of a screen's files.

    Raises:
        DataFormatError: When two files of one modality have different features, naming both.
    """
    first: dict[str, tuple[Path, tuple[str, ...]]] = {}
    for part, f in zip(parts, files, strict=True):
        for mod, m in part.modalities.items():
            f0, names = first.setdefault(mod, (f, tuple(m.var_names)))
            if tuple(m.var_names) != names:
                raise DataFormatError(
                    f"{f}: its {mod} features differ from those of {f0} ({len(m.var_names)} vs {len(names)}); "
                    "the files of one screen must share their var_names"
                )
    return MeasurementBatch.concat(parts)


def _dense(X: object) -> np.ndarray:
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def _is_counts(X: np.ndarray) -> bool:
    return bool(np.all(np.abs(X - np.round(X)) <= 1e-6) and np.all(X >= 0))


def _count_matrix(a: object) -> np.ndarray:
    """The raw counts of an AnnData: ``X`` if it holds counts, else ``layers["counts"]``, else ``raw.X``.

    Atlases often ship log-normalised values in ``X`` and the counts beside them; cslab's count
    likelihoods need the counts. When none of the three holds counts, ``X`` is returned and the
    reader refuses it, naming the first non-count value.
    """
    X = _dense(a.X)
    if _is_counts(X):
        return X
    candidates = [a.layers[k] for k in ("counts", "raw_counts") if k in a.layers]
    if a.raw is not None and a.raw.shape == a.shape and list(a.raw.var_names) == list(a.var_names):
        candidates.append(a.raw.X)
    for c in candidates:
        c = _dense(c)
        if _is_counts(c):
            return c
    return X


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
    out = pd.DataFrame(
        {
            keys.PERTURBATION: labels,
            keys.DOSE_VALUE: doses,
            keys.DOSE_UNIT: "uM",
            keys.TIME: df["time"] if "time" in df else 72.0,
            keys.CELL_LINE: df[keys.CELL_LINE] if keys.CELL_LINE in df else None,
            keys.REPLICATE: df[keys.REPLICATE] if keys.REPLICATE in df else 0,
            keys.ASSAY: "viability",
            "response": df["response"],
        }
    )
    return out


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The feature columns of a tidy table: every column that is not metadata.

    Metadata: cslab's own columns (``keys.OBS_COLUMNS``, plate, well, round, coordinates, role), the
    scPerturb / scanpy QC and annotation columns (:data:`METADATA_COLUMNS`, case-insensitive), and any
    column whose non-empty values are mostly (more than half) not numbers.
    """
    own = set(keys.OBS_COLUMNS) | {keys.PLATE, keys.WELL, keys.ROUND, "x", "y", "role", "row", "column"}
    out = []
    for c in df.columns:
        if c in own or str(c).lower() in METADATA_COLUMNS:
            continue
        col = df[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            present = col[col.notna() & (col.astype(str).str.strip() != "")]
            if len(present) and pd.to_numeric(present, errors="coerce").notna().mean() <= 0.5:
                continue
        out.append(c)
    return out


def _number(value: object, path: Path, i: int, column: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: row {i + 2}, column {column}: {value!r} is not a number") from None
    if not np.isfinite(x):
        raise DataFormatError(f"{path}: row {i + 2}, column {column}: {value!r} is not finite")
    return x


def table_to_batch(
    df: pd.DataFrame,
    path: Path,
    modality: str,
    features: list[str] | None = None,
    unit_map: dict[str, str] | None = None,
) -> MeasurementBatch:
    """Validate a tidy table and turn it into a batch (one modality per ``modality`` value).

    Args:
        df: One row per well or cell: metadata and feature columns.
        path: The file (for messages).
        modality: Modality of rows without a ``modality`` column.
        features: Feature columns (default: :func:`feature_columns`).
        unit_map: The file's ``dose_unit`` values → cslab's (:data:`DOSE_UNITS`).

    Raises:
        DataFormatError: Missing column, unparsable perturbation or dose, NaN /
            inf / negative counts, unknown modality, naming file, row and column.
    """
    if len(df) == 0:
        raise DataFormatError(f"{path}: no rows")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; required: {list(REQUIRED)} (map other names with a column mapping)"
        )
    if features is None:
        features = feature_columns(df)
    absent = [c for c in features if c not in df.columns]
    if absent:
        raise DataFormatError(f"{path}: feature column(s) {absent[:5]} named by the mapping are not in the file")
    if not features:
        raise DataFormatError(f"{path}: no feature columns besides the metadata")
    df = df.reset_index(drop=True)
    mods = df[keys.MODALITY].astype(str) if keys.MODALITY in df else pd.Series(modality, index=df.index)
    parts = []
    for mod in pd.unique(mods):
        if mod not in modality_names():
            raise DataFormatError(f"{path}: unknown modality {mod!r}; accepted: {list(modality_names())}")
        sub = df[mods == mod]
        parts.append(_modality(sub, path, mod, features, unit_map))
    return MeasurementBatch({m.obs[keys.MODALITY].iloc[0]: m for m in parts})


def _modality(
    df: pd.DataFrame, path: Path, mod: str, features: list[str], unit_map: dict[str, str] | None = None
) -> ModalityData:
    values = df[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    error = first_bad_value(values, mod)
    if error is not None:
        kind, i, j = error
        raise DataFormatError(value_message(kind, path, int(df.index[i]), features[j], df[features[j]].iloc[i], mod))
    return ModalityData(obs_frame(df, path, mod, unit_map), values.astype(np.float32), tuple(features))


def first_bad_value(values: np.ndarray, mod: str) -> tuple[str, int, int] | None:
    """The first value a modality refuses, in row-major order, and why.

    Args:
        values: ``(n_units, n_features)`` readouts (float64).
        mod: The modality (count modalities also refuse negative and non-integer values).

    Returns:
        ``(kind, row, column)`` with kind ``"nonfinite"``, ``"negative"`` or ``"fractional"``
        (checked in that order over the whole matrix), or ``None`` when every value is accepted.
    """
    checks = [("nonfinite", lambda v: ~np.isfinite(v))]
    if is_counts(mod):
        checks += [("negative", lambda v: v < 0), ("fractional", lambda v: np.abs(v - np.round(v)) > 1e-6)]
    for kind, bad in checks:
        mask = bad(values)
        if mask.any():
            i, j = np.argwhere(mask)[0]
            return kind, int(i), int(j)
    return None


def value_message(kind: str, path: Path, row: int, feature: str, value: object, mod: str) -> str:
    """The one-line refusal of a readout value (kinds of :func:`first_bad_value`).

    Args:
        kind: ``"nonfinite"``, ``"negative"`` or ``"fractional"``.
        path: The file.
        row: 0-based data row within the file (reported 1-based after a header line, as ``row + 2``).
        feature: The feature (column) name.
        value: The value as stored.
        mod: The modality.
    """
    where = f"{path}: row {row + 2}, column {feature}"
    if kind == "nonfinite":
        what = "missing (empty or NaN)" if pd.isna(value) else f"{str(value)!r} is not a finite number"
        return f"{where}: {what}"
    number = float(value)
    if kind == "negative":
        return f"{where}: negative count {number}; {mod} counts must be >= 0"
    return (
        f"{where}: {number:g} is not a count; {mod} is "
        "modelled as raw counts (negative binomial), and non-integer values look log-normalised. Give the raw "
        "counts: in an .h5ad as X, layers['counts'] or .raw (cslab reads the first that holds counts)"
    )


#: Metadata columns whose distinct combinations are parsed once each (:func:`obs_frame`).
GROUP_COLUMNS = (
    *REQUIRED,
    keys.DOSE_VALUE,
    keys.DOSE_UNIT,
    "perturbation_type",
    keys.SITE,
    keys.BATCH,
    keys.ASSAY,
    keys.REPLICATE,
)
#: Per-unit columns copied from the file as they are.
POSITION_COLUMNS = (keys.PLATE, keys.WELL, "x", "y")


def obs_frame(
    df: pd.DataFrame, path: Path, mod: str, unit_map: dict[str, str] | None = None, compact: bool = False
) -> pd.DataFrame:
    """The obs of a table's rows in cslab's keys: metadata parsed and checked, replicates, specimens and units.

    Args:
        df: One row per unit; only the metadata columns are read (its index: the file's row numbers).
        path: The file (for messages).
        mod: The rows' modality.
        unit_map: The file's ``dose_unit`` values → cslab's.
        compact: Store text columns as categoricals (a few bytes a row, for screens of millions of cells;
            ``np.asarray`` of a column gives the same values as ``compact=False``).

    Returns:
        ``(n_units, ...)`` obs with :data:`keys.OBS_COLUMNS` and any of :data:`POSITION_COLUMNS`.

    Raises:
        DataFormatError: For metadata that cannot be read, naming the file, row, column and value.
    """
    meta_in = [c for c in GROUP_COLUMNS if c in df.columns]
    codes = _group_codes(df[meta_in], compact)
    _, first = np.unique(codes, return_index=True)
    parsed = {int(codes[i]): _meta(df.iloc[i].to_dict(), path, int(df.index[i]), mod, unit_map) for i in first}
    if compact:
        obs = _broadcast(pd.DataFrame([parsed[k] for k in range(len(parsed))]), codes)
    else:
        obs = pd.DataFrame([parsed[int(c)] for c in codes])
    for col in POSITION_COLUMNS:
        if col in df.columns:
            obs[col] = df[col].array if compact else df[col].to_numpy()
    if keys.REPLICATE not in df.columns and keys.WELL in df.columns:
        # Without replicate numbers, each well of a condition is its own specimen (replicate).
        wells = obs[keys.WELL].astype(str)
        if keys.PLATE in obs.columns:
            wells = obs[keys.PLATE].astype(str) + "/" + wells
        rank = obs.assign(_well=wells).groupby(keys.QUERY_ID, observed=True)["_well"].rank(method="dense")
        obs[keys.REPLICATE] = rank.astype(int) - 1
        obs[keys.SPECIMEN] = obs[keys.QUERY_ID].astype(str) + ":" + obs[keys.REPLICATE].astype(str)
        if compact:
            obs[keys.SPECIMEN] = obs[keys.SPECIMEN].astype("category")
    given = keys.UNIT in df
    obs[keys.UNIT] = df[keys.UNIT].to_numpy() if given else obs.groupby(keys.SPECIMEN, observed=True).cumcount()
    return obs


def _group_codes(meta: pd.DataFrame, compact: bool) -> np.ndarray:
    """One integer per row naming its distinct metadata combination, numbered in order of first appearance."""
    cols = list(meta.columns)
    if not compact:
        return meta.astype(str).groupby(cols, sort=False, dropna=False).ngroup().to_numpy()
    # Factorised columns (no text copy of millions of rows); values equal as text stay one group.
    factors = pd.DataFrame(
        {c: pd.factorize(meta[c].astype(str) if meta[c].dtype == object else meta[c])[0] for c in cols}
    )
    return factors.groupby(cols, sort=False).ngroup().to_numpy() if cols else np.zeros(len(meta), dtype=np.int64)


def _broadcast(groups: pd.DataFrame, codes: np.ndarray) -> pd.DataFrame:
    """Rows ``groups.iloc[codes]``, text columns as categoricals (codes, not one string a row)."""
    out = {}
    for col in groups.columns:
        values = groups[col]
        if values.dtype == object:
            cat = pd.Categorical(values)
            out[col] = pd.Categorical.from_codes(cat.codes[codes], categories=cat.categories)
        else:
            out[col] = values.to_numpy()[codes]
    return pd.DataFrame(out)


def _missing(value: object) -> bool:
    """Whether a metadata cell is empty (None, NaN, blank, ``"nan"``)."""
    return (
        value is None
        or (isinstance(value, float) and np.isnan(value))
        or str(value).strip().lower() in ("", "nan", "none")
    )


def _unit_hint(value: str) -> str:
    return (
        f"accepted (any case): uM, nM, pM, mM; fraction, knockdown, activation, percent, guide, sgRNA, shRNA, "
        f'siRNA, ORF, MOI; map it in the run config: [data_mapping] units = {{"{value}" = "uM"}}'
    )


def _perturbation(row: dict, where: str, unit_map: dict[str, str] | None) -> tuple[Perturbation, list[str]]:
    """The row's perturbation in cslab's units (µM or a strength in [0, 1]) and each kept target's unit."""
    label = row.get(keys.PERTURBATION)
    if not isinstance(label, str) or not label.strip():
        raise DataFormatError(f"{where}, column perturbation: missing label; use 'A', 'A+B' or 'control'")
    names = [n.strip() for n in label.split(keys.COMBO_SEP)]
    if any(not n for n in names):
        raise DataFormatError(f"{where}, column perturbation: malformed combination {label!r} (empty target name)")
    raw = row.get(keys.DOSE_VALUE)
    doses: list[float | None]
    if _missing(raw):
        doses = [None] * len(names)
    else:
        parts = [p.strip() for p in str(raw).split(keys.COMBO_SEP)]
        if len(parts) != len(names):
            raise DataFormatError(
                f"{where}, column dose_value: {str(raw)!r} has {len(parts)} values for the "
                f"{len(names)} targets of {label!r}; write doses as '1.0+0.5'"
            )
        try:
            doses = [None if _missing(p) else float(p) for p in parts]
        except ValueError:
            raise DataFormatError(
                f"{where}, column dose_value: {raw!r} is not numeric; write doses as '1.0+0.5'"
            ) from None
    unit_raw = row.get(keys.DOSE_UNIT)
    if _missing(unit_raw):
        ptype = row.get("perturbation_type")
        if _missing(ptype):
            units = ["um"] * len(names)
        else:
            key = re.sub(r"[-_ ]", "", str(ptype).strip().lower())
            if key not in PERTURBATION_TYPES:
                raise DataFormatError(
                    f"{where}, column perturbation_type: unknown type {str(ptype)!r}; accepted: "
                    f"{sorted(PERTURBATION_TYPES)}; or give a dose_unit column (map one with "
                    '[data_mapping] columns = {dose_unit = "<your column>"})'
                )
            units = [PERTURBATION_TYPES[key]] * len(names)
    else:
        units = [u.strip() for u in str(unit_raw).split(keys.COMBO_SEP)]
        if len(units) not in (1, len(names)):
            raise DataFormatError(f"{where}, column dose_unit: {unit_raw!r} does not match {len(names)} targets")
        units = units * len(names) if len(units) == 1 else units
    kept: list[tuple[str, float, str]] = []
    for name, d, u in zip(names, doses, units, strict=True):
        if keys.CONTROL == name or is_control_name(name):
            continue
        unit = (unit_map or {}).get(u, u).strip().lower()
        if unit in CONCENTRATION_UNITS:
            if d is None:
                raise DataFormatError(f"{where}, column dose_value: missing concentration of {name!r}")
            value, out_unit = d * CONCENTRATION_UNITS[unit], "uM"
        elif unit in GENETIC_UNITS:
            value, out_unit = _strength(GENETIC_UNITS[unit], d, name, u, where), "fraction"
        else:
            raise DataFormatError(f"{where}, column dose_unit: unknown unit {u!r}; {_unit_hint(u)}")
        if not np.isfinite(value) or value < 0:
            raise DataFormatError(f"{where}, column dose_value: dose {d!r} of {name!r} is negative or not finite")
        if value > 0:  # a target at dose 0 (e.g. "DMSO" at 0) is no perturbation
            kept.append((name, value, out_unit))
    return (Perturbation(tuple(t for t, _, _ in kept), tuple(d for _, d, _ in kept)), [u for _, _, u in kept])


def _strength(rule: str, d: float | None, name: str, unit: str, where: str) -> float:
    """A genetic perturbation's value in ``unit`` as a strength in [0, 1] (``rule``: :data:`GENETIC_UNITS`)."""
    if rule == "present":
        return 1.0 if d is None or d > 0 else 0.0
    if d is None:
        raise DataFormatError(f"{where}, column dose_value: missing {unit} value of {name!r}")
    if rule == "moi":
        return float(-np.expm1(-d)) if d >= 0 else d
    top = 100.0 if rule == "percent" else 1.0
    if d > top:
        raise DataFormatError(
            f"{where}, column dose_value: {unit} {d} of {name!r} is above {top:g}; a "
            f"{unit} is a strength in [0, {top:g}]"
        )
    return d / top


def _meta(row: dict, path: Path, i: int, mod: str, unit_map: dict[str, str] | None = None) -> dict:
    where = f"{path}: row {i + 2}"
    time = row.get(keys.TIME)
    try:
        time = float(time)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}, column time: {time!r} is not a number of hours") from None
    if not np.isfinite(time) or time < 0:
        raise DataFormatError(f"{where}, column time: missing or negative time {time!r}; give hours >= 0")
    pert, units = _perturbation(row, where, unit_map)
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
        keys.QUERY_ID: q.query_id,
        keys.PERTURBATION: pert.label,
        keys.DOSE_VALUE: pert.dose_label,
        keys.DOSE_UNIT: "+".join(units),
        keys.TIME: time,
        keys.TIME_UNIT: keys.HOURS,
        keys.CELL_LINE: str(cell_line),
        keys.SITE: site,
        keys.BATCH: str(row.get(keys.BATCH) or site),
        keys.ASSAY: assay,
        keys.MODALITY: mod,
        keys.REPLICATE: rep,
        keys.SPECIMEN: f"{q.query_id}:{rep}",
        keys.UNIT: 0,
    }
