"""Plate layouts: put a round's queries onto 96- or 384-well plates.

The layout follows the plate-design practice of PLAID: positions are
randomised (seeded), replicates of one query go to different plates (when the
round needs more than one) and to different positions, negative and positive
controls sit on every plate, spread over it in a stratified way (one control
per tile of a coarse grid over the usable wells, so they are never clumped),
the outer edge (where evaporation shifts readouts) is left empty, filled with
buffer negatives, or used, and one context (cell line + site) goes on each
plate where the plate budget allows.

Tissue-scale assays (spatial patches) are not plated: :func:`layout_plates`
skips them and lists them in :attr:`PlateLayout.unplated`.

The result is a :class:`PlateLayout`, a table with one row per well (every
well of every plate, empty ones included). Its :meth:`PlateLayout.to_layout_mapping`
is the ``{(query_id, replicate): (plate, well)}`` mapping that
``Oracle.measure(queries, layout=...)`` accepts; control wells are real
queries too (:meth:`PlateLayout.control_queries`), so the loop can measure them.
Writers (CSV, wellmap TOML, PNG) are in :mod:`experiment_design.plate_io`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from experiment_design import keys
from experiment_design.perturbation import Perturbation
from experiment_design.plate_format import EDGE_POLICIES, LayoutConfig, PlateFormat
from experiment_design.plate_io import read_plates, write_plates
from experiment_design.plate_layout import (
    CONTROL_ROLES,
    EMPTY,
    NEGATIVE,
    POSITIVE,
    ROLES,
    SAMPLE,
    TABLE_COLUMNS,
    PlateLayout,
    empty_metadata,
    query_metadata,
)
from experiment_design.query import Query
from experiment_design.space import DesignSpace

__all__ = [
    "EDGE_POLICIES",
    "TABLE_COLUMNS",
    "ROLES",
    "LayoutConfig",
    "PlateFormat",
    "PlateLayout",
    "default_positive",
    "layout_plates",
    "read_plates",
    "spread_wells",
    "write_plates",
]

#: A positive control: one perturbation for every plate, or a choice per context.
PositiveControl = Perturbation | Callable[..., Perturbation]


def default_positive(queries: Sequence[Query]) -> Perturbation:
    """The documented default positive control: the batch's strongest single perturbation.

    Among the batch's single-target perturbations (all perturbed ones if there
    is no single), the one with the highest dose (in its own unit; ties broken
    by label). A perturbation the round already asks for is sure to be valid
    in the design space and gives a large, known-direction effect.

    Raises:
        ValueError: If no query in the batch is perturbed.

    """
    perturbed = [q.perturbation for q in queries if not q.perturbation.is_control]
    if not perturbed:
        raise ValueError(
            "positive control: none given and the batch has no perturbed query to borrow one from; "
            "pass positive=Perturbation(...) or set LayoutConfig(n_positive=0)"
        )
    singles = [p for p in perturbed if p.order == 1] or perturbed
    return max(singles, key=lambda p: (max(p.doses), p.label))


def layout_plates(
    queries: Sequence[Query],
    config: LayoutConfig,
    rng: np.random.Generator,
    *,
    negative: Perturbation | None = None,
    positive: PositiveControl | None = None,
    space: DesignSpace | None = None,
    round_index: int = 0,
) -> PlateLayout:
    """Lay out a round of queries on plates.

    Steps: expand replicates into specimens; choose the plates (the fewest
    that hold every specimen, one context per plate when that fits in
    ``config.max_plates``, else contexts packed together in name order); send
    each replicate of a query to the plate of that context where the query has
    the fewest replicates so far (so replicates spread over plates); on each
    plate put the controls one per tile of a coarse grid over the usable wells,
    then the samples on a random permutation of the free usable wells, never
    on a well another replicate of the same query holds on another plate
    (while any other well is free).

    Controls take the time and assay of the plate's samples (round robin over
    the plate's (context, time, assay) groups, largest first), so each control
    is a real :class:`Query` the oracle can measure.

    Args:
        queries: The round's queries; duplicates of one condition are merged
            (replicates added).
        config: Plate size, control counts, edge policy, plate budget.
        rng: Source of every random choice (positions, tie-breaks).
        negative: Negative-control perturbation (vehicle / non-targeting);
            default the empty perturbation (``"control"``).
        positive: Positive-control perturbation, or a callable
            ``context -> Perturbation`` choosing one per context; default
            :func:`default_positive` of the batch. Ignored when
            ``config.n_positive`` is 0.
        space: The design space, for dose units and assay scales; without it
            tissue assays are recognised by the default catalogue's names and
            dose units are left empty.
        round_index: Round number, used in plate names ``"R0003-P01"``.

    Returns:
        The layout, one row per well of every plate.

    Raises:
        ValueError: Naming the failed constraint: no queries, a query with
            fewer than one replicate, a positive control that is the negative
            one, controls that do not fit the usable wells, or more specimens
            than ``config.max_plates`` plates hold.

    """
    queries = list(queries)
    if not queries:
        raise ValueError("layout_plates: no queries to lay out")
    for q in queries:
        if q.replicates < 1:
            raise ValueError(
                f"layout_plates: query {q.query_id} ({q.perturbation.label}) has {q.replicates} replicates; need >= 1"
            )
    negative = Perturbation.control() if negative is None else negative
    fmt = config.plate_format
    merged = _merge(queries)
    tissue = config.tissue_assays_of(space)
    plated = [q for q in merged if q.assay not in tissue]
    unplated = tuple(q for q in merged if q.assay in tissue)
    if not plated:
        return PlateLayout(pd.DataFrame(columns=list(TABLE_COLUMNS)), fmt, round_index, unplated)

    usable = fmt.usable_wells(config.edge)
    n_ctrl = config.n_negative + config.n_positive
    where = f"{fmt.n_wells}-well plate, edge={config.edge!r}: {len(usable)} usable wells"
    if n_ctrl > len(usable):
        raise ValueError(
            f"controls do not fit: {config.n_negative} negative + {config.n_positive} positive controls "
            f"per plate > {where}; lower n_negative / n_positive or use edge='use'"
        )
    capacity = len(usable) - n_ctrl
    if capacity == 0:
        raise ValueError(f"no wells left for samples: the {n_ctrl} controls per plate fill the {where}")
    pos_of = _positive_chooser(positive, plated, negative, config.n_positive)

    quotas = _plate_quotas(plated, config, capacity)
    assignment = _assign_to_plates(plated, quotas, rng)
    rows: list[dict] = []
    used_wells: dict[str, set[str]] = {}
    for p, specimens in enumerate(assignment):
        name = f"R{round_index:04d}-P{p + 1:02d}"
        rows.extend(_fill_plate(name, specimens, fmt, config, usable, rng, negative, pos_of, used_wells, space))
    _number_controls(rows, plated)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table[keys.REPLICATE] = pd.array(table[keys.REPLICATE], dtype="Int64")
    return PlateLayout(table, fmt, round_index, unplated)


# ----------------------------------------------------------------- helpers
def _merge(queries: list[Query]) -> list[Query]:
    """One query per condition (first-seen order), replicates added up."""
    out: dict[str, Query] = {}
    for q in queries:
        prev = out.get(q.query_id)
        out[q.query_id] = q if prev is None else prev.with_replicates(prev.replicates + q.replicates)
    return list(out.values())


def _positive_chooser(positive, plated, negative, n_positive) -> Callable[..., Perturbation]:  # noqa: ANN001
    """``context -> Perturbation`` for the positive controls (validated)."""
    if n_positive == 0:
        return lambda context: negative
    if positive is None:
        fixed = default_positive(plated)
        choose = lambda context: fixed  # noqa: E731
    elif isinstance(positive, Perturbation):
        choose = lambda context: positive  # noqa: E731
    else:
        choose = positive
    for ctx in dict.fromkeys(q.context for q in plated):
        p = choose(ctx)
        if not isinstance(p, Perturbation):
            raise ValueError(f"positive control for {ctx.cell_line}/{ctx.site} is {p!r}, not a Perturbation")
        if p == negative:
            raise ValueError(
                f"positive control for {ctx.cell_line}/{ctx.site} is the negative control ({p.label}); "
                "a positive control must be a perturbation with a known effect"
            )
    return choose


def _plate_quotas(plated: list[Query], config: LayoutConfig, capacity: int) -> list[dict]:
    """Per plate, how many specimens of each context it takes.

    One context per plate when the plate budget allows it; otherwise the
    fewest plates, with contexts packed in name order (each plate then holds
    one or two contexts); with ``one_context_per_plate=False`` every context
    is spread evenly over all plates (so context is not confounded with plate).
    """
    counts: dict = {}
    for q in plated:
        counts[q.context] = counts.get(q.context, 0) + q.replicates
    contexts = sorted(counts, key=lambda c: (c.cell_line, c.site))
    total = sum(counts.values())
    n_min = math.ceil(total / capacity)
    limit = config.max_plates if config.max_plates is not None else math.inf
    if n_min > limit:
        raise ValueError(
            f"too many specimens for max_plates: {total} specimens need {n_min} plates of {capacity} sample wells "
            f"({config.plate_format.n_wells}-well, edge={config.edge!r}, {config.n_negative} negative + "
            f"{config.n_positive} positive controls per plate) but max_plates={config.max_plates}"
        )
    per_context = {c: math.ceil(counts[c] / capacity) for c in contexts}
    if config.one_context_per_plate and sum(per_context.values()) <= limit:
        quotas = []
        for c in contexts:
            for share in _even_split(counts[c], per_context[c]):
                quotas.append({c: share})
        return quotas
    sizes = _even_split(total, n_min)
    if config.one_context_per_plate:
        quotas = [dict() for _ in sizes]
        p, room = 0, sizes[0]
        for c in contexts:
            left = counts[c]
            while left:
                take = min(left, room)
                quotas[p][c] = quotas[p].get(c, 0) + take
                left, room = left - take, room - take
                if room == 0 and p + 1 < len(sizes):
                    p, room = p + 1, sizes[p + 1]
        return quotas
    # Mixed: spread each context evenly, rotating who gets the remainder.
    quotas = [dict() for _ in range(n_min)]
    start = 0
    for c in contexts:
        for k, share in enumerate(_even_split(counts[c], n_min)):
            if share:
                quotas[(start + k) % n_min][c] = share
        start += counts[c] % n_min
    # Rotation may push a plate over capacity; move the excess to plates with room.
    for qd in quotas:
        while sum(qd.values()) > capacity:
            c = max(qd, key=qd.get)
            dest = min(quotas, key=lambda d: sum(d.values()))
            qd[c] -= 1
            dest[c] = dest.get(c, 0) + 1
    return quotas


def _even_split(n: int, k: int) -> list[int]:
    """``n`` items into ``k`` parts whose sizes differ by at most one."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _assign_to_plates(plated: list[Query], quotas: list[dict], rng: np.random.Generator) -> list[list[tuple]]:
    """Send every specimen ``(query, replicate)`` to a plate, spreading replicates."""
    room = [dict(q) for q in quotas]
    out: list[list[tuple]] = [[] for _ in quotas]
    # Most-replicated first: they need the most plates to spread over.
    order = sorted(range(len(plated)), key=lambda i: (-plated[i].replicates, i))
    for i in order:
        q = plated[i]
        on_plate = np.zeros(len(quotas), dtype=int)
        for r in range(q.replicates):
            open_ = [p for p in range(len(quotas)) if room[p].get(q.context, 0) > 0]
            jitter = rng.random(len(open_))
            best = min(range(len(open_)), key=lambda j: (on_plate[open_[j]], -room[open_[j]][q.context], jitter[j]))
            p = open_[best]
            room[p][q.context] -= 1
            on_plate[p] += 1
            out[p].append((q, r))
    return out


def _tiles(n: int, n_rows: int, n_cols: int) -> tuple[int, int]:
    """A grid of at least ``n`` tiles over ``n_rows x n_cols`` wells, tiles as square as possible."""
    best = None
    for gr in range(1, n_rows + 1):
        gc = math.ceil(n / gr)
        if gc > n_cols:
            continue
        score = (gr * gc - n, abs(math.log((n_rows / gr) / (n_cols / gc))))
        if best is None or score < best[0]:
            best = (score, gr, gc)
    return best[1], best[2]


def spread_wells(n: int, wells: Sequence[tuple[int, int]], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Choose ``n`` wells spread over a rectangle of ``(row, column)`` positions.

    Stratified: the rectangle is cut into a grid of at least ``n`` near-square
    tiles and ``n`` distinct tiles are drawn at random; in each (in random
    order) a random well is drawn among those whose row and column hold the
    fewest wells chosen so far, so the chosen wells also spread over rows and
    columns (row / column gradients do not hit all of them alike).

    Args:
        n: Number of wells, at most ``len(wells)``.
        wells: Candidate ``(row, column)`` indices (0-based), a full rectangle.
        rng: Source of randomness.

    Returns:
        ``n`` distinct wells, in random order.

    """
    if n == 0:
        return []
    r0, r1 = min(w[0] for w in wells), max(w[0] for w in wells)
    c0, c1 = min(w[1] for w in wells), max(w[1] for w in wells)
    nr, nc = r1 - r0 + 1, c1 - c0 + 1
    gr, gc = _tiles(n, nr, nc)
    by_tile: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in wells:
        by_tile.setdefault(((r - r0) * gr // nr, (c - c0) * gc // nc), []).append((r, c))
    names = sorted(by_tile)
    rows: dict[int, int] = {}
    cols: dict[int, int] = {}
    out = []
    for t in rng.choice(len(names), size=n, replace=False):
        cand = by_tile[names[int(t)]]
        score = np.array([rows.get(r, 0) + cols.get(c, 0) for r, c in cand])
        best = np.flatnonzero(score == score.min())
        r, c = cand[int(best[rng.integers(len(best))])]
        rows[r] = rows.get(r, 0) + 1
        cols[c] = cols.get(c, 0) + 1
        out.append((r, c))
    return out


def _fill_plate(name, specimens, fmt, config, usable, rng, negative, pos_of, used_wells, space) -> list[dict]:  # noqa: ANN001
    """Rows of one plate: controls spread, samples randomised, the rest empty or buffer."""
    groups: dict[tuple, int] = {}
    for q, _ in specimens:
        key = (q.context, q.time_h, q.assay)
        groups[key] = groups.get(key, 0) + 1
    group_order = sorted(groups, key=lambda k: (-groups[k], k[0].cell_line, k[0].site, k[1], k[2]))

    def control(pert: Perturbation | None, i: int) -> Query:
        ctx, time_h, assay = group_order[i % len(group_order)]
        return Query(pos_of(ctx) if pert is None else pert, time_h, ctx, assay)

    placed: dict[tuple[int, int], tuple[str, Query, int | None]] = {}
    for i, pos in enumerate(spread_wells(config.n_negative + config.n_positive, usable, rng)):
        if i < config.n_positive:
            placed[pos] = (POSITIVE, control(None, i), None)
        else:
            placed[pos] = (NEGATIVE, control(negative, i - config.n_positive), None)
    free = [usable[i] for i in rng.permutation(len(usable)) if usable[i] not in placed]
    for q, r in specimens:
        # Another replicate of this query on another plate holds the same well: take the next free one.
        taken = used_wells.setdefault(q.query_id, set())
        k = next((j for j, pos in enumerate(free) if fmt.well_name(*pos) not in taken), 0)
        pos = free.pop(k)
        taken.add(fmt.well_name(*pos))
        placed[pos] = (SAMPLE, q, r)
    if config.edge == "controls":
        for i, pos in enumerate(fmt.edge_wells()):
            placed[pos] = (NEGATIVE, control(negative, i), None)
    rows = []
    for r, c in fmt.positions():
        item = placed.get((r, c))
        if item is None:
            rows.append(fmt.row_record(name, r, c) | {"role": EMPTY} | empty_metadata())
        else:
            role, q, rep = item
            meta = {"role": role, keys.QUERY_ID: q.query_id, keys.REPLICATE: rep}
            rows.append(fmt.row_record(name, r, c) | meta | query_metadata(q, space))
    return rows


def _number_controls(rows: list[dict], plated: list[Query]) -> None:
    """Number control replicates per condition, after the condition's own sample replicates."""
    offset = {q.query_id: q.replicates for q in plated}
    seen: dict[str, int] = {}
    for row in rows:
        if row["role"] in CONTROL_ROLES:
            qid = row[keys.QUERY_ID]
            row[keys.REPLICATE] = offset.get(qid, 0) + seen.get(qid, 0)
            seen[qid] = seen.get(qid, 0) + 1
