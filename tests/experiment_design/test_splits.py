"""Leakage-resistant splits: no splitter leaks, by its own definition, on random designs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiment_design import Context, DesignSpace, MeasurementBatch, ModalityData, Query, Target, keys
from experiment_design.perturbation import Perturbation
from experiment_design.splits import (
    default_target_similarity,
    split_batch,
    split_cell_lines,
    split_combinations,
    split_doses,
    split_sites,
    split_targets,
    split_times,
)

SEEDS = range(12)


def random_design(seed: int, n: int = 120) -> tuple[DesignSpace, list[Query]]:
    """A random space (targets, contexts) and random queries drawn from it."""
    rng = np.random.default_rng(seed)
    n_cmp, n_kd = int(rng.integers(3, 7)), int(rng.integers(2, 5))
    targets = [Target(f"CMP{i:02d}", "compound") for i in range(n_cmp)]
    targets += [Target(f"KD_G{i}", "knockdown") for i in range(n_kd)]
    targets += [Target("ACT_G0", "activation")]  # same gene as KD_G0: a near-duplicate
    contexts = [Context(f"L{i}", f"S{j}") for i in range(int(rng.integers(2, 4))) for j in range(2)]
    space = DesignSpace(targets=tuple(targets), contexts=tuple(contexts))
    queries = space.sample(n, rng, orders=[0.05, 0.5, 0.35, 0.1])
    # Repeat some conditions at rounded times so times and doses recur.
    queries = [Query(q.perturbation, round(q.time_h / 6) * 6, q.context, q.assay) for q in queries]
    return space, queries


def assert_partition(split, n: int) -> None:
    """Train, test and dropped partition the input, and the rule holds on each side."""
    assert sorted(split.train + split.test + split.dropped) == list(range(n))
    assert split.report["n_train"] == len(split.train) and split.report["n_test"] == len(split.test)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("strict", [False, True])
def test_combination_split_never_trains_on_a_held_out_combination(seed: int, strict: bool) -> None:
    _, qs = random_design(seed)
    split = split_combinations(qs, np.random.default_rng(seed), frac=0.3, strict=strict)
    assert_partition(split, len(qs))
    held = {frozenset(qs[i].perturbation.targets) for i in split.test}
    assert held and all(len(h) >= 2 for h in held)
    parts = set().union(*held)
    for i in split.train:
        t = frozenset(qs[i].perturbation.targets)
        assert t not in held
        if strict and len(t) >= 2:
            assert not (t & parts), f"strict split trains on {sorted(t)} sharing a component with a held-out pair"
    # Components stay trainable as singles, so the combination is predictable.
    assert 0.0 <= split.report["coverage"] <= 1.0 and split.report["similarity"] < 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["interpolation", "extrapolation"])
def test_dose_split_keeps_held_out_doses_out_of_training(seed: int, mode: str) -> None:
    _, qs = random_design(seed)
    split = split_doses(qs, np.random.default_rng(seed), mode=mode, width=0.3)
    assert_partition(split, len(qs))
    ranges: dict[str, list[float]] = {}
    for q in qs:
        for t, d in zip(q.perturbation.targets, q.perturbation.doses, strict=True):
            ranges.setdefault(t, []).append(math.log10(d))

    def u(t: str, d: float) -> float:
        lo, hi = min(ranges[t]), max(ranges[t])
        return (math.log10(d) - lo) / (hi - lo) if hi > lo else -1.0

    lo, hi = split.report["band_low"], split.report["band_high"]
    for i in split.train:
        p = qs[i].perturbation
        assert not any(lo <= u(t, d) <= hi for t, d in zip(p.targets, p.doses, strict=True))
    for i in split.test:
        p = qs[i].perturbation
        assert any(lo <= u(t, d) <= hi for t, d in zip(p.targets, p.doses, strict=True))
    if mode == "extrapolation":
        # Every held-out dose lies above the highest trained dose of its target.
        top = {}
        for i in split.train:
            for t, d in zip(qs[i].perturbation.targets, qs[i].perturbation.doses, strict=True):
                top[t] = max(top.get(t, 0.0), d)
        for i in split.test:
            for t, d in zip(qs[i].perturbation.targets, qs[i].perturbation.doses, strict=True):
                if u(t, d) >= lo:
                    assert d > top.get(t, 0.0)
    assert split.test and split.train


@pytest.mark.parametrize("seed", SEEDS)
def test_time_split_holds_out_later_times(seed: int) -> None:
    _, qs = random_design(seed)
    split = split_times(qs, frac=0.25)
    assert_partition(split, len(qs))
    assert max(qs[i].time_h for i in split.train) < min(qs[i].time_h for i in split.test)
    assert split.report["similarity"] > 0  # a positive gap in hours


@pytest.mark.parametrize("seed", SEEDS)
def test_target_split_keeps_near_duplicates_out_of_training(seed: int) -> None:
    space, qs = random_design(seed)
    names = [t.name for t in space.targets]
    rng = np.random.default_rng(seed)
    # A user-given similarity: random low values plus a few planted near-duplicate pairs.
    S = rng.uniform(0, 0.4, size=(len(names), len(names)))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 1.0)
    for _ in range(3):
        i, j = rng.choice(len(names), size=2, replace=False)
        S[i, j] = S[j, i] = 0.8
    split = split_targets(qs, rng, frac=0.25, similarity=S, names=names, threshold=0.5)
    assert_partition(split, len(qs))
    pos = {n: k for k, n in enumerate(names)}
    trained = {t for i in split.train for t in qs[i].perturbation.targets}
    tested = {t for i in split.test for t in qs[i].perturbation.targets} - trained
    assert tested
    # Held-out targets (in test, never in train) have no near-duplicate in training.
    assert max(S[pos[a], pos[b]] for a in trained for b in tested) < 0.5
    assert split.report["similarity"] < 0.5


def test_default_similarity_links_knockdown_and_activation_of_one_gene() -> None:
    S = default_target_similarity(
        ["KD_G0", "ACT_G0", "KD_G1", "CMP01"], ["knockdown", "activation", "knockdown", "compound"]
    )
    assert S[0, 1] >= 0.9 and S[0, 2] < 0.5 and S[0, 3] == 0.0 and np.allclose(S, S.T)
    qs = [
        Query(Perturbation(("KD_G0",), (0.5,)), 6.0, Context("L0", "S0"), "scrna"),
        Query(Perturbation(("ACT_G0",), (0.5,)), 6.0, Context("L0", "S0"), "scrna"),
        Query(Perturbation(("KD_G1",), (0.5,)), 6.0, Context("L0", "S0"), "scrna"),
        Query(Perturbation(("CMP01",), (0.5,)), 6.0, Context("L0", "S0"), "scrna"),
    ]
    for seed in range(10):
        split = split_targets(
            qs,
            np.random.default_rng(seed),
            frac=0.2,
            kinds=["activation", "compound", "knockdown", "knockdown"],
            names=["ACT_G0", "CMP01", "KD_G0", "KD_G1"],
        )
        test = {qs[i].perturbation.label for i in split.test}
        assert ("KD_G0" in test) == ("ACT_G0" in test)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("splitter,attr", [(split_cell_lines, "cell_line"), (split_sites, "site")])
def test_context_split_holds_out_whole_contexts(seed: int, splitter, attr: str) -> None:
    _, qs = random_design(seed)
    split = splitter(qs, np.random.default_rng(seed))
    assert_partition(split, len(qs))
    train = {getattr(qs[i].context, attr) for i in split.train}
    test = {getattr(qs[i].context, attr) for i in split.test}
    assert test and train and not (train & test)
    assert 0.0 <= split.report["coverage"] <= 1.0


def _batch(queries: list[Query], replicates: int = 2, cells: int = 3) -> MeasurementBatch:
    rows = []
    for q in queries:
        for r in range(replicates):
            for u in range(cells):
                rows.append(
                    {
                        keys.QUERY_ID: q.query_id,
                        keys.PERTURBATION: q.perturbation.label,
                        keys.DOSE_VALUE: q.perturbation.dose_label,
                        keys.DOSE_UNIT: "uM",
                        keys.TIME: q.time_h,
                        keys.TIME_UNIT: "h",
                        keys.CELL_LINE: q.context.cell_line,
                        keys.SITE: q.context.site,
                        keys.BATCH: "b",
                        keys.ASSAY: q.assay,
                        keys.MODALITY: "rna",
                        keys.REPLICATE: r,
                        keys.SPECIMEN: f"{q.query_id}:{r}",
                        keys.UNIT: u,
                    }
                )
    obs = pd.DataFrame(rows)
    return MeasurementBatch({"rna": ModalityData(obs, np.ones((len(obs), 2)), ("g0", "g1"))})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("splitter", [split_cell_lines, split_times, split_combinations])
def test_batch_split_never_lets_a_specimen_straddle(seed: int, splitter) -> None:
    _, qs = random_design(seed, n=40)
    qs = list({q.query_id: q for q in qs}.values())
    clean = _batch(qs)
    first, _, _ = split_batch(clean, splitter, np.random.default_rng(seed))
    # A specimen read under a train and a test query id (e.g. a relabelled well) must not straddle.
    a, b = first.test_ids[0], first.train_ids[0]
    obs = clean.modalities["rna"].obs.copy()
    obs.loc[obs[keys.QUERY_ID] == b, keys.SPECIMEN] = f"{a}:0"
    batch = MeasurementBatch({"rna": ModalityData(obs, clean.modalities["rna"].X, ("g0", "g1"))})
    split, train, test = split_batch(batch, splitter, np.random.default_rng(seed))
    assert split.report["n_straddling"] == 1 and b not in split.train_ids
    tr, te = set(train.modalities["rna"].obs[keys.SPECIMEN]), set(test.modalities["rna"].obs[keys.SPECIMEN])
    assert tr and te and not (tr & te)
    assert set(split.test_ids) == set(test.query_ids) and not set(split.train_ids) & set(split.test_ids)
    assert len(train) + len(test) + 2 * 3 <= len(batch)


def test_splitters_are_seeded_and_validate() -> None:
    _, qs = random_design(0)
    a = split_combinations(qs, np.random.default_rng(3))
    b = split_combinations(qs, np.random.default_rng(3))
    assert a.test == b.test and a.train == b.train
    with pytest.raises(ValueError, match="mode"):
        split_doses(qs, np.random.default_rng(0), mode="sideways")
    with pytest.raises(ValueError, match="no combination"):
        split_combinations([q for q in qs if q.perturbation.order < 2], np.random.default_rng(0))
    with pytest.raises(ValueError, match="frac"):
        split_targets(qs, np.random.default_rng(0), frac=1.5)
