"""Re-score finished runs against reference controls: the aggregate risk with a design-independent yardstick.

    python -m bench.rescore <study or run folder> [--against random]

The stored risk (``metrics.parquet``) divides each stress set's error by that of the
mean of controls *of the run's training data*; a modality the design never measured
a control of falls back to the set's own mean, a much harder yardstick. So the risk
of two designs on the same seed is measured with two rulers (README, "The risk's
yardstick"). This bench keeps the stored definition and adds the other one without
re-running anything: for every round of every run of a simulated world it reloads
the round's checkpoint and training data, scores the stress sets

* as stored (the training data's controls), which must reproduce ``metrics.parquet``'s
  risk (to :data:`TOLERANCE`), or the run is reported as not reproducible and left out; and
* against reference controls measured from the run's world
  (:func:`loop.heldout.reference_queries`: every assay in every context, the same for
  every design on a seed; the simulator seeds each (query, replicate) by itself).

It writes ``<folder>/rescored/<run>.parquet`` (one row per round: ``risk_stored``,
``risk_reference`` and the reference's four axes), skips runs already rescored (rerun
to resume), and prints per strategy the budget ratio to reach the ``--against`` strategy's
(random's) final risk under both definitions (:func:`loop.stats.headline`, paired seeds) with
each definition's final risk. Runs of measured data (``--oracle lab``) have no world to
measure controls from and are skipped with a message.
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
    """One row per round of ``run``: spent, identifiability, the stored risk recomputed, the reference risk.

    Raises:
        ValueError: If the run is not of a simulated world, or has no checkpoint of a round it scored.
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
    if config.oracle != "sim":
        raise ValueError(f"{run}: oracle {config.oracle!r} has no world to measure reference controls from")
    load_plugins(config.plugins)
    space = DesignSpace.from_dict(stored["space"])
    world = simulators.make_world(config.world, seed=config.seed, **config.world_overrides)
    reference = world.measure(reference_queries(space))
    held = HeldOut(run, space, config.seed, config.heldout_per_axis)
    ledger = Ledger(run)
    metrics = pd.read_parquet(run / "metrics.parquet").sort_values("round")
    rows = []
    for _, m in metrics.iterrows():
        k = int(m["round"])
        checkpoint = store.model_path(k)
        if not checkpoint.is_file():
            raise ValueError(f"{run}: round {k} has metrics but no checkpoint {checkpoint}")
        model = config.build_model(space)
        model.load_state_dict(torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=False))
        data = held.trainable(ledger.load(upto=k))
        old, new = held.score(model, data), held.score(model, data, reference=reference)
        rows.append(
            {
                "strategy": config.strategy,
                "model": config.model,
                "seed": config.seed,
                "round": k,
                "spent": float(m["spent"]),
                "identifiability": float(m["identifiability"]),
                "risk_metrics": float(m["risk"]),
                "risk_stored": old.risk,
                "risk_reference": new.risk,
                **{f"{a}_reference": v for a, v in new.parts.items()},
            }
        )
    return pd.DataFrame(rows)


def final_rows(table: pd.DataFrame) -> pd.core.groupby.DataFrameGroupBy:
    """Each (strategy, seed)'s last round, grouped by strategy."""
    return table.sort_values("round").groupby(["strategy", "seed"]).last().groupby("strategy")


def headline_rows(table: pd.DataFrame, against: str) -> list[dict]:
    """Per strategy: ratio to reach ``against``'s final risk under both definitions, and final risks."""
    from bench.efficiency import ratio_text
    from loop.stats import headline

    out = {}
    finals = final_rows(table)
    for label, col in (("stored", "risk_stored"), ("reference", "risk_reference")):
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
    cache.mkdir(exist_ok=True)
    tables = []
    with Progress(transient=True) as bar:
        task = bar.add_task("rescoring", total=len(runs))
        for run in runs:
            path = cache / f"{run.name}.parquet"
            if not path.is_file():
                try:
                    t = rescore_run(run)
                except ValueError as exc:
                    print(f"skipped: {exc}", file=sys.stderr)
                    bar.advance(task)
                    continue
                bad = (t["risk_stored"] - t["risk_metrics"]).abs().max()
                if not bad <= TOLERANCE:
                    print(f"skipped: {run}: the stored risk does not reproduce (off by {bad:.3g})", file=sys.stderr)
                    bar.advance(task)
                    continue
                tmp = path.with_suffix(".tmp")
                t.to_parquet(tmp)
                tmp.replace(path)
            tables.append(pd.read_parquet(path))
            bar.advance(task)
    if not tables:
        print(f"error: {folder}: no finished run of a simulated world to rescore", file=sys.stderr)
        return 2
    table = pd.concat(tables, ignore_index=True)
    print(f"{len(tables)} runs rescored ({cache}); risk against the training data's controls (stored) and against")
    print("reference controls of every assay and context (the same for every design):")
    if args.against in set(table["strategy"]):
        print(pd.DataFrame(headline_rows(table, args.against)).round(3).to_string(index=False))
    else:
        print(final_rows(table)[["risk_stored", "risk_reference"]].mean().round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
