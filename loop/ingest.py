"""``python -m loop.ingest --run DIR READOUT``: validate a plate readout and append it to the ledger.

The readout (``.csv`` or ``.parquet``) has one row per well (or per cell /
spot): ``plate``, ``well``, ``modality`` (may be left out when every assay of
the round measures one modality), optionally ``unit`` (cell index within the
well; default: row order), and one numeric column per feature. Metadata
columns that are present (``query_id``, ``perturbation``, ``dose_value``,
``dose_unit``, ``time``, ``cell_line``, ``site``, ``assay``) must agree with
the layout. Tissue-scale queries (not plated) are given by ``query_id`` and
``replicate`` with empty ``plate`` and ``well``.

Every check names the file, the row (1-based, header = row 1), the column or
the well, and what would be accepted. Nothing is written unless every check
passes; then the round's ledger shard and status are written atomically.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import MeasurementBatch, ModalityData, Perturbation, Query, keys
from experiment_design.modalities import is_counts, modality_names
from experiment_design.plate_layout import EMPTY, PlateLayout, row_query
from loop.ledger import Ledger
from loop.propose import layout_path, pending_round
from loop.rounds import RoundStatus, RoundStore
from loop.storage import read_json, read_table
from simulators.lab_formats import DataFormatError
from simulators.obs import specimen_meta

CHECKED_META = (
    keys.QUERY_ID,
    keys.PERTURBATION,
    keys.DOSE_VALUE,
    keys.DOSE_UNIT,
    keys.TIME,
    keys.CELL_LINE,
    keys.SITE,
    keys.ASSAY,
)
NON_FEATURES = {
    keys.PLATE,
    keys.WELL,
    keys.MODALITY,
    keys.UNIT,
    keys.REPLICATE,
    "row",
    "column",
    "role",
    "edge",
    keys.TIME_UNIT,
    keys.BATCH,
    keys.SPECIMEN,
    keys.ROUND,
    *CHECKED_META,
}


class ReadoutError(DataFormatError):
    """A readout does not fit its proposal and layout."""


def read_readout(path: Path) -> pd.DataFrame:
    """Read a readout table (strings kept as strings), with clear errors for bad files."""
    if not path.is_file():
        raise ReadoutError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ReadoutError(f"{path}: file is empty")
    try:
        if path.suffix.lower() == ".parquet":
            df = read_table(path).to_pandas()
        elif path.suffix.lower() == ".csv":
            df = pd.read_csv(
                path,
                encoding="utf-8",
                dtype={keys.PLATE: str, keys.WELL: str, keys.DOSE_VALUE: str, keys.QUERY_ID: str},
                keep_default_na=False,
                na_values=["", "NaN", "nan", "NA"],
            )
        else:
            raise ReadoutError(f"{path}: unknown file type {path.suffix!r}; accepted: .csv, .parquet")
    except UnicodeDecodeError as exc:
        raise ReadoutError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ReadoutError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise ReadoutError(f"{path}: unreadable or truncated ({exc})") from None
    if len(df) == 0:
        raise ReadoutError(f"{path}: no rows")
    return df


def ingest(run: str | Path, readout: str | Path, allow_missing: bool = False) -> Path:
    """Validate ``readout`` against the pending round of ``run`` and append it.

    Returns:
        The ledger shard written.

    Raises:
        ReadoutError: For any problem, naming file, row, column or well.
    """
    run, path = Path(run), Path(readout)
    store, ledger = RoundStore(run), Ledger(run)
    try:
        r = pending_round(store)
    except ValueError as exc:
        raise ReadoutError(f"{path}: {exc}; a well already measured is never overwritten") from None
    # The round's status, not a shard on disk, says whether it was measured: a shard left by an ingest that
    # crashed before recording the status is replaced (pending_round refuses rounds already measured).
    lp = layout_path(run, r)
    if not lp.is_file():
        raise ReadoutError(f"{path}: round {r} has no plate layout; run python -m loop.propose --run {run} first")
    layout = PlateLayout.from_table(read_table(lp).to_pandas(), round_index=r)
    from experiment_design import DesignSpace

    config = read_json(RoundStore(run).config_path)
    space = DesignSpace.from_dict(config["space"])
    df = read_readout(path)
    features = known_features(ledger) or {m: tuple(v) for m, v in config.get("features", {}).items()}
    batch = to_batch(df, path, layout, space, features, allow_missing)
    out = ledger.append(r, batch)
    store.write_status(r, RoundStatus.MEASURED, measure_s=0.0, readout=str(path))
    return out


def known_features(ledger: Ledger) -> dict[str, tuple[str, ...]]:
    """Feature names per modality already in the ledger (readouts must match them)."""
    rounds = ledger.rounds()
    return {m: d.var_names for m, d in ledger.read_round(rounds[-1]).modalities.items()} if rounds else {}


def _row_queries(df: pd.DataFrame, path: Path, layout: PlateLayout, space: object) -> list[tuple[Query, int, tuple]]:
    """Per readout row: its query, replicate and (plate, well), checked against the layout."""
    for col in (keys.PLATE, keys.WELL):
        if col not in df.columns:
            raise ReadoutError(f"{path}: missing column {col!r}; a readout needs plate, well and feature columns")
    table = layout.table
    wells = {(p, well_key(w)): i for i, (p, w) in enumerate(zip(table[keys.PLATE], table[keys.WELL], strict=True))}
    plates = set(table[keys.PLATE])
    unplated = {q.query_id: q for q in layout.unplated}
    out = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{path}: row {i + 2}"
        plate, well = _text(row.get(keys.PLATE)), _text(row.get(keys.WELL))
        if not plate and not well:
            qid = _text(row.get(keys.QUERY_ID))
            if qid not in unplated:
                raise ReadoutError(f"{where}: no plate/well and query_id {qid!r} is not an unplated query of the round")
            q, rep, pw = unplated[qid], _int(row.get(keys.REPLICATE), where, keys.REPLICATE), ("", "")
        else:
            if plate not in plates:
                raise ReadoutError(f"{where}, column plate: unknown plate {plate!r}; plates: {sorted(plates)}")
            if (plate, well_key(well)) not in wells:
                raise ReadoutError(f"{where}, column well: unknown well {well!r} on plate {plate}")
            lrow = table.iloc[wells[(plate, well_key(well))]]
            well = str(lrow[keys.WELL])  # the layout's spelling (A01), however the reader wrote it (A1, a01)
            if lrow["role"] == EMPTY:
                raise ReadoutError(f"{where}: well {plate}/{well} is empty in the layout; it holds no specimen")
            q, rep, pw = row_query(lrow), int(lrow[keys.REPLICATE]), (plate, well)
        _check_meta(row, q, space, where)
        out.append((q, rep, pw))
    return out


def _feature_columns(df: pd.DataFrame, path: Path, features_of: dict[str, tuple[str, ...]]) -> list[str]:
    """The readout's feature columns; a numeric column that is no feature of the run is refused."""
    feats = [c for c in df.columns if c not in NON_FEATURES]
    if not feats:
        raise ReadoutError(f"{path}: no feature columns; add one numeric column per feature")
    if features_of:
        known = {c for cols in features_of.values() for c in cols}
        stray = [c for c in feats if c not in known and df[c].notna().any()]
        if stray:
            raise ReadoutError(
                f"{path}: column(s) {stray[:5]} are not features of this run (its modalities: "
                f"{ {m: len(v) for m, v in features_of.items()} } features); remove or rename them"
            )
    return feats


def _group_rows(df: pd.DataFrame, path: Path, queries_by_row: list, mods: list[str]) -> dict[str, list]:
    """Modality → rows ``(query, replicate, plate, well, unit, row index)``; duplicated units refused."""
    units = df[keys.UNIT] if keys.UNIT in df.columns else None
    seen: set = set()
    groups: dict[str, list] = {}
    for i, (q, rep, (plate, well)) in enumerate(queries_by_row):
        mod = mods[i]
        unit = _int(units.iloc[i], f"{path}: row {i + 2}", keys.UNIT) if units is not None else None
        key = (q.query_id, rep, mod, unit if unit is not None else i)
        if unit is not None and key in seen:
            raise ReadoutError(f"{path}: row {i + 2}: duplicated well {plate}/{well} unit {unit} ({mod})")
        seen.add(key)
        groups.setdefault(mod, []).append((q, rep, plate, well, unit, i))
    if units is None:
        _no_duplicate_wells(queries_by_row, mods, path)
    return groups


def _check_complete(
    path: Path, layout: PlateLayout, space: object, queries_by_row: list, mods: list[str], allow_missing: bool
) -> None:
    """Every specimen of the layout has a readout of every modality of its assay (unless partial plates are allowed)."""
    measured = {(q.query_id, rep, mod) for (q, rep, _), mod in zip(queries_by_row, mods, strict=True)}
    expected = {(q.query_id, int(r), m) for q, r in _layout_specimens(layout) for m in space.assay(q.assay).modalities}
    missing = sorted(expected - measured)
    if missing and not allow_missing:
        qid, rep, mod = missing[0]
        raise ReadoutError(
            f"{path}: {len(missing)} readout(s) of the layout are missing, e.g. {mod} of query {qid} "
            f"replicate {rep}; pass --allow-missing for partial plates"
        )


def _modality_data(
    df: pd.DataFrame, path: Path, mod: str, rows: list, cols: list[str], space: object, order: dict
) -> ModalityData:
    """One modality's rows in layout order, with the ledger's metadata per unit."""
    rows = sorted(rows, key=lambda t: (order.get((t[0].query_id, t[1]), 1 << 30), t[5]))
    idx = [t[5] for t in rows]
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise ReadoutError(f"{path}: modality {mod} lacks feature column(s) {absent[:5]} the ledger has")
    X = _numbers(df.iloc[idx][cols], path, idx, mod)
    obs = []
    counter: dict = {}
    for q, rep, plate, well, unit, _ in rows:
        dose_unit = keys.COMBO_SEP.join(space.target(t).dose_unit for t in q.perturbation.targets)
        m = specimen_meta(q, rep, mod, plate, well, dose_unit)
        k = counter.get((q.query_id, rep), 0)
        m[keys.UNIT] = unit if unit is not None else k
        counter[(q.query_id, rep)] = k + 1
        obs.append(m)
    return ModalityData(pd.DataFrame(obs), X, tuple(cols))


def to_batch(
    df: pd.DataFrame,
    path: Path,
    layout: PlateLayout,
    space: object,
    features_of: dict[str, tuple[str, ...]],
    allow_missing: bool = False,
) -> MeasurementBatch:
    """Check every row against the layout and build the round's batch (see the module docstring)."""
    queries_by_row = _row_queries(df, path, layout, space)
    mods = _modalities(df, path, queries_by_row, space)
    feats = _feature_columns(df, path, features_of)
    groups = _group_rows(df, path, queries_by_row, mods)
    _check_complete(path, layout, space, queries_by_row, mods, allow_missing)
    order = {(q.query_id, r): k for k, (q, r) in enumerate(_layout_specimens(layout))}
    out = {}
    for mod, rows in groups.items():
        # A modality's features are the columns it fills (a CSV holding several modalities leaves the others blank).
        idx = [t[5] for t in rows]
        cols = list(features_of.get(mod, [c for c in feats if df[c].iloc[idx].notna().any()]))
        out[mod] = _modality_data(df, path, mod, rows, cols, space, order)
    return MeasurementBatch(out)


def _layout_specimens(layout: PlateLayout) -> list[tuple]:
    """Every specimen of the round, in the order ``oracle.measure(layout.queries_to_measure())`` returns them."""
    return [(q, k) for q in [*layout.queries_to_measure(), *layout.unplated] for k in range(q.replicates)]


def _modalities(df: pd.DataFrame, path: Path, rows: list, space: object) -> list[str]:
    out = []
    for i, (q, _, _) in enumerate(rows):
        assay_mods = space.assay(q.assay).modalities
        if keys.MODALITY in df.columns:
            mod = _text(df[keys.MODALITY].iloc[i])
            if mod not in assay_mods:
                raise ReadoutError(
                    f"{path}: row {i + 2}, column modality: {mod!r} is not measured by assay "
                    f"{q.assay} (accepted: {list(assay_mods)})"
                )
        elif len(assay_mods) == 1:
            mod = assay_mods[0]
        else:
            raise ReadoutError(
                f"{path}: row {i + 2}: assay {q.assay} measures {list(assay_mods)}; add a modality column"
            )
        if mod not in modality_names():
            raise ReadoutError(f"{path}: row {i + 2}: unknown modality {mod!r}")
        out.append(mod)
    return out


def _no_duplicate_wells(rows: list, mods: list[str], path: Path) -> None:
    """Without a unit column, a well may appear once per modality (one row per well)."""
    seen: dict = {}
    for i, ((_, _, (plate, well)), mod) in enumerate(zip(rows, mods, strict=True)):
        if not plate:
            continue
        if (plate, well, mod) in seen:
            raise ReadoutError(
                f"{path}: row {i + 2}: duplicated well {plate}/{well} ({mod}); first at row "
                f"{seen[(plate, well, mod)] + 2}; add a unit column for several cells per well"
            )
        seen[(plate, well, mod)] = i


def _numbers(block: pd.DataFrame, path: Path, idx: list[int], mod: str) -> np.ndarray:
    X = block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ReadoutError(
            f"{path}: row {idx[i] + 2}, column {block.columns[j]}: {_shown(block.iloc[i, j])} is not a finite number"
        )
    if is_counts(mod) and (X < 0).any():
        i, j = np.argwhere(X < 0)[0]
        raise ReadoutError(
            f"{path}: row {idx[i] + 2}, column {block.columns[j]}: negative count {X[i, j]:g}; "
            f"{mod} counts must be >= 0"
        )
    if is_counts(mod) and (X != np.round(X)).any():
        i, j = np.argwhere(X != np.round(X))[0]
        raise ReadoutError(
            f"{path}: row {idx[i] + 2}, column {block.columns[j]}: {X[i, j]:g} is not a whole count; "
            f"{mod} is scored with a count likelihood (give raw counts, not normalised values)"
        )
    return X


def well_key(well: object) -> str:
    """A well name in one spelling: ``A1``, ``A01`` and ``a01`` are all ``A01``; other names unchanged."""
    m = re.fullmatch(r"\s*([A-Za-z]{1,2})0*(\d{1,3})\s*", str(well))
    return f"{m.group(1).upper()}{int(m.group(2)):02d}" if m else str(well).strip()


def _check_meta(row: dict, q: object, space: object, where: str) -> None:
    """Metadata given in the readout must agree with the layout's query."""
    if keys.QUERY_ID in row and _text(row[keys.QUERY_ID]) and _text(row[keys.QUERY_ID]) != q.query_id:
        raise ReadoutError(
            f"{where}, column query_id: {row[keys.QUERY_ID]!r} does not match the proposal ({q.query_id})"
        )
    if keys.PERTURBATION in row or keys.DOSE_VALUE in row:
        label = _text(row.get(keys.PERTURBATION)) or q.perturbation.label
        try:
            p = Perturbation.parse(label, _text(row.get(keys.DOSE_VALUE)) or q.perturbation.dose_label)
        except ValueError as exc:
            raise ReadoutError(f"{where}, column perturbation/dose_value: {exc}") from None
        if p.targets != q.perturbation.targets or not np.allclose(p.doses, q.perturbation.doses, rtol=1e-6):
            raise ReadoutError(
                f"{where}: perturbation {p.label} @ {p.dose_label} does not match the layout "
                f"({q.perturbation.label} @ {q.perturbation.dose_label})"
            )
    if keys.DOSE_UNIT in row and _text(row[keys.DOSE_UNIT]):
        want = keys.COMBO_SEP.join(space.target(t).dose_unit for t in q.perturbation.targets)
        if _text(row[keys.DOSE_UNIT]) != want:
            raise ReadoutError(f"{where}, column dose_unit: {row[keys.DOSE_UNIT]!r}; the proposal uses {want!r}")
    if _text(row.get(keys.TIME)):
        try:
            t = float(row[keys.TIME])
        except (TypeError, ValueError):
            t = float("nan")
        if not np.isfinite(t) or abs(t - q.time_h) > 1e-6:
            raise ReadoutError(f"{where}, column time: {row[keys.TIME]!r} h; the proposal says {q.time_h:g} h")
    for col, want in ((keys.CELL_LINE, q.context.cell_line), (keys.SITE, q.context.site), (keys.ASSAY, q.assay)):
        if col in row and _text(row[col]) and _text(row[col]) != want:
            raise ReadoutError(f"{where}, column {col}: {row[col]!r}; the proposal says {want!r}")


def _shown(v: object) -> str:
    """A bad cell value as a user would write it (``nan``, ``inf``, ``'abc'``)."""
    return repr(v) if isinstance(v, str) else str(float(v)) if isinstance(v, int | float) else repr(v)


def _text(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v).strip()


def _int(v: object, where: str, col: str) -> int:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not np.isfinite(x) or x != int(x) or x < 0:
        raise ReadoutError(f"{where}, column {col}: {v!r} is not a non-negative integer")
    return int(x)


def readout_table(batch: MeasurementBatch) -> pd.DataFrame:
    """A batch as a readout table in the format :func:`ingest` reads (one row per unit).

    Useful to turn simulated measurements of a plate layout into the file a lab would return.
    """
    frames = []
    for mod, m in batch.modalities.items():
        meta = m.obs[[keys.PLATE, keys.WELL, keys.QUERY_ID, keys.REPLICATE, keys.UNIT]].copy()
        meta[keys.MODALITY] = mod
        frames.append(pd.concat([meta, pd.DataFrame(m.X, columns=list(m.var_names))], axis=1))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m loop.ingest", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder whose pending round the readout answers")
    p.add_argument("readout", help="readout file (.csv or .parquet)")
    p.add_argument("--allow-missing", action="store_true", help="accept a readout that lacks some wells")
    args = p.parse_args(argv)
    try:
        shard = ingest(args.run, args.readout, args.allow_missing)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ingested {args.readout} into {shard}; continue with: python -m loop.run --resume {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
