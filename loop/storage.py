"""Atomic file writes: a half-written file never looks finished.

Every writer goes through :func:`atomic_write`: the bytes go to a temporary
name in the target's folder (``.<name>.tmp-<pid>``), are flushed and fsynced,
then renamed over the target, and the folder is fsynced. A crash at any point
leaves either the old file or the new one, plus at most a stray temporary
file that :func:`clean_temporaries` removes on resume.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiment_design import MeasurementBatch

TMP_MARK = ".tmp-"


class RunFolderError(ValueError):
    """The run folder is missing, foreign, corrupt or belongs to another config."""


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write a file atomically.

    Args:
        path: Final path.
        write: Called with a binary file object to fill.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda fh: fh.write(data))


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | os.PathLike) -> dict:
    """Read JSON, raising a :class:`RunFolderError` that names the file when it is corrupt."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: corrupt JSON ({exc}); not written by a finished cslab step") from None


def write_table(path: str | os.PathLike, table: pa.Table | pd.DataFrame) -> Path:
    """Atomically write a Parquet file."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return atomic_write(path, lambda fh: pq.write_table(table, fh))


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a Parquet file, raising a :class:`RunFolderError` naming it when truncated or corrupt."""
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RunFolderError(f"{path}: unreadable Parquet ({exc}); truncated or not written by cslab") from None


class BatchFiles:
    """Reads stored :class:`~experiment_design.MeasurementBatch` Parquet files, each decoded once per version.

    A run reads its ledger and stress sets two or three times a round; decoding every file each time
    took ~4 s of a 60 s default run. A file is read again when its inode, size or modification time
    changed (every cslab write replaces the file by a rename), so a rewritten file is never served stale.
    Callers get the cached object and must not modify it.
    """

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int, int], MeasurementBatch]] = {}

    def read(self, path: str | os.PathLike) -> MeasurementBatch:
        """The batch stored at ``path``.

        Raises:
            RunFolderError: Naming the file when it is missing, truncated or not a cslab batch.
        """
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise RunFolderError(f"{path}: missing") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            batch = MeasurementBatch.from_arrow(read_table(path))
        except RunFolderError:
            raise
        except ValueError as exc:
            raise RunFolderError(f"{path}: {exc}") from None
        self._cache[path] = (key, batch)
        return batch


def clean_temporaries(root: str | os.PathLike) -> list[Path]:
    """Remove stray temporary files (and staging folders) left by an interrupted write.

    Returns:
        The removed paths.
    """
    import shutil

    removed = []
    for p in sorted(Path(root).rglob(f".*{TMP_MARK}*")):
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(p)
        elif p.exists():
            p.unlink()
            removed.append(p)
    return removed
