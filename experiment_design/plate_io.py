"""Plate files: per plate a CSV, a wellmap TOML layout and a PNG map; and reading them back.

A round's plates go to ``<run>/plates/round-NNNN/plate-NN.{csv,toml,png}``
(``NN`` counts plates from 1 in layout order). Every file is written
atomically: a temporary name in the same folder, flush, fsync, rename.

* CSV: the layout table (:data:`~experiment_design.plate_layout.TABLE_COLUMNS`),
  one row per well; empty wells have empty metadata.
* TOML: a `wellmap <https://wellmap.readthedocs.io>`_ layout with one
  ``[plate.'<name>'.well]`` table holding every well's ``role``, ``edge``,
  ``query_id``, ``replicate`` and query metadata; ``wellmap.load(path)`` reads
  it, :func:`read_wellmap` turns that back into the plate table.
* PNG: a map of the plate, wells coloured by perturbation, controls marked
  ``N`` / ``P``, empty wells hollow (matplotlib, Agg backend, imported only here).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import keys
from experiment_design.plate_layout import (
    _STRING_META,
    EMPTY,
    META_COLUMNS,
    NEGATIVE,
    POSITIVE,
    SAMPLE,
    TABLE_COLUMNS,
    PlateLayout,
)

#: Per-well keys written to the wellmap TOML (wellmap supplies the position columns).
_TOML_KEYS = ("role", "edge", keys.QUERY_ID, keys.REPLICATE, *META_COLUMNS)


def round_dir(run_dir: str | Path, round_index: int) -> Path:
    """``<run_dir>/plates/round-NNNN``."""
    return Path(run_dir) / "plates" / f"round-{int(round_index):04d}"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp name in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_plates(layout: PlateLayout, out_dir: str | Path, round_index: int | None = None) -> list[Path]:
    """Write every plate's CSV, wellmap TOML and PNG map.

    Args:
        layout: The layout.
        out_dir: The run folder; files go to ``out_dir/plates/round-NNNN/``.
        round_index: Round number; default (and it must agree with)
            ``layout.round_index``.

    Returns:
        The paths written, per plate CSV, TOML, PNG.

    Raises:
        ValueError: If ``round_index`` differs from the layout's round.

    """
    if round_index is None:
        round_index = layout.round_index
    if int(round_index) != layout.round_index:
        raise ValueError(f"write_plates: round_index {round_index} but the layout is of round {layout.round_index}")
    folder = round_dir(out_dir, round_index)
    written = []
    for i, name in enumerate(layout.plates, start=1):
        plate = layout.plate(name)
        stem = folder / f"plate-{i:02d}"
        atomic_write_bytes(stem.with_suffix(".csv"), plate.to_csv(index=False).encode())
        atomic_write_bytes(stem.with_suffix(".toml"), plate_toml(plate).encode())
        atomic_write_bytes(
            stem.with_suffix(".png"), plate_png(plate, layout.plate_format.n_rows, layout.plate_format.n_cols)
        )
        written += [stem.with_suffix(s) for s in (".csv", ".toml", ".png")]
    return written


# ------------------------------------------------------------------ CSV
def read_plate_csv(path: str | Path) -> pd.DataFrame:
    """Read one plate CSV back to the plate table (same dtypes as the layout's).

    Raises:
        ValueError: If a column is missing (naming the file).

    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: plate CSV lacks columns {missing}; expected {list(TABLE_COLUMNS)}")
    return _typed(df[list(TABLE_COLUMNS)])


def read_plates(run_dir: str | Path, round_index: int) -> PlateLayout:
    """The layout of a round, rebuilt from its plate CSVs.

    Raises:
        ValueError: If the round has no plate CSV, or a CSV is malformed.

    """
    folder = round_dir(run_dir, round_index)
    paths = sorted(folder.glob("plate-*.csv"))
    if not paths:
        raise ValueError(f"{folder}: no plate-NN.csv files")
    return PlateLayout.from_table(pd.concat([read_plate_csv(p) for p in paths], ignore_index=True), round_index)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a string-read plate table to the layout's dtypes."""
    out = df.copy()
    out["column"] = out["column"].astype(int)
    out["edge"] = out["edge"].map(lambda v: str(v).strip().lower() in ("true", "1"))
    out[keys.TIME] = pd.to_numeric(out[keys.TIME].replace("", np.nan)).astype(float)
    rep = pd.to_numeric(out[keys.REPLICATE].replace("", np.nan))
    out[keys.REPLICATE] = pd.array(rep.round().astype("Float64"), dtype="Int64")
    return out.reset_index(drop=True)


# ------------------------------------------------------------------ TOML
def _toml_value(v: object) -> str:
    """One TOML value (strings JSON-escaped, which TOML basic strings accept)."""
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        x = float(v)
        if math.isnan(x):
            return "nan"
        return ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)
    return json.dumps(str(v), ensure_ascii=False)


def plate_toml(plate: pd.DataFrame) -> str:
    """The wellmap TOML of one plate's table (empty wells omit time and replicate)."""
    name = str(plate[keys.PLATE].iloc[0])
    lines = [
        f"# cslab plate {name}: read with wellmap.load(path); one entry per well.",
        f"[plate.{json.dumps(name)}.well]",
    ]
    for row in plate.to_dict("records"):
        items = []
        for k in _TOML_KEYS:
            v = row[k]
            if v is pd.NA or v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            items.append(f"{k} = {_toml_value(v)}")
        lines.append(f"{row[keys.WELL]} = {{{', '.join(items)}}}")
    return "\n".join(lines) + "\n"


def read_wellmap(path: str | Path) -> pd.DataFrame:
    """Load a plate TOML with ``wellmap.load`` and return it as the plate table."""
    import wellmap

    df = wellmap.load(str(path))
    out = pd.DataFrame(
        {
            keys.PLATE: df["plate"].astype(str),
            keys.WELL: df["well0"].astype(str),
            "row": df["row"].astype(str),
            "column": df["col_j"].astype(int) + 1,
        }
    )
    for k in _TOML_KEYS:
        out[k] = df[k] if k in df.columns else np.nan
    for c in (*_STRING_META, keys.QUERY_ID, "role"):
        out[c] = out[c].fillna("").astype(str)
    out["edge"] = out["edge"].astype(bool)
    out[keys.TIME] = out[keys.TIME].astype(float)
    out[keys.REPLICATE] = pd.array(out[keys.REPLICATE].astype("Float64").round(), dtype="Int64")
    key = out["row"].map(lambda r: ord(r) - ord("A")) * 1000 + out["column"]
    return out.assign(_k=key).sort_values("_k").drop(columns="_k")[list(TABLE_COLUMNS)].reset_index(drop=True)


# ------------------------------------------------------------------ PNG
def _short_dose(dose_label: str) -> str:
    """``"0.0316+1"`` from ``"0.031622776+1.0"`` (3 significant digits)."""
    try:
        return "+".join(f"{float(d):.3g}" for d in dose_label.split(keys.COMBO_SEP))
    except ValueError:
        return dose_label


def plate_png(plate: pd.DataFrame, n_rows: int, n_cols: int) -> bytes:
    """A PNG map of one plate: wells coloured by perturbation, controls marked, edge ring drawn.

    Args:
        plate: One plate's table.
        n_rows: Rows of the plate (8 or 16).
        n_cols: Columns of the plate (12 or 24).

    Returns:
        PNG bytes.

    """
    # The Agg canvas directly: no pyplot, so a caller's interactive backend is left alone.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, Patch, Rectangle

    big = n_rows > 8
    labels = sorted(set(plate.loc[plate["role"] == SAMPLE, keys.PERTURBATION]))
    cmap = colormaps["tab20"]
    colour = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    fig = Figure(figsize=(16, 10) if big else (11, 7.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    fs = 4.0 if big else 6.5
    for row in plate.to_dict("records"):
        r, c = ord(row["row"]) - ord("A"), int(row["column"]) - 1
        role = row["role"]
        face = {EMPTY: "white", NEGATIVE: "#d9d9d9", POSITIVE: "#404040"}.get(role) or colour[row[keys.PERTURBATION]]
        ax.add_patch(
            Circle(
                (c, r),
                0.44,
                facecolor=face,
                edgecolor="#999999" if role == EMPTY else "black",
                linewidth=0.5,
                linestyle=":" if role == EMPTY else "-",
            )
        )
        if role == SAMPLE:
            pert = row[keys.PERTURBATION]
            if big:
                text = pert[:6]
            else:
                name = pert.replace(keys.COMBO_SEP, keys.COMBO_SEP + "\n") if len(pert) > 9 else pert
                text = f"{name}\n{_short_dose(row[keys.DOSE_VALUE])}"
            ax.text(c, r, text, ha="center", va="center", fontsize=fs)
        elif role in (NEGATIVE, POSITIVE):
            ax.text(
                c,
                r,
                "N" if role == NEGATIVE else "P",
                ha="center",
                va="center",
                fontsize=fs + 2,
                color="black" if role == NEGATIVE else "white",
                fontweight="bold",
            )
    ax.add_patch(
        Rectangle((0.5, 0.5), n_cols - 2, n_rows - 2, fill=False, linestyle="--", linewidth=0.8, edgecolor="#1f77b4")
    )
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(n_rows - 0.4, -0.6)
    ax.set_aspect("equal")
    ax.set_xticks(range(n_cols), [str(c + 1) for c in range(n_cols)], fontsize=fs + 1)
    ax.set_yticks(range(n_rows), [chr(ord("A") + r) for r in range(n_rows)], fontsize=fs + 1)
    ax.xaxis.tick_top()
    filled = plate[plate["role"] != EMPTY]
    contexts = ", ".join(sorted(set(filled[keys.CELL_LINE] + "/" + filled[keys.SITE])))
    assays = ", ".join(sorted(set(filled[keys.ASSAY])))
    ax.set_title(f"{plate[keys.PLATE].iloc[0]}   {contexts}   {assays}", fontsize=10, pad=18)
    handles = [Patch(facecolor=colour[lab], edgecolor="black", label=lab) for lab in labels[:30]]
    handles += [
        Patch(facecolor="#d9d9d9", edgecolor="black", label="N: negative control"),
        Patch(facecolor="#404040", edgecolor="black", label="P: positive control"),
        Patch(facecolor="white", edgecolor="#999999", linestyle=":", label="empty"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
