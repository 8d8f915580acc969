"""The loop's stress sets and their leakage rule (one HoldOut type with the splitters)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiment_design import Context, DesignSpace, Perturbation, Query, Target
from experiment_design.splits import apply_rule, split_combinations, split_contexts
from experiment_design.stress import (
    AXES,
    POOL_TOTAL_SHARE,
    held_contexts,
    make_stress_sets,
    pool_stress_sets,
    stress_rule,
)


def _space() -> DesignSpace:
    targets = tuple(Target(f"CMP{i:02d}", "compound") for i in range(4)) + (Target("KD00", "knockdown"),)
    return DesignSpace(targets=targets, contexts=tuple(Context(f"L{i}", f"S{j}") for i in range(3) for j in range(2)))


def test_make_stress_sets_cover_the_axes_and_are_blocked_from_training() -> None:
    space = _space()
    stress = make_stress_sets(space, np.random.default_rng(0), n_per_axis=9)
    assert set(stress) == set(AXES)
    for qs in stress.values():
        assert len(qs) == 9 and all(space.validate(q) for q in qs)
    held = {q.context.cell_line for q in stress["context"]}
    assert len(held) == 1
    assert all(q.context.cell_line not in held for a in ("modality", "scale", "intervention") for q in stress[a])
    assert {space.assay(q.assay).is_anchor for q in stress["modality"]} == {True}
    assert any(q.perturbation.order == 2 for q in stress["intervention"])
    blocks = stress_rule(stress).blocks
    assert all(blocks(q) for qs in stress.values() for q in qs)
    pool = space.sample(300, np.random.default_rng(1))
    free = [q for q in pool if not blocks(q)]
    assert 0 < len(free) < len(pool) and all(q.context.cell_line not in held for q in free)
    again = make_stress_sets(space, np.random.default_rng(0), n_per_axis=9)
    assert [q.query_id for q in again["intervention"]] == [q.query_id for q in stress["intervention"]]


def test_the_stress_rule_blocks_each_kind_of_leak_and_nothing_else() -> None:
    space = _space()
    stress = make_stress_sets(space, np.random.default_rng(3), n_per_axis=8)
    rule = stress_rule(stress)
    held = {q.context for q in stress["context"]} - {q.context for a in AXES if a != "context" for q in stress[a]}
    assert set(held_contexts(stress)) == held and held
    ctx = held_contexts(stress)[0]
    fresh = Query(Perturbation(), 24.0, ctx, "bulk_rna")
    assert rule.is_test(fresh) and rule.blocks(fresh)  # any query in the held-out context
    combo = next(q for q in stress["intervention"] if q.perturbation.order == 2)
    other_dose = dataclasses.replace(
        combo, perturbation=Perturbation(combo.perturbation.targets, tuple(2 * d for d in combo.perturbation.doses))
    )
    assert rule.blocks(other_dose)  # the target set, at any dose
    single = next(q for q in stress["intervention"] if q.perturbation.order == 1)
    assert rule.blocks(dataclasses.replace(single, assay="bulk_rna"))  # the condition, in any assay
    assert not rule.blocks(dataclasses.replace(single, time_h=single.time_h + 0.5))  # a different condition is free


def test_splitters_and_stress_sets_share_the_rule_type() -> None:
    space = _space()
    queries = space.sample(400, np.random.default_rng(4))
    split = split_contexts(queries, np.random.default_rng(0), held_out=["L1"])
    held = [q for q in queries if q.context.cell_line == "L1"]
    by_rule = apply_rule(queries, stress_rule({"context": held}))
    assert by_rule.test_ids == split.test_ids and by_rule.train_ids == split.train_ids
    combos = split_combinations(queries, np.random.default_rng(1), frac=0.3)
    held = [queries[i] for i in combos.test]
    assert all(stress_rule({"intervention": held}).blocks(q) for q in held)


def test_pool_stress_sets_take_existing_conditions_and_leave_most_to_train() -> None:
    space = _space()
    pool = tuple(dict.fromkeys(space.sample(120, np.random.default_rng(5))))
    stress = pool_stress_sets(dataclasses.replace(space, pool=pool), np.random.default_rng(0), n_per_axis=6)
    assert stress and all(q in pool for qs in stress.values() for q in qs)
    rule = stress_rule(stress)
    assert 0 < sum(not rule.blocks(q) for q in pool) < len(pool)


def _grid_pool(lines: int) -> tuple[DesignSpace, tuple[Query, ...]]:
    """A drug x drug dose grid as combination screens measure it: 4 drugs, 6 pairs, 4 x 4 doses, `lines` lines."""
    drugs = [f"D{i}" for i in range(4)]
    space = DesignSpace(
        targets=tuple(Target(d, "compound") for d in drugs),
        contexts=tuple(Context(f"L{i}", "S0") for i in range(lines)),
        max_order=2,
    )
    doses = (0.01, 0.1, 1.0, 10.0)
    pool = []
    for c in space.contexts:
        pool.append(Query(Perturbation(), 72.0, c, "scrna"))
        for i, a in enumerate(drugs):
            pool += [Query(Perturbation((a,), (d,)), 72.0, c, "scrna") for d in doses]
            for b in drugs[i + 1 :]:
                pool += [Query(Perturbation((a, b), (x, y)), 72.0, c, "scrna") for x in doses for y in doses]
    return space, tuple(pool)


@pytest.mark.parametrize("seed", range(5))
def test_a_dose_grid_keeps_most_of_its_pairs_and_the_blocked_share_is_bounded(seed):
    space, pool = _grid_pool(lines=2)
    stress = pool_stress_sets(dataclasses.replace(space, pool=pool), np.random.default_rng(seed), n_per_axis=8)
    rule = stress_rule(stress)
    free = [q for q in pool if not rule.blocks(q)]
    assert "context" not in stress  # two lines: holding one out would halve the data
    pairs = {q.perturbation.targets for q in free if q.perturbation.order == 2}
    assert len(pairs) == 5 and len(stress["intervention"]) == 8  # one of the six pairs is the held-out combination
    assert all(rule.blocks(q) for q in stress["intervention"])
    assert len(free) >= (1 - POOL_TOTAL_SHARE) * len(pool)
    space3, pool3 = _grid_pool(lines=3)
    stress3 = pool_stress_sets(dataclasses.replace(space3, pool=pool3), np.random.default_rng(seed), n_per_axis=8)
    assert "context" in stress3 and len(held_contexts(stress3)) == 1
    rule3 = stress_rule(stress3)
    assert sum(not rule3.blocks(q) for q in pool3) >= (1 - POOL_TOTAL_SHARE) * len(pool3)
