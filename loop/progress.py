"""Progress display of a run: a rich bar over budget, one line per round."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class RunProgress:
    """Shows spent / budget, identifiability and stage times as rounds finish.

    Args:
        budget: Total budget, cost units.
        quiet: Show nothing (the CLI still prints the path and the summary).
        console: Where to draw (default: stderr).
    """

    def __init__(self, budget: float, quiet: bool = False, console: Console | None = None) -> None:
        self.budget, self.quiet = budget, quiet
        self.console = console or Console(stderr=True, soft_wrap=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.1f}/{task.total:.0f} units"),
            TextColumn("{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = None

    def __enter__(self) -> RunProgress:
        if not self.quiet:
            self._progress.start()
            self._task = self._progress.add_task("budget", total=self.budget, stage="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self._progress.stop()

    def stage(self, round_index: int, name: str) -> None:
        """A stage of a round starts."""
        if self._task is not None:
            self._progress.update(self._task, stage=f"round {round_index}: {name}")

    def round(self, row: dict) -> None:
        """A round is scored."""
        if self._task is None:
            return
        self._progress.update(self._task, completed=min(row["spent"], self.budget))
        times = "  ".join(
            f"{k[:-2]} {row[k]:.1f}s"
            for k in ("fit_s", "score_s", "acquire_s", "measure_s")
            if not math.isnan(row.get(k, math.nan))
        )
        self._progress.console.print(
            f"round {row['round']:>3}  spent {row['spent']:7.1f}/{self.budget:.0f}  "
            f"queries {row['n_queries']:>4}  {score_text(row)}  {times}"
        )


def score_text(row: object) -> str:
    """``identifiability 0.590``; for a model without operators (NaN index) its aggregate risk instead."""
    ident = float(row["identifiability"])
    if not math.isnan(ident):
        return f"identifiability {ident:.3f}"
    return f"identifiability –  risk {float(row.get('risk', math.nan)):.3f}"
