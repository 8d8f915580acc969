"""Perturbation targets: genes (knockdown / activation) and compounds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TargetKind(str, Enum):
    """What a target is, which fixes its dose unit and dose scale."""

    KNOCKDOWN = "knockdown"
    ACTIVATION = "activation"
    COMPOUND = "compound"

    @property
    def dose_unit(self) -> str:
        """``"uM"`` for compounds, ``"fraction"`` (strength in [0, 1]) for genes."""
        return "uM" if self is TargetKind.COMPOUND else "fraction"

    @property
    def log_dose(self) -> bool:
        """Whether doses of this kind are searched and encoded on a log10 scale."""
        return self is TargetKind.COMPOUND


@dataclass(frozen=True)
class Target:
    """One perturbation target.

    Attributes:
        name: Unique name, e.g. ``"CMP03"`` or ``"GENE_KD05"``; must not
            contain ``"+"`` (the combination separator).
        kind: Gene knockdown, gene activation or compound.

    """

    name: str
    kind: TargetKind

    def __post_init__(self) -> None:
        if not self.name or "+" in self.name or self.name == "control":
            raise ValueError(f"Target name {self.name!r} is empty, reserved or contains '+'")
        object.__setattr__(self, "kind", TargetKind(self.kind))

    @property
    def dose_unit(self) -> str:
        """Dose unit of this target (see :attr:`TargetKind.dose_unit`)."""
        return self.kind.dose_unit

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"name": self.name, "kind": self.kind.value}

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        """Inverse of :meth:`to_dict`."""
        return cls(name=d["name"], kind=TargetKind(d["kind"]))
