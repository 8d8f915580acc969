import numpy as np
import pandas as pd
import pytest

from experiment_design import Perturbation, Query, keys
from experiment_design.plate_io import read_plates, read_wellmap, round_dir, write_plates
from experiment_design.plate_layout import PlateLayout
from experiment_design.plates import LayoutConfig, PlateFormat, default_positive, layout_plates


def dose_series(space, n_doses=6, replicates=3, contexts=None, assay="cell_painting", target="CMP00"):
    contexts = contexts or [space.contexts[0]]
    return [
        Query(Perturbation.of(**{target: float(d)}), 24.0, c, assay, replicates)
        for c in contexts
        for d in space.dose_series(target, n_doses)
    ]


def rng(seed=0):
    return np.random.default_rng(seed)


def quadrant(row, column, fmt):
    r = ord(row) - ord("A")
    return (r >= fmt.n_rows // 2, column > fmt.n_cols // 2)


# ------------------------------------------------------------- constraints
@pytest.mark.parametrize("size", [96, 384])
def test_controls_on_every_plate_spread_over_all_quadrants(space, size):
    cfg = LayoutConfig(plate_size=size)
    queries = dose_series(space, n_doses=10, replicates=12 if size == 96 else 40)
    lay = layout_plates(queries, cfg, rng())
    assert len(lay.plates) >= 2
    for name in lay.plates:
        plate = lay.plate(name)
        counts = plate["role"].value_counts()
        assert counts["negative"] == cfg.n_negative and counts["positive"] == cfg.n_positive
        ctrl = plate[plate["role"].isin(["negative", "positive"])]
        assert {quadrant(r, c, cfg.plate_format) for r, c in zip(ctrl["row"], ctrl["column"], strict=True)} == {
            (a, b) for a in (False, True) for b in (False, True)
        }
        # Not clumped: spread over rows and columns too (interior: 6 x 10 or 14 x 22 wells).
        n_rows, n_cols = cfg.plate_format.n_rows - 2, cfg.plate_format.n_cols - 2
        assert ctrl["row"].value_counts().max() <= -(-len(ctrl) // n_rows) + 1
        assert ctrl["column"].value_counts().max() <= -(-len(ctrl) // n_cols) + 1
    assert (cfg.n_negative, cfg.n_positive) == ((4, 2) if size == 96 else (16, 8))


def test_edge_policies(space):
    queries = dose_series(space, n_doses=10, replicates=9)  # 90 specimens
    empty = layout_plates(queries, LayoutConfig(edge="empty"), rng()).table
    assert (empty.loc[empty["edge"], "role"] == "empty").all()
    controls = layout_plates(queries, LayoutConfig(edge="controls"), rng()).table
    assert (controls.loc[controls["edge"], "role"] == "negative").all()
    inner = controls[~controls["edge"]]
    assert (inner.groupby("plate")["role"].apply(lambda r: (r == "negative").sum()) == 4).all()
    use = layout_plates(queries, LayoutConfig(edge="use"), rng()).table
    assert len(set(use["plate"])) == 1  # 90 + 6 controls fill one 96-well plate, edges included
    assert (use["role"] != "empty").all() and use.loc[use["edge"], "role"].eq("sample").any()


def test_replicates_spread_across_plates_and_wells(space):
    queries = dose_series(space, n_doses=10, replicates=4) + dose_series(
        space, n_doses=10, replicates=4, target="CMP01"
    )
    queries += [Query(Perturbation.of(KD00=0.5), 12.0, space.contexts[0], "cell_painting", 3)] * 15  # merged
    lay = layout_plates(queries, LayoutConfig(), rng())
    samples = lay.rows_of(["sample"])
    assert len(lay.plates) == 3 and len(samples) == 80 + 45  # 54 sample wells per plate
    spread = samples.groupby("query_id").agg(
        n=("plate", "size"), plates=("plate", "nunique"), wells=("well", "nunique")
    )
    assert (spread["plates"] == spread["n"].clip(upper=3)).all()
    assert (spread["wells"] == spread["n"]).all()
    assert samples.groupby("plate").size().max() - samples.groupby("plate").size().min() <= 1


def test_one_context_per_plate_where_possible(space):
    ctx = list(space.contexts[:3])
    queries = dose_series(space, n_doses=8, replicates=4, contexts=ctx)  # 32 specimens per context
    lay = layout_plates(queries, LayoutConfig(), rng())
    filled = lay.rows_of(["sample", "negative", "positive"])
    assert len(lay.plates) == 3
    assert (filled.groupby(keys.PLATE)[[keys.CELL_LINE, keys.SITE]].nunique() == 1).all().all()
    tight = layout_plates(queries, LayoutConfig(max_plates=2), rng())  # 96 specimens, 108 wells on 2 plates
    pairs = tight.rows_of(["sample"])[[keys.PLATE, keys.CELL_LINE, keys.SITE]].drop_duplicates()
    # Contexts packed, not scattered: the fewest (plate, context) pairs, n_plates + n_contexts - 1.
    assert len(tight.plates) == 2 and len(pairs) == 2 + 3 - 1
    spread = layout_plates(queries, LayoutConfig(one_context_per_plate=False), rng()).rows_of(["sample"])
    per_plate = spread.groupby([keys.PLATE, keys.CELL_LINE, keys.SITE]).size().unstack([1, 2])
    assert per_plate.shape == (2, 3) and (per_plate.max() - per_plate.min() <= 1).all()  # every context everywhere


def test_positions_deterministic_under_seed_and_differ_across_seeds(space):
    queries = dose_series(space, n_doses=8, replicates=3)
    a = layout_plates(queries, LayoutConfig(), rng(7)).table
    b = layout_plates(queries, LayoutConfig(), rng(7)).table
    c = layout_plates(queries, LayoutConfig(), rng(8)).table
    pd.testing.assert_frame_equal(a, b)
    assert (a["query_id"] != c["query_id"]).mean() > 0.2


def test_tissue_assays_are_not_plated(space):
    queries = dose_series(space, n_doses=3) + dose_series(space, n_doses=2, assay="spatial")
    lay = layout_plates(queries, LayoutConfig(), rng(), space=space)
    assert [q.assay for q in lay.unplated] == ["spatial", "spatial"]
    assert set(lay.rows_of(["sample"])[keys.ASSAY]) == {"cell_painting"}
    only = layout_plates(dose_series(space, assay="spatial"), LayoutConfig(), rng())
    assert only.plates == [] and len(only.unplated) == 6


def test_layout_mapping_and_queries_cover_every_filled_well_once(space):
    queries = dose_series(space, n_doses=6, replicates=3, contexts=list(space.contexts[:2]))
    queries.append(Query(Perturbation.control(), 24.0, space.contexts[0], "cell_painting", 2))  # a vehicle sample
    lay = layout_plates(queries, LayoutConfig(edge="controls"), rng(), space=space, round_index=3)
    mapping = lay.to_layout_mapping()
    filled = lay.rows_of(["sample", "negative", "positive"])
    assert len(mapping) == len(filled) and len(set(mapping.values())) == len(filled)
    assert all(p.startswith("R0003-P") for p, _ in mapping.values())
    measured = lay.queries_to_measure()
    assert sum(q.replicates for q in measured) == len(filled)
    assert all((q.query_id, r) in mapping for q in measured for r in range(q.replicates))
    assert {q.perturbation for q in lay.control_queries()} == {Perturbation.control(), default_positive(queries)}
    assert {q.query_id: q.replicates for q in lay.sample_queries()} == {q.query_id: q.replicates for q in queries}
    units = set(lay.rows_of(["sample"])[keys.DOSE_UNIT])
    assert units <= {"uM", ""}


def test_default_positive_is_strongest_single(space):
    queries = dose_series(space, n_doses=4) + [
        Query(Perturbation.of(CMP01=100.0, KD00=1.0), 24.0, space.contexts[0], "cell_painting")
    ]
    assert default_positive(queries) == Perturbation.of(CMP00=100.0)
    per_context = layout_plates(queries, LayoutConfig(), rng(), positive=lambda ctx: Perturbation.of(CMP02=1.0))
    assert set(per_context.rows_of(["positive"])[keys.PERTURBATION]) == {"CMP02"}


# --------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda s: layout_plates(dose_series(s, 10, 12), LayoutConfig(max_plates=1), rng()), "max_plates=1"),
        (lambda s: layout_plates(dose_series(s), LayoutConfig(n_negative=60), rng()), "controls do not fit"),
        (
            lambda s: layout_plates(dose_series(s), LayoutConfig(n_negative=54, n_positive=6), rng()),
            "no wells left for samples",
        ),
        (
            lambda s: layout_plates(dose_series(s), LayoutConfig(), rng(), positive=Perturbation.control()),
            "is the negative control",
        ),
        (
            lambda s: layout_plates(
                [Query(Perturbation.control(), 24.0, s.contexts[0], "cell_painting")], LayoutConfig(), rng()
            ),
            "no perturbed query",
        ),
        (lambda s: layout_plates([], LayoutConfig(), rng()), "no queries"),
        (lambda s: layout_plates([dose_series(s)[0].with_replicates(0)], LayoutConfig(), rng()), "replicates"),
        (lambda s: LayoutConfig(edge="avoid"), "edge='avoid'"),
        (lambda s: LayoutConfig(plate_size=48), "plate size 48"),
        (lambda s: LayoutConfig(n_positive=-1), "n_positive"),
        (lambda s: LayoutConfig(max_plates=0), "max_plates"),
        (lambda s: PlateFormat.of(96).parse_well("I01"), "not on a 96-well plate"),
    ],
)
def test_infeasible_configs_name_the_constraint(space, make, match):
    with pytest.raises(ValueError, match=match):
        make(space)


def test_from_table_rejects_metadata_that_contradicts_query_id(space):
    lay = layout_plates(dose_series(space), LayoutConfig(), rng())
    t = lay.table.copy()
    i = t.index[t["role"] == "sample"][0]
    t.loc[i, keys.DOSE_VALUE] = "3.0"
    with pytest.raises(ValueError, match=f"well {t.loc[i, 'well']}: query_id"):
        PlateLayout.from_table(t)


# ------------------------------------------------------------------ files
def test_write_plates_csv_wellmap_png_round_trip(space, tmp_path):
    queries = dose_series(space, n_doses=6, replicates=5, contexts=list(space.contexts[:2]))
    queries.append(Query(Perturbation.of(CMP01=0.5, KD00=0.25), 6.0, space.contexts[1], "rna_morphology", 2))
    lay = layout_plates(queries, LayoutConfig(edge="controls"), rng(), space=space, round_index=2)
    paths = write_plates(lay, tmp_path)
    folder = round_dir(tmp_path, 2)
    assert folder == tmp_path / "plates" / "round-0002"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"plate-{i:02d}.{ext}" for i in range(1, len(lay.plates) + 1) for ext in ("csv", "toml", "png")
    )
    pd.testing.assert_frame_equal(read_plates(tmp_path, 2).table, lay.table)
    for i, name in enumerate(lay.plates, start=1):
        back = read_wellmap(folder / f"plate-{i:02d}.toml")
        pd.testing.assert_frame_equal(back, lay.plate(name))
        png = (folder / f"plate-{i:02d}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert all(p.exists() for p in paths)
    with pytest.raises(ValueError, match="round_index 5"):
        write_plates(lay, tmp_path, 5)


# ---------------------------------------------------------------- science
def _response_rmse(world, queries, measured, mapping, vehicle_ids):
    """Vehicle-normalised per-dose mean morphology vs truth.expected, RMSE over doses and features."""
    m = world.measure(measured, layout=mapping).modalities["morphology"]
    qid = m.obs[keys.QUERY_ID].to_numpy()
    vehicle = m.X[np.isin(qid, list(vehicle_ids))].mean(axis=0)
    est = np.stack([m.X[qid == q.query_id].mean(axis=0) - vehicle for q in queries])
    control = Query(Perturbation.control(), 24.0, queries[0].context, "cell_painting")
    expected = world.truth.expected([*queries, control])["morphology"]
    return float(np.sqrt(np.mean((est - (expected[:-1] - expected[-1])) ** 2)))


def test_randomised_edge_free_layout_beats_naive_row_by_row_on_simulated_plate_effects():
    from simulators import make_world

    fmt = PlateFormat.of(96)
    naive_err, random_err = [], []
    for seed in range(5):
        world = make_world("small", seed=seed)
        ctx = world.space.contexts[0]
        queries = [
            Query(Perturbation.of(**{c: float(d)}), 24.0, ctx, "cell_painting", 3)
            for c in ("CMP00", "CMP01", "CMP02")
            for d in world.space.dose_series(c, 8)
        ]
        positive = queries[-1].perturbation
        # Naive: controls first, then each dose series ascending, row by row from A01, edges used.
        vehicle = Query(Perturbation.control(), 24.0, ctx, "cell_painting", 4)
        naive = [vehicle, Query(positive, 24.0, ctx, "cell_painting", 2), *queries]
        wells = iter(fmt.positions())
        mapping = {(q.query_id, r): ("NAIVE", fmt.well_name(*next(wells))) for q in naive for r in range(q.replicates)}
        naive_err.append(_response_rmse(world, queries, naive, mapping, {vehicle.query_id}))
        lay = layout_plates(queries, LayoutConfig(), rng(seed), positive=positive, space=world.space)
        vehicle_ids = {q.query_id for q in lay.control_queries() if q.perturbation.is_control}
        random_err.append(
            _response_rmse(world, queries, lay.queries_to_measure(), lay.to_layout_mapping(), vehicle_ids)
        )
    naive_err, random_err = np.array(naive_err), np.array(random_err)
    # bench/plates.py: naive / random ~ 2.9 over 20 seeds; require a clear margin on 5.
    assert random_err.mean() < 0.6 * naive_err.mean()
    assert (random_err < naive_err).sum() >= 4
