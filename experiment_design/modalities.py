"""Modalities as descriptors: what every package needs to know about a readout.

A modality is a measurement operator's output (``"rna"``, ``"adt"``, ...).
What the rest of cslab asks of it is in one :class:`ModalitySpec`, looked up
by name in :data:`MODALITY_SPECS`: whether it is observed as counts (summed
per specimen, count likelihoods, integers required from a lab) or as
continuous values (averaged), at which unit level (cells, tissue spots, one
value per well), on which readout scale predictions and scores compare it,
and on which evaluation axis it is the predicted side.

Adding a modality is one :func:`register_modality` call here, one entry in
the simulator's operator table (:data:`simulators.operators.OPERATORS`) if a
world should measure it, and, only if no default fits, one entry in the
model's decoder table (:data:`models.modules.network.DECODERS`); counts get
a negative-binomial decoder and continuous values a Gaussian one by default.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Modality names of the built-in catalogue (the keys of ``MeasurementBatch.modalities``).
RNA = "rna"
ADT = "adt"
MORPHOLOGY = "morphology"
MOLECULAR = "molecular"
SPATIAL = "spatial"

KINDS = ("counts", "continuous")
LEVELS = ("cell", "spot", "well")
#: ``log_cp10k``: ``log(1e4 (y + 0.5) / (Σy + 0.5 F))`` of summed counts; ``log_per_unit``:
#: ``log((y + 0.5) / n)`` of summed counts over ``n`` units; ``mean``: the unit mean.
READOUTS = ("log_cp10k", "log_per_unit", "mean")
#: Evaluation axes a modality can be the predicted side of (besides context and intervention).
AXES = ("modality", "scale")


@dataclass(frozen=True)
class ModalitySpec:
    """What cslab needs to know about one modality.

    Attributes:
        name: Modality name, the key in ``MeasurementBatch.modalities``.
        kind: ``"counts"`` (non-negative integers, summed per specimen) or
            ``"continuous"`` (real values, averaged per specimen).
        level: Unit the rows of a batch are: ``"cell"``, ``"spot"`` (a tissue
            patch's spots) or ``"well"`` (one value per specimen).
        readout: Scale on which predictions and observations are compared
            (:data:`READOUTS`).
        axis: Evaluation axis on which the modality is the predicted side of a
            translation (``"modality"``, ``"scale"``), or ``None`` for the
            reference modality every other one is translated from.

    """

    name: str
    kind: str
    level: str
    readout: str
    axis: str | None = None

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("kind", self.kind, KINDS),
            ("level", self.level, LEVELS),
            ("readout", self.readout, READOUTS),
            ("axis", self.axis, (*AXES, None)),
        ):
            if value not in allowed:
                raise ValueError(f"ModalitySpec {self.name!r}: {field} {value!r} is not one of {list(allowed)}")
        if self.kind == "continuous" and self.readout != "mean":
            raise ValueError(f"ModalitySpec {self.name!r}: a continuous modality has the 'mean' readout")

    @property
    def is_counts(self) -> bool:
        """True for count modalities (integers, summed per specimen, count likelihoods)."""
        return self.kind == "counts"


#: Name → descriptor; the one table of modalities (extend with :func:`register_modality`).
MODALITY_SPECS: dict[str, ModalitySpec] = {}


def register_modality(spec: ModalitySpec, *, replace: bool = False) -> ModalitySpec:
    """Add a modality to :data:`MODALITY_SPECS`.

    Args:
        spec: The descriptor.
        replace: Allow replacing an existing entry of the same name.

    Returns:
        ``spec``.

    Raises:
        ValueError: If the name is taken and ``replace`` is false.

    """
    if spec.name in MODALITY_SPECS and not replace and MODALITY_SPECS[spec.name] != spec:
        raise ValueError(f"register_modality: {spec.name!r} is already registered as {MODALITY_SPECS[spec.name]}")
    MODALITY_SPECS[spec.name] = spec
    return spec


def unregister_modality(name: str) -> None:
    """Remove a modality from :data:`MODALITY_SPECS` (no-op if absent); for tests and plug-ins."""
    MODALITY_SPECS.pop(name, None)


def modality_names() -> tuple[str, ...]:
    """Registered modality names, in registration order."""
    return tuple(MODALITY_SPECS)


def modality_spec(name: str) -> ModalitySpec:
    """The descriptor of ``name``.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the known names.

    """
    try:
        return MODALITY_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; known: {list(MODALITY_SPECS)}") from None


def is_counts(name: str) -> bool:
    """True if modality ``name`` is observed as counts."""
    return modality_spec(name).is_counts


def axis_modalities(axis: str) -> tuple[str, ...]:
    """Modalities scored on evaluation ``axis``: all of them on ``context`` / ``intervention``."""
    if axis in AXES:
        return tuple(n for n, s in MODALITY_SPECS.items() if s.axis == axis)
    return modality_names()


for _spec in (
    ModalitySpec(RNA, "counts", "cell", "log_cp10k"),
    ModalitySpec(ADT, "counts", "cell", "log_per_unit", axis="modality"),
    ModalitySpec(MORPHOLOGY, "continuous", "cell", "mean", axis="modality"),
    ModalitySpec(MOLECULAR, "continuous", "well", "mean", axis="modality"),
    ModalitySpec(SPATIAL, "counts", "spot", "log_cp10k", axis="scale"),
):
    register_modality(_spec)
