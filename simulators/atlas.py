"""Atlas-scale screens with bounded memory: ``.h5ad`` files read lazily, cells handed out row by row.

A screen of millions of cells (Tahoe-100M ships 5.5M cells × 62,710 genes per plate file) cannot be
densified. :func:`open_screen` opens it lazily instead (explicitly with ``lazy=True``, or by default
when its matrices hold at least :data:`LAZY_VALUES` values):

* only the obs columns cslab reads are loaded (text as categoricals: a few bytes a cell);
* each readout matrix (CSR, CSC or dense, in ``X``, ``layers["counts"]``, ``layers["raw_counts"]`` or
  ``.raw``) is scanned once in chunks of :data:`CHUNK_NNZ` stored values: it is checked exactly as the
  eager reader checks it (same count-layer choice, same one-line refusals naming file, row, column and
  value) and the per-cell totals are kept for the per-condition statistics (:attr:`LazyScreen.stats`);
* ``take`` reads only the rows asked for (CSR row slices through ``anndata.io.sparse_dataset``) and
  densifies just those.

Several files form one screen as in :func:`simulators.lab_formats.h5ad_files` (``screen.h5ad`` and
its ``screen.<modality>.h5ad`` siblings; a directory or glob of per-plate files). What a
:class:`LazyScreen` hands out equals, row for row, what the eager reader
(:func:`simulators.lab_formats.read_measurements`) gives for the same cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import MeasurementBatch, ModalityData, keys
from experiment_design.modalities import is_counts, modality_names
from simulators.lab_formats import (
    GROUP_COLUMNS,
    POSITION_COLUMNS,
    REQUIRED,
    DataFormatError,
    _check_unit_map,
    h5ad_files,
    is_screen_pattern,
    obs_frame,
    read_measurements,
    table_files,
    value_message,
)

#: Screens whose matrices hold at least this many values (cells × features, stored or not) open lazily.
LAZY_VALUES = 25_000_000
#: Stored values read per chunk while scanning a matrix (about 8 bytes each, plus the row of each).
CHUNK_NNZ = 2_000_000
#: Where the raw counts may be, in the order the eager reader tries them.
COUNT_KEYS = ("X", "layers/counts", "layers/raw_counts", "raw/X")
#: Obs columns read from a file (everything else in obs is left on disk).
OBS_READ = (*GROUP_COLUMNS, *POSITION_COLUMNS, keys.MODALITY, keys.UNIT)
_KINDS = ("nonfinite", "negative", "fractional")


# ----------------------------------------------------------------- matrices on disk
def _encoding(node: object) -> str:
    enc = node.attrs.get("encoding-type", "array")
    return enc.decode() if isinstance(enc, bytes) else str(enc)


def matrix_shape(node: object) -> tuple[int, int]:
    """``(n_rows, n_cols)`` of a stored matrix (an h5py CSR / CSC group or a dense dataset)."""
    if _encoding(node) in ("csr_matrix", "csc_matrix"):
        return tuple(int(v) for v in node.attrs["shape"])
    return tuple(int(v) for v in node.shape)


def _chunks(node: object, chunk_nnz: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The stored values of a matrix in chunks: ``(rows, cols, values)``, each ``(n,)``, rows 0-based."""
    enc = _encoding(node)
    n_rows, n_cols = matrix_shape(node)
    if enc == "array":
        step = max(1, chunk_nnz // max(n_cols, 1))
        for r0 in range(0, n_rows, step):
            block = np.asarray(node[r0 : r0 + step])
            r, c = np.nonzero(block)
            yield r + r0, c, block[r, c]
        return
    indptr = np.asarray(node["indptr"][:], dtype=np.int64)
    major = len(indptr) - 1
    bounds = np.unique(np.r_[np.searchsorted(indptr, np.arange(0, indptr[-1], chunk_nnz), "right") - 1, major])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        s, e = int(indptr[a]), int(indptr[b])
        major_idx = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(indptr[a : b + 1]))
        minor_idx = np.asarray(node["indices"][s:e], dtype=np.int64)
        values = np.asarray(node["data"][s:e])
        yield (major_idx, minor_idx, values) if enc == "csr_matrix" else (minor_idx, major_idx, values)


@dataclass
class Scan:
    """What one chunked pass over a matrix found.

    Attributes:
        first: ``(group, kind)`` → the first refused value of that kind among the group's rows, in
            row-major order: ``(row, col, value)``. Kinds: ``nonfinite``, ``negative``, ``fractional``;
            groups: the row labels given to :func:`scan` (the modality of each row), 0 without labels.
        totals: ``(n_rows,)`` float64 sum of each row's values.
        detected: ``(n_rows,)`` int64 non-zero values per row.
        complete: Whether every chunk was read (``False`` after an early stop).
    """

    first: dict[tuple[int, str], tuple[int, int, float]] = field(default_factory=dict)
    totals: np.ndarray | None = None
    detected: np.ndarray | None = None
    complete: bool = True

    def is_counts(self) -> bool:
        """Whether the matrix holds raw counts (finite, >= 0, integers)."""
        return not self.first

    def refusal(self, mod: str, group: int = 0) -> tuple[str, int, int, float] | None:
        """What the eager reader refuses first in a group's rows, as ``(kind, row, col, value)``.

        Non-finite values first, then negative, then non-integer ones (the last two in count modalities).
        """
        kinds = _KINDS if is_counts(mod) else _KINDS[:1]
        for kind in kinds:
            if (group, kind) in self.first:
                return (kind, *self.first[(group, kind)])
        return None


def scan(node: object, groups: np.ndarray | None = None, stop_early: bool = False, chunk_nnz: int = CHUNK_NNZ) -> Scan:
    """Check a matrix in chunks and sum its rows.

    Args:
        node: An h5py CSR / CSC group or dense dataset.
        groups: ``(n_rows,)`` int label of each row (refusals are kept per label); ``None``: one group.
        stop_early: Stop at the first refused value (enough to know it holds no counts).
        chunk_nnz: Stored values per chunk.
    """
    n_rows, _ = matrix_shape(node)
    out = Scan(totals=np.zeros(n_rows), detected=np.zeros(n_rows, dtype=np.int64))
    for rows, cols, values in _chunks(node, chunk_nnz):
        if not len(rows):
            continue
        v = values.astype(np.float64)
        _note_bad(out.first, rows, cols, v, groups)
        if out.first and stop_early:
            out.complete = False
            return out
        lo, hi = int(rows.min()), int(rows.max()) + 1
        out.totals[lo:hi] += np.bincount(rows - lo, weights=v, minlength=hi - lo)
        out.detected[lo:hi] += np.bincount(rows - lo, minlength=hi - lo) - np.bincount(
            rows[v == 0] - lo, minlength=hi - lo
        )
    return out


def _note_bad(first: dict, rows: np.ndarray, cols: np.ndarray, v: np.ndarray, groups: np.ndarray | None) -> None:
    """Keep, per group and kind, the refused value that comes first in row-major order."""
    with np.errstate(invalid="ignore"):
        masks = {"nonfinite": ~np.isfinite(v), "negative": v < 0, "fractional": np.abs(v - np.round(v)) > 1e-6}
    for kind, mask in masks.items():
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        labels = groups[rows[idx]] if groups is not None else np.zeros(len(idx), dtype=np.int64)
        for g in np.unique(labels):
            sel = idx[labels == g]
            k = sel[np.lexsort((cols[sel], rows[sel]))[0]]
            hit = (int(rows[k]), int(cols[k]), float(v[k]))
            if (int(g), kind) not in first or hit[:2] < first[(int(g), kind)][:2]:
                first[(int(g), kind)] = hit


# ----------------------------------------------------------------- one file
def _read_column(group: object, name: str) -> object:
    from anndata.io import read_elem

    return read_elem(group[name])


def read_obs(f: object) -> pd.DataFrame:
    """The obs columns cslab reads (:data:`OBS_READ`) of an open ``.h5ad``; rows numbered from 0."""
    obs = f["obs"]
    present = [c for c in OBS_READ if c in obs and c != obs.attrs.get("_index")]
    return pd.DataFrame({c: _read_column(obs, c) for c in present}, index=pd.RangeIndex(matrix_rows(f)))


def matrix_rows(f: object) -> int:
    """Cells (rows) of an open ``.h5ad``, from its obs index."""
    obs = f["obs"]
    return int(obs[obs.attrs["_index"]].shape[0])


def var_names(group: object) -> tuple[str, ...]:
    """The feature names of an ``.h5ad``'s ``var`` (or ``raw/var``) group."""
    names = _read_column(group, group.attrs["_index"])
    return tuple(map(str, names))


def count_candidates(f: object, n_vars: tuple[str, ...]) -> list[str]:
    """Matrices that may hold the raw counts besides ``X``, in the eager reader's order."""
    out = [f"layers/{k}" for k in ("counts", "raw_counts") if "layers" in f and k in f["layers"]]
    if "raw" in f and "X" in f["raw"] and "var" in f["raw"]:
        raw = f["raw"]
        if matrix_shape(raw["X"]) == matrix_shape(f["X"]) and var_names(raw["var"]) == n_vars:
            out.append("raw/X")
    return out


def choose_matrix(f: object, counts: bool, names: tuple[str, ...], groups: np.ndarray) -> tuple[str, Scan]:
    """The matrix to read and its scan.

    ``X``, or for a count modality the first of :data:`COUNT_KEYS` holding counts (``X`` when none does,
    refused later by its first non-count value).
    """
    if not counts:
        return "X", scan(f["X"], groups)
    first = scan(f["X"], groups, stop_early=True)
    if first.is_counts():
        return "X", first
    for key in count_candidates(f, names):
        s = scan(f[key], groups, stop_early=True)
        if s.is_counts():
            return key, s
    return "X", scan(f["X"], groups)


@dataclass
class FilePart:
    """One modality's rows of one file.

    Attributes:
        modality: The modality.
        path: The file.
        key: The matrix read (``X``, ``layers/counts``, ``layers/raw_counts`` or ``raw/X``).
        rows: ``(n,)`` the file rows of this modality, or ``None`` when it is every row.
        obs: ``(n, ...)`` compact obs (:func:`simulators.lab_formats.obs_frame`).
        totals: ``(n,)`` summed values per row; detected: ``(n,)`` non-zero values per row.
        unit_given: Whether the file carries its own ``unit`` column.
    """

    modality: str
    path: Path
    key: str
    rows: np.ndarray | None
    obs: pd.DataFrame
    totals: np.ndarray
    detected: np.ndarray
    unit_given: bool


def _check_table(path: Path, meta: pd.DataFrame, names: tuple[str, ...]) -> None:
    """The eager reader's table checks, in its order: rows, required columns, features."""
    if len(meta) == 0:
        raise DataFormatError(f"{path}: no rows")
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; required: {list(REQUIRED)} (map other names with a column mapping)"
        )
    if not names:
        raise DataFormatError(f"{path}: no feature columns besides the metadata")


def read_file(path: Path, default: str, units: dict[str, str] | None) -> tuple[tuple[str, ...], list]:
    """Open one ``.h5ad`` lazily: its feature names and one :class:`FilePart` per modality.

    Raises:
        DataFormatError: As the eager reader would, for the same file.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            meta, names = read_obs(f), var_names(f["var"])
            return names, _file_parts(f, path, default, units, meta, names)
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises many types for a damaged file
        raise DataFormatError(f"{path}: unreadable or truncated .h5ad ({type(exc).__name__}: {exc})") from None


def _file_parts(
    f: object, path: Path, default: str, units: dict[str, str] | None, meta: pd.DataFrame, names: tuple[str, ...]
) -> list[FilePart]:
    has_mod = keys.MODALITY in meta
    mods = meta[keys.MODALITY].astype(str) if has_mod else pd.Series(default, index=meta.index)
    first_mod = str(meta[keys.MODALITY].iloc[0]) if has_mod and len(meta) else default
    _check_table(path, meta, names)
    labels, order = pd.factorize(mods)
    key, s = choose_matrix(f, first_mod in modality_names() and is_counts(first_mod), names, labels)
    parts = []
    for g, mod in enumerate(order):
        if mod not in modality_names():
            raise DataFormatError(f"{path}: unknown modality {mod!r}; accepted: {list(modality_names())}")
        refused = s.refusal(mod, g)
        if refused is not None:
            kind, row, col, value = refused
            raise DataFormatError(value_message(kind, path, row, names[col], value, mod))
        rows = None if len(order) == 1 else np.flatnonzero(labels == g)
        sub = meta if rows is None else meta.iloc[rows]
        obs = obs_frame(sub, path, mod, units, compact=True)
        pick = slice(None) if rows is None else rows
        parts.append(FilePart(mod, path, key, rows, obs, s.totals[pick], s.detected[pick], keys.UNIT in meta))
    return parts


# ----------------------------------------------------------------- the screen
def concat_compact(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack compact obs frames, keeping categorical columns categorical (categories united)."""
    if len(frames) == 1:
        return frames[0]
    cols = list(frames[0].columns)
    if any(list(f.columns) != cols for f in frames):
        return pd.concat(frames, ignore_index=True)
    out = {}
    for c in cols:
        parts = [f[c] for f in frames]
        try:
            if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
                out[c] = pd.api.types.union_categoricals([p.array for p in parts])
                continue
        except TypeError:  # categories of different types: plain values
            pass
        out[c] = pd.concat(parts, ignore_index=True).to_numpy()
    return pd.DataFrame(out)


def plain(obs: pd.DataFrame) -> pd.DataFrame:
    """Compact obs rows as the eager reader stores them: categorical columns as plain arrays."""
    obs = obs.reset_index(drop=True)
    for c in obs.columns:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].to_numpy()
    return obs


class LazyModality:
    """One modality of a lazily opened screen: obs in memory, the readouts on disk.

    Args:
        parts: The modality's rows of each file, in file order.
        var_names: Feature names.

    Attributes:
        obs: ``(n_units, ...)`` compact obs (text columns categorical).
        var_names: ``n_features`` names.
        totals: ``(n_units,)`` summed readout per unit (total counts for a count modality).
        detected: ``(n_units,)`` non-zero features per unit.
    """

    def __init__(self, parts: list[FilePart], var_names: tuple[str, ...]) -> None:
        self.obs = concat_compact([p.obs for p in parts])
        if not any(p.unit_given for p in parts):  # units numbered per specimen across files
            self.obs[keys.UNIT] = self.obs.groupby(keys.SPECIMEN, observed=True).cumcount().to_numpy()
        self.var_names = tuple(var_names)
        self.totals = np.concatenate([p.totals for p in parts])
        self.detected = np.concatenate([p.detected for p in parts])
        self._sources = [(p.path, p.key, p.rows) for p in parts]
        self._starts = np.cumsum([0] + [len(p.obs) for p in parts])
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.obs)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}  # open files do not pickle; reopened on demand

    def take(self, rows: np.ndarray) -> ModalityData:
        """The units at ``rows``, read from disk: ``(len(rows), n_features)`` float32, obs in plain dtypes.

        Args:
            rows: Increasing row positions in :attr:`obs`.
        """
        rows = np.asarray(rows, dtype=np.int64)
        blocks = []
        for i, (_, _, file_rows) in enumerate(self._sources):
            lo, hi = self._starts[i], self._starts[i + 1]
            local = rows[(rows >= lo) & (rows < hi)] - lo
            if len(local):
                blocks.append(self._read(i, local if file_rows is None else file_rows[local]))
        X = np.concatenate(blocks) if blocks else np.zeros((0, len(self.var_names)), dtype=np.float32)
        return ModalityData(plain(self.obs.iloc[rows]), X, self.var_names)

    def _read(self, i: int, file_rows: np.ndarray) -> np.ndarray:
        """Rows of source ``i`` densified; through float64, as the eager reader converts them."""
        block = self._matrix(i)[file_rows]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        return block.astype(np.float64, copy=False).astype(np.float32)

    def _matrix(self, i: int) -> object:
        if i not in self._open:
            import h5py
            from anndata.io import sparse_dataset

            path, key, _ = self._sources[i]
            node = h5py.File(path, "r")[key]
            self._open[i] = sparse_dataset(node) if _encoding(node) in ("csr_matrix", "csc_matrix") else node
        return self._open[i]

    def close(self) -> None:
        """Close the open files (they reopen on the next :meth:`take`)."""
        for m in self._open.values():
            (m.group if hasattr(m, "group") else m).file.close()
        self._open = {}


class LazyScreen:
    """A screen opened lazily, the readouts read on :meth:`take`.

    It offers what :class:`~experiment_design.MeasurementBatch` offers a pool oracle: ``modalities``
    with ``obs`` and ``var_names``.

    Args:
        modalities: Modality name → :class:`LazyModality`.
    """

    def __init__(self, modalities: dict[str, LazyModality]) -> None:
        self.modalities = modalities
        self._stats: pd.DataFrame | None = None

    def __len__(self) -> int:
        return sum(len(m) for m in self.modalities.values())

    @property
    def query_ids(self) -> list[str]:
        """Distinct query ids, in first-seen order."""
        ids: dict[str, None] = {}
        for m in self.modalities.values():
            ids.update(dict.fromkeys(pd.unique(m.obs[keys.QUERY_ID]).tolist()))
        return list(ids)

    def take(self, specimens: set[str] | list[str]) -> MeasurementBatch:
        """Every unit of the given specimens, read from disk (modalities without one are left out)."""
        out = {}
        for name, m in self.modalities.items():
            rows = np.flatnonzero(m.obs[keys.SPECIMEN].isin(list(specimens)).to_numpy())
            if len(rows):
                out[name] = m.take(rows)
        return MeasurementBatch(out)

    def close(self) -> None:
        """Close the files opened by :meth:`take` (they reopen on the next one)."""
        for m in self.modalities.values():
            m.close()

    def to_batch(self) -> MeasurementBatch:
        """Everything, dense (what the eager reader returns; for small screens and tests)."""
        return MeasurementBatch({n: m.take(np.arange(len(m))) for n, m in self.modalities.items()})

    @property
    def stats(self) -> pd.DataFrame:
        """Per-condition statistics from the one chunked scan at opening (no readout is read again).

        Returns:
            One row per (modality, query_id): ``n_units``, ``n_specimens``, ``mean_total`` (mean summed
            readout per unit: the library size of a count modality) and ``mean_detected`` (mean non-zero
            features per unit).
        """
        if self._stats is None:
            self._stats = pd.concat([_condition_stats(n, m) for n, m in self.modalities.items()], ignore_index=True)
        return self._stats


def _condition_stats(name: str, m: LazyModality) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            keys.QUERY_ID: m.obs[keys.QUERY_ID].array,
            keys.SPECIMEN: m.obs[keys.SPECIMEN].array,
            "total": m.totals,
            "detected": m.detected,
        }
    )
    g = df.groupby(keys.QUERY_ID, observed=True, sort=False)
    out = g.agg(
        n_units=("total", "size"),
        n_specimens=(keys.SPECIMEN, "nunique"),
        mean_total=("total", "mean"),
        mean_detected=("detected", "mean"),
    ).reset_index()
    out[keys.QUERY_ID] = out[keys.QUERY_ID].astype(str)
    out.insert(0, keys.MODALITY, name)
    return out


def open_h5ad(path: str | Path, units: dict[str, str] | None = None) -> LazyScreen:
    """Open an ``.h5ad`` screen lazily (its files as :func:`simulators.lab_formats.h5ad_files` lists them).

    Raises:
        DataFormatError: As :func:`simulators.lab_formats.read_measurements` would, for the same files.
    """
    parts: dict[str, list[FilePart]] = {}
    names: dict[str, tuple[Path, tuple[str, ...]]] = {}
    for f, default in h5ad_files(path):
        features, file_parts = read_file(f, default, units)
        for part in file_parts:
            parts.setdefault(part.modality, []).append(part)
            f0, first = names.setdefault(part.modality, (f, features))
            if features != first:
                raise DataFormatError(
                    f"{f}: its {part.modality} features differ from those of {f0} ({len(features)} vs "
                    f"{len(first)}); the files of one screen must share their var_names"
                )
    return LazyScreen({mod: LazyModality(ps, names[mod][1]) for mod, ps in parts.items()})


def screen_values(path: str | Path) -> int:
    """Cells × features summed over an ``.h5ad`` screen's files, from their headers (0 if unreadable)."""
    import h5py

    total = 0
    try:
        for f, _ in h5ad_files(path):
            with h5py.File(f, "r") as h:
                n, g = matrix_shape(h["X"])
                total += n * g
    except Exception:  # noqa: BLE001 - the reader that follows names what is wrong with the file
        return 0
    return total


def open_screen(
    path: str | Path, mapping: dict[str, str] | None = None, lazy: bool | None = None, **read_options: object
) -> MeasurementBatch | LazyScreen:
    """Read a screen eagerly, or open an ``.h5ad`` screen lazily.

    Args:
        path: A data file, or a directory or glob of ``.h5ad`` files.
        mapping: cslab column name → the file's column name (tidy tables).
        lazy: ``True``: open lazily (``.h5ad`` only); ``False``: read everything; ``None``: lazily when
            the screen's matrices hold at least :data:`LAZY_VALUES` values.
        **read_options: ``units``, ``features``, ``modality`` of
            :func:`simulators.lab_formats.read_measurements`.

    Raises:
        DataFormatError: For a file that cannot be read, or ``lazy=True`` on a tidy table.
    """
    p = Path(path)
    h5ad = (is_screen_pattern(p) and not table_files(p)) or (
        p.suffix.lower() == ".h5ad" and p.is_file() and p.stat().st_size > 0
    )
    if lazy and not h5ad and p.suffix.lower() != ".h5ad":
        raise DataFormatError(f"{p}: lazy reading is for .h5ad screens; a tidy table is read whole")
    if h5ad and (lazy or (lazy is None and screen_values(p) >= LAZY_VALUES)):
        _check_unit_map(read_options.get("units"))
        return open_h5ad(p, read_options.get("units"))
    return read_measurements(p, mapping, **read_options)
