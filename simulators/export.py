"""Write a simulated screen as ``.h5ad`` files, so adapters and users can work from a file.

Usage::

    python -m simulators.export --world default --design random --n 500 --out screen.h5ad [--seed N]
        [--assays scrna,cite_seq] [--replicates 1] [--targets all|compound|genetic]
        [--format cslab|scperturb|combo] [--response P0]

The ``rna`` modality goes to ``--out``; every other measured modality goes to
a file next to it named ``<stem>.<modality>.h5ad`` (``screen.adt.h5ad``,
``screen.spatial.h5ad``, ...). All files share obs names
(``<query_id>:<replicate>:<unit>``) and carry the scPerturb obs keys of
:mod:`experiment_design.keys` plus ``plate`` / ``well`` (and ``x`` / ``y``
for spatial spots); ``uns["cslab"]`` records the world, seed and design.

Designs: ``random`` (``DesignSpace.sample``: 5% controls, then singles, pairs
and triplets), ``grid`` (controls and single targets on a dose grid at 6 and
24 h, cycled over contexts, first ``n``), ``pairs`` (a target × target dose
grid as combination screens measure it: every pair on 4 × 4 doses, each
target alone on the same doses and the control, at the last time point, in
every cell line; first ``n``), ``controls`` (controls only). ``--targets``
restricts a design to compounds or to genetic perturbations.

Formats, so the lab adapter is exercised on files written the way labs and
atlases write them rather than by cslab:

* ``cslab`` (default): the obs keys above, raw values in ``X``.
* ``scperturb``: as single-cell atlases ship a screen: ``X`` log-normalised
  (``log1p`` of counts per 10⁴) with the raw counts in ``layers["counts"]``,
  controls named ``non-targeting`` (genetic) or ``DMSO`` (compounds),
  ``perturbation_type`` (``CRISPRi`` / ``CRISPRa`` / ``drug``), ``dose_unit``
  ``knockdown`` / ``activation`` / ``uM``, and text and QC metadata
  (``guide_id``, ``ncounts``, ``ngenes``) that must stay metadata.
* ``combo``: a CSV as drug-combination screens publish them: one row per
  well, ``drug1, drug2, conc1, conc2`` (µM), ``response`` (the well-level
  feature ``--response`` of a continuous modality, e.g. ``molecular``),
  ``cell_line``, ``replicate``, ``time``; compounds only, two at most.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import DesignSpace, MeasurementBatch, Perturbation, Query, TargetKind, keys
from experiment_design.modalities import is_counts
from simulators.world import CellWorld

DESIGNS = ("random", "grid", "pairs", "controls")
FORMATS = ("cslab", "scperturb", "combo")
TARGET_KINDS = ("all", "compound", "genetic")
#: Doses per target of the ``pairs`` design.
PAIR_DOSES = 4


def design_queries(
    world: CellWorld,
    design: str,
    n: int,
    assays: list[str],
    rng: np.random.Generator,
    space: DesignSpace | None = None,
) -> list[Query]:
    """``n`` queries of a named design over ``space`` (default the world's).

    Raises:
        ValueError: On an unknown design or assay.

    """
    space = space or world.space
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
    if design == "pairs":
        return pair_grid(space, assays[0])[:n]
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


def restrict_targets(space: DesignSpace, kinds: str) -> DesignSpace:
    """The space with only compound (or only genetic) targets; ``all`` leaves it as it is.

    Raises:
        ValueError: On an unknown kind, or when the world has no such target.
    """
    if kinds not in TARGET_KINDS:
        raise ValueError(f"unknown --targets {kinds!r}; known: {TARGET_KINDS}")
    if kinds == "all":
        return space
    keep = tuple(t for t in space.targets if (t.kind == TargetKind.COMPOUND) == (kinds == "compound"))
    if not keep:
        raise ValueError(f"the world has no {kinds} target")
    return dataclasses.replace(space, targets=keep)


def pair_grid(space: DesignSpace, assay: str) -> list[Query]:
    """Every target pair on a ``PAIR_DOSES`` × ``PAIR_DOSES`` dose grid, the singles and the control.

    At the last time point of the space, in every cell line (its first site), pairs of
    targets in the space's order; doses evenly spaced on each target's scale, the lowest
    dropped (it is the control's neighbour).
    """
    t_h = float(space.time_range_h[1])
    lines = {}
    for c in space.contexts:
        lines.setdefault(c.cell_line, c)
    doses = {t.name: [float(d) for d in space.dose_series(t.name, PAIR_DOSES + 1)[1:]] for t in space.targets}
    names = [t.name for t in space.targets]
    out = []
    for ctx in lines.values():
        out.append(Query(Perturbation.control(), t_h, ctx, assay))
        out += [Query(Perturbation((n,), (d,)), t_h, ctx, assay) for n in names for d in doses[n]]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                out += [Query(Perturbation((a, b), (x, y)), t_h, ctx, assay) for x in doses[a] for y in doses[b]]
    return out


def _scperturb(a: object, space: DesignSpace) -> object:
    """An rna AnnData rewritten as atlases ship it (see the module docstring)."""
    import scipy.sparse as sp

    counts = np.asarray(a.X, dtype=np.float32)
    total = counts.sum(axis=1, keepdims=True)
    lognorm = np.log1p(counts / np.maximum(total, 1.0) * 1e4).astype(np.float32)
    obs = a.obs.copy()
    genetic = all(t.kind != TargetKind.COMPOUND for t in space.targets)
    kinds = {t.name: t.kind for t in space.targets}
    unit = {TargetKind.COMPOUND: "uM", TargetKind.KNOCKDOWN: "knockdown", TargetKind.ACTIVATION: "activation"}
    kind_type = {TargetKind.COMPOUND: "drug", TargetKind.KNOCKDOWN: "CRISPRi", TargetKind.ACTIVATION: "CRISPRa"}
    labels, units, types, guides = [], [], [], []
    for label in obs[keys.PERTURBATION].astype(str):
        names = [] if label == keys.CONTROL else label.split(keys.COMBO_SEP)
        labels.append(keys.COMBO_SEP.join(names) or ("non-targeting" if genetic else "DMSO"))
        units.append(keys.COMBO_SEP.join(unit[kinds[n]] for n in names) or ("knockdown" if genetic else "uM"))
        types.append(kind_type[kinds[names[0]]] if names else ("CRISPRi" if genetic else "drug"))
        guides.append(keys.COMBO_SEP.join(f"{n}_sg1" for n in names if kinds[n] != TargetKind.COMPOUND) or "NTC_sg1")
    obs[keys.PERTURBATION], obs[keys.DOSE_UNIT], obs["perturbation_type"] = labels, units, types
    obs["guide_id"], obs["ncounts"], obs["ngenes"] = guides, total[:, 0], (counts > 0).sum(axis=1)
    out = type(a)(X=sp.csr_matrix(lognorm), obs=obs, var=a.var.copy())
    out.layers["counts"] = sp.csr_matrix(counts)
    return out


def combo_table(batch: MeasurementBatch, response: str | None) -> pd.DataFrame:
    """The combination-screen CSV of a well-level continuous modality (see the module docstring).

    Raises:
        ValueError: No well-level continuous modality, an unknown ``response`` feature, or a
            query with a genetic target or more than two targets.
    """
    mods = [n for n, m in batch.modalities.items() if not is_counts(n)]
    if not mods:
        raise ValueError("--format combo needs a continuous readout (e.g. --assays molecular)")
    m = batch.modalities[mods[0]]
    feature = response or m.var_names[0]
    if feature not in m.var_names:
        raise ValueError(f"--response {feature!r} is not a feature of {mods[0]}; features: {list(m.var_names)}")
    obs = m.obs.reset_index(drop=True)
    y = np.asarray(m.X)[:, m.var_names.index(feature)]
    rows = []
    for i, row in obs.iterrows():
        pert = Perturbation.parse(row[keys.PERTURBATION], row[keys.DOSE_VALUE])
        units = str(row[keys.DOSE_UNIT]).split(keys.COMBO_SEP)
        if pert.order > 2 or any(u != "uM" for u in units[: pert.order]):
            raise ValueError(f"--format combo: query {row[keys.QUERY_ID]} is not a compound single or pair")
        names = list(pert.targets) + [""] * (2 - pert.order)
        doses = [float(d) for d in pert.doses] + [0.0] * (2 - pert.order)
        rows.append(
            {
                "drug1": names[0] or "DMSO",
                "drug2": names[1] or "DMSO",
                "conc1": doses[0],
                "conc2": doses[1],
                "response": float(y[i]),
                "cell_line": row[keys.CELL_LINE],
                "replicate": int(row[keys.REPLICATE]),
                "time": float(row[keys.TIME]),
            }
        )
    return pd.DataFrame(rows)


def export(
    world: CellWorld,
    queries: list[Query],
    out: Path,
    meta: dict,
    fmt: str = "cslab",
    response: str | None = None,
    space: DesignSpace | None = None,
) -> dict[str, tuple[Path, int, int]]:
    """Measure ``queries`` and write one ``.h5ad`` per modality (or, ``combo``, one CSV).

    The ``rna`` modality (or, without one, the first measured) goes to ``out``.

    Args:
        world: The simulator.
        queries: What to measure.
        out: Path of the primary file.
        meta: Recorded in ``uns["cslab"]``.
        fmt: One of :data:`FORMATS`.
        response: The ``combo`` format's response feature (default the modality's first).
        space: The design's space (its targets' kinds name the ``scperturb`` controls).

    Returns:
        Modality → ``(path, n_units, n_features)`` written.

    """
    batch = world.measure(queries)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "combo":
        table = combo_table(batch, response)
        tmp = out.with_name(out.name + ".tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(out)
        return {"response": (out, len(table), 1)}
    adatas = batch.to_anndata()
    if fmt == "scperturb" and "rna" in adatas:
        adatas["rna"] = _scperturb(adatas["rna"], space or world.space)
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
    ap.add_argument("--targets", default="all", choices=TARGET_KINDS, help="restrict the design to these targets")
    ap.add_argument("--format", default="cslab", choices=FORMATS, help="how the files are written (see above)")
    ap.add_argument("--response", help="combo format: the feature written as response (default the first)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.replicates < 1:
        ap.error("--n and --replicates must be >= 1")
    try:
        world = CellWorld(preset=args.world, seed=args.seed)
        assays = [a.strip() for a in args.assays.split(",") if a.strip()]
        if not assays:
            raise ValueError("--assays names no assay")
        space = restrict_targets(world.space, args.targets)
        queries = design_queries(world, args.design, args.n, assays, np.random.default_rng(args.seed + 1), space)
        queries = [q.with_replicates(args.replicates) for q in queries]
        meta = {"world": args.world, "seed": args.seed, "design": args.design, "n": args.n, "assays": assays}
        written = export(world, queries, args.out, meta, args.format, args.response, space)
    except ValueError as exc:  # a bad setting: one line and exit 2, as argparse does
        ap.error(str(exc))
    for modality, (path, n_obs, n_vars) in written.items():
        print(f"wrote {path}: {modality}, {n_obs} units x {n_vars} features from {len(queries)} queries")
    return written


if __name__ == "__main__":
    main()
