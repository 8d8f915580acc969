"""``CellWorld``: the ground-truth cell simulator (oracle ``"sim"``).

``measure`` validates the queries, computes each query's responder latent
shift at the measurement time and ``adt_lag_h`` earlier (:meth:`_latent`),
then simulates every specimen from its own generator
``query_rng(seed, query_id, replicate, stream)`` (:meth:`_observe`): cells
(``"cells"``), then one stream per modality. Units measured on one specimen
by two modalities are the same cells with the same unit index (CITE-seq RNA
and ADT; the first cells of an RNA + morphology well; the dissociated cells of
a spatial patch are drawn from that patch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from experiment_design import DesignSpace, GroundTruth, MeasurementBatch, Query, keys
from experiment_design.assays import RNA, SPATIAL, Assay, Scale
from experiment_design.modalities import modality_spec
from simulators.base import BaseSimulator, Layout, query_rng
from simulators.cells import CellStates, sample_cells
from simulators.config import WorldConfig, preset_config
from simulators.counts import sample_rna
from simulators.dynamics import Intervention
from simulators.obs import ObsBuilder, specimen_meta
from simulators.operators import OPERATORS, CellDraw
from simulators.params import draw_params
from simulators.positions import place, plate_formats
from simulators.registry import register
from simulators.tissue import sample_patch, spot_composition, sum_spots


@dataclass(frozen=True)
class QueryState:
    """What :meth:`CellWorld._latent` computes per query.

    Attributes:
        line: Cell-line index.
        site: Site index.
        dz: ``(K,)`` responder latent shift at the measurement time.
        dz_lag: ``(K,)`` the shift ``adt_lag_h`` hours earlier.

    """

    line: int
    site: int
    dz: np.ndarray
    dz_lag: np.ndarray


@dataclass(frozen=True)
class WorldFactory:
    """Builds a preset world (picklable, for the loop's oracle actor).

    Attributes:
        world: Preset name.
        seed: World seed.
        overrides: ``(field, value)`` pairs of :class:`~simulators.config.WorldConfig`.
    """

    world: str
    seed: int
    overrides: tuple = ()

    def __call__(self) -> CellWorld:
        """Build the world."""
        from simulators import make_world

        return make_world(self.world, seed=self.seed, **dict(self.overrides))


@register("sim")
class CellWorld(BaseSimulator):
    """A synthetic world of cells with programs, interventions, contexts and assays.

    Args:
        preset: ``"small"``, ``"default"`` or ``"large"``.
        seed: World seed: fixes every parameter and, with the query id and
            replicate, every measurement.
        config: A full config instead of a preset (``overrides`` then ignored).
        **overrides: Fields of :class:`~simulators.config.WorldConfig` to change.

    Attributes:
        space: The design space: targets, contexts, assays with costs, 0–48 h, up to triplets.
        params: Ground-truth parameters (:class:`~simulators.params.WorldParams`).
        var_names: Feature names per modality.

    """

    @classmethod
    def factory(cls, settings: object) -> WorldFactory:
        """The run's world: preset ``settings.world``, seed ``settings.seed``, ``settings.world_overrides``."""
        return WorldFactory(settings.world, int(settings.seed), tuple(sorted(dict(settings.world_overrides).items())))

    def __init__(
        self, preset: str = "default", seed: int = 0, config: WorldConfig | None = None, **overrides: object
    ) -> None:
        self.preset = preset
        self.config = config if config is not None else preset_config(preset, **overrides)
        self.seed = int(seed)
        self.params = draw_params(self.config, self.seed)
        p = self.params
        self.space = DesignSpace(
            targets=p.targets, contexts=p.contexts, assays=self.config.assays(), time_range_h=(0.0, 48.0), max_order=3
        )
        self.intervention = Intervention(p, self.space)
        self.var_names = {m: tuple(op.var_names(p, self.config)) for m, op in OPERATORS.items()}
        self._line = {name: i for i, name in enumerate(p.cell_lines)}
        self._site = {name: i for i, name in enumerate(p.sites)}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"CellWorld(preset={self.preset!r}, seed={self.seed}, genes={c.n_genes}, programs={c.n_programs}, "
            f"targets={len(self.space.targets)}, contexts={len(self.space.contexts)})"
        )

    # ------------------------------------------------------------ contract
    def validate(self, queries: Sequence[Query]) -> None:
        """Raise ``ValueError`` for the first invalid query (including non-queries)."""
        for i, q in enumerate(queries):
            if not isinstance(q, Query):
                raise ValueError(f"queries[{i}] is a {type(q).__name__}, not a Query")
            self.space.validate(q)

    @cached_property
    def truth(self) -> GroundTruth:
        """Every ground-truth parameter plus ``latent`` and ``expected`` (see :mod:`simulators.truth`)."""
        from simulators.truth import build_truth

        return build_truth(self)

    def query_states(self, queries: Sequence[Query]) -> list[QueryState]:
        """Context indices and responder shifts of valid queries."""
        lag = self.params.adt_lag_h
        out = []
        for q in queries:
            line = self._line[q.context.cell_line]
            times = [q.time_h, max(q.time_h - lag, 0.0)]
            dz = self.intervention.response(q.perturbation, line, times)
            out.append(QueryState(line, self._site[q.context.site], dz[0], dz[1]))
        return out

    def spot_truth(self, query: Query, replicate: int = 0) -> dict[str, np.ndarray]:
        """True per-spot composition and state of one measured tissue patch (for scoring the lift ``L``).

        Re-draws the patch from the same generator ``measure`` uses
        (``query_rng(seed, query_id, replicate, "cells")``), so the spots are
        those ``measure`` returned for ``(query, replicate)``, in unit order.

        Args:
            query: A query of a tissue-scale assay (``spatial`` or ``spatial_dissociated``).
            replicate: Replicate index, ``0 <= replicate < query.replicates``.

        Returns:
            See :func:`simulators.tissue.spot_composition`: ``composition``
            ``(n_spots, n_cell_types)``, ``latent`` ``(n_spots, K)``,
            ``responder_frac`` ``(n_spots,)``.

        Raises:
            ValueError: If the query is invalid, not a tissue assay, or the replicate is out of range.

        """
        self.validate([query])
        assay = self.space.assay(query.assay)
        if assay.scale is not Scale.TISSUE:
            raise ValueError(f"spot_truth: query {query.query_id} uses assay {query.assay!r}, not a tissue assay")
        if not 0 <= int(replicate) < query.replicates:
            raise ValueError(
                f"spot_truth: query {query.query_id} has {query.replicates} replicates, asked for replicate {replicate}"
            )
        st = self.query_states([query])[0]
        rng = query_rng(self.seed, query.query_id, int(replicate), "cells")
        patch = sample_patch(
            self.params, assay.units_of(SPATIAL), self.config.cells_per_spot, st.line, st.dz, st.dz_lag, rng
        )
        return spot_composition(patch, self.params.type_offsets.shape[0])

    def _latent(self, queries: Sequence[Query]) -> list[QueryState]:
        return self.query_states(queries)

    def _observe(self, queries: Sequence[Query], latent: list[QueryState], layout: Layout | None) -> MeasurementBatch:
        formats = plate_formats(layout) if layout is not None else {}
        builder = ObsBuilder(self.var_names)
        for q, state in zip(queries, latent, strict=True):
            assay = self.space.assay(q.assay)
            for r in range(q.replicates):
                self._specimen(q, r, assay, state, layout, formats, builder)
        return builder.build()

    # ----------------------------------------------------------- specimens
    def _specimen(
        self,
        q: Query,
        rep: int,
        assay: Assay,
        st: QueryState,
        layout: Layout | None,
        formats: dict,
        builder: ObsBuilder,
    ) -> None:
        p, seed, qid = self.params, self.seed, q.query_id
        fmt = (self.config.plate_rows, self.config.plate_cols)
        if assay.scale is Scale.TISSUE:
            plate, well = "", ""
        else:
            plate, well = place(q, rep, seed, layout, self.config.n_plates, fmt)
        dose_unit = keys.COMBO_SEP.join(self.space.target(t).dose_unit for t in q.perturbation.targets)

        def meta(modality: str) -> dict:
            return specimen_meta(q, rep, modality, plate, well, dose_unit)

        cells_rng = query_rng(seed, qid, rep, "cells")
        if assay.scale is Scale.TISSUE:
            patch = sample_patch(
                p, assay.units_of(SPATIAL), self.config.cells_per_spot, st.line, st.dz, st.dz_lag, cells_rng
            )
            c = patch.cells
            counts = sample_rna(
                p, c.z, c.cc, st.site, query_rng(seed, qid, rep, SPATIAL), capture=p.scalars["spatial_capture"]
            )
            builder.add(SPATIAL, meta(SPATIAL), sum_spots(counts, patch.cells_per_spot), coords=patch.xy)
            if RNA in assay.modalities:
                n = assay.units_of(RNA)
                idx = query_rng(seed, qid, rep, "dissociate").choice(len(c), size=n, replace=n > len(c))
                d = c.take(idx)
                builder.add(RNA, meta(RNA), sample_rna(p, d.z, d.cc, st.site, query_rng(seed, qid, rep, RNA)))
            return
        cell_level = [assay.units_of(m) for m in assay.modalities if modality_spec(m).level == "cell"]
        n_cells = max([*cell_level, self.config.cells_per_well])
        cells = sample_cells(
            n_cells, p.line_baseline[st.line], st.dz, st.dz_lag, p.responder_frac[st.line], p.scalars, cells_rng
        )
        for m in assay.modalities:
            builder.add(m, meta(m), self._cell_readout(m, assay.units_of(m), cells, st, q, rep, plate, well, formats))

    def _cell_readout(
        self,
        m: str,
        n: int,
        cells: CellStates,
        st: QueryState,
        q: Query,
        rep: int,
        plate: str,
        well: str,
        formats: dict,
    ) -> np.ndarray:
        op = OPERATORS.get(m)
        if op is None or op.sample is None:
            raise ValueError(f"assay of query {q.query_id}: modality {m!r} is not observable on dissociated cells")
        fmt = formats.get(plate, (self.config.plate_rows, self.config.plate_cols))
        rng = query_rng(self.seed, q.query_id, rep, m)
        draw = CellDraw(
            self.params, self.config, self.seed, cells.take(slice(0, n)), cells, st.site, plate, well, fmt, rng
        )
        return op.sample(draw)
