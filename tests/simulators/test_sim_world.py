"""CellWorld as an oracle: presets, reproducibility, metadata, layouts, conversions, invalid queries."""

import math
import time

import numpy as np
import pandas as pd
import pytest

from experiment_design import Context, MeasurementBatch, Perturbation, Query, TargetKind, keys
from simulators import CellWorld, make_world
from simulators.registry import ORACLES


@pytest.fixture(scope="module")
def world():
    return make_world("small", seed=3)


def _queries(world, n=20, seed=0):
    return world.space.sample(n, np.random.default_rng(seed))


def _frame(md):
    obs = md.obs.reset_index(drop=True)
    return obs, md.X


def _assert_same(b1, b2):
    assert set(b1.modalities) == set(b2.modalities)
    for m in b1.modalities:
        o1, x1 = _frame(b1.modalities[m])
        o2, x2 = _frame(b2.modalities[m])
        pd.testing.assert_frame_equal(o1, o2)
        np.testing.assert_array_equal(x1, x2)


def test_presets_have_the_sizes_of_the_issue():
    d = make_world("default", seed=0)
    kinds = {t.kind for t in d.space.targets}
    assert (d.config.n_genes, d.config.n_programs, len(d.space.targets)) == (200, 8, 16)
    assert TargetKind.COMPOUND in kinds and kinds & {TargetKind.KNOCKDOWN, TargetKind.ACTIVATION}
    assert len({c.cell_line for c in d.space.contexts}) == 3 and len({c.site for c in d.space.contexts}) == 2
    assert d.space.time_range_h == (0.0, 48.0) and d.space.max_order == 3
    costs = {a.name: a.cost for a in d.space.assays}
    assert costs == {
        "scrna": 1.0,
        "cite_seq": 2.5,
        "cell_painting": 0.3,
        "rna_morphology": 1.5,
        "molecular": 0.5,
        "molecular_rna": 1.6,
        "spatial": 4.0,
        "spatial_dissociated": 6.0,
    }
    large = make_world("large", seed=0)
    assert (large.config.n_genes, large.config.n_programs, len(large.space.targets)) == (2000, 32, 200)
    assert len({c.cell_line for c in large.space.contexts}) == 10
    small = make_world("small", seed=0, cells_per_well=7, costs={"scrna": 2.0})
    assert small.space.assay("scrna").units == (7,) and small.space.assay("scrna").cost == 2.0
    assert ORACLES.get("sim") is CellWorld
    with pytest.raises(ValueError, match="preset"):
        make_world("huge")
    with pytest.raises(ValueError, match="n_gens"):
        make_world("small", n_gens=3)


def test_same_seed_same_data_and_order_free(world):
    qs = _queries(world)
    a, b = qs[:10], qs[10:]
    ab = world.measure(a + b)
    ba = world.measure(b + a)
    again = make_world("small", seed=3).measure(a + b)
    _assert_same(ab, again)
    ids_a = [q.query_id for q in a]
    _assert_same(ab.subset(ids_a), world.measure(a))
    for qid in ab.query_ids:
        _assert_same(ab.subset([qid]), ba.subset([qid]))
    q = Query(Perturbation.of(CMP00=1.0), 12.0, world.space.contexts[0], "scrna")
    other = make_world("small", seed=4)  # genetic target names follow the seed's driver genes; compounds do not
    assert not np.array_equal(other.measure([q]).modalities["rna"].X, world.measure([q]).modalities["rna"].X)


def test_replicates_extend_without_changing_earlier_ones(world):
    q = Query(Perturbation.of(CMP00=1.0), 12.0, world.space.contexts[0], "cite_seq")
    one = world.measure([q])
    three = world.measure([q.with_replicates(3)])
    rna = three.modalities["rna"].obs
    assert sorted(rna[keys.REPLICATE].unique()) == [0, 1, 2]
    mask = (rna[keys.REPLICATE] == 0).to_numpy()
    np.testing.assert_array_equal(three.modalities["rna"].X[mask], one.modalities["rna"].X)
    assert not np.array_equal(three.modalities["rna"].X[~mask][:20], one.modalities["rna"].X)


def test_obs_metadata_and_anchor_pairing(world):
    ctx = world.space.contexts[-1]
    qs = [
        Query(Perturbation.of(CMP01=2.0, **{world.space.targets[-1].name: 0.5}), 6.0, ctx, "cite_seq", 2),
        Query(Perturbation.control(), 24.0, ctx, "rna_morphology"),
        Query(Perturbation.of(CMP02=0.1), 30.0, ctx, "spatial_dissociated"),
        Query(Perturbation.of(CMP00=5.0), 30.0, ctx, "molecular_rna"),
    ]
    b = world.measure(qs)
    for m, md in b.modalities.items():
        for col in (*keys.OBS_COLUMNS, keys.PLATE, keys.WELL):
            assert col in md.obs.columns, (m, col)
        assert (md.obs[keys.MODALITY] == m).all()
        assert (md.obs[keys.BATCH] == md.obs[keys.SITE]).all()
        assert (md.obs[keys.TIME_UNIT] == "h").all()
        spec = md.obs[keys.QUERY_ID] + ":" + md.obs[keys.REPLICATE].astype(str)
        assert (md.obs[keys.SPECIMEN] == spec).all()
    rna, adt = b.modalities["rna"], b.modalities["adt"]
    combo = rna.obs[rna.obs[keys.ASSAY] == "cite_seq"]
    assert set(combo[keys.PERTURBATION]) == {qs[0].perturbation.label}
    units = "+".join(world.space.target(t).dose_unit for t in qs[0].perturbation.targets)
    assert set(combo[keys.DOSE_UNIT]) == {units} and sorted(units.split("+")) == ["fraction", "uM"]
    assert set(combo[keys.DOSE_VALUE]) == {qs[0].perturbation.dose_label}
    assert list(rna.obs_names[rna.obs[keys.ASSAY] == "cite_seq"]) == list(adt.obs_names)
    assert len(adt.obs) == 2 * world.space.assay("cite_seq").units_of("adt")
    ctrl = rna.obs[rna.obs[keys.ASSAY] == "rna_morphology"]
    assert set(ctrl[keys.PERTURBATION]) == {"control"} and set(ctrl[keys.DOSE_UNIT]) == {""}
    assert set(rna.obs_names[rna.obs[keys.ASSAY] == "rna_morphology"]) <= set(b.modalities["morphology"].obs_names)
    sp = b.modalities["spatial"]
    assert {"x", "y"} <= set(sp.obs.columns) and sp.obs["x"].notna().all()
    assert (sp.obs[keys.PLATE] == "").all() and len(sp.obs) == world.config.spots_per_patch
    assert len(b.modalities["molecular"].obs) == 1
    assert b.modalities["molecular"].var_names == world.params.programs
    assert adt.var_names[0].startswith("ADT_G")
    assert rna.var_names[0] == "G0000" and len(b.modalities["morphology"].var_names[0]) == 8
    for md in b.modalities.values():
        assert np.isfinite(md.X).all()
    assert (rna.X >= 0).all() and (rna.X == np.round(rna.X)).all()


def test_layout_positions_are_used_and_checked(world):
    qs = [Query(Perturbation.control(), 6.0, world.space.contexts[0], "cell_painting", 2)]
    qid = qs[0].query_id
    layout = {(qid, 0): ("PL1", "A01"), (qid, 1): ("PL2", "P24")}
    obs = world.measure(qs, layout=layout).modalities["morphology"].obs
    got = set(zip(obs[keys.REPLICATE], obs[keys.PLATE], obs[keys.WELL], strict=True))
    assert got == {(0, "PL1", "A01"), (1, "PL2", "P24")}
    with pytest.raises(ValueError, match="layout"):
        world.measure(qs, layout={(qid, 0): ("PL1", "A01")})
    with pytest.raises(ValueError, match="well"):
        world.measure(qs, layout={(qid, 0): ("PL1", "A01"), (qid, 1): ("PL1", "7B")})
    own = world.measure(qs).modalities["morphology"].obs
    assert own[keys.PLATE].str.startswith("SIM").all() and own[keys.WELL].str.match(r"^[A-H]\d\d$").all()


def test_plate_edge_effect_shows_in_morphology(world):
    q = Query(Perturbation.control(), 6.0, world.space.contexts[0], "cell_painting", 2)
    layout = {(q.query_id, 0): ("PL", "A01"), (q.query_id, 1): ("PL", "D06")}
    md = world.measure([q], layout=layout).modalities["morphology"]
    rep = md.obs[keys.REPLICATE].to_numpy()
    diff = md.X[rep == 0].mean(0) - md.X[rep == 1].mean(0)
    p = world.params
    expected = p.morph_edge + (-1 - (2 * 3 / 7 - 1)) * p.morph_row + (-1 - (2 * 5 / 11 - 1)) * p.morph_col
    assert np.corrcoef(diff, expected)[0, 1] > 0.8


def test_arrow_and_anndata_round_trips_are_lossless(world):
    b = world.measure(_queries(world, 12, seed=5))
    _assert_same(MeasurementBatch.from_arrow(b.to_arrow()), b)
    back = MeasurementBatch.from_anndata(b.to_anndata())
    for m in b.modalities:
        np.testing.assert_array_equal(back.modalities[m].X, b.modalities[m].X)
        assert list(back.modalities[m].obs_names) == list(b.modalities[m].obs_names)


def _invalid(world):
    ctx = world.space.contexts[0]
    good = Perturbation.of(CMP00=1.0)
    gene = next(t.name for t in world.space.targets if t.kind != TargetKind.COMPOUND)
    names = [t.name for t in world.space.targets]
    return {
        "unknown target": Query(Perturbation.of(NOPE=1.0), 6.0, ctx, "scrna"),
        "compound dose too high": Query(Perturbation.of(CMP00=1e3), 6.0, ctx, "scrna"),
        "compound dose zero": Query(Perturbation.of(CMP00=0.0), 6.0, ctx, "scrna"),
        "gene strength above 1": Query(Perturbation((gene,), (1.5,)), 6.0, ctx, "scrna"),
        "nan dose": Query(Perturbation.of(CMP00=math.nan), 6.0, ctx, "scrna"),
        "negative time": Query(good, -1.0, ctx, "scrna"),
        "time beyond range": Query(good, 72.0, ctx, "scrna"),
        "unknown assay": Query(good, 6.0, ctx, "bulk"),
        "unknown cell line": Query(good, 6.0, Context("nope", ctx.site), "scrna"),
        "unknown site": Query(good, 6.0, Context(ctx.cell_line, "nope"), "scrna"),
        "zero replicates": Query(good, 6.0, ctx, "scrna", 0),
        "four targets": Query(Perturbation(tuple(names[:4]), (0.5,) * 4), 6.0, ctx, "scrna"),
    }


@pytest.mark.parametrize("case", list(_invalid(make_world("small", seed=3))))
def test_every_invalid_query_raises(world, case):
    bad = _invalid(world)[case]
    ok = _queries(world, 3)
    with pytest.raises(ValueError, match=bad.query_id):
        world.measure([*ok, bad])
    with pytest.raises(ValueError):
        world.truth.expected([bad])


def test_non_query_raises(world):
    with pytest.raises(ValueError, match="not a Query"):
        world.measure([{"perturbation": "CMP00"}])


def test_small_preset_is_fast(world):
    qs = _queries(world, 20, seed=9)
    world.measure(qs)
    t0 = time.process_time()  # CPU time: does not grow when other jobs load the machine
    world.measure(qs)
    assert time.process_time() - t0 < 0.5
