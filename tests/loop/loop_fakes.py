"""Small real oracles for loop tests (fakes over mocks)."""

from __future__ import annotations

from dataclasses import dataclass

import simulators


class FlakyWorld:
    """The small world, failing every ``every``-th call (``every=1``: always)."""

    def __init__(self, seed: int, every: int) -> None:
        self.world = simulators.make_world("small", seed=seed)
        self.space = self.world.space
        self.every, self.calls = every, 0

    def measure(self, queries, layout=None):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls % self.every == 0:
            raise ConnectionError(f"instrument offline (call {self.calls})")
        return self.world.measure(queries, layout=layout)


@dataclass(frozen=True)
class FlakyFactory:
    """Picklable factory of :class:`FlakyWorld`."""

    seed: int
    every: int

    def __call__(self) -> FlakyWorld:
        return FlakyWorld(self.seed, self.every)
