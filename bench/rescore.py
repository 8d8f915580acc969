"""Re-score finished runs under both definitions of the aggregate risk, from their checkpoints.

    python -m bench.rescore <study or run folder> [--against random]

Until 2026-12-08 the risk (``metrics.parquet``) divided each stress set's error by that
of the mean of controls *of the run's training data*; a modality the design never
measured a control of fell back to the set's own mean, a much harder yardstick, so two
designs on the same seed were measured with two rulers (README, "The risk's
yardstick"). Since then a run measures reference controls at its start
(:func:`loop.heldout.reference_queries`: every assay in every trainable context, the
same for every design on a seed) and stores ``risk`` against them and
``risk_training_controls`` under the earlier definition. This bench gives both for any
run without re-running it: for every round it reloads the round's checkpoint and
training data and scores the stress sets against both yardsticks. A run from before
measures its reference from its world (the simulator seeds each (query, replicate) by
itself, so these are the controls the run would have measured); a later run uses its
stored one. Every stored figure must be reproduced (to :data:`TOLERANCE`), or the run
is reported as not reproducible and left out.

It writes ``<folder>/rescored/<run>.parquet`` (one row per round: ``risk_training_controls``,
``risk_reference`` and the reference's four axes), skips runs already rescored (rerun
to resume), and prints per strategy the budget ratio to reach the ``--against`` strategy's
(random's) final risk under both definitions (:func:`loop.stats.headline`, paired seeds) with
each definition's final risk. Earlier runs of measured data (``--oracle lab``) have no world
to measure controls from and are skipped with a message.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from loop.distributed import pin_threads

#: Stored and recomputed risk must agree to this much for a run to count as reproduced: loose enough for the
#: rounding of another machine's BLAS kernels (a study may be rescored elsewhere than it ran), tight enough
#: that a wrong training set or checkpoint, which moves the risk by the size of a round's change, fails.
TOLERANCE = 1e-4


def rescore_run(run: Path) -> pd.DataFrame:
    """One row per round of ``run``: spent, identifiability, the risk under both definitions, recomputed.

    A run from before 2026-12-08 stored the risk against its training data's controls only; its reference
    controls are measured here from its world. A later run stored both and its own reference.

    Raises:
        ValueError: If an earlier run is not of a simulated world, or a run has no checkpoint of a round it
            scored.
    """
    import torch

    import simulators
    from experiment_design import DesignSpace
    from experiment_design.registry import load_plugins
    from loop.config import RunConfig
    from loop.heldout import HeldOut, reference_queries
    from loop.ledger import Ledger
    from loop.rounds import RoundStore
    from loop.storage import read_json

    store = RoundStore(run)
    stored = read_json(store.config_path)
    config = RunConfig.from_dict(stored["config"])
    load_plugins(config.plugins)
    space = DesignSpace.from_dict(stored["space"])
    held = HeldOut(run, space, config.seed, config.heldout_per_axis)
    reference = held.reference()
    if reference is None:
        if config.oracle != "sim":
            raise ValueError(f"{run}: oracle {config.oracle!r} has no world to measure reference controls from")
        world = simulators.make_world(config.world, seed=config.seed, **config.world_overrides)
        reference = world.measure(reference_queries(space, held.blocked))
    ledger = Ledger(run)
    metrics = pd.read_parquet(run / "metrics.parquet").sort_values("round")
    both = "risk_training_controls" in metrics  # stored under both definitions
    rows = []
    for _, m in metrics.iterrows():
        k = int(m["round"])
        checkpoint = store.model_path(k)
        if not checkpoint.is_file():
            raise ValueError(f"{run}: round {k} has metrics but no checkpoint {checkpoint}")
        model = config.build_model(space)
        model.load_state_dict(torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=False))
        report = held.score(model, held.trainable(ledger.load(upto=k)), reference=reference)
        rows.append(
            {
                "strategy": config.strategy,
                "model": config.model,
                "seed": config.seed,
                "round": k,
                "spent": float(m["spent"]),
                "identifiability": float(m["identifiability"]),
                "stored_training_controls": float(m["risk_training_controls"] if both else m["risk"]),
                "stored_reference": float(m["risk"]) if both else float("nan"),
                "risk_training_controls": report.details["risk_training_controls"],
                "risk_reference": report.risk,
                **{f"{a}_reference": v for a, v in report.parts.items()},
            }
        )
    return pd.DataFrame(rows)


def reproduction_error(table: pd.DataFrame) -> float:
    """Largest difference between a recomputed risk and the stored one (either definition, where stored)."""
    bad = (table["risk_training_controls"] - table["stored_training_controls"]).abs().max()
    ref = (table["risk_reference"] - table["stored_reference"]).abs().dropna()
    return float(max(bad, ref.max() if len(ref) else 0.0))


def cached_rescore(run: Path, path: Path) -> pd.DataFrame | None:
    """``run``'s table from ``path``, or rescored and written there atomically; None (said why) if it cannot be."""
    from loop.storage import read_table, write_table

    if path.is_file():
        return read_table(path).to_pandas()
    try:
        table = rescore_run(run)
    except ValueError as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return None
    bad = reproduction_error(table)
    if not bad <= TOLERANCE:
        print(f"skipped: {run}: the stored risk does not reproduce (off by {bad:.3g})", file=sys.stderr)
        return None
    write_table(path, table)
    return table


def final_rows(table: pd.DataFrame) -> pd.core.groupby.DataFrameGroupBy:
    """Each (strategy, seed)'s last round, grouped by strategy."""
    return table.sort_values("round").groupby(["strategy", "seed"]).last().groupby("strategy")


def headline_rows(table: pd.DataFrame, against: str) -> list[dict]:
    """Per strategy: ratio to reach ``against``'s final risk under both definitions, and final risks."""
    from bench.efficiency import ratio_text
    from loop.stats import headline

    out = {}
    finals = final_rows(table)
    for label, col in (("training_controls", "risk_training_controls"), ("reference", "risk_reference")):
        rows = headline(table.assign(neg=-table[col]), np.random.default_rng(0), column="neg", reference=against)
        for h in rows:
            entry = out.setdefault(h.strategy, {"strategy": h.strategy, "seeds": h.n_seeds})
            entry[f"ratio_{label}"] = ratio_text(h)
            entry[f"final_{label}"] = float(finals[col].mean()[h.strategy])
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rescore", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="a study folder (with runs/) or one run folder")
    ap.add_argument("--against", default="random", help="the strategy whose final risk is the target (random)")
    args = ap.parse_args(argv)
    pin_threads()
    from rich.progress import Progress

    from loop.report import find_runs
    from loop.rounds import RoundStore

    folder = Path(args.folder)
    try:
        runs = [r for r in find_runs(folder) if RoundStore(r).finished_path.is_file()]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = folder / "rescored"
    tables = []
    with Progress(transient=True) as bar:
        task = bar.add_task("rescoring", total=len(runs))
        for run in runs:
            table = cached_rescore(run, cache / f"{run.name}.parquet")
            if table is not None:
                tables.append(table)
            bar.advance(task)
    if not tables:
        print(f"error: {folder}: no finished run of a simulated world to rescore", file=sys.stderr)
        return 2
    table = pd.concat(tables, ignore_index=True)
    print(f"{len(tables)} runs rescored ({cache}); risk against the training data's controls (the definition")
    print("until 2026-12-08) and against reference controls of every assay and trainable context (the same for")
    print("every design):")
    if args.against in set(table["strategy"]):
        print(pd.DataFrame(headline_rows(table, args.against)).round(3).to_string(index=False))
    else:
        print(final_rows(table)[["risk_training_controls", "risk_reference"]].mean().round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
