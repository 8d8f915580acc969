"""Run folders on shared storage: upload order, round trips, deletions, and what is never uploaded."""

import json
import os

import pytest

from loop.remote import RemoteFolder, display, is_remote, join, working_copy
from loop.storage import RunFolderError, write_json


def test_locations():
    assert is_remote("s3://bucket/study") and is_remote("gs://b/x") and not is_remote("runs/x")
    assert not is_remote("/tmp/x") and not is_remote("file:///tmp/x") and not is_remote("C:/runs")
    uri = "s3://b/study?endpoint_override=localhost:9000&scheme=http"
    assert (
        join(uri, "runs", "random-seed0")
        == "s3://b/study/runs/random-seed0?endpoint_override=localhost:9000&scheme=http"
    )
    assert display(join(uri, "report.html")) == "s3://b/study/report.html"
    assert str(join("studies/x", "runs")) == os.path.join("studies/x", "runs")


class _Recorder:
    """Wraps a pyarrow filesystem and records the order of uploads."""

    def __init__(self, fs):
        self.fs, self.uploads = fs, []

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open_output_stream(self, path, *args, **kwargs):
        self.uploads.append(path.split("/run/", 1)[1])
        return self.fs.open_output_stream(path, *args, **kwargs)


def test_a_step_uploads_its_artefact_before_its_status(tmp_path, s3_uri):
    """File times are coarse: an artefact and its status often share one. The status must still go last."""
    local = tmp_path / "copy"
    remote = RemoteFolder(s3_uri("run"), local)
    remote.fs = _Recorder(remote.fs)
    names = [
        "checkpoints/round-0000.json",
        "checkpoints/finished.json",
        "proposals/round-0000.parquet",
        "checkpoints/model-0000.pt",
        "ledger/round-0000.parquet",
    ]
    for n in names:
        (local / n).parent.mkdir(parents=True, exist_ok=True)
        (local / n).write_bytes(b"x")
        os.utime(local / n, ns=(10**18, 10**18))  # one instant for all
    (local / "ledger" / f".round-0001.parquet.tmp-{os.getpid()}").write_bytes(b"half")
    assert remote.push() == 5
    up = remote.fs.uploads
    assert set(up) == set(names), "a temporary file is never uploaded"
    assert up.index("checkpoints/round-0000.json") > max(up.index(n) for n in names if not n.endswith(".json"))
    assert up[-1] == "checkpoints/finished.json"
    assert remote.push() == 0, "nothing changed, nothing uploaded"


def test_round_trip_deletions_and_read_only_parts(tmp_path, s3_uri):
    uri = s3_uri("study")
    with working_copy(uri, read_only=("runs/",)) as copy:
        assert copy.folder.is_dir() and not any(copy.folder.iterdir())
        write_json(copy.folder / "status.json", {"a": 1})
        write_json(copy.folder / "failed.json", {"error": "x"})
        write_json(copy.folder / "runs" / "r" / "config.json", {"stale": True})  # the driver's copy of a run
        assert copy.save() == 2
        local = copy.folder
    assert not local.exists(), "the temporary copy is removed"
    with working_copy(uri) as copy:
        assert sorted(p.name for p in copy.folder.iterdir()) == ["failed.json", "status.json"]
        (copy.folder / "failed.json").unlink()  # a resumed run removes its failure record
        write_json(copy.folder / "runs" / "r" / "config.json", {"run": 1})
    with working_copy(uri) as copy:
        assert not (copy.folder / "failed.json").exists()
        assert json.loads((copy.folder / "runs" / "r" / "config.json").read_text()) == {"run": 1}
        assert not RemoteFolder(uri, copy.folder / "x").exists("nothing.json")


def test_a_file_where_a_folder_should_be_is_refused(tmp_path, s3_uri):
    uri = s3_uri("afile")
    remote = RemoteFolder(uri, tmp_path / "a")
    with remote.fs.open_output_stream(remote.path) as out:
        out.write(b"not a folder")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        remote.pull()


def test_an_unknown_scheme_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="nosuch://b/x: cannot open this storage location"):
        RemoteFolder("nosuch://b/x", tmp_path)
