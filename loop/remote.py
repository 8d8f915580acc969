"""Run and study folders on shared storage (``s3://``, ``gs://``, ``hdfs://``, or a local path).

A run folder named by a URI is worked on through a local copy, as Ray Train
does with its ``storage_path``: :func:`working_copy` downloads what the URI
holds into a fresh temporary folder, the run reads and writes only there
(every write atomic, :mod:`loop.storage`), and :meth:`RemoteFolder.push`
uploads what changed after each finished step: data files first, then the
JSON status records, in the order they were written, so the storage never
holds a round status whose artefact it lacks: a node or process killed at
any point leaves the URI at a step boundary, and the next attempt (on any
node) downloads it and resumes as from a local folder. One object upload is
atomic on S3 and GCS (an object is visible whole or not at all).

The filesystem comes from :func:`pyarrow.fs.FileSystem.from_uri`, so every
setting it reads works: query options such as
``s3://bucket/study?endpoint_override=localhost:9000&scheme=http`` and the
usual environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from loop.storage import TMP_MARK, RunFolderError

#: JSON records that say a run or study ended: uploaded after everything else.
_END_RECORDS = ("finished.json", "status.json")


def _upload_rank(rel: str) -> int:
    """0 for data files, 1 for JSON records (a round's status), 2 for end records.

    File times are coarse (a kernel tick), so a step's artefact and its status
    often share one; within one push data goes first, statuses after it.
    """
    name = rel.rsplit("/", 1)[-1]
    return 2 if name in _END_RECORDS else 1 if name.endswith(".json") else 0


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URI with a scheme other than ``file`` (``s3://b/x``); False for a local path."""
    scheme = urlsplit(str(location)).scheme
    return len(scheme) > 1 and scheme != "file"  # "C:" is a drive letter, not a scheme


def join(location: str | os.PathLike, *parts: str) -> str | Path:
    """``location / part / ...``; a URI keeps its query options (``?endpoint_override=...``) at the end."""
    if not is_remote(location):
        return Path(location).joinpath(*parts)
    u = urlsplit(str(location))
    path = "/".join([u.path.rstrip("/"), *parts])
    return urlunsplit((u.scheme, u.netloc, path, u.query, u.fragment))


def display(location: str | os.PathLike) -> str:
    """The location without query options (which may carry endpoints), for messages."""
    if not is_remote(location):
        return str(location)
    u = urlsplit(str(location))
    return urlunsplit((u.scheme, u.netloc, u.path, "", ""))


class RemoteFolder:
    """A folder at a filesystem URI mirrored by a local folder.

    Args:
        uri: Where the folder lives (``s3://bucket/study/runs/random-seed0``).
        local: The local copy (created).
    """

    def __init__(self, uri: str, local: str | os.PathLike) -> None:
        import pyarrow.fs as pafs

        self.uri, self.local = str(uri), Path(local)
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as exc:
            raise RunFolderError(f"{display(uri)}: cannot open this storage location ({exc})") from None
        self.path = self.path.rstrip("/")
        self._pushed: dict[str, tuple[int, int]] = {}

    def _remote_files(self) -> list:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type != pafs.FileType.Directory:
            raise RunFolderError(f"{display(self.uri)} is a file, not a folder")
        selector = pafs.FileSelector(self.path, recursive=True)
        return [f for f in self.fs.get_file_info(selector) if f.type == pafs.FileType.File]

    def _local_files(self) -> dict[str, tuple[int, int]]:
        out = {}
        for p in self.local.rglob("*"):
            if p.is_file() and TMP_MARK not in p.name:
                st = p.stat()
                out[p.relative_to(self.local).as_posix()] = (st.st_size, st.st_mtime_ns)
        return out

    def exists(self, name: str) -> bool:
        """True when ``name`` (relative, ``a/b.json``) is a file at the URI."""
        import pyarrow.fs as pafs

        return self.fs.get_file_info(f"{self.path}/{name}").type == pafs.FileType.File

    def pull(self) -> int:
        """Download every file at the URI into the local copy (overwriting); returns how many."""
        self.local.mkdir(parents=True, exist_ok=True)
        n = 0
        for f in self._remote_files():
            rel = f.path[len(self.path) + 1 :]
            if TMP_MARK in rel.rsplit("/", 1)[-1]:
                continue
            dest = self.local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}{TMP_MARK}{os.getpid()}")
            with self.fs.open_input_stream(f.path) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
            st = dest.stat()
            self._pushed[rel] = (st.st_size, st.st_mtime_ns)
            n += 1
        return n

    def push(self, exclude: tuple[str, ...] = ()) -> int:
        """Upload the files changed since the last pull or push, in write order; delete removed ones.

        Args:
            exclude: Relative path prefixes this copy must never upload (a study's driver
                leaves ``runs/`` to the runs).

        Returns:
            The number of files uploaded.
        """
        now = {k: v for k, v in self._local_files().items() if not k.startswith(exclude)}
        changed = [k for k, v in now.items() if self._pushed.get(k) != v]
        changed.sort(key=lambda k: (_upload_rank(k), now[k][1], k))
        for rel in changed:
            target = f"{self.path}/{rel}"
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(self.local / rel, "rb") as src, self.fs.open_output_stream(target) as out:
                shutil.copyfileobj(src, out, 1 << 20)
            self._pushed[rel] = now[rel]
        for rel in [k for k in self._pushed if k not in now and not k.startswith(exclude)]:
            if self.exists(rel):
                self.fs.delete_file(f"{self.path}/{rel}")
            del self._pushed[rel]
        return len(changed)


@dataclass
class WorkingCopy:
    """A local folder to work in, standing for a path or a URI.

    Attributes:
        folder: Where to read and write.
        remote: The storage it mirrors (None when ``folder`` is the location itself).
        read_only: Relative path prefixes downloaded but never uploaded (a study's driver reads
            ``runs/``, which the runs themselves write).
    """

    folder: Path
    remote: RemoteFolder | None = None
    read_only: tuple[str, ...] = ()

    def save(self) -> int:
        """Upload what changed since the last save (nothing for a local path); returns how many files."""
        return self.remote.push(self.read_only) if self.remote else 0

    def refresh(self) -> int:
        """Download the storage's current files over the copy (nothing for a local path)."""
        return self.remote.pull() if self.remote else 0


@contextmanager
def working_copy(location: str | os.PathLike, read_only: tuple[str, ...] = ()) -> Iterator[WorkingCopy]:
    """A local folder to run in, saved to ``location`` as the work goes.

    For a local path the folder is the path and saving does nothing (its
    writes are already in place). For a URI the folder is a fresh temporary
    copy of what the URI holds; the caller saves after each finished step, and
    once more happens on exit (also after an error or an interrupt: every local
    write is atomic, so what is uploaded is consistent). The temporary copy is
    removed on exit.

    Args:
        location: A local path or a filesystem URI.
        read_only: Relative path prefixes never uploaded from this copy.

    Yields:
        The :class:`WorkingCopy`.
    """
    if not is_remote(location):
        yield WorkingCopy(Path(location))
        return
    local = Path(tempfile.mkdtemp(prefix="cslab-"))
    try:
        copy = WorkingCopy(local, RemoteFolder(str(location), local), read_only)
        copy.refresh()
        try:
            yield copy
        finally:
            copy.save()
    finally:
        shutil.rmtree(local, ignore_errors=True)
