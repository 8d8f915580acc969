"""Assays: which measurement operators observe one specimen, at what cost.

An assay with two modalities observes the same specimen through two
operators at once; that makes it a *cross-level anchor* (RNA + protein on the
same cells, RNA + morphology in the same well, a spatial patch with
dissociated cells of the same tissue, a molecular panel beside RNA).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from experiment_design.modalities import ADT, MOLECULAR, MORPHOLOGY, RNA, SPATIAL, modality_names

__all__ = ["ADT", "DEFAULT_ASSAYS", "MOLECULAR", "MORPHOLOGY", "RNA", "SPATIAL", "Assay", "Scale"]


class Scale(str, Enum):
    """Biological scale an assay reads out."""

    MOLECULAR = "molecular"
    CELLULAR = "cellular"
    TISSUE = "tissue"


@dataclass(frozen=True)
class Assay:
    """A measurement protocol.

    Attributes:
        name: Unique name, e.g. ``"scrna"``.
        modalities: Modalities measured on the same specimen.
        scale: Scale of the readout.
        cost: Cost of one specimen (one well / patch) in budget units; one
            scRNA well is 1.0.
        units: Units observed per specimen, one per modality: cells for
            single-cell modalities, spots for spatial, 1 for well-level panels.

    """

    name: str
    modalities: tuple[str, ...]
    scale: Scale
    cost: float
    units: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        object.__setattr__(self, "scale", Scale(self.scale))
        known = modality_names()
        unknown = [m for m in self.modalities if m not in known]
        if unknown or not self.modalities:
            raise ValueError(f"Assay {self.name!r}: unknown modalities {unknown}; known {list(known)}")
        if len(self.units) != len(self.modalities) or min(self.units) < 1:
            raise ValueError(f"Assay {self.name!r}: need one positive unit count per modality")
        if not self.cost > 0:
            raise ValueError(f"Assay {self.name!r}: cost must be positive, got {self.cost}")

    @property
    def is_anchor(self) -> bool:
        """True if the assay observes one specimen through several operators."""
        return len(self.modalities) > 1

    def units_of(self, modality: str) -> int:
        """Units (cells, spots, wells) of ``modality`` per specimen."""
        return self.units[self.modalities.index(modality)]

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "modalities": list(self.modalities),
            "scale": self.scale.value,
            "cost": self.cost,
            "units": list(self.units),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Assay:
        """Inverse of :meth:`to_dict`."""
        return cls(d["name"], tuple(d["modalities"]), Scale(d["scale"]), float(d["cost"]), tuple(d["units"]))


#: The default assay catalogue with costs in budget units (scRNA well = 1.0).
DEFAULT_ASSAYS = (
    Assay("scrna", (RNA,), Scale.CELLULAR, 1.0, (100,)),
    Assay("cite_seq", (RNA, ADT), Scale.CELLULAR, 2.5, (100, 100)),
    Assay("cell_painting", (MORPHOLOGY,), Scale.CELLULAR, 0.3, (200,)),
    Assay("rna_morphology", (RNA, MORPHOLOGY), Scale.CELLULAR, 1.5, (100, 200)),
    Assay("molecular", (MOLECULAR,), Scale.MOLECULAR, 0.5, (1,)),
    Assay("molecular_rna", (MOLECULAR, RNA), Scale.MOLECULAR, 1.6, (1, 100)),
    Assay("spatial", (SPATIAL,), Scale.TISSUE, 4.0, (64,)),
    Assay("spatial_dissociated", (SPATIAL, RNA), Scale.TISSUE, 6.0, (64, 100)),
)
