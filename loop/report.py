"""``python -m loop.report DIR``: the self-contained HTML report of a run or a study.

``DIR`` is a run folder (``config.json`` + ``metrics.parquet``) or a study
folder (``runs/<strategy>-seed<k>/`` run folders, as ``loop.compare``
writes). The report is one HTML file with every figure inlined as a PNG data
URI: it opens without network or side files. Sections (their HTML ids):
``identifiability``, ``identifiability-parts``, ``risk``, ``headline``,
``models``, ``spending``, ``coverage``, ``recovery``, ``parameters``, ``timings``, ``reproducibility``.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import DesignSpace, Perturbation
from loop import plots
from loop.recovery import Recovery, RecoveryUnavailable, checkpoint_recovery
from loop.rounds import RoundStore, RunState, is_run_folder
from loop.stats import REFERENCE, budget_to_reach, headline, headline_frame, model_ranking
from loop.storage import read_json, write_bytes

SECTIONS = {
    "identifiability": "Identifiability vs budget spent",
    "identifiability-parts": "Parts of the identifiability index",
    "risk": "Aggregate risk and its four axes",
    "headline": "Headline: budget to reach random's identifiability",
    "models": "Models against the baselines",
    "spending": "Where each strategy spent",
    "coverage": "Coverage of the chosen queries",
    "recovery": "Recovered vs true dose–response and interaction signs",
    "parameters": "Fitted dose–response parameters and interactions",
    "timings": "Timings per stage",
    "reproducibility": "Configuration and package versions",
}
#: A study's log of what ``loop.compare`` saw of each run (outcome, wall time, error); a run's own
#: state is in its folder (:meth:`loop.rounds.RoundStore.state`).
STATUS_FILE = "status.json"
RISK_COLUMNS = ("risk", "risk_modality", "risk_scale", "risk_context", "risk_intervention")


@dataclass
class RunData:
    """One run folder, loaded.

    Attributes:
        root: The folder.
        config: The whole ``config.json`` (``config``, ``space``, ``versions``, ``created``).
        metrics: ``metrics.parquet`` (one row per scored round).
        proposals: Every round's proposals concatenated (one row per query).
        state: Where the run stands (:class:`~loop.rounds.RunState`, from its folder).
        error: Why the run's last attempt stopped on an error (its ``failed.json``), ``None`` if it did not.
    """

    root: Path
    config: dict
    metrics: pd.DataFrame
    proposals: pd.DataFrame
    state: RunState = RunState.RUNNING
    error: str | None = None

    @property
    def strategy(self) -> str:
        """The run's strategy."""
        return self.config["config"]["strategy"]

    @property
    def model(self) -> str:
        """The run's model (``csl`` for runs made before models were named)."""
        m = self.config["config"].get("model", "csl")
        return m if isinstance(m, str) else "csl"

    @property
    def seed(self) -> int:
        """The run's seed."""
        return int(self.config["config"]["seed"])

    @property
    def space(self) -> DesignSpace:
        """The run's design space (with the run's costs)."""
        return DesignSpace.from_dict(self.config["space"])

    @property
    def failed(self) -> bool:
        """True when the run's last attempt stopped on an error and it has not ended normally since."""
        return self.state is RunState.FAILED

    @property
    def status(self) -> str:
        """``failed``, ``finished`` or ``running`` (not finished: still going, interrupted or waiting)."""
        return self.state.value

    @property
    def finished(self) -> bool:
        """True when the run ended normally (``finished.json``; a failed run's last rounds may be missing)."""
        return self.state is RunState.FINISHED


def load_run(root: str | Path) -> RunData:
    """Load a run folder.

    Args:
        root: The run folder.

    Raises:
        ValueError: If ``root`` has no ``config.json``.
    """
    root = Path(root)
    if not is_run_folder(root):
        raise ValueError(f"{root}: no config.json; not a cslab run folder")
    store = RoundStore(root)
    paths = store.proposal_paths()
    props = (
        pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
        if paths
        else pd.DataFrame(columns=["round", "perturbation", "dose_value", "time", "assay", "cost"])
    )
    state = store.state()
    error = store.failure() if state is RunState.FAILED else None
    return RunData(root, read_json(store.config_path), store.read_metrics(), props, state, error)


def find_runs(folder: str | Path) -> list[Path]:
    """The run folders of ``folder``: itself if it is a run, else ``folder/runs/*``.

    Raises:
        ValueError: If there is no run there.
    """
    folder = Path(folder)
    if is_run_folder(folder):
        return [folder]
    runs = sorted(p for p in (folder / "runs").glob("*") if is_run_folder(p))
    if not runs:
        raise ValueError(f"{folder}: neither a run folder (config.json) nor a study folder (runs/*/config.json)")
    return runs


def results_frame(runs: list[RunData]) -> pd.DataFrame:
    """Every metrics row of every run with ``model``, ``strategy``, ``seed``, ``finished`` and ``status``.

    This is ``results.parquet`` of a study.

    ``status`` is ``finished``, ``running`` or ``failed``; the rows of a failed
    run are kept (so that it can be inspected) and every mean leaves them out
    (:func:`scored_results`).
    """
    frames = [
        r.metrics.assign(model=r.model, strategy=r.strategy, seed=r.seed, finished=r.finished, status=r.status)
        for r in runs
        if len(r.metrics)
    ]
    if not frames:
        raise ValueError("no run has a scored round yet; nothing to report")
    return pd.concat(frames, ignore_index=True)


def scored_results(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`results_frame` that means may use: every run but the failed ones."""
    return results[results["status"] != "failed"] if "status" in results else results


def proposals_frame(runs: list[RunData]) -> pd.DataFrame:
    """Every proposed query of every run with ``strategy`` and ``seed``."""
    frames = [r.proposals.assign(strategy=r.strategy, seed=r.seed) for r in runs if len(r.proposals)]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["strategy", "seed", "round", "perturbation", "dose_value", "time", "assay", "cost"])
    )


def dose_points(props: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, target) of the non-control queries: ``target``, ``log10_dose``, ``time``, ``order``."""
    rows = []
    for i, (label, dose, t, s) in enumerate(
        zip(props["perturbation"], props["dose_value"], props["time"], props["strategy"], strict=True)
    ):
        p = Perturbation.parse(label, dose)
        for name, d in zip(p.targets, p.doses, strict=True):
            rows.append(
                {
                    "strategy": s,
                    "target": name,
                    "log10_dose": float(np.log10(max(d, 1e-12))),
                    "time": float(t),
                    "order": p.order,
                    "query": i,
                }
            )
    return pd.DataFrame(rows, columns=["strategy", "target", "log10_dose", "time", "order", "query"])


# ------------------------------------------------------------------ sections
def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="tbl", na_rep="–", float_format=lambda v: f"{v:.3g}")


def _models_html(results: pd.DataFrame) -> str:
    table = model_ranking(results)
    note = (
        "<p>Each model (with each strategy) at its final round, mean over seeds; rank 1 = best per column "
        "(lowest risk and mae, calibration_90 nearest 0.9, highest identifiability and standard metrics: "
        "pearson_delta, discrimination_score_l1, overlap_at_N, de_direction_match). Risk is in baseline units: the "
        "mean of the controls scores about 1 on every axis. The baselines (<code>mean</code>, "
        "<code>additive</code>, <code>linear</code>) have no operator parameters, so their identifiability is "
        "not defined (–).</p>"
    )
    return note + _table(table)


def _ratio_text(strategy: str, r: float, lo: float, hi: float, bound: float) -> str:
    """A headline ratio: ``r [lo, hi]``, a censored lower bound, or never reaches."""
    if strategy == REFERENCE:
        return "reference"
    if np.isfinite(r):
        return f"{r:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"≥ {bound:.2f} (censored)" if np.isfinite(bound) else "never reaches"


def _own_reach_html(results: pd.DataFrame) -> str:
    """Without random: each trajectory's own budget to 50% and 90% of its final identifiability."""
    rows = []
    for s, d in results.groupby("strategy"):
        reach = {f: [] for f in (0.5, 0.9)}
        for _, g in d.sort_values("round").groupby("seed"):
            y = g["identifiability"].to_numpy(float)
            for f in reach:
                reach[f].append(budget_to_reach(g["spent"].to_numpy(float), y, f * y[-1]))
        rows.append(
            {
                "strategy": s,
                "seeds": d["seed"].nunique(),
                "rounds": int(d.groupby("seed").size().mean()),
                "spent": d.groupby("seed")["spent"].max().mean(),
                "final identifiability": d.sort_values("round").groupby("seed")["identifiability"].last().mean(),
                "budget to 50% of final": np.mean(reach[0.5]),
                "budget to 90% of final": np.mean(reach[0.9]),
            }
        )
    return (
        "<p>No <code>random</code> run here, so no ratio to random: the table gives each trajectory's own "
        "budget to reach 50% and 90% of its final identifiability.</p>" + _table(pd.DataFrame(rows))
    )


def _headline_html(results: pd.DataFrame, rng: np.random.Generator) -> str:
    """The headline table: budget to reach random's final identifiability, as a ratio to random's."""
    if REFERENCE not in set(results["strategy"]):
        return _own_reach_html(results)
    table = headline_frame(headline(results, rng))
    shown = pd.DataFrame(
        {
            "strategy": table["strategy"],
            "seeds": table["n_seeds"],
            "budget to reach (units)": table["budget_to_reach"],
            "ratio to random": [
                _ratio_text(*row)
                for row in zip(
                    table["strategy"],
                    table["ratio_to_random"],
                    table["ratio_ci_low"],
                    table["ratio_ci_high"],
                    table["ratio_lower_bound"],
                    strict=True,
                )
            ],
            "paired Wilcoxon p": ["–" if not np.isfinite(p) else f"{p:.3g}" for p in table["wilcoxon_p"]],
            "final identifiability": table["final_identifiability"].round(3),
        }
    )
    note = (
        "<p>Target per seed: the identifiability <code>random</code> has after spending its whole budget. "
        "Budget to reach: first crossing on the spent axis, interpolated linearly between rounds, mean over "
        "seeds. Ratio: geometric mean over seeds of the per-seed ratio to random's budget to reach, with a "
        "95% percentile bootstrap interval over seeds (below 1 = fewer units than random). A strategy that "
        "does not reach the target in some seed is reported as never reaching there; its ratio is then a "
        "lower bound (those seeds counted at their whole budget). p: two-sided Wilcoxon signed-rank test "
        "on the per-seed log ratios (with {n} seeds the smallest possible p is {pmin:.3g}).</p>"
    ).format(n=int(table["n_seeds"].max()), pmin=2.0 ** (1 - int(table["n_seeds"].max())))
    return note + _table(shown)


def _per_strategy(runs: list[RunData], render: Callable[[RunData], str], unavailable: type[Exception]) -> str:
    """``render`` one run per strategy (its lowest seed); ``unavailable`` and other errors become notes.

    An optional section must not sink the report, so any error is shown in place of that run's part.
    """
    picked = {}
    for r in sorted((r for r in runs if not r.failed), key=lambda r: (r.strategy, r.seed)):
        picked.setdefault(r.strategy, r)
    parts, notes = [], []
    for strategy, run in picked.items():
        who = f"{html.escape(strategy)} (seed {run.seed})"
        try:
            body = render(run)
        except unavailable as exc:
            notes.append(f"{who}: not available — {html.escape(str(exc))}")
            continue
        except Exception as exc:  # noqa: BLE001 - see the docstring
            notes.append(f"{who}: failed — {html.escape(type(exc).__name__)}: {html.escape(str(exc))}")
            continue
        parts.append(f"<h3>{html.escape(strategy)}, seed {run.seed}</h3>{body}")
    return "".join(f"<p class='note'>{n}</p>" for n in notes) + "".join(parts)


def _recovery_html(runs: list[RunData], recovery: Callable[[RunData], Recovery] | None) -> str:
    if recovery is None:
        return "<p class='note'>Not rendered: no recovery provider was given.</p>"

    def render(run: RunData) -> str:
        rec = recovery(run)
        parts = [f"<p>{html.escape(rec.note)}</p>"] if rec.note else []
        if rec.panels:
            parts.append(_img(plots.dose_response(rec.panels), f"dose-response {run.strategy}"))
        if rec.signs is not None:
            true, learned, labels = rec.signs
            figure = plots.interaction_signs(np.asarray(true), np.asarray(learned), list(labels))
            parts.append(_img(figure, f"interaction signs {run.strategy}"))
        return "".join(parts)

    return _per_strategy(runs, render, RecoveryUnavailable)


def _parameters_html(runs: list[RunData], max_pairs: int = 10) -> str:
    """Per strategy (its lowest seed): the last model's per-target EC50 / slope / effect and pair interactions."""
    from loop.parameters import NoParameters, fitted_parameters, load_last_model, measured_pairs

    def render(run: RunData) -> str:
        model, space, _ = load_last_model(run.root)
        targets, pairs = fitted_parameters(model, space, measured_pairs(run.root))
        return _table(targets) + (_table(pairs.head(max_pairs)) if len(pairs) else "")

    intro = (
        "<p>From each run's last checkpoint (<code>python -m loop.parameters RUN --csv PREFIX</code> prints and "
        "writes the same tables): log10 EC50 in the target's dose unit, median over ensemble members and its "
        "spread, on the target's main program; effect = predicted readout change at the top dose; "
        "excess_bliss (one-feature readouts) &lt; 0 = more inhibition than Bliss independence. A pair with "
        "n_measured 0 was never measured (or is held out for evaluation): its γ is extrapolated.</p>"
    )
    return intro + _per_strategy(runs, render, NoParameters)


def _repro_html(runs: list[RunData]) -> str:
    first = runs[0].config
    cfgs = pd.DataFrame([r.config["config"] for r in runs]).astype(str)
    differ = [c for c in cfgs.columns if cfgs[c].nunique() > 1]
    vers = pd.DataFrame([r.config.get("versions", {}) for r in runs]).astype(str)
    vdiff = [c for c in vers.columns if vers[c].nunique() > 1]
    out = [
        f"<p>{len(runs)} run(s); settings that differ between runs: {', '.join(differ) or 'none'}. "
        f"Created {html.escape(str(first.get('created', '?')))} (first run).</p>"
    ]
    if vdiff:
        out.append(f"<p class='note'>Package versions differ between runs: {', '.join(vdiff)}.</p>")
    out.append(_table(pd.DataFrame(sorted(first.get("versions", {}).items()), columns=["package", "version"])))
    out.append(
        "<h3>config.json of the first run</h3><pre>"
        + html.escape(json.dumps(first["config"], indent=2, sort_keys=True))
        + "</pre>"
    )
    space = first["space"]
    out.append(
        "<h3>Design space</h3><p>"
        + html.escape(
            f"{len(space['targets'])} targets, {len(space['contexts'])} contexts, time {space['time_range_h']} h, "
            f"max order {space['max_order']}"
        )
        + "</p>"
    )
    out.append(
        _table(
            pd.DataFrame(
                [
                    {
                        "assay": a["name"],
                        "modalities": "+".join(a["modalities"]),
                        "anchor": len(a["modalities"]) > 1,
                        "cost": a["cost"],
                    }
                    for a in space["assays"]
                ]
            )
        )
    )
    return "".join(out)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1320px;margin:24px auto;
padding:0 16px;color:#222}h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
img{max-width:100%;height:auto}table.tbl{border-collapse:collapse;font-size:14px;margin:8px 0}
.tbl th,.tbl td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:left}.tbl th{background:#f4f4f4}
.note{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}pre{background:#f6f6f6;padding:10px;
font-size:12px;overflow-x:auto}nav a{margin-right:14px}"""


def _curve_sections(results: pd.DataFrame, target: float | None) -> dict[str, str]:
    """The identifiability, identifiability-parts and risk sections (curves vs spent)."""
    unit = (0.0, 1.0)
    body = {}
    body["identifiability"] = _img(
        plots.curves(
            results,
            ["identifiability"],
            ["identifiability index"],
            "identifiability [0, 1]",
            bounds=unit,
            target=target,
        ),
        "identifiability vs spent",
    ) + (
        "<p>Thick line: mean over seeds; thin lines: single seeds; band: 95% t confidence interval of the mean "
        "(with fewer than three seeds: the seeds' min–max). The band is drawn where every seed has data.</p>"
    )
    parts_cols = sorted(c for c in results.columns if c.startswith("ident_"))
    if parts_cols:
        titles = [c.removeprefix("ident_") for c in parts_cols]
        body["identifiability-parts"] = _img(
            plots.curves(results, parts_cols, titles, "score [0, 1]", bounds=unit), "identifiability parts"
        )
    else:
        body["identifiability-parts"] = "<p class='note'>not available: no ident_ columns in metrics.</p>"
    if results.reindex(columns=list(RISK_COLUMNS)).isna().all().all():
        body["risk"] = "<p class='note'>not available: every risk value is NaN (no evaluation in these runs).</p>"
    else:
        body["risk"] = _img(
            plots.curves(
                results,
                list(RISK_COLUMNS),
                ["aggregate risk"] + [c.removeprefix("risk_") for c in RISK_COLUMNS[1:]],
                "risk (lower is better)",
                bounds=(0.0, np.inf),
            ),
            "risk vs spent",
        ) + (
            "<p class='note'>Losses in baseline units: each stress set's error over that of the mean of reference "
            "controls measured at the start of each run, the same for every design on a seed (0 perfect, 1 the "
            "mean of controls). Runs scored before 2026-12-08 used their training data's controls, which depend "
            "on the design; <code>risk_training_controls</code> in results.parquet keeps that definition.</p>"
        )
    return body


def _design_sections(props: pd.DataFrame, space: object) -> dict[str, str]:
    """The spending and coverage sections (what the strategies bought)."""
    if not len(props):
        note = "<p class='note'>not available: no proposals found.</p>"
        return {"spending": note, "coverage": note}
    anchors = {a.name for a in space.assays if a.is_anchor}
    pts = dose_points(props)
    n_ctrl = int((props["perturbation"] == "control").sum())
    return {
        "spending": "<p>Anchor assays observe one specimen through more than one modality: "
        f"{', '.join(sorted(anchors)) or 'none'}.</p>" + _img(plots.spending(props, anchors), "spending"),
        "coverage": f"<p>Every chosen target dose, all seeds pooled ({n_ctrl} control queries not shown); "
        "circles single targets, triangles pairs, squares triplets.</p>"
        + _img(plots.coverage(pts, [t.name for t in space.targets], space.time_range_h), "coverage"),
    }


def _status_frame(runs: list[RunData]) -> pd.DataFrame:
    """One row per run: rounds, spent, budget, finished state and error."""
    return pd.DataFrame(
        [
            {
                "run": r.root.name,
                "strategy": r.strategy,
                "seed": r.seed,
                "rounds": len(r.metrics),
                "spent": float(r.metrics["spent"].iloc[-1]) if len(r.metrics) else 0.0,
                "budget": float(r.config["config"]["budget"]),
                "status": r.status,
                "error": r.error if r.failed else "",
            }
            for r in runs
        ]
    )


def _head_html(folder: Path, kind: str, runs: list[RunData], strategies: list[str], status: pd.DataFrame) -> str:
    """Title line, and notes on failed and unfinished runs."""
    failed = [r for r in runs if r.failed]
    head = (
        f"<h1>cslab {kind} report</h1><p>{html.escape(str(folder))} — {len(runs)} run(s), strategies "
        f"{', '.join(strategies)}; rendered {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"
    )
    if failed:
        head += (
            f"<p class='note'>{len(failed)} run(s) failed and are left out of every curve, mean and table "
            f"below: {html.escape(', '.join(r.root.name for r in failed))} (errors in the run table; rerun "
            "the same command to retry them).</p>"
        )
    if (status["status"] == "running").any():
        head += "<p class='note'>Some runs have not finished yet: their curves end early.</p>"
    return head


def build_html(
    folder: Path, runs: list[RunData], recovery: Callable[[RunData], Recovery] | None = None, seed: int = 0
) -> str:
    """The report's HTML text.

    Args:
        folder: The run or study folder (for the title).
        runs: Loaded runs (at least one with a scored round).
        recovery: Returns the recovered-vs-true curves of a run, or raises
            :class:`RecoveryUnavailable`; ``None`` leaves the section as a note.
        seed: Seed of the bootstrap generator.
    """
    all_results = results_frame(runs)
    results = scored_results(all_results)
    models = sorted(results["model"].unique()) if "model" in results else ["csl"]
    by_model = {m: results[results["model"] == m] for m in models} if len(models) > 1 else {"": results}
    if len(models) > 1:  # one curve per model and strategy
        results = results.assign(strategy=results["model"] + "/" + results["strategy"])
    if not len(results):
        failed = ", ".join(r.root.name for r in runs if r.failed)
        raise ValueError(f"every run with a scored round failed ({failed}); nothing to average")
    study = len(runs) > 1 or (folder / "runs").is_dir()
    ref = results[results["strategy"] == REFERENCE].sort_values("round").groupby("seed")["identifiability"].last()
    body = _curve_sections(results, float(ref.mean()) if study and len(ref) and len(models) == 1 else None)
    body["headline"] = "".join(
        (f"<h3>model {html.escape(m)}</h3>" if m else "") + _headline_html(d, np.random.default_rng(seed))
        for m, d in by_model.items()
    )
    body["models"] = (
        _models_html(scored_results(all_results))
        if len(models) > 1
        else (
            f"<p class='note'>One model here ({html.escape(models[0])}); run <code>loop.compare --models "
            "csl,mean,additive,linear</code> to rank it against the baselines.</p>"
        )
    )
    body.update(_design_sections(proposals_frame([r for r in runs if not r.failed]), runs[0].space))
    body["recovery"] = _recovery_html(runs, recovery)
    body["parameters"] = _parameters_html(runs)
    body["timings"] = _img(plots.timings(results), "timings")
    body["reproducibility"] = _repro_html(runs)
    status = _status_frame(runs)
    kind = "study" if study else "run"
    head = _head_html(folder, kind, runs, sorted(results["strategy"].unique()), status)
    nav = "<nav>" + "".join(f'<a href="#{k}">{html.escape(v)}</a>' for k, v in SECTIONS.items()) + "</nav>"
    sections = "".join(f'<section id="{k}"><h2>{html.escape(v)}</h2>{body[k]}</section>' for k, v in SECTIONS.items())
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cslab {kind} report</title>"
        f"<style>{CSS}</style></head><body>{head}{nav}{_table(status)}{sections}</body></html>"
    )


def render(
    folder: str | Path,
    recovery: Callable[[RunData], Recovery] | None = checkpoint_recovery,
    out: str | Path | None = None,
) -> Path:
    """Write ``report.html`` of a run or study folder (atomically).

    Args:
        folder: Run folder or study folder.
        recovery: Recovery provider (default: from the model checkpoint and the simulator).
        out: Output path (default ``folder/report.html``).

    Returns:
        The report's path.
    """
    folder = Path(folder)
    runs = [load_run(p) for p in find_runs(folder)]
    text = build_html(folder, runs, recovery)
    return write_bytes(Path(out) if out else folder / "report.html", text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a folder that is not a run or a study)."""
    p = argparse.ArgumentParser(prog="python -m loop.report", description="Render report.html of a run or study.")
    p.add_argument("folder", help="run folder or study folder (with runs/)")
    p.add_argument("--no-recovery", action="store_true", help="skip the model-vs-truth section (faster)")
    args = p.parse_args(argv)
    try:
        path = render(args.folder, recovery=None if args.no_recovery else checkpoint_recovery)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
