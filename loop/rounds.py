"""Round bookkeeping on disk: status, proposals, metrics.

A round moves through :class:`RoundStatus` in order; each step writes its
artefact first and its status second (both atomically), so after a crash the
status names the last step whose artefact is complete, and resume redoes at
most one step (steps are deterministic, so the redo writes identical files).

A run's own state (:class:`RunState`) is read from its folder alone:
``checkpoints/finished.json`` when it ended normally (budget spent, nothing
more to propose, or the round limit), ``failed.json`` when its last attempt
stopped on an error, else running (going, interrupted or waiting for a
readout). ``loop.run``, ``loop.compare`` and the report all ask
:meth:`RoundStore.state`.
"""

from __future__ import annotations

import json
import time
import traceback
from enum import Enum, IntEnum
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import DesignSpace, Query, keys
from loop.storage import RunFolderError, read_json, read_table, write_json, write_table

#: Columns of metrics.parquet that every run has, in order (``ident_<part>``
#: columns follow ``identifiability``).
METRIC_COLUMNS = (
    "round",
    "spent",
    "n_queries",
    "round_queries",
    "round_cost",
    "identifiability",
    "risk",
    "risk_modality",
    "risk_scale",
    "risk_context",
    "risk_intervention",
    "risk_training_controls",
    "calibration_90",
    "wall_s",
    "fit_s",
    "score_s",
    "acquire_s",
    "measure_s",
)
STAGE_TIMINGS = ("acquire_s", "measure_s", "fit_s", "score_s")


class RoundStatus(IntEnum):
    """Steps of a round, in the order they complete."""

    PROPOSED = 1
    MEASURED = 2
    FITTED = 3
    SCORED = 4


class RunState(str, Enum):
    """Where a run stands, from its folder alone (module docstring)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


#: The file that makes a folder a cslab run folder (settings, space, features, versions).
CONFIG_FILE = "config.json"


def is_run_folder(root: str | Path) -> bool:
    """True when ``root`` holds a run's ``config.json``."""
    return (Path(root) / CONFIG_FILE).is_file()


class RoundStore:
    """Reads and writes the per-round files of a run folder: the one place that knows its layout.

    Args:
        root: The run folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        """``config.json``."""
        return self.root / CONFIG_FILE

    @property
    def ledger_dir(self) -> Path:
        """``ledger/``: one Parquet shard per round (:class:`loop.ledger.Ledger`)."""
        return self.root / "ledger"

    @property
    def heldout_dir(self) -> Path:
        """``heldout/``: the measured stress sets, one Parquet file per axis (:class:`loop.heldout.HeldOut`)."""
        return self.root / "heldout"

    @property
    def metrics_path(self) -> Path:
        """``metrics.parquet``: one row per scored round."""
        return self.root / "metrics.parquet"

    def plate_dir(self, r: int) -> Path:
        """``plates/round-NNNN/``: the plate files of round r (``loop.propose``)."""
        return self.root / "plates" / f"round-{r:04d}"

    def layout_path(self, r: int) -> Path:
        """``plates/round-NNNN/layout.parquet``: the full layout table of round r."""
        return self.plate_dir(r) / "layout.parquet"

    def proposal_paths(self) -> list[Path]:
        """Every ``proposals/round-NNNN.parquet``, in round order."""
        return sorted((self.root / "proposals").glob("round-*.parquet"))

    def model_paths(self) -> list[Path]:
        """Every ``checkpoints/model-NNNN.pt``, in round order."""
        return sorted((self.root / "checkpoints").glob("model-*.pt"))

    @property
    def finished_path(self) -> Path:
        """``checkpoints/finished.json``: written when a run ends normally (with the reason)."""
        return self.root / "checkpoints" / "finished.json"

    @property
    def failed_path(self) -> Path:
        """The internal error the run last stopped on (written by ``loop.run``, removed when it resumes)."""
        return self.root / "failed.json"

    def state(self) -> RunState:
        """``finished`` (``finished.json``), else ``failed`` (``failed.json``), else ``running``."""
        if self.finished_path.is_file():
            return RunState.FINISHED
        return RunState.FAILED if self.failed_path.is_file() else RunState.RUNNING

    def mark_finished(self, rounds: int, spent: float, reason: str) -> None:
        """Record that the run ended normally after ``rounds`` rounds, having spent ``spent`` units."""
        write_json(self.finished_path, {"rounds": int(rounds), "spent": float(spent), "reason": reason})

    def mark_failed(self, exc: BaseException) -> None:
        """Record the error the run's attempt stopped on (with the current traceback)."""
        write_json(
            self.failed_path,
            {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def clear_failed(self) -> None:
        """Forget a recorded failure: a new attempt starts."""
        self.failed_path.unlink(missing_ok=True)

    def failure(self) -> str | None:
        """The recorded error of a failed run, ``None`` if its last attempt did not fail."""
        return read_json(self.failed_path).get("error", "unknown error") if self.failed_path.is_file() else None

    def status_path(self, r: int) -> Path:
        """``checkpoints/round-NNNN.json``."""
        return self.root / "checkpoints" / f"round-{r:04d}.json"

    def model_path(self, r: int) -> Path:
        """``checkpoints/model-NNNN.pt``: model state after fitting round r."""
        return self.root / "checkpoints" / f"model-{r:04d}.pt"

    def proposal_path(self, r: int) -> Path:
        """``proposals/round-NNNN.parquet``."""
        return self.root / "proposals" / f"round-{r:04d}.parquet"

    # --------------------------------------------------------------- status
    def read_status(self, r: int) -> dict | None:
        """The round's record (``status``, timings, ...), or None if not started."""
        path = self.status_path(r)
        if not path.is_file():
            return None
        rec = read_json(path)
        try:
            rec["status"] = RoundStatus[rec["status"].upper()]
        except (KeyError, AttributeError):
            raise RunFolderError(f"{path}: unknown round status {rec.get('status')!r}") from None
        return rec

    def write_status(self, r: int, status: RoundStatus, **fields: object) -> dict:
        """Record that round ``r`` reached ``status`` (keeps earlier fields)."""
        rec = self.read_status(r) or {"round": r}
        rec.update(fields)
        rec["status"] = status
        write_json(self.status_path(r), {**rec, "status": status.name.lower()})
        return rec

    def last_round(self) -> int | None:
        """Highest round with a status file."""
        paths = sorted((self.root / "checkpoints").glob("round-*.json"))
        return int(paths[-1].stem.split("-")[1]) if paths else None

    # ------------------------------------------------------------ proposals
    def write_proposal(self, r: int, queries: list[Query], space: DesignSpace) -> Path:
        """Write the proposed queries of round r (one row per query)."""
        rows = []
        for q in queries:
            p = q.perturbation
            units = "+".join(space.target(t).dose_unit for t in p.targets) or ""
            rows.append(
                {
                    keys.QUERY_ID: q.query_id,
                    keys.ROUND: r,
                    keys.PERTURBATION: p.label,
                    keys.DOSE_VALUE: p.dose_label,
                    keys.DOSE_UNIT: units,
                    keys.TIME: q.time_h,
                    keys.TIME_UNIT: keys.HOURS,
                    keys.CELL_LINE: q.context.cell_line,
                    keys.SITE: q.context.site,
                    keys.ASSAY: q.assay,
                    "replicates": q.replicates,
                    "cost": space.cost([q]),
                    "query_json": json.dumps(q.to_dict()),
                }
            )
        cols = [
            keys.QUERY_ID,
            keys.ROUND,
            keys.PERTURBATION,
            keys.DOSE_VALUE,
            keys.DOSE_UNIT,
            keys.TIME,
            keys.TIME_UNIT,
            keys.CELL_LINE,
            keys.SITE,
            keys.ASSAY,
            "replicates",
            "cost",
            "query_json",
        ]
        return write_table(self.proposal_path(r), pd.DataFrame(rows, columns=cols))

    def read_proposal(self, r: int) -> list[Query]:
        """The queries proposed in round r."""
        df = read_table(self.proposal_path(r)).to_pandas()
        return [Query.from_dict(json.loads(s)) for s in df["query_json"]]

    # -------------------------------------------------------------- metrics
    def read_metrics(self) -> pd.DataFrame:
        """metrics.parquet, or an empty frame."""
        path = self.metrics_path
        return read_table(path).to_pandas() if path.is_file() else pd.DataFrame(columns=list(METRIC_COLUMNS))

    def write_metric_row(self, row: dict) -> pd.DataFrame:
        """Insert or replace the row of ``row["round"]`` and rewrite metrics.parquet atomically."""
        df = self.read_metrics()
        df = df[df["round"] != row["round"]] if len(df) else df
        new = pd.DataFrame([row])
        df = new if not len(df) else pd.concat([df, new], ignore_index=True)
        df = df.sort_values("round").reset_index(drop=True)
        first = [c for c in METRIC_COLUMNS if c in df.columns]
        idx = first.index("identifiability") + 1
        ident = sorted(c for c in df.columns if c.startswith("ident_"))
        rest = [c for c in df.columns if c not in first and c not in ident]
        df = df[first[:idx] + ident + first[idx:] + rest]
        for c in df.columns:
            if c not in ("round", "n_queries", "round_queries", "acquire_truncated"):
                df[c] = df[c].astype(float)
        df["round"] = df["round"].astype(np.int64)
        write_table(self.metrics_path, df)
        return df
