"""``python -m loop.propose --run DIR --plate 96``: lay the next proposed round onto plates.

Writes ``DIR/plates/round-NNNN/plate-NN.csv`` (well, row, column, the
``experiment_design.keys`` metadata, ``role``, ``query_id``), a wellmap TOML
file and a PNG map per plate, and ``DIR/plates/round-NNNN/layout.parquet``
(the whole layout, which ``loop.ingest`` validates readouts against).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from experiment_design.plate_format import EDGE_POLICIES, LayoutConfig
from experiment_design.plates import layout_plates, write_plates
from loop.rounds import RoundStatus, RoundStore
from loop.storage import TMP_MARK, read_json, write_table


def layout_path(run: Path, r: int) -> Path:
    """Where the full layout table of round r is stored (:meth:`RoundStore.layout_path`)."""
    return RoundStore(run).layout_path(r)


def pending_round(store: RoundStore) -> int:
    """The round that is proposed but not measured.

    Raises:
        ValueError: If the run has no such round.
    """
    last = store.last_round()
    rec = store.read_status(last) if last is not None else None
    if rec is None or rec["status"] != RoundStatus.PROPOSED:
        state = "no rounds" if rec is None else f"round {last} is {rec['status'].name.lower()}"
        raise ValueError(
            f"{store.root}: no proposed round waits for plates ({state}); run python -m loop.run --resume first"
        )
    return last


def propose(
    run: str | Path,
    plate: int = 96,
    edge: str = "empty",
    max_plates: int | None = None,
    n_negative: int | None = None,
    n_positive: int | None = None,
    seed: int | None = None,
) -> list[Path]:
    """Lay the pending round of a run onto plates and write the files.

    Returns:
        The files written.
    """
    from experiment_design import DesignSpace

    run = Path(run)
    store = RoundStore(run)
    cfg = read_json(store.config_path)
    space = DesignSpace.from_dict(cfg["space"])
    r = pending_round(store)
    seed = cfg["config"]["seed"] if seed is None else seed
    config = LayoutConfig(
        plate_size=plate, edge=edge, max_plates=max_plates, n_negative=n_negative, n_positive=n_positive
    )
    layout = layout_plates(
        store.read_proposal(r), config, np.random.default_rng([seed, r, 0x91A7E]), space=space, round_index=r
    )
    # Stage the whole round folder, then swap it in: a new layout never mixes with files of an older one.
    final = layout_path(run, r).parent
    staging = final.parent / f".{final.name}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staged = write_plates(layout, staging, r)
    write_table(staging / "plates" / final.name / "layout.parquet", layout.table)
    old = final.parent / f".{final.name}.old{TMP_MARK}{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(staging / "plates" / final.name, final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return [final / p.name for p in staged] + [layout_path(run, r)]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m loop.propose",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--plate", type=int, default=96, choices=(96, 384), help="wells per plate")
    p.add_argument("--edge", default="empty", choices=EDGE_POLICIES, help="what to do with outer-edge wells")
    p.add_argument("--max-plates", type=int, default=None, help="most plates allowed (no limit)")
    p.add_argument("--negative", type=int, default=None, help="negative controls per plate (4 per 96)")
    p.add_argument("--positive", type=int, default=None, help="positive controls per plate (2 per 96)")
    p.add_argument("--seed", type=int, default=None, help="layout seed (the run's seed)")
    args = p.parse_args(argv)
    try:
        files = propose(args.run, args.plate, args.edge, args.max_plates, args.negative, args.positive, args.seed)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_plates = sum(f.suffix == ".csv" for f in files)
    print(f"wrote {n_plates} plate(s) to {files[0].parent}: CSV, wellmap TOML and PNG per plate, plus layout.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
