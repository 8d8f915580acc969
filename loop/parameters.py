"""Fitted dose–response parameters of a run: per target EC50, slope, efficacy and onset; per pair the interaction.

For screen designers the answer of a run is often a table: each drug's (or
guide's) potency and slope, and which pairs are synergistic. This module
reads the run's last checkpoint and gives, for a model with learned
operators (:class:`models.base.OperatorModel`, e.g. ``csl``):

* **targets** — per target, on its *main program* (each member's program
  with the largest |Emax| for it: members need not number their programs
  alike; ``program`` is the most common): ``log10_ec50`` (median over
  ensemble members, log10 of the target's dose unit; with its spread over
  members ``log10_ec50_sd``), ``ec50``, ``hill``, ``emax`` (latent units),
  ``tau_h`` and ``effect``: the predicted readout change at the top of the
  target's dose range against the control (median over members).
  ``identified`` marks an effect (|Emax| ≥ ``EFFECT_MIN``) whose EC50 the
  members agree on within ``EC50_SD_MAX`` log10 units.
* **pairs** — per target pair, the model's interaction ``gamma`` (median,
  and its spread over members; the model's reference is additivity of the
  targets' effects on a program) and, from the predicted readout at both
  EC50s (each clipped into its dose range), ``excess_additive``
  (``y_ab − y_a − y_b + y_0``) and, for a one-feature readout on a ratio
  scale (viability, growth: every prediction positive), ``excess_bliss`` (``y_ab − y_a·y_b / y_0``;
  negative = more inhibition than independent action, i.e. Bliss synergy for
  a viability readout). ``n_measured`` counts the pair's conditions the run
  measured: a pair never measured (or held out for evaluation) has a ``gamma``
  extrapolated from the others.
  ``synergy`` is +1 where the pair goes further than additivity in the
  direction its parts push, −1 where it falls short
  (:func:`loop.recovery.nonadditivity_sign`).

The readout is the run's first assay's first modality when it has one
feature (a scalar screen), else the model's program activities (each
member's main program of the target, of the first target for a pair).

    python -m loop.parameters runs/screen1               # prints both tables
    python -m loop.parameters runs/screen1 --csv fitted  # also writes fitted.targets.csv, fitted.pairs.csv
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import DesignSpace, Perturbation, Query
from loop.rounds import RoundStore

#: Main-program |Emax| (latent units) below which a target counts as having no effect.
EFFECT_MIN = 0.2
#: Largest spread over members (log10 units) of an EC50 that counts as identified.
EC50_SD_MAX = 0.3


class NoParameters(RuntimeError):
    """The run has no checkpoint, or its model has no operator parameters (the reason is the message)."""


def load_last_model(root: str | Path) -> tuple[object, DesignSpace, object]:
    """The run's model restored from its last checkpoint, its design space and its :class:`RunConfig`.

    Raises:
        NoParameters: No checkpoint in ``checkpoints/``.
    """
    import torch

    from experiment_design.registry import load_plugins
    from loop.config import RunConfig
    from loop.storage import read_json

    store = RoundStore(root)
    ckpts = store.model_paths()
    if not ckpts:
        raise NoParameters(f"{root}: no model checkpoint in checkpoints/")
    stored = read_json(store.config_path)
    config = RunConfig.from_dict(stored["config"])
    load_plugins(config.plugins)
    space = DesignSpace.from_dict(stored["space"])
    torch.set_num_threads(1)
    model = config.build_model(space)
    model.load_state_dict(torch.load(io.BytesIO(ckpts[-1].read_bytes()), weights_only=False))
    return model, space, config


def measured_pairs(root: str | Path) -> dict[frozenset, int]:
    """Target pair → conditions of it the run measured (its proposals, every round; stress sets excluded)."""
    store = RoundStore(root)
    out: dict[frozenset, int] = {}
    for path in store.proposal_paths():
        for q in store.read_proposal(int(path.stem.split("-")[1])):
            if q.perturbation.order == 2:
                key = frozenset(q.perturbation.targets)
                out[key] = out.get(key, 0) + 1
    return out


def _readout(model: object, space: DesignSpace) -> str:
    """The modality readout of a scalar screen, else ``programs``."""
    from models.base import PROGRAMS

    mod = space.assays[0].modalities[0]
    q = Query(Perturbation.control(), float(space.time_range_h[1]), space.open_contexts[0], space.assays[0].name)
    pred = model.predict([q])
    if mod in pred.members and np.asarray(pred.members[mod]).shape[-1] == 1:
        return mod
    return PROGRAMS


def _predict(model: object, space: DesignSpace, perts: list[Perturbation], readout: str) -> np.ndarray:
    """``(M, n, F)`` members' readout of ``perts`` in the first open context at the last time."""
    t_h, ctx, assay = float(space.time_range_h[1]), space.open_contexts[0], space.assays[0].name
    return np.asarray(model.predict([Query(p, t_h, ctx, assay) for p in perts]).members[readout], float)


def _at(y: np.ndarray, rows: int | np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(M,)`` each member's value at row ``rows`` and its own column ``cols[m]``."""
    return y[np.arange(len(y)), rows, cols]


def fitted_parameters(
    model: object, space: DesignSpace, measured: dict[frozenset, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The targets and pairs tables (see the module docstring).

    Args:
        model: A fitted model with ``operator_parameters()``.
        space: Its design space.
        measured: Target pair → conditions measured (:func:`measured_pairs`); fills the pairs'
            ``n_measured`` column (a pair never measured has a γ extrapolated from the others).

    Returns:
        ``targets`` (one row per target) and ``pairs`` (one row per target
        pair, empty when the space has no combinations), pairs sorted by
        ``|gamma|``.

    Raises:
        NoParameters: The model has no operator parameters.
    """
    if not callable(getattr(model, "operator_parameters", None)):
        raise NoParameters(f"model {type(model).__name__} has no operator parameters (a baseline)")
    P = model.operator_parameters()
    ec50, hill, emax, tau = (np.asarray(P[k], float) for k in ("log10_ec50", "hill", "emax", "tau_h"))
    # Each member's main program per target: members need not number their programs alike.
    main = np.abs(emax).argmax(axis=2)  # (M, T)
    M, T = main.shape
    m_ = np.arange(M)
    readout = _readout(model, space)
    cols = main if readout == "programs" else np.zeros_like(main)  # (M, T): the readout column read per member
    top = [Perturbation((t.name,), (float(space.dose_ranges[t.kind][1]),)) for t in space.targets]
    y = _predict(model, space, [Perturbation.control(), *top], readout)
    rows = []
    for j, t in enumerate(space.targets):
        k = main[:, j]
        e = float(np.median(emax[m_, j, k]))
        sd = float(ec50[m_, j, k].std(ddof=1)) if M > 1 else float("nan")
        lec = float(np.median(ec50[m_, j, k]))
        rows.append(
            {
                "target": t.name,
                "kind": t.kind.value,
                "dose_unit": t.dose_unit,
                "program": int(np.bincount(k).argmax()),
                "log10_ec50": lec,
                "log10_ec50_sd": sd,
                "ec50": 10.0**lec,
                "hill": float(np.median(hill[m_, j, k])),
                "emax": e,
                "tau_h": float(np.median(tau[:, j])),
                "effect": float(np.median(_at(y, 1 + j, cols[:, j]) - _at(y, 0, cols[:, j]))),
                "identified": bool(abs(e) >= EFFECT_MIN and np.isfinite(sd) and sd <= EC50_SD_MAX),
            }
        )
    targets = pd.DataFrame(rows)
    if space.max_order < 2 or T < 2:
        return targets, pd.DataFrame(columns=["a", "b", "gamma", "gamma_sd", "excess_additive", "excess_bliss"])
    pairs = _pairs(model, space, targets, np.asarray(P["interactions"], float), readout, cols)
    if measured is not None:
        pairs.insert(
            2, "n_measured", [measured.get(frozenset((a, b)), 0) for a, b in zip(pairs["a"], pairs["b"], strict=True)]
        )
    return targets, pairs


def _pairs(
    model: object, space: DesignSpace, targets: pd.DataFrame, gamma: np.ndarray, readout: str, cols: np.ndarray
) -> pd.DataFrame:
    """One row per target pair: the model's γ and the predicted excess over additivity (and Bliss) at the EC50s."""
    from loop.recovery import nonadditivity_sign

    names = [t.name for t in space.targets]
    at = []
    for t, lec in zip(space.targets, targets["log10_ec50"], strict=True):
        lo, hi = space.dose_ranges[t.kind]
        at.append(float(np.clip(10.0**lec, lo, hi)))
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))]
    perts = [Perturbation.control()] + [Perturbation((n,), (d,)) for n, d in zip(names, at, strict=True)]
    perts += [Perturbation((names[a], names[b]), (at[a], at[b])) for a, b in pairs]
    y = _predict(model, space, perts, readout)
    scalar = readout != "programs"
    rows = []
    for i, (a, b) in enumerate(pairs):
        k = cols[:, a]  # each member reads the pair on the first target's main program
        y0, ya, yb, yab = (_at(y, r, k) for r in (0, 1 + a, 1 + b, 1 + len(names) + i))  # (M,) each
        g = gamma[:, a, b]
        ratio = scalar and bool((np.minimum(np.minimum(y0, ya), np.minimum(yb, yab)) > 0).all())
        rows.append(
            {
                "a": names[a],
                "b": names[b],
                "gamma": float(np.median(g)),
                "gamma_sd": float(g.std(ddof=1)) if len(g) > 1 else float("nan"),
                "excess_additive": float(np.median(yab - ya - yb + y0)),
                "excess_bliss": float(np.median(yab - ya * yb / y0)) if ratio else float("nan"),
                "synergy": nonadditivity_sign(*(float(np.median(v)) for v in (yab, ya, yb, y0))),
            }
        )
    return pd.DataFrame(rows).sort_values("gamma", key=np.abs, ascending=False, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: print (and optionally write) a run's fitted dose–response tables."""
    p = argparse.ArgumentParser(prog="python -m loop.parameters", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run folder")
    p.add_argument("--csv", metavar="PREFIX", help="also write PREFIX.targets.csv and PREFIX.pairs.csv")
    args = p.parse_args(argv)
    try:
        model, space, _ = load_last_model(args.run)
        targets, pairs = fitted_parameters(model, space, measured_pairs(args.run))
    except (NoParameters, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        print(f"targets (main program; log10 EC50 in the dose unit, median over members):\n{targets}")
        if len(pairs):
            print(f"\npairs (interaction γ; excess over additivity at both EC50s):\n{pairs}")
    if args.csv:
        targets.to_csv(f"{args.csv}.targets.csv", index=False)
        pairs.to_csv(f"{args.csv}.pairs.csv", index=False)
        print(f"wrote {args.csv}.targets.csv and {args.csv}.pairs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
