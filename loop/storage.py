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
