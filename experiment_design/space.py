"""The design space: what can be asked, what it costs, and how to search it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations, product

import numpy as np

from experiment_design.assays import DEFAULT_ASSAYS, Assay
from experiment_design.contexts import Context
from experiment_design.perturbation import Perturbation
from experiment_design.query import Query
from experiment_design.targets import Target, TargetKind

#: Default dose range per target kind, in the kind's dose unit: compounds in
#: µM (searched on log10), genetic perturbations as strength in [0, 1].
DEFAULT_DOSE_RANGES = {
    TargetKind.COMPOUND: (1e-3, 1e2),
    TargetKind.KNOCKDOWN: (0.05, 1.0),
    TargetKind.ACTIVATION: (0.05, 1.0),
}


@dataclass(frozen=True)
class DesignSpace:
    """Catalogue of everything a query may contain.

    Attributes:
        targets: Perturbation targets (genes and compounds).
        contexts: Cell line / site pairs that can be measured.
        assays: Assays with their costs.
        dose_ranges: Per target kind, the (low, high) dose in its unit,
            inclusive. Compound doses are searched and encoded on log10.
        time_range_h: (earliest, latest) time after perturbation, hours.
        max_order: Largest number of targets in one perturbation (1 to 3).

    """

    targets: tuple[Target, ...]
    contexts: tuple[Context, ...]
    assays: tuple[Assay, ...] = DEFAULT_ASSAYS
    dose_ranges: dict = field(default_factory=lambda: dict(DEFAULT_DOSE_RANGES))
    time_range_h: tuple[float, float] = (0.0, 48.0)
    max_order: int = 3
    pool: tuple[Query, ...] = ()
    held_out_contexts: tuple[Context, ...] = ()
    held_out_target_sets: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "held_out_target_sets", tuple(sorted({tuple(sorted(ts)) for ts in self.held_out_target_sets}))
        )
        object.__setattr__(self, "held_out_contexts", tuple(self.held_out_contexts))
        object.__setattr__(self, "pool", tuple(q.with_replicates(1) for q in self.pool))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "contexts", tuple(self.contexts))
        object.__setattr__(self, "assays", tuple(self.assays))
        ranges = {TargetKind(k): (float(lo), float(hi)) for k, (lo, hi) in self.dose_ranges.items()}
        object.__setattr__(self, "dose_ranges", ranges)
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("DesignSpace: target names must be unique")
        if len({a.name for a in self.assays}) != len(self.assays):
            raise ValueError("DesignSpace: assay names must be unique")
        if len(set(self.contexts)) != len(self.contexts) or not self.contexts:
            raise ValueError("DesignSpace: contexts must be unique and non-empty")
        if set(self.held_out_contexts) - set(self.contexts) or set(self.held_out_contexts) >= set(self.contexts):
            raise ValueError("DesignSpace: held_out_contexts must be contexts of the space, leaving at least one")
        if not 1 <= self.max_order <= 3:
            raise ValueError(f"DesignSpace: max_order must be 1..3, got {self.max_order}")
        for t in self.targets:
            if t.kind not in ranges:
                raise ValueError(f"DesignSpace: no dose range for kind {t.kind.value} of {t.name}")
        for kind, (lo, hi) in ranges.items():
            if not (lo < hi) or (kind.log_dose and lo <= 0):
                raise ValueError(f"DesignSpace: bad dose range {(lo, hi)} for {kind.value}")
        lo_t, hi_t = self.time_range_h
        if not 0 <= lo_t < hi_t:
            raise ValueError(f"DesignSpace: bad time range {self.time_range_h}")

    # ------------------------------------------------------------------ lookups
    @cached_property
    def target_index(self) -> dict[str, int]:
        """Target name → position in :attr:`targets`."""
        return {t.name: i for i, t in enumerate(self.targets)}

    @cached_property
    def assay_index(self) -> dict[str, int]:
        """Assay name → position in :attr:`assays`."""
        return {a.name: i for i, a in enumerate(self.assays)}

    @cached_property
    def context_index(self) -> dict[Context, int]:
        """Context → position in :attr:`contexts`."""
        return {c: i for i, c in enumerate(self.contexts)}

    @cached_property
    def pool_ids(self) -> frozenset[str]:
        """Query ids of the candidate pool (empty when the space is continuous)."""
        return frozenset(q.query_id for q in self.pool)

    @property
    def open_contexts(self) -> list[Context]:
        """Contexts that may be queried (all but :attr:`held_out_contexts`)."""
        return [c for c in self.contexts if c not in self.held_out_contexts]

    def admissible(self, query: Query) -> bool:
        """Whether ``query`` may be proposed: valid, in the pool (if any), not held out for evaluation."""
        try:
            self.validate(query)
        except ValueError:
            return False
        return True

    def rna_assay(self) -> str:
        """The plain RNA assay: ``scrna`` if present, else the cheapest RNA-only assay, else the cheapest assay."""
        if "scrna" in self.assay_index:
            return "scrna"
        rna = [a for a in self.assays if a.modalities == ("rna",)]
        return min(rna or self.assays, key=lambda a: a.cost).name

    def target(self, name: str) -> Target:
        """The target called ``name``."""
        return self.targets[self.target_index[name]]

    def assay(self, name: str) -> Assay:
        """The assay called ``name``."""
        return self.assays[self.assay_index[name]]

    # ------------------------------------------------------------ validation
    def validate(self, query: Query) -> Query:
        """Check a query against the space.

        Returns:
            The query itself, so ``[space.validate(q) for q in qs]`` reads well.

        Raises:
            ValueError: Naming the query and the offending field: unknown
                target, assay or context, a dose out of range or not finite,
                negative or out-of-range time, too many targets, or fewer than
                one replicate.

        """
        where = f"query {query.query_id} ({query.perturbation.label} @ {query.time_h} h, {query.assay})"
        p = query.perturbation
        if p.order > self.max_order:
            raise ValueError(f"{where}: perturbation has {p.order} targets; max_order is {self.max_order}")
        for name, dose in zip(p.targets, p.doses, strict=True):
            if name not in self.target_index:
                raise ValueError(f"{where}: unknown target {name!r}; known: {sorted(self.target_index)[:10]}...")
            kind = self.target(name).kind
            lo, hi = self.dose_ranges[kind]
            if not math.isfinite(dose) or not lo <= dose <= hi:
                raise ValueError(f"{where}: dose {dose} {kind.dose_unit} of {name} is out of range [{lo}, {hi}]")
        if not math.isfinite(query.time_h) or query.time_h < 0:
            raise ValueError(f"{where}: time {query.time_h} h must be finite and >= 0")
        lo_t, hi_t = self.time_range_h
        if not lo_t <= query.time_h <= hi_t:
            raise ValueError(f"{where}: time {query.time_h} h is out of range [{lo_t}, {hi_t}]")
        if query.assay not in self.assay_index:
            raise ValueError(f"{where}: unknown assay {query.assay!r}; known: {list(self.assay_index)}")
        if query.context not in self.context_index:
            raise ValueError(f"{where}: unknown context {query.context.cell_line}/{query.context.site}")
        if query.replicates < 1:
            raise ValueError(f"{where}: replicates must be >= 1, got {query.replicates}")
        if p.targets in self.held_out_target_sets:
            raise ValueError(f"{where}: combination {p.label} is held out for evaluation")
        if query.context in self.held_out_contexts:
            raise ValueError(
                f"{where}: context {query.context.cell_line}/{query.context.site} is held out for evaluation"
            )
        if self.pool and query.query_id not in self.pool_ids:
            raise ValueError(f"{where}: condition is not in the candidate pool (the measured data)")
        return query

    def cost(self, queries: Iterable[Query]) -> float:
        """Total cost in budget units: Σ assay cost × replicates."""
        return float(sum(self.assay(q.assay).cost * q.replicates for q in queries))

    # --------------------------------------------------------------- doses
    def dose_to_unit(self, kind: TargetKind, dose: np.ndarray | float) -> np.ndarray:
        """Map doses of ``kind`` to [0, 1] (log10 for compounds, linear for genes)."""
        lo, hi = self.dose_ranges[kind]
        d = np.asarray(dose, dtype=float)
        if kind.log_dose:
            return (np.log10(d) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return (d - lo) / (hi - lo)

    def unit_to_dose(self, kind: TargetKind, u: np.ndarray | float) -> np.ndarray:
        """Inverse of :meth:`dose_to_unit` (``u`` clipped to [0, 1])."""
        lo, hi = self.dose_ranges[kind]
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if kind.log_dose:
            return 10 ** (math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))
        return lo + u * (hi - lo)

    def dose_series(self, name: str, n: int) -> np.ndarray:
        """``n`` doses of target ``name`` evenly spaced on its search scale."""
        return self.unit_to_dose(self.target(name).kind, np.linspace(0.0, 1.0, n))

    # ------------------------------------------------------------ candidates
    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        orders: Sequence[float] | None = None,
        assays: Sequence[str] | None = None,
        contexts: Sequence[Context] | None = None,
    ) -> list[Query]:
        """Draw ``n`` random valid queries.

        Args:
            n: Number of queries.
            rng: Source of randomness.
            orders: Probability of each combination order 0..max_order
                (0 = control); default 5% controls, the rest split 60/30/10
                over singles, pairs and triplets (truncated at ``max_order``).
            assays: Assay names to draw from (default all, uniformly).
            contexts: Contexts to draw from (default all, uniformly).

        Returns:
            ``n`` queries with one replicate each. With a :attr:`pool`, up to
            ``n`` distinct pool members (filtered by ``assays`` / ``contexts``;
            ``orders`` is ignored).
        """
        contexts = list(contexts) if contexts is not None else self.open_contexts
        if self.pool:
            members = [q for q in self.pool if (assays is None or q.assay in assays) and q.context in contexts]
            idx = rng.permutation(len(members))[:n]
            return [members[i] for i in idx]
        if orders is None:
            orders = [0.05, 0.6, 0.3, 0.1][: self.max_order + 1]
        probs = np.asarray(orders, dtype=float)
        probs = probs / probs.sum()
        assays = list(assays) if assays is not None else [a.name for a in self.assays]
        lo_t, hi_t = self.time_range_h
        out: list[Query] = []
        for _ in range(100 * n + 100):
            if len(out) == n:
                break
            order = int(rng.choice(len(probs), p=probs))
            order = min(order, len(self.targets))
            idx = rng.choice(len(self.targets), size=order, replace=False)
            names = [self.targets[i].name for i in idx]
            doses = [float(self.unit_to_dose(self.targets[i].kind, rng.uniform())) for i in idx]
            if tuple(sorted(names)) in self.held_out_target_sets:
                continue  # a combination kept for evaluation: draw again
            out.append(
                Query(
                    Perturbation(tuple(names), tuple(doses)),
                    float(rng.uniform(lo_t, hi_t)),
                    contexts[int(rng.integers(len(contexts)))],
                    assays[int(rng.integers(len(assays)))],
                )
            )
        if len(out) < n:
            raise ValueError("sample: the held-out combinations leave almost nothing to draw at these orders")
        return out

    def grid(
        self,
        *,
        n_doses: int = 5,
        times_h: Sequence[float] = (6.0, 24.0),
        orders: Sequence[int] = (0, 1),
        assays: Sequence[str] | None = None,
        contexts: Sequence[Context] | None = None,
    ) -> list[Query]:
        """Enumerate a full-factorial candidate set.

        Every combination of the requested orders (0 = control) over all
        targets, each target on ``n_doses`` doses evenly spaced on its scale,
        at every time, context and assay. Pairs grow as targets² · n_doses²:
        use :meth:`sample` for large pair and triplet spaces.

        Returns:
            Queries with one replicate each, in a deterministic order. With a
            :attr:`pool`, the pool members of the requested orders, assays
            and contexts (dose grid and times are then ignored).
        """
        contexts = list(contexts) if contexts is not None else self.open_contexts
        if self.pool:
            return [
                q
                for q in self.pool
                if q.perturbation.order in orders and (assays is None or q.assay in assays) and q.context in contexts
            ]
        assays = list(assays) if assays is not None else [a.name for a in self.assays]
        perts: list[Perturbation] = []
        for order in orders:
            if order > self.max_order:
                raise ValueError(f"grid: order {order} exceeds max_order {self.max_order}")
            for combo in combinations(self.targets, order):
                if tuple(sorted(t.name for t in combo)) in self.held_out_target_sets:
                    continue
                series = [self.dose_series(t.name, n_doses) for t in combo]
                for doses in product(*series):
                    perts.append(Perturbation(tuple(t.name for t in combo), tuple(doses)))
        return [Query(p, float(t), c, a) for p, t, c, a in product(perts, times_h, contexts, assays)]

    # ------------------------------------------------------------- encoding
    @cached_property
    def encoding(self):  # noqa: ANN201 - avoid a torch import at module load
        """The :class:`~experiment_design.encoding.DesignEncoding` of this space."""
        from experiment_design.encoding import DesignEncoding

        return DesignEncoding(self)

    def encode(self, queries: Sequence[Query]):  # noqa: ANN201
        """Queries → ``(n, d)`` float64 tensor; see :mod:`experiment_design.encoding`."""
        return self.encoding.encode(queries)

    def decode(self, X) -> list[Query]:  # noqa: ANN001
        """``(n, d)`` tensor → queries (one replicate each)."""
        return self.encoding.decode(X)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """JSON-ready dict (goes into a run's ``config.json``)."""
        return {
            "targets": [t.to_dict() for t in self.targets],
            "contexts": [c.to_dict() for c in self.contexts],
            "assays": [a.to_dict() for a in self.assays],
            "dose_ranges": {k.value: list(v) for k, v in self.dose_ranges.items()},
            "time_range_h": list(self.time_range_h),
            "max_order": self.max_order,
            "pool": [q.to_dict() for q in self.pool],
            "held_out_contexts": [c.to_dict() for c in self.held_out_contexts],
            "held_out_target_sets": [list(ts) for ts in self.held_out_target_sets],
        }

    @classmethod
    def from_dict(cls, d: dict) -> DesignSpace:
        """Inverse of :meth:`to_dict`."""
        return cls(
            targets=tuple(Target.from_dict(t) for t in d["targets"]),
            contexts=tuple(Context.from_dict(c) for c in d["contexts"]),
            assays=tuple(Assay.from_dict(a) for a in d["assays"]),
            dose_ranges={TargetKind(k): tuple(v) for k, v in d["dose_ranges"].items()},
            time_range_h=tuple(d["time_range_h"]),
            max_order=int(d["max_order"]),
            pool=tuple(Query.from_dict(q) for q in d.get("pool", ())),
            held_out_contexts=tuple(Context.from_dict(c) for c in d.get("held_out_contexts", ())),
            held_out_target_sets=tuple(tuple(ts) for ts in d.get("held_out_target_sets", ())),
        )
