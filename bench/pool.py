"""Pool mode: does smart acquisition still beat random when replaying measured screens of each kind?

Four screens are exported from the small world by ``simulators.export`` in the
formats labs and atlases use, then replayed through the lab adapter
(``--oracle lab``) by ``random`` and by smart strategies over paired seeds:

* ``mixed``: 150 conditions × 2 replicates, scRNA / molecular / CITE-seq (cslab's format);
* ``crispr_sc``: a single-cell CRISPRi/a screen, one sample per condition with its cells as
  replicates, written as atlases ship it (log-normalised ``X``, counts in ``layers["counts"]``,
  ``non-targeting`` controls, ``perturbation_type``, guide and QC metadata);
* ``knockdown``: the same kind with knockdown / activation strengths, pairs and triplets,
  2 replicates;
* ``drug_grid``: a drug × drug dose grid (every pair on 4 × 4 doses, the singles, the control,
  both cell lines) with one scalar readout per well, as a ``drug1, drug2, conc1, conc2,
  response`` CSV.

Without truth the index is the practical one (posterior contraction, Fisher spectrum,
held-out likelihood). Per screen it prints the final index and aggregate risk per strategy
(mean over seeds) and the paired difference to random, and the risk against the training
data's controls (its definition until 2026-12-08), and writes ``bench/results/pool.json``
(directory overridable with ``CSLAB_BENCH_RESULTS``; ``--quick`` writes to ``bench/results/quick/`` instead).

    python -m bench.pool [--quick] [--seeds 3] [--budget 40] [--screens mixed,drug_grid]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import write_result
from loop.distributed import pin_threads

pin_threads()  # before numpy is imported

import numpy as np  # noqa: E402

#: Screen → (``simulators.export`` arguments, file name, conditions at full / quick size).
SCREENS = {
    "mixed": (["--assays", "scrna,molecular,cite_seq", "--replicates", "2"], "screen.h5ad", 150, 40),
    "crispr_sc": (
        ["--targets", "genetic", "--assays", "scrna", "--replicates", "1", "--format", "scperturb"],
        "crispr.h5ad",
        150,
        40,
    ),
    "knockdown": (
        ["--targets", "genetic", "--assays", "scrna", "--replicates", "2", "--format", "scperturb"],
        "knockdown.h5ad",
        120,
        40,
    ),
    "drug_grid": (
        ["--design", "pairs", "--targets", "compound", "--assays", "molecular", "--replicates", "2"]
        + ["--format", "combo"],
        "grid.csv",
        1000,
        1000,
    ),
}


def export_screen(name: str, folder: Path, quick: bool) -> Path:
    """Write screen ``name`` into ``folder``; returns its path."""
    from simulators.export import main as export_main

    args, file, n, n_quick = SCREENS[name]
    path = folder / file
    design = [] if "--design" in args else ["--design", "random"]
    export_main(
        ["--world", "small", *design, "--n", str(n_quick if quick else n), "--out", str(path), "--seed", "0"] + args
    )
    return path


def summarise(rows: list[dict], strategies: list[str]) -> dict:
    """Per strategy: mean final index and risk, and the paired differences to random."""
    base = {r["seed"]: r for r in rows if r["strategy"] == "random"}
    out = {}
    for s in strategies:
        mine = [r for r in rows if r["strategy"] == s]
        d_id = [r["identifiability"] - base[r["seed"]]["identifiability"] for r in mine]
        d_risk = [r["risk"] - base[r["seed"]]["risk"] for r in mine]
        d_old = [r["risk_training_controls"] - base[r["seed"]]["risk_training_controls"] for r in mine]
        out[s] = {
            "identifiability": float(np.mean([r["identifiability"] for r in mine])),
            "risk": float(np.mean([r["risk"] for r in mine])),
            "risk_training_controls": float(np.mean([r["risk_training_controls"] for r in mine])),
            "delta_identifiability": float(np.mean(d_id)),
            "delta_risk": float(np.mean(d_risk)),
            "delta_risk_training_controls": float(np.mean(d_old)),
            "seeds_better_identifiability": int(sum(d > 0 for d in d_id)),
            "seeds_lower_risk": int(sum(d < 0 for d in d_risk)),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the summary written to pool.json."""
    p = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (2 seeds, budget 12, 40 conditions)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=40.0)
    p.add_argument("--strategies", default="random,eig,cost_aware")
    p.add_argument("--screens", default=",".join(SCREENS), help=f"some of {', '.join(SCREENS)}")
    args = p.parse_args(argv)
    seeds, budget = (2, 12.0) if args.quick else (args.seeds, args.budget)
    strategies = args.strategies.split(",")
    screens = [s for s in args.screens.split(",") if s]
    unknown = [s for s in screens if s not in SCREENS]
    if unknown or "random" not in strategies:
        p.error(f"unknown screen(s) {unknown}; known: {list(SCREENS)}" if unknown else "strategies must include random")

    from loop.config import RunConfig
    from loop.distributed import init_ray
    from loop.study import Study

    init_ray(workers=2)
    t0 = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for screen in screens:
            path = export_screen(screen, Path(tmp), args.quick)
            rows = []
            for seed in range(seeds):
                for strategy in strategies:
                    cfg = RunConfig(
                        oracle="lab",
                        data=str(path),
                        budget=budget,
                        batch_size=6,
                        n_members=3,
                        strategy=strategy,
                        seed=seed,
                        initial_size=6,
                        heldout_per_axis=4,
                    )
                    m = Study.create(Path(tmp) / f"{screen}-{strategy}-{seed}", cfg).run()
                    rows.append(
                        {
                            "strategy": strategy,
                            "seed": seed,
                            "identifiability": float(m.identifiability.iloc[-1]),
                            "risk": float(m.risk.iloc[-1]),
                            "risk_training_controls": float(m.risk_training_controls.iloc[-1]),
                            "spent": float(m.spent.iloc[-1]),
                        }
                    )
                    print(
                        f"{screen:>10} {strategy:>12} seed {seed}: identifiability "
                        f"{rows[-1]['identifiability']:.3f}  risk {rows[-1]['risk']:.3f}",
                        flush=True,
                    )
            results[screen] = {"rows": rows, "summary": summarise(rows, strategies)}
    print(
        f"\n{'screen':>10} {'strategy':>12} {'ident':>7} {'risk':>7} {'Δident vs random':>17} {'Δrisk vs random':>16}"
        f" {'risk (train ctl)':>16} {'Δ vs random':>12}"
    )
    for screen, res in results.items():
        for s, v in res["summary"].items():
            print(
                f"{screen:>10} {s:>12} {v['identifiability']:7.3f} {v['risk']:7.3f} "
                f"{v['delta_identifiability']:+17.3f} {v['delta_risk']:+16.3f}"
                f" {v['risk_training_controls']:16.3f} {v['delta_risk_training_controls']:+12.3f}"
            )
    out = {"quick": args.quick, "seeds": seeds, "budget": budget, "screens": results}
    out["seconds"] = time.perf_counter() - t0
    path = write_result("pool", out, args.quick)
    print(f"wrote {path}")
    default = "cost_aware" if "cost_aware" in strategies else strategies[-1]
    parts = [
        f"{screen} risk {res['summary'][default]['risk']:.3f} vs {res['summary']['random']['risk']:.3f}"
        for screen, res in results.items()
    ]
    print(f"pool: {default} against random, {seeds} seeds, budget {budget:g}: " + "; ".join(parts))
    return out


if __name__ == "__main__":
    main()
