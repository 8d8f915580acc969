"""``loop.compare`` over a real two-node Ray cluster, its study on S3, losing a node mid-study.

The nodes are started with :class:`ray.cluster_utils.Cluster`, Ray's own tool
for multi-node tests: each node is a separate raylet with its own object store
and resources, the same processes ``ray start --head`` / ``ray start
--address`` start, and it can kill one node's processes without touching
any other Ray on the machine.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.fs as pafs
import pytest

from loop.remote import RemoteFolder

CONFIG = {
    "n_members": 2,
    "initial_size": 4,
    "heldout_per_axis": 2,
    "time_limit_s": 60.0,
    "model": {"max_steps": 40, "warm_steps": 20},  # the cluster's plumbing, not the model's science
}
ARGS = [
    "--strategies",
    "random,uncertainty",
    "--seeds",
    "1",
    "--budget",
    "14",
    "--world",
    "small",
    "--batch-size",
    "4",
    "--no-recovery",
    "--quiet",
]
RUNS = ("random-seed0", "uncertainty-seed0")


def _read_json(fs: pafs.FileSystem, path: str) -> object | None:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        return None


def _comparable(results: pd.DataFrame) -> pd.DataFrame:
    timings = [c for c in results.columns if c.endswith("_s") or c == "acquire_truncated"]
    return results.drop(columns=timings).sort_values(["strategy", "seed", "round"]).reset_index(drop=True)


@pytest.mark.slow
def test_compare_on_two_nodes_with_s3_storage_survives_losing_a_node(tmp_path, s3_uri):
    from ray.cluster_utils import Cluster

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CONFIG))
    uri = s3_uri("study")
    fs, study = pafs.FileSystem.from_uri(uri)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    try:
        second = cluster.add_node(num_cpus=1, resources={"second": 1})
        cluster.wait_for_nodes()
        head_id, second_id = cluster.head_node.node_id, second.node_id
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loop.compare",
                *ARGS,
                "--config",
                str(cfg),
                "--address",
                cluster.address,
                "--out",
                uri,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill the second node (and the worker running the run) once its run has finished a step (round 0 is
        # proposed) and before it ends: on an idle machine a run takes a few seconds, so the window is wide.
        killed, deadline = None, time.monotonic() + 600
        while killed is None and driver.poll() is None and time.monotonic() < deadline:
            for run in RUNS:
                attempts = _read_json(fs, f"{study}/runs/{run}/attempts.json") or []
                started = _read_json(fs, f"{study}/runs/{run}/checkpoints/round-0000.json") is not None
                done = _read_json(fs, f"{study}/runs/{run}/checkpoints/finished.json")
                if attempts and attempts[-1]["node"] == second_id and started and done is None:
                    cluster.remove_node(second, allow_graceful=False)
                    try:  # its worker too: a worker may outlive its raylet for a moment and finish the task
                        os.kill(attempts[-1]["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    killed = run
                    break
            time.sleep(0.05)
        out, err = driver.communicate(timeout=900)
        # The same study on one node, uninterrupted, while the cluster is still up: without --address a
        # comparison starts its own local Ray (ray.init() would join this cluster), so its runs land on a
        # node of neither
        local = tmp_path / "local"
        one = subprocess.run(
            [
                *(sys.executable, "-m", "loop.compare", *ARGS, "--config", str(cfg), "--workers", "2"),
                *("--out", str(local), "--no-report"),  # its results are compared, not its report
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        cluster.shutdown()
    seen = {run: _read_json(fs, f"{study}/runs/{run}/attempts.json") for run in RUNS}
    assert killed is not None, (
        f"the second node ({second_id}) never ran a run half way; attempts {seen}; "
        f"driver exit {driver.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    )
    assert driver.returncode == 0, err[-3000:]
    assert "2/2 runs finished" in out

    copy = tmp_path / "copy"
    RemoteFolder(uri, copy).pull()
    attempts = {run: json.loads((copy / "runs" / run / "attempts.json").read_text()) for run in RUNS}
    assert {a["node"] for run in RUNS for a in attempts[run]} == {head_id, second_id}, "runs landed on both nodes"
    assert [a["node"] for a in attempts[killed]] == [second_id, head_id], "the lost run resumed on the head"
    clustered = pd.read_parquet(copy / "results.parquet")
    assert clustered["finished"].all() and set(clustered["status"]) == {"finished"}
    assert (copy / "report.html").is_file() and (copy / "summary.csv").is_file()

    # ... and gives the same results (timings aside)
    assert one.returncode == 0, one.stderr[-3000:]
    nodes = {a["node"] for run in RUNS for a in json.loads((local / "runs" / run / "attempts.json").read_text())}
    assert len(nodes) == 1 and not nodes & {head_id, second_id}, "the one-node study started its own Ray"
    pd.testing.assert_frame_equal(_comparable(clustered), _comparable(pd.read_parquet(local / "results.parquet")))
