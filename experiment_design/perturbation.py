"""A perturbation: one to three targets, each with a dose, in canonical order."""

from __future__ import annotations

from dataclasses import dataclass

from experiment_design import keys


@dataclass(frozen=True)
class Perturbation:
    """Targets with their doses; the empty perturbation is the control.

    Targets are kept sorted by name so that ``A+B`` equals ``B+A``
    (construct through :meth:`of`, or directly: ``__post_init__`` sorts).

    Attributes:
        targets: Target names, sorted, no repeats.
        doses: One dose per target, in the target's unit (µM for compounds,
            strength in [0, 1] for genes).

    """

    targets: tuple[str, ...] = ()
    doses: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        targets = tuple(str(t) for t in self.targets)
        doses = tuple(float(d) for d in self.doses)
        if len(targets) != len(doses):
            raise ValueError(f"Perturbation has {len(targets)} targets but {len(doses)} doses")
        if len(set(targets)) != len(targets):
            raise ValueError(f"Perturbation repeats a target: {'+'.join(targets)}")
        order = sorted(range(len(targets)), key=lambda i: targets[i])
        object.__setattr__(self, "targets", tuple(targets[i] for i in order))
        object.__setattr__(self, "doses", tuple(doses[i] for i in order))

    @classmethod
    def of(cls, **doses: float) -> Perturbation:
        """Build from keyword arguments: ``Perturbation.of(CMP01=1.0, KD02=0.5)``."""
        return cls(tuple(doses), tuple(doses.values()))

    @classmethod
    def control(cls) -> Perturbation:
        """The empty perturbation (vehicle / non-targeting control)."""
        return cls()

    @property
    def is_control(self) -> bool:
        """True for the empty perturbation."""
        return not self.targets

    @property
    def order(self) -> int:
        """Number of targets (0 for the control)."""
        return len(self.targets)

    @property
    def label(self) -> str:
        """ScPerturb label: ``"A+B"``, or ``"control"``."""
        return keys.COMBO_SEP.join(self.targets) if self.targets else keys.CONTROL

    @property
    def dose_label(self) -> str:
        """ScPerturb dose string: ``"1.0+0.5"``; ``"0"`` for the control."""
        if not self.targets:
            return "0"
        return keys.COMBO_SEP.join(repr(float(d)) for d in self.doses)

    @classmethod
    def parse(cls, label: str, dose_label: str | float) -> Perturbation:
        """Parse scPerturb strings back: ``parse("A+B", "1.0+0.5")``.

        Raises:
            ValueError: If the numbers of targets and doses differ or a dose is
                not a number.

        """
        label = str(label).strip()
        if label in ("", keys.CONTROL):
            return cls()
        names = [n.strip() for n in label.split(keys.COMBO_SEP)]
        parts = [p.strip() for p in str(dose_label).split(keys.COMBO_SEP)]
        if any(not n for n in names):
            raise ValueError(f"malformed combination {label!r}: empty target name")
        if len(parts) != len(names):
            raise ValueError(
                f"combination {label!r} has {len(names)} targets but dose "
                f"{dose_label!r} has {len(parts)} values; write doses as '1.0+0.5'"
            )
        try:
            doses = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"dose {dose_label!r} of {label!r} is not numeric; write doses as '1.0+0.5'") from None
        return cls(tuple(names), tuple(doses))

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"targets": list(self.targets), "doses": list(self.doses)}

    @classmethod
    def from_dict(cls, d: dict) -> Perturbation:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["targets"]), tuple(d["doses"]))
