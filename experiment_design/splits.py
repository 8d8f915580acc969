"""Leakage-resistant splits over queries or measured batches.

Every splitter holds out one *axis* of generalisation and defines leakage by a
:class:`HoldOut` rule: ``rule.is_test(q)`` says a query belongs to the test
side, ``rule.blocks(q)`` that it must never be trained on (every test query is
blocked; strict modes block more). Queries that are blocked but not test are
dropped. By construction no train query is blocked, which the property tests
check for random designs. The rules are built by :func:`context_rule`,
:func:`combination_rule` and :func:`condition_rule` (joined by :func:`any_of`),
the same constructors the loop's stress sets use
(:func:`experiment_design.stress.stress_rule`).

Axes and their leakage definitions:

* ``combination``: held-out target sets (order ≥ 2) never appear in train, at
  any dose; ``strict`` also keeps every other combination that shares a
  component with a held-out one out of train (the singles stay).
* ``dose``: per target, a band of log10 doses (``interpolation``) or the doses
  above a cut (``extrapolation``) is never trained on, alone or in a combination.
* ``time``: time points after a cut-off are never trained on.
* ``target``: held-out targets never appear in train; targets whose similarity
  to a held-out target reaches ``threshold`` are held out too (clusters of the
  similarity graph, in the spirit of DataSAIL).
* ``cell_line`` / ``site``: held-out contexts never appear in train.

A :class:`MeasurementBatch` is split through :func:`split_batch`: its obs are
turned back into queries (one per ``query_id``), and a specimen whose rows
would straddle the sides is dropped from train, so cells, wells and spots of
one specimen never straddle a split.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiment_design import keys
from experiment_design.contexts import Context
from experiment_design.measurement import MeasurementBatch
from experiment_design.perturbation import Perturbation
from experiment_design.query import Query
from experiment_design.targets import TargetKind


@dataclass(frozen=True)
class HoldOut:
    """The leakage rule of a split.

    Attributes:
        axis: ``"combination"``, ``"dose"``, ``"time"``, ``"target"``,
            ``"cell_line"`` or ``"site"``.
        is_test: Query → whether it is held out for testing.
        blocks: Query → whether training on it would leak into the test side.

    """

    axis: str
    is_test: Callable[[Query], bool]
    blocks: Callable[[Query], bool]


@dataclass(frozen=True)
class Split:
    """A train / test split of a list of queries.

    Attributes:
        axis: The held-out axis.
        train: Positions (into the split's input list) of training queries.
        test: Positions of test queries.
        dropped: Positions of queries neither trained nor tested on.
        train_ids: Query ids of :attr:`train` (distinct, in order).
        test_ids: Query ids of :attr:`test`.
        rule: The :class:`HoldOut` rule; use ``rule.blocks`` to keep new
            queries (e.g. an acquisition pool) out of training.
        report: Train–test similarity and coverage numbers (floats / ints),
            e.g. ``n_train``, ``n_test``, ``similarity``, ``coverage``.

    """

    axis: str
    train: tuple[int, ...]
    test: tuple[int, ...]
    dropped: tuple[int, ...]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    rule: HoldOut
    report: dict = field(default_factory=dict)


def _ids(queries: Sequence[Query], idx: Sequence[int]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(queries[i].query_id for i in idx))


def apply_rule(queries: Sequence[Query], rule: HoldOut, report: dict | None = None) -> Split:
    """Split ``queries`` by ``rule`` (test first, then blocked → dropped, else train)."""
    train, test, dropped = [], [], []
    for i, q in enumerate(queries):
        if rule.is_test(q):
            test.append(i)
        elif rule.blocks(q):
            dropped.append(i)
        else:
            train.append(i)
    rep = {"n_train": len(train), "n_test": len(test), "n_dropped": len(dropped), **(report or {})}
    return Split(
        rule.axis, tuple(train), tuple(test), tuple(dropped), _ids(queries, train), _ids(queries, test), rule, rep
    )


def any_of(axis: str, *rules: HoldOut) -> HoldOut:
    """The union of rules: a query is test (blocked) when any rule says so."""
    return HoldOut(axis, lambda q: any(r.is_test(q) for r in rules), lambda q: any(r.blocks(q) for r in rules))


def context_rule(held: Iterable[str | Context], by: str = "context") -> HoldOut:
    """Whole contexts held out: a query in one is test and blocked.

    Args:
        held: Held-out values: :class:`Context` objects (``by = "context"``),
            or cell-line / site names.
        by: ``"context"``, ``"cell_line"`` or ``"site"``.

    """
    if by not in ("context", "cell_line", "site"):
        raise ValueError(f"context_rule: by must be 'context', 'cell_line' or 'site', got {by!r}")
    held = frozenset(held)

    def is_test(q: Query) -> bool:
        return (q.context if by == "context" else getattr(q.context, by)) in held

    return HoldOut(by, is_test, is_test)


def combination_rule(held: Iterable[Iterable[str]], strict: bool = False) -> HoldOut:
    """Target sets held out at any dose; ``strict`` also blocks combinations sharing a component.

    Args:
        held: Held-out target sets (order ≥ 2).
        strict: Block every combination sharing a target with a held-out one
            (single-target queries of the components stay trainable).

    """
    held = frozenset(frozenset(t) for t in held)
    parts = frozenset().union(*held)

    def is_test(q: Query) -> bool:
        return frozenset(q.perturbation.targets) in held

    def blocks(q: Query) -> bool:
        t = frozenset(q.perturbation.targets)
        return t in held or (strict and len(t) >= 2 and bool(t & parts))

    return HoldOut("combination", is_test, blocks)


def condition_rule(queries: Iterable[Query]) -> HoldOut:
    """Held-out queries: test by query id; blocked also when any assay repeats their condition.

    The condition is the perturbation (targets and doses), the time and the
    context; training on another assay of it would leak the held-out state.
    """
    queries = list(queries)
    ids = frozenset(q.query_id for q in queries)
    conds = frozenset((q.perturbation, q.time_h, q.context) for q in queries)
    return HoldOut(
        "condition",
        lambda q: q.query_id in ids,
        lambda q: q.query_id in ids or (q.perturbation, q.time_h, q.context) in conds,
    )


def _check(queries: Sequence[Query], frac: float, where: str) -> None:
    if not queries:
        raise ValueError(f"{where}: no queries to split")
    if not 0.0 < frac < 1.0:
        raise ValueError(f"{where}: frac must be in (0, 1), got {frac}")


# ----------------------------------------------------------------- combination
def split_combinations(
    queries: Sequence[Query], rng: np.random.Generator, *, frac: float = 0.2, strict: bool = False
) -> Split:
    """Hold out a fraction of the combinations (target sets of order ≥ 2).

    Args:
        queries: Queries to split.
        rng: Chooses the held-out combinations.
        frac: Fraction of the distinct combinations held out (at least one).
        strict: Also keep out of train every combination sharing a target with
            a held-out one (single-target queries of the components stay).

    Returns:
        A :class:`Split`; ``report["coverage"]`` is the fraction of held-out
        combinations whose every component is trained on as a single, and
        ``report["similarity"]`` the mean over held-out combinations of the
        largest Jaccard overlap with a trained combination.

    Raises:
        ValueError: If there are no queries or no combinations.

    """
    _check(queries, frac, "split_combinations")
    combos = sorted({frozenset(q.perturbation.targets) for q in queries if q.perturbation.order >= 2}, key=sorted)
    if not combos:
        raise ValueError("split_combinations: the queries contain no combination (order >= 2)")
    n = max(1, int(round(frac * len(combos))))
    held = frozenset(combos[i] for i in rng.choice(len(combos), size=n, replace=False))
    split = apply_rule(queries, combination_rule(held, strict))
    trained = [frozenset(queries[i].perturbation.targets) for i in split.train]
    singles = {next(iter(t)) for t in trained if len(t) == 1}
    train_combos = {t for t in trained if len(t) >= 2}
    cover = float(np.mean([all(x in singles for x in h) for h in held]))
    sim = float(np.mean([max((len(h & t) / len(h | t) for t in train_combos), default=0.0) for h in held]))
    split.report.update(n_held_out=len(held), coverage=cover, similarity=sim, strict=int(strict))
    return split


# ------------------------------------------------------------------------ dose
def _log_dose(d: float) -> float:
    return math.log10(max(d, 1e-12))


def split_doses(
    queries: Sequence[Query],
    rng: np.random.Generator,
    *,
    mode: str = "interpolation",
    width: float = 0.25,
) -> Split:
    """Hold out a band of doses per target (interpolation) or the top doses (extrapolation).

    Doses are placed on each target's observed log10 range among ``queries``
    (position ``u`` in [0, 1]). Interpolation holds out ``u`` in a band of
    ``width`` drawn strictly inside (0, 1); extrapolation holds out
    ``u > 1 − width``. A query is test (and blocked) if any of its targets has
    a dose in its held-out region.

    Args:
        queries: Queries to split.
        rng: Draws the band's position (interpolation).
        mode: ``"interpolation"`` or ``"extrapolation"``.
        width: Width of the held-out region on the ``u`` scale, in (0, 1).

    Returns:
        A :class:`Split`; ``report["similarity"]`` is the mean over test
        (target, dose) pairs of the log10 distance to the nearest trained dose
        of that target (lower means more similar), ``report["coverage"]`` the
        fraction of test targets with trained doses.

    Raises:
        ValueError: On an unknown mode or a width outside (0, 1).

    """
    _check(queries, width, "split_doses")
    if mode not in ("interpolation", "extrapolation"):
        raise ValueError(f"split_doses: mode must be 'interpolation' or 'extrapolation', got {mode!r}")
    ranges: dict[str, list[float]] = {}
    for q in queries:
        for t, d in zip(q.perturbation.targets, q.perturbation.doses, strict=True):
            lo, hi = ranges.setdefault(t, [math.inf, -math.inf])
            x = _log_dose(d)
            ranges[t] = [min(lo, x), max(hi, x)]
    if mode == "interpolation":
        centre = float(rng.uniform(width / 2 + 0.05, 1 - width / 2 - 0.05)) if width < 0.9 else 0.5
        band = (centre - width / 2, centre + width / 2)
    else:
        band = (1.0 - width, math.inf)

    def held(t: str, d: float) -> bool:
        lo, hi = ranges.get(t, (0.0, 0.0))
        if hi <= lo:
            return False  # one dose only: nothing to interpolate or extrapolate
        u = (_log_dose(d) - lo) / (hi - lo)
        return band[0] <= u <= band[1] if mode == "interpolation" else u > band[0]

    def is_test(q: Query) -> bool:
        p = q.perturbation
        return any(held(t, d) for t, d in zip(p.targets, p.doses, strict=True))

    split = apply_rule(queries, HoldOut("dose", is_test, is_test))
    trained: dict[str, list[float]] = {}
    for i in split.train:
        p = queries[i].perturbation
        for t, d in zip(p.targets, p.doses, strict=True):
            trained.setdefault(t, []).append(_log_dose(d))
    gaps, covered = [], []
    for i in split.test:
        p = queries[i].perturbation
        for t, d in zip(p.targets, p.doses, strict=True):
            if held(t, d):
                covered.append(t in trained)
                if t in trained:
                    gaps.append(float(np.min(np.abs(np.asarray(trained[t]) - _log_dose(d)))))
    split.report.update(
        mode=mode,
        band_low=band[0],
        band_high=min(band[1], 1.0),
        similarity=float(np.mean(gaps)) if gaps else float("nan"),
        coverage=float(np.mean(covered)) if covered else float("nan"),
    )
    return split


# ------------------------------------------------------------------------ time
def split_times(
    queries: Sequence[Query],
    rng: np.random.Generator | None = None,
    *,
    frac: float = 0.25,
    cutoff_h: float | None = None,
) -> Split:
    """Hold out the later time points: every query after ``cutoff_h`` is test.

    Args:
        queries: Queries to split.
        rng: Unused (the split is deterministic); accepted for a uniform API.
        frac: Fraction of the distinct time points held out when
            ``cutoff_h`` is not given (at least one).
        cutoff_h: Hours; queries with ``time_h > cutoff_h`` are test.

    Returns:
        A :class:`Split`; ``report["similarity"]`` is the mean gap (hours) from
        a test time to the latest trained time, ``report["cutoff_h"]`` the cut.

    """
    _check(queries, frac, "split_times")
    times = np.unique([q.time_h for q in queries])
    if cutoff_h is None:
        if len(times) < 2:
            raise ValueError("split_times: need at least two distinct time points")
        n = max(1, int(round(frac * len(times))))
        cutoff_h = float(times[-n - 1])
    cut = float(cutoff_h)

    def is_test(q: Query) -> bool:
        return q.time_h > cut

    split = apply_rule(queries, HoldOut("time", is_test, is_test))
    last = max((queries[i].time_h for i in split.train), default=float("nan"))
    gaps = [queries[i].time_h - last for i in split.test]
    split.report.update(
        cutoff_h=cut, similarity=float(np.mean(gaps)) if gaps else float("nan"), coverage=float(len(split.train) > 0)
    )
    return split


# ---------------------------------------------------------------------- target
_KIND_TOKENS = re.compile(r"(?i)^(kd|ko|act|crispri|crispra|sgrna|sh|si|oe|cmp)[_\-]?|[_\-]?(kd|ko|act|oe)$")


def default_target_similarity(names: Sequence[str], kinds: Sequence[TargetKind | str] | None = None) -> np.ndarray:
    """Similarity of targets from their names and kinds, in [0, 1].

    1.0 on the diagonal; 0.9 for different targets on the same gene (names
    equal after stripping kind tokens such as ``KD_``, ``ACT_``, ``_OE``:
    ``KD_TP53`` vs ``ACT_TP53``); 0.2 for the same kind; 0 otherwise.

    Returns:
        ``(T, T)`` symmetric matrix.

    """
    kinds = [TargetKind(k).value for k in kinds] if kinds is not None else [""] * len(names)
    base = [_KIND_TOKENS.sub("", n).upper() or n.upper() for n in names]
    T = len(names)
    S = np.zeros((T, T))
    for i in range(T):
        for j in range(T):
            if i == j:
                S[i, j] = 1.0
            elif base[i] == base[j] and not re.fullmatch(r"\d*", base[i]):
                S[i, j] = 0.9
            elif kinds[i] and kinds[i] == kinds[j]:
                S[i, j] = 0.2
    return S


def similarity_clusters(names: Sequence[str], similarity: np.ndarray, threshold: float) -> list[list[str]]:
    """Connected components of the graph ``similarity ≥ threshold`` (near-duplicates together)."""
    S = np.asarray(similarity, dtype=float)
    if S.shape != (len(names), len(names)):
        raise ValueError(f"similarity has shape {S.shape}, expected ({len(names)}, {len(names)})")
    parent = list(range(len(names)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(S >= threshold), strict=True):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[str]] = {}
    for i, n in enumerate(names):
        groups.setdefault(find(i), []).append(n)
    return list(groups.values())


def split_targets(
    queries: Sequence[Query],
    rng: np.random.Generator,
    *,
    frac: float = 0.2,
    similarity: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    kinds: Sequence[TargetKind | str] | None = None,
    threshold: float = 0.5,
) -> Split:
    """Hold out unseen targets, with their near-duplicates.

    Targets are clustered by ``similarity ≥ threshold`` (connected
    components); whole clusters are held out until at least ``frac`` of the
    targets are. Every query containing a held-out target is test, so the
    largest train–test target similarity stays below ``threshold``.

    Args:
        queries: Queries to split.
        rng: Orders the clusters.
        frac: Fraction of targets held out (at least one cluster).
        similarity: ``(T, T)`` target similarity in [0, 1] over ``names``;
            default :func:`default_target_similarity`.
        names: Target names of ``similarity`` (default: the targets seen).
        kinds: Target kinds for the default similarity.
        threshold: Similarity at which two targets count as near-duplicates.

    Returns:
        A :class:`Split`; ``report["similarity"]`` is the largest similarity
        between a trained and a held-out target, ``report["coverage"]`` the
        fraction of the catalogue's targets that are trained on.

    Raises:
        ValueError: If the queries contain no target or ``similarity`` does
            not match ``names``.

    """
    _check(queries, frac, "split_targets")
    seen = sorted({t for q in queries for t in q.perturbation.targets})
    if not seen:
        raise ValueError("split_targets: the queries contain no target")
    names = list(names) if names is not None else seen
    missing = sorted(set(seen) - set(names))
    if missing:
        raise ValueError(f"split_targets: targets {missing[:5]} are missing from the similarity names")
    S = default_target_similarity(names, kinds) if similarity is None else np.asarray(similarity, dtype=float)
    clusters = [c for c in similarity_clusters(names, S, threshold) if set(c) & set(seen)]
    order = rng.permutation(len(clusters))
    held: set[str] = set()
    for k in order:
        held |= set(clusters[k])
        if len(held & set(seen)) >= frac * len(seen):
            break
    held_f = frozenset(held)

    def is_test(q: Query) -> bool:
        return bool(held_f & set(q.perturbation.targets))

    split = apply_rule(queries, HoldOut("target", is_test, is_test))
    pos = {n: i for i, n in enumerate(names)}
    trained = {t for i in split.train for t in queries[i].perturbation.targets}
    cross = [S[pos[a], pos[b]] for a in trained for b in held_f]
    split.report.update(
        n_held_out=len(held_f),
        threshold=threshold,
        similarity=float(max(cross, default=0.0)),
        coverage=len(trained) / len(names),
    )
    return split


# --------------------------------------------------------------------- context
def split_contexts(
    queries: Sequence[Query],
    rng: np.random.Generator,
    *,
    by: str = "cell_line",
    n_held_out: int = 1,
    held_out: Sequence[str] | None = None,
) -> Split:
    """Hold out whole cell lines (or sites).

    Args:
        queries: Queries to split.
        rng: Chooses the held-out values when ``held_out`` is not given.
        by: ``"cell_line"`` or ``"site"``.
        n_held_out: How many values to hold out.
        held_out: Explicit values to hold out.

    Returns:
        A :class:`Split`; ``report["coverage"]`` is the fraction of test
        perturbation labels that are trained on in another context,
        ``report["similarity"]`` the fraction of test (label, time) conditions.

    Raises:
        ValueError: On an unknown ``by`` or fewer than two distinct values.

    """
    if by not in ("cell_line", "site"):
        raise ValueError(f"split_contexts: by must be 'cell_line' or 'site', got {by!r}")
    if not queries:
        raise ValueError("split_contexts: no queries to split")

    def value(q: Query) -> str:
        return getattr(q.context, by)

    values = sorted({value(q) for q in queries})
    if held_out is None:
        if len(values) < 2:
            raise ValueError(f"split_contexts: need two distinct {by} values, got {values}")
        k = min(max(1, n_held_out), len(values) - 1)
        held_out = [values[i] for i in rng.choice(len(values), size=k, replace=False)]
    held = frozenset(held_out)
    split = apply_rule(queries, context_rule(held, by))
    labels = {queries[i].perturbation.label for i in split.train}
    conds = {(queries[i].perturbation.label, queries[i].time_h) for i in split.train}
    test = [queries[i] for i in split.test]
    split.report.update(
        held_out=",".join(sorted(held)),
        coverage=float(np.mean([q.perturbation.label in labels for q in test])) if test else float("nan"),
        similarity=float(np.mean([(q.perturbation.label, q.time_h) in conds for q in test])) if test else float("nan"),
    )
    return split


def split_cell_lines(queries: Sequence[Query], rng: np.random.Generator, **kwargs) -> Split:
    """:func:`split_contexts` by cell line."""
    return split_contexts(queries, rng, by="cell_line", **kwargs)


def split_sites(queries: Sequence[Query], rng: np.random.Generator, **kwargs) -> Split:
    """:func:`split_contexts` by site."""
    return split_contexts(queries, rng, by="site", **kwargs)


# ----------------------------------------------------------------------- batch
def queries_of_obs(obs: pd.DataFrame) -> list[Query]:
    """One query per distinct ``query_id`` of a batch's obs, in first-seen order.

    Raises:
        ValueError: If a perturbation / dose string does not parse.

    """
    first = obs.drop_duplicates(keys.QUERY_ID)
    return [
        Query(
            Perturbation.parse(r[keys.PERTURBATION], r[keys.DOSE_VALUE]),
            float(r[keys.TIME]),
            Context(str(r[keys.CELL_LINE]), str(r[keys.SITE])),
            str(r[keys.ASSAY]),
        )
        for _, r in first.iterrows()
    ]


def split_batch(
    batch: MeasurementBatch, splitter: Callable[..., Split], rng: np.random.Generator, **kwargs
) -> tuple[Split, MeasurementBatch, MeasurementBatch]:
    """Split a measured batch, grouped by query and specimen.

    Rows are grouped by ``query_id`` (one query per id, rebuilt from the obs);
    if a ``specimen`` appears under several query ids that land on different
    sides, the train ones are dropped, so no specimen straddles the split.

    Args:
        batch: The batch.
        splitter: One of the ``split_*`` functions.
        rng: Passed to the splitter.
        **kwargs: Passed to the splitter.

    Returns:
        ``(split, train_batch, test_batch)``; the split's positions index
        :func:`queries_of_obs` of the concatenated obs.

    """
    obs = pd.concat(
        [
            m.obs[[keys.QUERY_ID, *[c for c in keys.OBS_COLUMNS if c != keys.QUERY_ID]]]
            for m in batch.modalities.values()
        ],
        ignore_index=True,
    )
    queries = queries_of_obs(obs)
    ids = [str(i) for i in obs.drop_duplicates(keys.QUERY_ID)[keys.QUERY_ID]]
    split = splitter(queries, rng, **kwargs)
    side = {ids[i]: "test" for i in split.test} | {ids[i]: "train" for i in split.train}
    bad: set[str] = set()
    for _, qids in obs.groupby(keys.SPECIMEN)[keys.QUERY_ID]:
        sides = {side.get(str(q), "dropped") for q in qids}
        if len(sides) > 1:
            bad |= {str(q) for q in qids if side.get(str(q)) == "train"}
    train = tuple(i for i in split.train if ids[i] not in bad)
    dropped = tuple(sorted(set(split.dropped) | {i for i in split.train if ids[i] in bad}))
    split = Split(
        split.axis,
        train,
        split.test,
        dropped,
        tuple(ids[i] for i in train),
        tuple(ids[i] for i in split.test),
        split.rule,
        {**split.report, "n_train": len(train), "n_dropped": len(dropped), "n_straddling": len(bad)},
    )
    return split, batch.subset(split.train_ids), batch.subset(split.test_ids)
