"""A new modality (chromatin accessibility) is one descriptor per package, nothing else.

The test registers ``atac`` in the two tables a modality needs, the
descriptor table of :mod:`experiment_design.modalities` and the world's
operator table :data:`simulators.operators.OPERATORS`, and then uses it
through the unchanged code: a world measures it, the lab reader and the
readout checks treat it as counts, the CSL model decodes it with its kind's
default decoder, predicts it and is scored on it on the modality axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from experiment_design import Assay, MeasurementBatch, Query, Scale, keys
from experiment_design.modalities import ModalitySpec, axis_modalities, register_modality, unregister_modality
from models import CSLEnsemble
from models.evaluation import evaluate
from models.modules.decoders import CountDecoder
from models.readouts import observed_readout
from simulators.counts import rna_expected, sample_rna
from simulators.lab_formats import DataFormatError, table_to_batch
from simulators.operators import OPERATORS, MeasurementOperator
from simulators.world import CellWorld

ATAC = "atac"
N_PEAKS = 24


@pytest.fixture(scope="module")
def atac_world():
    """A small world whose space also has an ATAC assay and an RNA + ATAC multiome anchor."""
    register_modality(ModalitySpec(ATAC, "counts", "cell", "log_cp10k", axis="modality"))
    OPERATORS[ATAC] = MeasurementOperator(
        var_names=lambda p, cfg: tuple(f"peak_{p.genes[g]}" for g in range(N_PEAKS)),
        units=lambda cfg: cfg.cells_per_well,
        expected=lambda p, cfg, u: 0.3 * rna_expected(p, u.z, u.site)[0, :N_PEAKS],
        sample=lambda d: sample_rna(d.params, d.cells.z, d.cells.cc, d.site, d.rng, capture=0.3)[:, :N_PEAKS],
    )
    try:
        world = CellWorld("small", seed=0)
        extra = (
            Assay("scatac", (ATAC,), Scale.CELLULAR, 1.0, (50,)),
            Assay("multiome", ("rna", ATAC), Scale.CELLULAR, 2.0, (50, 50)),
        )
        world.space = dataclasses.replace(world.space, assays=world.space.assays + extra)
        yield world
    finally:
        OPERATORS.pop(ATAC, None)
        unregister_modality(ATAC)


def _queries(world: CellWorld, n: int, seed: int, assays: list[str]) -> list[Query]:
    return world.space.sample(n, np.random.default_rng(seed), assays=assays)


def test_world_measures_the_new_modality(atac_world):
    qs = _queries(atac_world, 6, 0, ["scatac", "multiome"])
    batch = atac_world.measure(qs)
    X = batch.modalities[ATAC].X
    assert X.shape == (6 * 50, N_PEAKS) and (X >= 0).all() and np.array_equal(X, np.round(X))
    multi = [q.query_id for q in qs if q.assay == "multiome"]
    assert set(batch.modalities["rna"].obs[keys.QUERY_ID]) == set(multi)  # the anchor's RNA, same specimens
    expected = atac_world.truth.expected(qs)[ATAC]
    assert expected.shape == (6, N_PEAKS)
    per_well = np.stack([X[i * 50 : (i + 1) * 50].mean(axis=0) for i in range(6)])
    assert np.corrcoef(np.log1p(per_well).ravel(), np.log1p(expected).ravel())[0, 1] > 0.8
    assert MeasurementBatch.from_arrow(batch.to_arrow()).modalities[ATAC].var_names == atac_world.var_names[ATAC]
    readout = observed_readout(batch, ATAC)  # log CP10k, from the descriptor
    assert readout.values.shape == (6, N_PEAKS) and np.isfinite(readout.values).all()
    assert ATAC in axis_modalities("modality") and ATAC not in axis_modalities("scale")


def test_lab_reader_holds_the_new_modality_to_counts(atac_world, tmp_path):
    batch = atac_world.measure(_queries(atac_world, 2, 1, ["scatac"]))
    m = batch.modalities[ATAC]
    df = pd.concat([m.obs, pd.DataFrame(m.X, columns=m.var_names)], axis=1)
    back = table_to_batch(df, tmp_path / "atac.csv", ATAC, features=list(m.var_names))
    np.testing.assert_array_equal(back.modalities[ATAC].X, m.X)
    df.loc[3, m.var_names[0]] = 2.5
    with pytest.raises(DataFormatError, match=r"row 5, column peak_\w+: 2.5 is not a count; atac"):
        table_to_batch(df, tmp_path / "atac.csv", ATAC, features=list(m.var_names))


def test_csl_model_decodes_predicts_and_is_scored_on_it(atac_world):
    train = atac_world.measure(_queries(atac_world, 24, 2, ["multiome", "scatac", "scrna"]))
    model = CSLEnsemble(atac_world.space, n_members=2, seed=0, max_steps=120, warm_steps=60)
    model.fit(train)
    assert isinstance(model.networks[0].decoders[ATAC], CountDecoder)  # the default decoder of counts
    held = atac_world.measure(_queries(atac_world, 6, 3, ["scatac"]))
    pred = model.predict(_queries(atac_world, 6, 3, ["scatac"]), readouts=("programs", ATAC))
    assert pred.members[ATAC].shape == (2, 6, N_PEAKS) and np.isfinite(pred.members[ATAC]).all()
    report = evaluate(model, {"modality": held}, control_data=train)
    assert report.parts["risk_modality"] < 0.9  # beats the mean of controls on the new modality (0.45 measured)


def test_an_unregistered_modality_is_refused_by_name():
    with pytest.raises(ValueError, match=r"Assay 'riboseq': unknown modalities \['ribo'\]; known \['rna'"):
        Assay("riboseq", ("ribo",), Scale.CELLULAR, 1.0, (50,))
    with pytest.raises(ValueError, match="kind 'ordinal' is not one of"):
        ModalitySpec(ATAC, "ordinal", "cell", "mean")
