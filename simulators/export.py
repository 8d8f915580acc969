"""Write a simulated screen as ``.h5ad`` files, so adapters and users can work from a file.

Usage::

    python -m simulators.export --world default --design random --n 500 --out screen.h5ad [--seed N]
        [--assays scrna,cite_seq] [--replicates 1]

The ``rna`` modality goes to ``--out``; every other measured modality goes to
a file next to it named ``<stem>.<modality>.h5ad`` (``screen.adt.h5ad``,
``screen.spatial.h5ad``, ...). All files share obs names
(``<query_id>:<replicate>:<unit>``) and carry the scPerturb obs keys of
:mod:`experiment_design.keys` plus ``plate`` / ``well`` (and ``x`` / ``y``
for spatial spots); ``uns["cslab"]`` records the world, seed and design.

Designs: ``random`` (``DesignSpace.sample``: 5% controls, then singles, pairs
and triplets), ``grid`` (controls and single targets on a dose grid at 6 and
24 h, cycled over contexts, first ``n``), ``controls`` (controls only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiment_design import Perturbation, Query
from simulators.world import CellWorld

DESIGNS = ("random", "grid", "controls")


def design_queries(world: CellWorld, design: str, n: int, assays: list[str], rng: np.random.Generator) -> list[Query]:
    """``n`` queries of a named design.

    Raises:
        ValueError: On an unknown design or assay.

    """
    space = world.space
    unknown = [a for a in assays if a not in space.assay_index]
    if unknown:
        raise ValueError(f"unknown assays {unknown}; known: {list(space.assay_index)}")
    if design == "random":
        return space.sample(n, rng, assays=assays)
    if design == "grid":
        grid = space.grid(n_doses=5, orders=(0, 1), assays=assays[:1], contexts=space.contexts[:1])
        out = []
        for i in range(n):
            q = grid[i % len(grid)]
            ctx = space.contexts[(i // len(grid)) % len(space.contexts)]
            out.append(Query(q.perturbation, q.time_h, ctx, assays[i % len(assays)]))
        return out
    if design == "controls":
        lo, hi = space.time_range_h
        return [
            Query(
                Perturbation.control(),
                float(rng.uniform(lo, hi)),
                space.contexts[int(rng.integers(len(space.contexts)))],
                assays[i % len(assays)],
            )
            for i in range(n)
        ]
    raise ValueError(f"unknown design {design!r}; known: {DESIGNS}")


def export(world: CellWorld, queries: list[Query], out: Path, meta: dict) -> dict[str, tuple[Path, int, int]]:
    """Measure ``queries`` and write one ``.h5ad`` per modality.

    The ``rna`` modality (or, without one, the first measured) goes to ``out``.

    Returns:
        Modality → ``(path, n_units, n_features)`` written.

    """
    batch = world.measure(queries)
    adatas = batch.to_anndata()
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.name[: -len(".h5ad")] if out.name.endswith(".h5ad") else out.name
    primary = "rna" if "rna" in adatas else next(iter(adatas))
    written = {}
    for modality, a in adatas.items():
        path = out if modality == primary else out.with_name(f"{stem}.{modality}.h5ad")
        a.uns["cslab"] = json.dumps({**meta, "modality": modality})
        tmp = path.with_name(path.name + ".tmp")
        a.write_h5ad(tmp)
        tmp.replace(path)
        written[modality] = (path, a.n_obs, a.n_vars)
    return written


def main(argv: list[str] | None = None) -> dict[str, tuple[Path, int, int]]:
    """Command-line entry point; prints one line per file written."""
    ap = argparse.ArgumentParser(prog="python -m simulators.export", description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="default", help="world preset: small, default, large")
    ap.add_argument("--design", default="random", choices=DESIGNS)
    ap.add_argument("--n", type=int, default=500, help="number of queries (conditions)")
    ap.add_argument("--out", type=Path, required=True, help="path of the rna .h5ad")
    ap.add_argument("--seed", type=int, default=0, help="world seed (the design uses seed + 1)")
    ap.add_argument("--assays", default="scrna", help="comma-separated assays to draw from (default scrna)")
    ap.add_argument("--replicates", type=int, default=1)
    args = ap.parse_args(argv)
    if args.n < 1 or args.replicates < 1:
        ap.error("--n and --replicates must be >= 1")
    try:
        world = CellWorld(preset=args.world, seed=args.seed)
        assays = [a.strip() for a in args.assays.split(",") if a.strip()]
        if not assays:
            raise ValueError("--assays names no assay")
        queries = design_queries(world, args.design, args.n, assays, np.random.default_rng(args.seed + 1))
    except ValueError as exc:  # a bad setting: one line and exit 2, as argparse does
        ap.error(str(exc))
    queries = [q.with_replicates(args.replicates) for q in queries]
    meta = {"world": args.world, "seed": args.seed, "design": args.design, "n": args.n, "assays": assays}
    written = export(world, queries, args.out, meta)
    for modality, (path, n_obs, n_vars) in written.items():
        print(f"wrote {path}: {modality}, {n_obs} units x {n_vars} features from {len(queries)} queries")
    return written


if __name__ == "__main__":
    main()
