"""Sizes of a simulated world and its named presets.

A :class:`WorldConfig` fixes how big a world is (genes, programs, targets,
contexts) and how many units an assay observes per specimen; the world's
parameters are then drawn from it and a seed (see :mod:`simulators.params`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from experiment_design import DEFAULT_ASSAYS, Assay


@dataclass(frozen=True)
class WorldConfig:
    """Size and measurement settings of a :class:`~simulators.world.CellWorld`.

    Attributes:
        n_genes: Genes ``G`` read by scRNA and spatial.
        n_programs: Latent cell programs ``K``.
        n_compounds: Compound targets (each acts on 1-2 programs).
        n_genetic: Genetic targets; target ``i`` drives program ``i % K``,
            knockdowns and activations alternate.
        n_cell_lines: Cell lines (biological contexts).
        n_sites: Sites (measurement contexts).
        cells_per_well: Cells per scRNA / CITE-seq specimen.
        morph_cells_per_well: Cells per Cell Painting specimen.
        spots_per_patch: Spots per spatial patch (on a square lattice).
        cells_per_spot: Cells summed into one spot.
        n_adt: Proteins in the ADT panel (``<= n_genes``).
        n_morph_features: Morphology features.
        n_cell_types: Cell types in a tissue patch.
        n_plates: Plates used when the oracle places specimens itself.
        plate_rows: Rows of the plate format used without a layout (8 → 96 wells).
        plate_cols: Columns of that plate format.
        costs: Optional ``{assay name: cost}`` overriding the default costs.

    """

    n_genes: int = 200
    n_programs: int = 8
    n_compounds: int = 8
    n_genetic: int = 8
    n_cell_lines: int = 3
    n_sites: int = 2
    cells_per_well: int = 100
    morph_cells_per_well: int = 200
    spots_per_patch: int = 64
    cells_per_spot: int = 8
    n_adt: int = 30
    n_morph_features: int = 48
    n_cell_types: int = 3
    n_plates: int = 4
    plate_rows: int = 8
    plate_cols: int = 12
    costs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "n_genes",
            "n_programs",
            "n_cell_lines",
            "n_sites",
            "cells_per_well",
            "morph_cells_per_well",
            "spots_per_patch",
            "cells_per_spot",
            "n_adt",
            "n_morph_features",
            "n_cell_types",
            "n_plates",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"WorldConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_compounds < 0 or self.n_genetic < 0 or self.n_compounds + self.n_genetic < 1:
            raise ValueError("WorldConfig: need at least one target (n_compounds + n_genetic >= 1)")
        if self.n_adt > self.n_genes:
            raise ValueError(f"WorldConfig.n_adt {self.n_adt} exceeds n_genes {self.n_genes}")
        if not 1 <= self.plate_rows <= 26 or self.plate_cols < 1:
            raise ValueError(f"WorldConfig: bad plate format {self.plate_rows}x{self.plate_cols}")
        unknown = set(self.costs) - {a.name for a in DEFAULT_ASSAYS}
        if unknown:
            raise ValueError(f"WorldConfig.costs: unknown assays {sorted(unknown)}")

    def assays(self) -> tuple[Assay, ...]:
        """The default assay catalogue with this world's unit counts and costs."""
        from simulators.operators import OPERATORS  # the operators import the parameters, which import this module

        units = {m: op.units(self) for m, op in OPERATORS.items()}
        return tuple(
            Assay(
                a.name,
                a.modalities,
                a.scale,
                float(self.costs.get(a.name, a.cost)),
                tuple(units[m] for m in a.modalities),
            )
            for a in DEFAULT_ASSAYS
        )


#: Named presets: ``small`` for tests, ``default``, ``large`` for scale studies.
PRESETS: dict[str, WorldConfig] = {
    "small": WorldConfig(
        n_genes=40,
        n_programs=4,
        n_compounds=3,
        n_genetic=4,
        n_cell_lines=2,
        n_sites=2,
        cells_per_well=20,
        morph_cells_per_well=20,
        spots_per_patch=16,
        cells_per_spot=4,
        n_adt=10,
        n_morph_features=12,
        n_cell_types=2,
    ),
    "default": WorldConfig(),
    "large": WorldConfig(
        n_genes=2000,
        n_programs=32,
        n_compounds=136,
        n_genetic=64,
        n_cell_lines=10,
        n_sites=3,
        n_adt=100,
        n_morph_features=96,
        n_cell_types=5,
    ),
}


def preset_config(preset: str = "default", **overrides: object) -> WorldConfig:
    """The config of a named preset, with fields overridden.

    Raises:
        ValueError: On an unknown preset or an unknown field name.

    """
    if preset not in PRESETS:
        raise ValueError(f"unknown world preset {preset!r}; known: {sorted(PRESETS)}")
    known = {f.name for f in fields(WorldConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown WorldConfig fields {bad}; known: {sorted(known)}")
    return replace(PRESETS[preset], **overrides)
