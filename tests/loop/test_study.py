"""The closed loop end to end: every strategy, resume after crashes, flaky oracles, bad CLI values."""

import numpy as np
import pandas as pd
import pytest
from loop_fakes import FlakyFactory
from tiny import TINY_RUN

from acquisition.registry import STRATEGIES
from loop import faults
from loop.config import RunConfig
from loop.distributed import OracleFailed
from loop.ledger import Ledger
from loop.rounds import METRIC_COLUMNS, RoundStatus, RoundStore
from loop.run import main
from loop.study import Study

FAST = TINY_RUN
TIMINGS = ["wall_s", "fit_s", "score_s", "acquire_s", "measure_s"]


def _config(**kw) -> RunConfig:
    return RunConfig(**{**FAST, **kw})


def _assert_same_run(a, b):
    la, lb = Ledger(a), Ledger(b)
    assert la.rounds() == lb.rounds()
    for r in la.rounds():
        x, y = la.read_round(r), lb.read_round(r)
        assert x.query_ids == y.query_ids, f"round {r}"
        for m in x.modalities:
            np.testing.assert_array_equal(x.modalities[m].X, y.modalities[m].X)
    ma = pd.read_parquet(a / "metrics.parquet").drop(columns=TIMINGS)
    mb = pd.read_parquet(b / "metrics.parquet").drop(columns=TIMINGS)
    pd.testing.assert_frame_equal(ma, mb)


@pytest.mark.parametrize("strategy", STRATEGIES.names)
def test_every_strategy_runs_end_to_end(strategy, tmp_path):
    root = tmp_path / "run"
    metrics = Study.create(root, _config(strategy=strategy, seed=1)).run()
    assert (root / "checkpoints" / "finished.json").is_file()
    assert list(metrics["round"]) == list(range(len(metrics))) == Ledger(root).rounds()
    assert metrics["spent"].is_monotonic_increasing and metrics["spent"].iloc[-1] <= FAST["budget"] + 1e-9
    assert FAST["budget"] - metrics["spent"].iloc[-1] < 1.0  # spent down to less than one scRNA well
    assert set(METRIC_COLUMNS) <= set(metrics.columns)
    assert any(c.startswith("ident_") for c in metrics.columns)
    assert metrics["identifiability"].between(0, 1).all()
    assert metrics["risk"].notna().all()
    store = RoundStore(root)
    for r in metrics["round"]:
        assert store.read_status(r)["status"] is RoundStatus.SCORED
        assert store.proposal_path(r).is_file() and store.model_path(r).is_file()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref") / "run"
    Study.create(root, _config(strategy="uncertainty", seed=2)).run()
    return root


CRASH_POINTS = ("0:proposed", "0:measured", "1:fitted", "1:scored", "2:measured")


def test_crash_at_every_step_and_resume_equals_uninterrupted(reference, tmp_path, monkeypatch):
    """One run crashes after each kind of step in turn, is resumed each time, and ends as an uninterrupted one."""
    root = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, ",".join(CRASH_POINTS))  # a resumed run does not pass an earlier point again
    for i, point in enumerate(CRASH_POINTS):
        r, status = point.split(":")
        with pytest.raises(faults.InjectedCrash, match=f"after round {r} {status}"):
            (Study.create(root, _config(strategy="uncertainty", seed=2)) if i == 0 else Study.open(root)).run()
        assert RoundStore(root).read_status(int(r))["status"] is RoundStatus[status.upper()], point
    Study.open(root).run()
    _assert_same_run(reference, root)


def test_flaky_oracle_is_survived(reference, tmp_path):
    root = tmp_path / "run"
    Study.create(
        root,
        _config(strategy="uncertainty", seed=2),
        oracle_factory=FlakyFactory(2, every=3),
        local_oracle=True,
        oracle_backoff_s=0.01,
    ).run()
    _assert_same_run(reference, root)


def test_an_in_process_run_measures_with_the_oracle_it_built(reference, tmp_path):
    """One oracle per in-process run (a second copy of a lab screen would double its memory), same run."""
    study = Study.create(tmp_path / "run", _config(strategy="uncertainty", seed=2), local_oracle=True)
    assert study.oracle._local is study._oracle_instance is not None
    study.run()
    _assert_same_run(reference, tmp_path / "run")


def test_a_run_with_ray_up_measures_through_an_actor_and_equals_the_in_process_run(reference, tmp_path, ray_instance):
    """With Ray initialised in the process (a notebook, a cluster's driver) the oracle runs in an actor; same run."""
    study = Study.create(tmp_path / "run", _config(strategy="uncertainty", seed=2))
    assert study.oracle._local is None and study.oracle._actor is not None
    study.run()
    _assert_same_run(reference, tmp_path / "run")


def test_failing_oracle_stops_cleanly_and_resumes(reference, tmp_path):
    root = tmp_path / "run"
    study = Study.create(
        root,
        _config(strategy="uncertainty", seed=2),
        oracle_factory=FlakyFactory(2, every=1),
        local_oracle=True,
        oracle_backoff_s=0.01,
    )
    with pytest.raises(OracleFailed, match="instrument offline"):
        study.run()
    assert not Ledger(root).rounds()  # nothing half-written
    Study.open(root).run()
    _assert_same_run(reference, root)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "-5"], "--budget must be a positive, finite"),
        (["--budget", "inf"], "--budget must be a positive, finite number of cost units, got inf"),
        (["--budget", "nan"], "--budget must be a positive, finite"),
        (["--strategy", "psychic"], "unknown strategy 'psychic'"),
        (["--oracle", "lab", "--data", "nope.h5ad"], "--data nope.h5ad: no such file"),
        (["--oracle", "lab"], "--oracle lab needs --data"),
        (["--world", "huge"], "--world must be one of"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--config", "missing.toml"], "--config missing.toml: no such file"),
    ],
)
def test_bad_cli_values_exit_nonzero_with_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_foreign_or_mismatched_run_folders_are_refused(reference, tmp_path, capsys):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    assert main(["--resume", str(tmp_path / "foreign")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "foreign")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["--resume", str(reference), "--seed", "99"]) == 2
    assert "seed=2, not 99" in capsys.readouterr().err
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_truncated_shard_is_reported_on_resume(reference, tmp_path):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(reference, root)
    shard = Ledger(root).path(1)
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match="round-0001.parquet: unreadable Parquet"):
        Study.open(root).run()


def test_kill_9_then_resume_from_the_command_line(reference, tmp_path):
    """A real SIGKILL mid-run (CSLAB_FAULT_MODE=kill), then ``--resume``: same run as uninterrupted."""
    import json
    import os
    import signal
    import subprocess
    import sys

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**FAST, "strategy": "uncertainty", "seed": 2}))
    root = tmp_path / "run"
    env = {**os.environ, faults.ENV: "1:measured", faults.MODE_ENV: "kill"}
    cmd = [sys.executable, "-m", "loop.run", "--config", str(cfg), "--quiet", "--no-report"]
    killed = subprocess.run([*cmd, "--out", str(root)], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert RoundStore(root).read_status(1)["status"] is RoundStatus.MEASURED
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, faults.MODE_ENV)}
    # python -m loop.run, and then what it imported of Ray and torch's compiler stack: a local run calls its
    # oracle in-process and fits its ensemble in one batched computation, so it has no use for Ray's daemons;
    # nothing in it compiles, so torch._dynamo and sympy (1.6 s to import) stay out too
    heavy = ("ray", "torch._dynamo", "sympy")
    run_and_tell = (
        f"import sys; from loop.run import main; rc = main(); print([m for m in {heavy} if m in sys.modules])"
    )
    resumed = subprocess.run(
        [sys.executable, "-c", f"{run_and_tell}; sys.exit(rc)", "--resume", str(root), "--quiet", "--no-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    *_, summary, imported = resumed.stdout.splitlines()
    assert "identifiability" in summary and imported == "[]", resumed.stdout
    _assert_same_run(reference, root)


def test_killed_run_on_s3_resumes_from_the_storage(reference, tmp_path, s3_uri):
    """``--out s3://...``: SIGKILL after a step is written locally but before it is uploaded, then
    ``--resume`` from the storage alone (a fresh local copy): the same run as uninterrupted."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from loop.remote import RemoteFolder

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**FAST, "strategy": "uncertainty", "seed": 2}))
    uri = s3_uri("runs/uncertainty-seed2")
    env = {**os.environ, faults.ENV: "1:fitted", faults.MODE_ENV: "kill"}
    cmd = [sys.executable, "-m", "loop.run", "--quiet", "--no-report"]
    killed = subprocess.run(
        [*cmd, "--config", str(cfg), "--out", uri], env=env, capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    seen = tmp_path / "seen"
    RemoteFolder(uri, seen).pull()
    assert RoundStore(seen).read_status(1)["status"] is RoundStatus.MEASURED, "the fitted step never got uploaded"
    assert not (seen / "checkpoints" / "model-0001.pt").exists()
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, faults.MODE_ENV)}
    resumed = subprocess.run([*cmd, "--resume", uri], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.splitlines()[-1].startswith(f"run s3://{uri[5:].split('?')[0]}: ")
    final = tmp_path / "final"
    RemoteFolder(uri, final).pull()
    _assert_same_run(reference, final)


def test_truncated_shard_on_resume_exits_2_naming_the_file(reference, tmp_path, capsys):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(reference, root)
    shard = Ledger(root).path(1)
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(["--resume", str(root), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "round-0001.parquet: unreadable Parquet" in err


def test_an_internal_error_has_its_own_exit_code_and_the_resume_hint(tmp_path, capsys, monkeypatch):
    from loop.report import load_run

    def buggy(self, **kw):
        raise ValueError("PoolEnsembleModel: an input row is not a pool encoding")

    monkeypatch.setattr(Study, "run", buggy)
    root = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(__import__("json").dumps(FAST))
    assert main(["--config", str(cfg), "--out", str(root), "--quiet", "--no-report"]) == 4
    err = capsys.readouterr().err
    assert "internal error: ValueError: PoolEnsembleModel" in err and "Traceback" in err
    assert f"python -m loop.run --resume {root}" in err
    run = load_run(root)
    assert run.failed and run.status == "failed" and "not a pool encoding" in run.error
    monkeypatch.setattr(Study, "run", lambda self, **kw: pd.DataFrame())  # the fixed code resumes
    assert main(["--resume", str(root), "--quiet", "--no-report"]) == 0
    assert not RoundStore(root).failed_path.exists() and not load_run(root).failed


def _shards(root) -> dict[str, bytes]:
    """The bytes of every ledger and proposal shard of a run (what a seed measured and asked for)."""
    return {
        f"{d}/{p.name}": p.read_bytes() for d in ("ledger", "proposals") for p in sorted((root / d).glob("*.parquet"))
    }


def test_a_busy_cpu_does_not_change_the_design(tmp_path):
    """Designs are set by counts, not by the clock: the same seed on a loaded machine writes the same bytes.

    The busy run also fits its members in-process (``fit_map=map``, as ``loop.compare`` runs do) rather
    than as Ray tasks: where the fits run must not change them either.
    """
    import subprocess
    import sys

    cfg = _config(strategy="cost_aware", seed=3, budget=12.0)
    Study.create(tmp_path / "idle", cfg, local_oracle=True).run()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        Study.create(tmp_path / "busy", cfg, local_oracle=True, fit_map=map).run()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    idle, busy = _shards(tmp_path / "idle"), _shards(tmp_path / "busy")
    assert len(idle) >= 4 and idle.keys() == busy.keys()
    assert [k for k in idle if idle[k] != busy[k]] == []
    metrics = pd.read_parquet(tmp_path / "busy" / "metrics.parquet")
    assert not metrics["acquire_truncated"].any()


def test_a_truncated_proposal_is_recorded_from_the_proposal(tmp_path):
    from acquisition.base import Proposal

    study = Study.create(tmp_path / "run", _config(strategy="random", seed=3, budget=8.0))
    plain = study.strategy.propose
    study.strategy.propose = lambda *a, **k: Proposal(plain(*a, **k), {"truncated": True})
    metrics = study.run()
    assert len(metrics) >= 2
    assert list(metrics["acquire_truncated"]) == [False] + [True] * (len(metrics) - 1), "round 0 is counts only"
