"""The lab data adapter: an oracle over measured data (pool mode).

The conditions present in the data form the candidate pool: the
:class:`DesignSpace` is built from the data (targets and their kinds from the
dose units, dose and time ranges, contexts, assays, maximum combination
order) with ``space.pool`` set, so strategies propose only measured
conditions. ``measure()`` hands out the stored specimens of a condition,
replicates without replacement, in a fixed order; asking for an absent
condition, or for more replicates than remain, is a ``ValueError``.

There is no ground truth: identifiability is scored without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiment_design import DEFAULT_ASSAYS, Assay, Context, DesignSpace, MeasurementBatch, Query, Scale, Target, keys
from experiment_design.modalities import modality_spec
from experiment_design.perturbation import Perturbation
from simulators.atlas import LazyScreen, open_screen
from simulators.base import Layout, Oracle
from simulators.lab_formats import read_options
from simulators.registry import register

_KNOWN_ASSAYS = {a.name: a for a in DEFAULT_ASSAYS}


def space_from_batch(batch: MeasurementBatch | LazyScreen) -> DesignSpace:
    """The design space spanned by the conditions of a measured batch or lazy screen (pool set)."""
    conditions: dict[str, Query] = {}
    kinds: dict[str, str] = {}
    assay_mods: dict[str, set[str]] = {}
    assay_units: dict[str, dict[str, int]] = {}
    for mod, m in batch.modalities.items():
        o = m.obs
        first = o.drop_duplicates(keys.QUERY_ID)
        for row in first.itertuples(index=False):
            r = row._asdict()
            p = Perturbation.parse(r[keys.PERTURBATION], r[keys.DOSE_VALUE])
            for t, u in zip(p.targets, str(r[keys.DOSE_UNIT]).split("+"), strict=False):
                kinds.setdefault(t, "knockdown" if u == "fraction" else "compound")
            q = Query(p, float(r[keys.TIME]), Context(r[keys.CELL_LINE], r[keys.SITE]), r[keys.ASSAY])
            conditions[q.query_id] = q
        for assay, sub in o.groupby(keys.ASSAY, observed=True):
            assay_mods.setdefault(assay, set()).add(mod)
            assay_units.setdefault(assay, {})[mod] = int(sub.groupby(keys.SPECIMEN, observed=True).size().median())
    targets = tuple(Target(n, k) for n, k in sorted(kinds.items()))
    assays = []
    for name, mods in sorted(assay_mods.items()):
        known = _KNOWN_ASSAYS.get(name)
        if known is not None and set(known.modalities) == mods:
            assays.append(known)
        else:
            order = sorted(mods)
            levels = {modality_spec(m).level for m in mods}
            scale = Scale.TISSUE if "spot" in levels else Scale.MOLECULAR if levels == {"well"} else Scale.CELLULAR
            assays.append(Assay(name, tuple(order), scale, 1.0, tuple(assay_units[name][m] for m in order)))
    qs = list(conditions.values())
    doses: dict[str, list[float]] = {"compound": [], "knockdown": []}
    for q in qs:
        for t, d in zip(q.perturbation.targets, q.perturbation.doses, strict=True):
            doses[kinds[t]].append(d)
    ranges = {}
    for kind, ds in doses.items():
        ds = [d for d in ds if d > 0]
        if kind == "compound":
            ranges[kind] = (min(ds, default=1e-3), max(ds, default=1e2)) if ds else (1e-3, 1e2)
            if ranges[kind][0] == ranges[kind][1]:
                ranges[kind] = (ranges[kind][0] / 10, ranges[kind][1] * 10)
        else:
            ranges[kind] = (min(min(ds, default=0.05), 0.05), 1.0)
    ranges["activation"] = ranges["knockdown"]
    times = [q.time_h for q in qs]
    t_lo, t_hi = min(times), max(times)
    contexts = tuple(sorted({q.context for q in qs}, key=lambda c: (c.cell_line, c.site)))
    space = DesignSpace(
        targets=targets,
        contexts=contexts,
        assays=tuple(assays),
        dose_ranges=ranges,
        time_range_h=(t_lo, t_hi if t_hi > t_lo else t_lo + 1.0),
        max_order=max(1, max(q.perturbation.order for q in qs)),
        pool=tuple(qs),
    )
    for q in qs:  # every stored condition must be a valid query of the space built from them
        space.validate(q)
    return space


@dataclass(frozen=True)
class LabFactory:
    """Builds the lab data adapter of a data file (picklable, for the loop's oracle actor).

    Attributes:
        path: The data file.
        data_mapping: How to read it (a run config's ``[data_mapping]``, :func:`read_options`).
    """

    path: str
    data_mapping: dict = field(default_factory=dict)

    def __call__(self) -> LabAdapter:
        """Read the data."""
        return LabAdapter.from_file(self.path, **read_options(self.data_mapping))


@register("lab")
class LabAdapter(Oracle):
    """Pool-mode oracle over a measured data set.

    Args:
        batch: Every stored observation, in memory (:class:`MeasurementBatch`) or opened lazily
            (:class:`simulators.atlas.LazyScreen`: obs in memory, the readouts read per hand-out).
        space: Design space (default: built from the data, pool set).
        exclude: Specimens already handed out (e.g. from the ledger on resume).
    """

    def __init__(
        self, batch: MeasurementBatch | LazyScreen, space: DesignSpace | None = None, exclude: Iterable[str] = ()
    ) -> None:
        self.batch = batch
        self.space = space or space_from_batch(batch)
        specimens: dict[str, set[str]] = {}
        for m in batch.modalities.values():
            pairs = m.obs[[keys.QUERY_ID, keys.SPECIMEN]].drop_duplicates()
            for qid, spec in zip(pairs[keys.QUERY_ID], pairs[keys.SPECIMEN], strict=True):
                specimens.setdefault(qid, set()).add(spec)
        self._specimens = {q: sorted(s) for q, s in specimens.items()}
        self._used = set(exclude)

    @classmethod
    def factory(cls, settings: object) -> LabFactory:
        """The run's data: ``settings.data`` read with ``settings.data_mapping``."""
        return LabFactory(str(settings.data), dict(settings.data_mapping))

    @property
    def var_names(self) -> dict[str, tuple[str, ...]]:
        """Feature names per modality of the data."""
        return {m: tuple(d.var_names) for m, d in self.batch.modalities.items()}

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        mapping: dict[str, str] | None = None,
        exclude: Iterable[str] = (),
        **read_options: object,
    ) -> LabAdapter:
        """Read a data file (see :mod:`simulators.lab_formats`) and build the adapter.

        Args:
            path: The data file, or a directory or glob of ``.h5ad`` files (one screen).
            mapping: cslab column name → the file's column name.
            exclude: Specimens already handed out.
            **read_options: ``units``, ``features``, ``modality`` of
                :func:`simulators.lab_formats.read_measurements`, and ``lazy``
                (:func:`simulators.atlas.open_screen`: large ``.h5ad`` screens open lazily by default).
        """
        return cls(open_screen(path, mapping, **read_options), exclude=exclude)

    def specimens(self, query_id: str) -> tuple[str, ...]:
        """Every stored specimen of a condition, in hand-out order."""
        return tuple(self._specimens.get(query_id, ()))

    def available(self, query_id: str) -> int:
        """Specimens of a condition not yet handed out."""
        return sum(s not in self._used for s in self._specimens.get(query_id, ()))

    def measure(
        self, queries: Sequence[Query], layout: Layout | None = None, exclude: Iterable[str] | None = None
    ) -> MeasurementBatch:
        """Hand out stored specimens, replicates without replacement.

        Args:
            queries: Conditions of the data, with the replicates wanted.
            layout: Ignored (the data's own plate positions are returned).
            exclude: Specimens already handed out. When given, the hand-out is
                stateless (the first free specimens in a fixed order, nothing
                remembered): a caller that derives ``exclude`` from its own
                records gets the same answer after a restart. When ``None``,
                the adapter remembers what it handed out.

        Raises:
            ValueError: For a condition absent from the data, or when fewer
                specimens remain than the replicates asked for.
        """
        queries = list(queries)
        self.validate(queries)
        used = self._used if exclude is None else set(exclude)
        chosen: list[str] = []
        for q in queries:
            free = [s for s in self._specimens.get(q.query_id, ()) if s not in used and s not in chosen]
            if not self._specimens.get(q.query_id):
                raise ValueError(f"query {q.query_id} ({q.perturbation.label}): condition not in the data")
            if len(free) < q.replicates:
                raise ValueError(
                    f"query {q.query_id} ({q.perturbation.label}): {q.replicates} replicates asked, "
                    f"{len(free)} left in the data"
                )
            chosen += free[: q.replicates]
        if exclude is None:
            self._used.update(chosen)
        if isinstance(self.batch, LazyScreen):
            return self.batch.take(chosen)
        out = {}
        keep = set(chosen)
        for name, m in self.batch.modalities.items():
            mask = m.obs[keys.SPECIMEN].isin(keep).to_numpy()
            if mask.any():
                out[name] = dataclasses.replace(m, obs=m.obs[mask].reset_index(drop=True), X=m.X[mask])
        return MeasurementBatch(out)
