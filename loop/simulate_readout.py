"""``python -m loop.simulate_readout --run DIR --out readout.csv``: a readout of the pending round, from the world.

For dry runs of the prospective workflow (``loop.run --oracle plates`` →
``loop.propose`` → this → ``loop.ingest``): it measures the laid-out round
with the run's own simulated world (``world``, ``seed`` and ``world_overrides``
of its config), plate positions included, and writes the file a lab would
return, in the format :mod:`loop.ingest` reads (one row per cell / well:
``plate``, ``well``, ``query_id``, ``replicate``, ``unit``, ``modality`` and one
column per feature). A run whose design space comes from ``--data`` has no
world to simulate and is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import simulators
from experiment_design.plate_layout import PlateLayout
from loop.ingest import readout_table
from loop.propose import layout_path, pending_round
from loop.rounds import RoundStore, is_run_folder
from loop.storage import atomic_write, read_json, read_table


def simulate_readout(run: str | Path, out: str | Path) -> tuple[Path, int]:
    """Write a simulated readout of ``run``'s pending, laid-out round to ``out`` (``.csv`` or ``.parquet``).

    Returns:
        The file written and its number of rows.

    Raises:
        ValueError: No pending round, no layout, a run without a simulated world, or a bad ``out``.
    """
    run, out = Path(run), Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: use a .csv or .parquet file name")
    if not is_run_folder(run):
        raise ValueError(f"--run {run}: no config.json; not a cslab run folder")
    config = read_json(RoundStore(run).config_path)["config"]
    if config.get("data"):
        raise ValueError(
            f"--run {run}: its design space comes from --data {config['data']}; there is no world to "
            "simulate (measure the plates in the lab)"
        )
    r = pending_round(RoundStore(run))
    lp = layout_path(run, r)
    if not lp.is_file():
        raise ValueError(f"--run {run}: round {r} has no plate layout; run python -m loop.propose --run {run} first")
    layout = PlateLayout.from_table(read_table(lp).to_pandas(), round_index=r)
    world = simulators.make_world(config["world"], seed=int(config["seed"]), **config.get("world_overrides", {}))
    batch = world.measure([*layout.queries_to_measure(), *layout.unplated], layout=layout.to_layout_mapping())
    table = readout_table(batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda fh: fh.write(table.to_csv(index=False).encode()))
    else:
        atomic_write(out, lambda fh: table.to_parquet(fh, index=False))
    return out, len(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m loop.simulate_readout", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder whose pending round is laid out on plates")
    p.add_argument("--out", required=True, help="readout file to write (.csv or .parquet)")
    args = p.parse_args(argv)
    try:
        path, n = simulate_readout(args.run, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: {n} rows; ingest it with: python -m loop.ingest --run {args.run} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
