"""A run's stress sets are what it measured: a resumed run keeps them even when the drawing rule changes."""

import numpy as np

from loop.heldout import HeldOut
from simulators.world import CellWorld


def test_stored_stress_sets_win_over_a_new_draw(tmp_path):
    world = CellWorld(preset="small", seed=0)
    first = HeldOut(tmp_path, world.space, seed=0, n_per_axis=3)
    for axis in first.missing():
        first.store(axis, world.measure(first.sets[axis]))
    ids = {a: sorted(q.query_id for q in qs) for a, qs in first.sets.items()}
    # Another seed draws other sets (as a changed drawing rule would); the stored ones are kept.
    other = HeldOut(tmp_path / "fresh", world.space, seed=1, n_per_axis=3)
    assert {a: sorted(q.query_id for q in qs) for a, qs in other.sets.items()} != ids
    resumed = HeldOut(tmp_path, world.space, seed=1, n_per_axis=3)
    assert {a: sorted(q.query_id for q in qs) for a, qs in resumed.sets.items()} == ids
    assert all(resumed.blocked(q) for qs in first.sets.values() for q in qs)
    assert resumed.missing() == []
    probe = world.space.sample(300, np.random.default_rng(2))
    assert [first.blocked(q) for q in probe] == [resumed.blocked(q) for q in probe]
    # An axis whose file is gone is drawn again (and measured on resume).
    axis = next(iter(ids))
    resumed.path(axis).unlink()
    again = HeldOut(tmp_path, world.space, seed=1, n_per_axis=3)
    assert again.missing() == [axis]
