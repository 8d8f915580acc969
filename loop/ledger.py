"""The ledger: every observation of a run, one Parquet shard per round.

Layout: ``<run>/ledger/round-NNNN.parquet``, each the Arrow form of a
:class:`~experiment_design.measurement.MeasurementBatch` (one row per
modality × unit: ``query_id``, ``round``, the :mod:`experiment_design.keys`
metadata, ``plate``, ``well``, ``modality``, a ``features`` list column, and
feature names per modality in the schema metadata). Shards are written
atomically; writing a round again replaces it with identical content
(rounds are deterministic), so a resumed step is idempotent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from experiment_design import MeasurementBatch, keys
from loop.rounds import RoundStore
from loop.storage import BatchFiles, RunFolderError, write_table

SHARD = re.compile(r"^round-(\d{4})\.parquet$")


class Ledger:
    """Append-only store of measurements.

    Args:
        root: The run folder; shards live in ``root / "ledger"``.
    """

    def __init__(self, root: str | Path) -> None:
        self.dir = RoundStore(root).ledger_dir
        self._files = BatchFiles()

    def path(self, round_index: int) -> Path:
        """Shard path of a round."""
        return self.dir / f"round-{round_index:04d}.parquet"

    def rounds(self) -> list[int]:
        """Rounds with a shard, ascending."""
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := SHARD.match(p.name)))

    def append(self, round_index: int, batch: MeasurementBatch) -> Path:
        """Write one round's measurements atomically (with a ``round`` column)."""
        table = batch.to_arrow()
        table = table.append_column(keys.ROUND, pa.array([round_index] * table.num_rows, type=pa.int32()))
        return write_table(self.path(round_index), table)

    def verify(self, rounds: list[int]) -> None:
        """Check that the shards of ``rounds`` exist and are complete Parquet files (footer readable).

        Raises:
            ValueError: Naming the first missing or truncated shard.
        """
        import pyarrow.parquet as pq

        for r in rounds:
            path = self.path(r)
            if not path.is_file():
                raise RunFolderError(f"{path}: ledger shard missing although round {r} was measured")
            try:
                pq.ParquetFile(path).metadata  # noqa: B018 - reading the footer is the check
            except (pa.ArrowInvalid, OSError) as exc:
                raise RunFolderError(f"{path}: unreadable Parquet ({exc}); truncated or not written by cslab") from None

    def read_round(self, round_index: int) -> MeasurementBatch:
        """One round's measurements.

        Raises:
            ValueError: Naming the shard when it is missing, truncated or foreign.
        """
        path = self.path(round_index)
        if not path.is_file():
            raise RunFolderError(f"{path}: ledger shard missing")
        return MeasurementBatch.concat([self._files.read(path)])  # a copy: the cached batch stays as read

    def load(self, upto: int | None = None) -> MeasurementBatch:
        """All measurements of rounds ``<= upto`` (all rounds by default), each shard decoded once."""
        rounds = [r for r in self.rounds() if upto is None or r <= upto]
        return MeasurementBatch.concat([self._files.read(self.path(r)) for r in rounds])
