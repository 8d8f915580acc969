"""Plate positions of specimens: from a layout, or chosen by the oracle.

Wells are written ``"B07"`` (row letters, 1-based column). Without a layout
the oracle draws a plate ``"SIM00".."SIMnn"`` and a well from the
(query, replicate) generator, so positions are reproducible and order-free
(two specimens may then share a well; pass a layout to avoid that).
"""

from __future__ import annotations

import re

import numpy as np

from experiment_design import Query
from simulators.base import Layout, query_rng

_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")
#: Standard plate formats (rows, columns), smallest first.
FORMATS = ((8, 12), (16, 24), (32, 48))


def parse_well(well: str) -> tuple[int, int]:
    """``"B07"`` → ``(1, 6)``: 0-based row and column.

    Raises:
        ValueError: If the well is not letters followed by a number >= 1.

    """
    m = _WELL.match(str(well).strip())
    if not m or int(m.group(2)) < 1:
        raise ValueError(f"well {well!r} is not a well name like 'B07'")
    letters = m.group(1).upper()
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - ord("A") + 1)
    return row - 1, int(m.group(2)) - 1


def well_name(row: int, col: int) -> str:
    """``(1, 6)`` → ``"B07"``."""
    return f"{chr(ord('A') + row)}{col + 1:02d}"


def plate_formats(layout: Layout) -> dict[str, tuple[int, int]]:
    """Smallest standard format holding every well used on each plate of a layout.

    Raises:
        ValueError: If a plate uses a well outside a 1536-well plate.

    """
    extent: dict[str, tuple[int, int]] = {}
    for plate, well in layout.values():
        r, c = parse_well(well)
        r0, c0 = extent.get(plate, (0, 0))
        extent[plate] = (max(r0, r), max(c0, c))
    out = {}
    for plate, (r, c) in extent.items():
        fmt = next((f for f in FORMATS if r < f[0] and c < f[1]), None)
        if fmt is None:
            raise ValueError(f"plate {plate!r}: well beyond row {r + 1} / column {c + 1} fits no standard plate")
        out[plate] = fmt
    return out


def place(
    query: Query, replicate: int, seed: int, layout: Layout | None, n_plates: int, fmt: tuple[int, int]
) -> tuple[str, str]:
    """Plate and well of one specimen.

    Args:
        query: The query.
        replicate: Replicate index.
        seed: World seed.
        layout: Optional ``{(query_id, replicate): (plate, well)}``.
        n_plates: Plates the oracle spreads specimens over without a layout.
        fmt: ``(rows, columns)`` of the oracle's own plates.

    Raises:
        ValueError: If a layout is given but lacks this specimen.

    """
    if layout is not None:
        key = (query.query_id, replicate)
        if key not in layout:
            raise ValueError(f"layout has no position for query {query.query_id} replicate {replicate}")
        plate, well = layout[key]
        return str(plate), str(well)
    rng = query_rng(seed, query.query_id, replicate, "layout")
    plate = f"SIM{int(rng.integers(n_plates)):02d}"
    return plate, well_name(int(rng.integers(fmt[0])), int(rng.integers(fmt[1])))


def position_features(well: str, fmt: tuple[int, int]) -> tuple[float, float, bool]:
    """Row and column scaled to [−1, 1] and whether the well is on the plate edge."""
    r, c = parse_well(well)
    rows, cols = fmt
    if r >= rows or c >= cols:
        raise ValueError(f"well {well!r} lies outside a {rows}x{cols} plate")
    edge = r in (0, rows - 1) or c in (0, cols - 1)
    return 2.0 * r / max(rows - 1, 1) - 1.0, 2.0 * c / max(cols - 1, 1) - 1.0, edge


def plate_offset(seed: int, plate: str, sd: float, n_features: int) -> np.ndarray:
    """A plate's morphology offset, fixed by the world seed and the plate name, ``(F,)``."""
    return query_rng(seed, f"plate:{plate}", 0, "morphology").normal(0.0, sd, size=n_features)
