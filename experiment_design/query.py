"""A query: one condition the oracle is asked to measure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from experiment_design.contexts import Context
from experiment_design.perturbation import Perturbation


@dataclass(frozen=True)
class Query:
    """A perturbation at a time, in a context, through an assay.

    Attributes:
        perturbation: Targets and doses (the control if empty).
        time_h: Hours after perturbation, >= 0.
        context: Cell line and site.
        assay: Name of an assay in the ``DesignSpace``.
        replicates: Independent specimens (wells / patches) of this condition.

    """

    perturbation: Perturbation
    time_h: float
    context: Context
    assay: str
    replicates: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_h", float(self.time_h))
        object.__setattr__(self, "replicates", int(self.replicates))

    @property
    def condition_key(self) -> str:
        """Canonical JSON of everything but replicates (what ``query_id`` hashes)."""
        p = self.perturbation
        doc = {
            "targets": list(p.targets),
            # Round to 12 significant digits so float noise does not split ids.
            "doses": [float(f"{d:.12g}") for d in p.doses],
            "time_h": float(f"{self.time_h:.12g}"),
            "cell_line": self.context.cell_line,
            "site": self.context.site,
            "assay": self.assay,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @property
    def query_id(self) -> str:
        """Stable 16-hex-digit id derived from the condition (not replicates)."""
        return hashlib.sha1(self.condition_key.encode()).hexdigest()[:16]

    def with_replicates(self, replicates: int) -> Query:
        """Same condition, another replicate count."""
        return Query(self.perturbation, self.time_h, self.context, self.assay, replicates)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "perturbation": self.perturbation.to_dict(),
            "time_h": self.time_h,
            "context": self.context.to_dict(),
            "assay": self.assay,
            "replicates": self.replicates,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Query:
        """Inverse of :meth:`to_dict`."""
        return cls(
            Perturbation.from_dict(d["perturbation"]),
            float(d["time_h"]),
            Context.from_dict(d["context"]),
            d["assay"],
            int(d.get("replicates", 1)),
        )
