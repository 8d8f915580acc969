"""The world's measurement operators, one table entry per modality.

Each :class:`MeasurementOperator` says what a modality's features are called,
how many units one specimen has by default, how to draw one specimen's
readout from its cells, and the noise-free readout of a mean unit (the
``expected`` truth function). :class:`~simulators.world.CellWorld` and the
world's :class:`~experiment_design.GroundTruth` read :data:`OPERATORS`
instead of branching on modality names, so a new modality is one
``register_modality`` in :mod:`experiment_design.modalities` and one entry
here.

Spatial spots are drawn by the tissue path of the world (a patch of cells,
summed per spot), not from dissociated cells: its entry has no ``sample``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from experiment_design.modalities import ADT, MOLECULAR, MORPHOLOGY, RNA, SPATIAL
from simulators.cells import CellStates
from simulators.counts import adt_expected, rna_expected, sample_adt, sample_rna
from simulators.imaging import molecular_expected, morphology_map, sample_molecular, sample_morphology
from simulators.positions import plate_offset, position_features

if TYPE_CHECKING:
    from simulators.config import WorldConfig
    from simulators.params import WorldParams


@dataclass(frozen=True)
class CellDraw:
    """One specimen's cells as a measurement operator sees them.

    Attributes:
        params: World parameters.
        config: World configuration.
        seed: World seed.
        cells: The modality's units, ``n`` cells (the first ``n`` of the well).
        well_cells: Every cell of the well (a well-level panel reads them all).
        site: Site index.
        plate: Plate name (``""`` off plates).
        well: Well name.
        plate_format: ``(rows, columns)`` of the plate.
        rng: The modality's own random stream for this specimen.

    """

    params: WorldParams
    config: WorldConfig
    seed: int
    cells: CellStates
    well_cells: CellStates
    site: int
    plate: str
    well: str
    plate_format: tuple[int, int]
    rng: np.random.Generator


@dataclass(frozen=True)
class MeanUnit:
    """The latent of a mean unit of one query, for ``expected``.

    Attributes:
        z: ``(K,)`` population mean latent at the measurement time.
        z_lag: ``(K,)`` the same ``lag`` hours earlier.
        z_tissue: ``(K,)`` tissue mean latent.
        site: Site index.

    """

    z: np.ndarray
    z_lag: np.ndarray
    z_tissue: np.ndarray
    site: int


@dataclass(frozen=True)
class MeasurementOperator:
    """A modality as the world measures it.

    Attributes:
        var_names: ``(params, config) -> feature names``.
        units: ``config -> units per specimen`` of the default assays.
        expected: ``(params, config, mean unit) -> (F,)`` noise-free readout of a mean unit.
        sample: ``draw -> (n_units, F)`` readout of one specimen; ``None`` if the
            modality is not read from dissociated cells.

    """

    var_names: Callable[[WorldParams, WorldConfig], tuple[str, ...]]
    units: Callable[[WorldConfig], int]
    expected: Callable[[WorldParams, WorldConfig, MeanUnit], np.ndarray]
    sample: Callable[[CellDraw], np.ndarray] | None = None


def _morphology(d: CellDraw) -> np.ndarray:
    c, p = d.cells, d.params
    offset = plate_offset(d.seed, d.plate, p.scalars["plate_sd"], d.config.n_morph_features)
    return sample_morphology(p, c.z, c.cc, d.site, position_features(d.well, d.plate_format), offset, d.rng)


def _spatial_expected(p: WorldParams, cfg: WorldConfig, u: MeanUnit) -> np.ndarray:
    return rna_expected(p, u.z_tissue, u.site, capture=cfg.cells_per_spot * p.scalars["spatial_capture"])[0]


#: Modality → measurement operator of the synthetic world.
OPERATORS: dict[str, MeasurementOperator] = {
    RNA: MeasurementOperator(
        var_names=lambda p, cfg: p.genes,
        units=lambda cfg: cfg.cells_per_well,
        expected=lambda p, cfg, u: rna_expected(p, u.z, u.site)[0],
        sample=lambda d: sample_rna(d.params, d.cells.z, d.cells.cc, d.site, d.rng),
    ),
    ADT: MeasurementOperator(
        var_names=lambda p, cfg: tuple(f"ADT_{p.genes[g]}" for g in p.adt_genes),
        units=lambda cfg: cfg.cells_per_well,
        expected=lambda p, cfg, u: adt_expected(p, u.z_lag, u.site)[0],
        sample=lambda d: sample_adt(d.params, d.cells.z_lag, d.site, d.rng),
    ),
    MORPHOLOGY: MeasurementOperator(
        var_names=lambda p, cfg: tuple(f"MORPH{i:03d}" for i in range(cfg.n_morph_features)),
        units=lambda cfg: cfg.morph_cells_per_well,
        expected=lambda p, cfg, u: morphology_map(p, u.z, None, u.site)[0],
        sample=_morphology,
    ),
    MOLECULAR: MeasurementOperator(
        var_names=lambda p, cfg: p.programs,
        units=lambda cfg: 1,
        expected=lambda p, cfg, u: molecular_expected(p, u.z, u.site)[0],
        sample=lambda d: sample_molecular(d.params, d.well_cells.z, d.site, d.rng),
    ),
    SPATIAL: MeasurementOperator(
        var_names=lambda p, cfg: p.genes,
        units=lambda cfg: cfg.spots_per_patch,
        expected=_spatial_expected,
    ),
}
