import json
import math

import numpy as np
import pytest
import torch

from experiment_design import Context, DesignSpace, Perturbation, Query, Target


def test_encode_decode_round_trip_on_random_queries(space):
    rng = np.random.default_rng(7)
    queries = space.sample(500, rng)
    X = space.encode(queries)
    assert X.shape == (500, space.encoding.dim)
    assert X.dtype == torch.float64
    lo, hi = space.encoding.bounds
    assert torch.all(X >= lo) and torch.all(X <= hi)
    back = space.decode(X)
    for q, b in zip(queries, back, strict=True):
        assert b.query_id == q.query_id
        assert b.perturbation.targets == q.perturbation.targets
        np.testing.assert_allclose(b.perturbation.doses, q.perturbation.doses, rtol=1e-9)
        assert math.isclose(b.time_h, q.time_h, rel_tol=1e-12, abs_tol=1e-12)
    # categorical columns hold integers, continuous ones lie in [0, 1]
    cat = X[:, space.encoding.cat_dims]
    assert torch.equal(cat, cat.round())
    assert torch.all(X[:, space.encoding.cont_dims] <= 1)


def test_decode_snaps_off_grid_points_to_valid_queries(space):
    rng = np.random.default_rng(1)
    lo, hi = space.encoding.bounds
    X = lo + (hi - lo) * torch.rand(
        200, space.encoding.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    for q in space.decode(X):
        space.validate(q)
    assert rng is not None


def test_canonical_combination_order():
    a = Perturbation(("B", "A"), (0.5, 1.0))
    b = Perturbation(("A", "B"), (1.0, 0.5))
    assert a == b and hash(a) == hash(b)
    assert a.label == "A+B" and a.dose_label == "1.0+0.5"
    assert Perturbation.parse("B+A", "0.5+1.0") == a
    assert Perturbation.of(B=0.5, A=1.0) == a
    ctx = Context("L0", "S0")
    assert Query(a, 6, ctx, "scrna").query_id == Query(b, 6.0, ctx, "scrna").query_id
    assert Query(a, 6, ctx, "scrna").query_id != Query(a, 7, ctx, "scrna").query_id
    assert Perturbation.control().label == "control" and Perturbation.control().is_control


@pytest.mark.parametrize(
    ("label", "doses", "match"),
    [("A+B", "1.0", "2 targets but dose"), ("A+", "1+2", "empty target"), ("A", "x", "not numeric")],
)
def test_parse_rejects_malformed_combinations(label, doses, match):
    with pytest.raises(ValueError, match=match):
        Perturbation.parse(label, doses)


def test_perturbation_rejects_repeats_and_mismatch():
    with pytest.raises(ValueError, match="repeats"):
        Perturbation(("A", "A"), (1.0, 2.0))
    with pytest.raises(ValueError, match="doses"):
        Perturbation(("A",), (1.0, 2.0))


CTX = Context("L0", "S0")


@pytest.mark.parametrize(
    ("query", "match"),
    [
        (Query(Perturbation.of(NOPE=1.0), 6, CTX, "scrna"), "unknown target 'NOPE'"),
        (Query(Perturbation.of(CMP00=1e4), 6, CTX, "scrna"), "dose 10000.0 uM of CMP00 is out of range"),
        (Query(Perturbation.of(CMP00=float("nan")), 6, CTX, "scrna"), "dose nan"),
        (Query(Perturbation.of(KD00=1.5), 6, CTX, "scrna"), "dose 1.5 fraction of KD00"),
        (Query(Perturbation.of(CMP00=1.0), -1, CTX, "scrna"), "time -1.0 h"),
        (Query(Perturbation.of(CMP00=1.0), 100, CTX, "scrna"), "time 100.0 h is out of range"),
        (Query(Perturbation.of(CMP00=1, CMP01=1, CMP02=1, CMP03=1), 6, CTX, "scrna"), "4 targets; max_order is 3"),
        (Query(Perturbation.of(CMP00=1.0), 6, CTX, "nanopore"), "unknown assay 'nanopore'"),
        (Query(Perturbation.of(CMP00=1.0), 6, Context("L9", "S0"), "scrna"), "unknown context L9/S0"),
        (Query(Perturbation.of(CMP00=1.0), 6, CTX, "scrna", replicates=0), "replicates must be >= 1"),
    ],
)
def test_every_validation_error_names_query_and_field(space, query, match):
    with pytest.raises(ValueError, match=match) as err:
        space.validate(query)
    assert query.query_id in str(err.value)


def test_cost_sums_assay_cost_times_replicates(space):
    p = Perturbation.of(CMP00=1.0)
    qs = [Query(p, 6, CTX, "scrna", 2), Query(p, 6, CTX, "cite_seq"), Query(p, 6, CTX, "cell_painting", 3)]
    assert space.cost(qs) == pytest.approx(2 * 1.0 + 2.5 + 3 * 0.3)
    assert space.cost([]) == 0.0


def test_sample_is_seeded_and_valid(space):
    a = space.sample(50, np.random.default_rng(3))
    b = space.sample(50, np.random.default_rng(3))
    c = space.sample(50, np.random.default_rng(4))
    assert [q.query_id for q in a] == [q.query_id for q in b]
    assert [q.query_id for q in a] != [q.query_id for q in c]
    for q in a:
        space.validate(q)
    assert max(q.perturbation.order for q in space.sample(300, np.random.default_rng(0))) == 3


def test_grid_enumerates_full_factorial(space):
    qs = space.grid(n_doses=3, times_h=(6.0, 24.0), orders=(0, 1), assays=["scrna"])
    n_targets, n_ctx = len(space.targets), len(space.contexts)
    assert len(qs) == (1 + n_targets * 3) * 2 * n_ctx
    assert len({q.query_id for q in qs}) == len(qs)
    doses = sorted({q.perturbation.doses[0] for q in qs if q.perturbation.targets == ("CMP00",)})
    np.testing.assert_allclose(np.log10(doses), [-3.0, -0.5, 2.0])


def test_json_round_trip_of_every_type(space):
    rng = np.random.default_rng(0)
    for q in space.sample(50, rng):
        d = json.loads(json.dumps(q.to_dict()))
        assert Query.from_dict(d) == q
    back = DesignSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert back == space
    assert back.encode(space.sample(5, np.random.default_rng(1))).shape[1] == space.encoding.dim


def test_space_rejects_bad_catalogues():
    with pytest.raises(ValueError, match="unique"):
        DesignSpace(targets=(Target("A", "compound"), Target("A", "compound")), contexts=(CTX,))
    with pytest.raises(ValueError, match="max_order"):
        DesignSpace(targets=(Target("A", "compound"),), contexts=(CTX,), max_order=4)
    with pytest.raises(ValueError, match="reserved"):
        Target("A+B", "compound")


def test_pool_space_only_accepts_and_samples_pool_members(space):
    import dataclasses

    pool = space.sample(30, np.random.default_rng(2))
    pooled = dataclasses.replace(space, pool=tuple(pool))
    ids = {q.query_id for q in pool}
    drawn = pooled.sample(10, np.random.default_rng(0))
    assert len({q.query_id for q in drawn}) == 10 and {q.query_id for q in drawn} <= ids
    assert {q.query_id for q in pooled.grid(orders=(0, 1, 2, 3))} == ids
    pooled.validate(pool[0].with_replicates(3))
    outside = space.sample(1, np.random.default_rng(99))[0]
    with pytest.raises(ValueError, match="not in the candidate pool"):
        pooled.validate(outside)
    assert DesignSpace.from_dict(json.loads(json.dumps(pooled.to_dict()))).pool_ids == pooled.pool_ids


def test_held_out_contexts_are_catalogued_but_never_proposed(space):
    import dataclasses

    held = space.contexts[0]
    sp = dataclasses.replace(space, held_out_contexts=(held,))
    assert held not in {q.context for q in sp.sample(200, np.random.default_rng(0))}
    assert held not in {q.context for q in sp.grid(n_doses=2)}
    q = Query(Perturbation.of(CMP00=1.0), 6, held, "scrna")
    with pytest.raises(ValueError, match="held out for evaluation"):
        sp.validate(q)
    assert not sp.admissible(q) and space.admissible(q)
    assert sp.encode([q]).shape == (1, sp.encoding.dim)  # still encodable: models may be asked about it
    with pytest.raises(ValueError, match="held_out_contexts"):
        dataclasses.replace(space, held_out_contexts=space.contexts)
    assert DesignSpace.from_dict(json.loads(json.dumps(sp.to_dict()))) == sp


def test_held_out_combinations_are_never_proposed(space):
    import dataclasses

    sp = dataclasses.replace(space, held_out_target_sets=(("CMP01", "CMP00"),))
    assert sp.held_out_target_sets == (("CMP00", "CMP01"),)
    drawn = sp.sample(400, np.random.default_rng(1), orders=[0, 0, 1])
    assert drawn and all(q.perturbation.targets != ("CMP00", "CMP01") for q in drawn)
    assert all(q.perturbation.targets != ("CMP00", "CMP01") for q in sp.grid(n_doses=2, orders=(2,)))
    q = Query(Perturbation.of(CMP00=1.0, CMP01=2.0), 6, CTX, "scrna")
    with pytest.raises(ValueError, match="combination CMP00\\+CMP01 is held out"):
        sp.validate(q)
    sp.validate(Query(Perturbation.of(CMP00=1.0), 6, CTX, "scrna"))  # its parts stay available
    assert DesignSpace.from_dict(json.loads(json.dumps(sp.to_dict()))) == sp
    assert space.rna_assay() == "scrna"
