"""Oracles: the ground-truth cell world (``"sim"``) and, later, the lab data adapter.

``make_world("small", seed=0)`` builds a :class:`CellWorld`; its ``space`` is
the design space, ``measure(queries)`` the oracle and ``truth`` the
:class:`~experiment_design.GroundTruth` for scoring.
"""

from simulators.config import PRESETS, WorldConfig
from simulators.world import CellWorld


def make_world(preset: str = "default", seed: int = 0, **overrides: object) -> CellWorld:
    """Build a world from a named preset.

    Args:
        preset: ``"small"`` (tests), ``"default"`` or ``"large"``.
        seed: World seed.
        **overrides: :class:`WorldConfig` fields to change, e.g. ``n_genes=1000``.

    Raises:
        ValueError: On an unknown preset or field.

    """
    return CellWorld(preset=preset, seed=seed, **overrides)


__all__ = ["PRESETS", "CellWorld", "WorldConfig", "make_world"]
