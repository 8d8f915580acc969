"""Any model or oracle that speaks the protocol runs the loop: the baselines, and plug-ins defined in this file.

``NearestControl`` (a model) and ``EchoWorld`` (an oracle) below are
registered from a config file's ``plugins`` list (this very file), in a fresh
process, with nothing in ``models/`` or ``simulators/`` changed; the oracle
is built in a Ray actor from this file's code.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loop import faults
from loop.config import RunConfig, normalise
from loop.ledger import Ledger
from loop.run import main
from loop.study import Study
from models.base import Prediction
from models.baselines import MeanOfControls
from models.registry import MODELS
from simulators import make_world
from simulators.base import Oracle
from simulators.registry import ORACLES

FAST = dict(
    world="small", budget=14.0, batch_size=4, n_members=2, initial_size=4, heldout_per_axis=2, time_limit_s=60.0
)
TIMINGS = ["wall_s", "fit_s", "score_s", "acquire_s", "measure_s"]


class NearestControl(MeanOfControls):
    """A toy model of this test file: the control mean, and programs of width 2."""

    def predict(self, queries, readouts=None) -> Prediction:  # noqa: ANN001
        pred = super().predict(queries, readouts)
        pred.members["programs"] = pred.members["programs"][..., :2]
        pred.aleatoric["programs"] = pred.aleatoric["programs"][..., :2]
        return pred


@dataclass(frozen=True)
class EchoFactory:
    """Builds an :class:`EchoWorld` (picklable: the loop builds the oracle in a Ray actor)."""

    world: str
    seed: int

    def __call__(self) -> "EchoWorld":
        return EchoWorld(make_world(self.world, seed=self.seed))


class EchoWorld(Oracle):
    """A toy oracle of this test file: passes every query on to a preset world and counts them."""

    def __init__(self, world) -> None:  # noqa: ANN001
        self.world, self.space, self.var_names, self.truth = world, world.space, world.var_names, world.truth
        self.calls = 0

    @classmethod
    def factory(cls, settings) -> EchoFactory:  # noqa: ANN001
        return EchoFactory(settings.world, int(settings.seed))

    def measure(self, queries, layout=None):  # noqa: ANN001, ANN201
        self.calls += 1
        return self.world.measure(queries, layout)


if __name__.startswith("cslab_plugin_"):  # imported as a config's plug-in (the subprocess below), not by pytest
    MODELS.register("nearest_control")(NearestControl)
    ORACLES.register("echo_world")(EchoWorld)


def test_older_configs_name_the_model_options_model():
    d = normalise({"model": {"max_steps": 10}, "seed": 3})
    assert d == {"model": "csl", "model_options": {"max_steps": 10}, "seed": 3}
    assert RunConfig.from_dict({"model": {"max_steps": 10}}).model_options == {"max_steps": 10}
    with pytest.raises(ValueError, match="once"):
        normalise({"model": {"max_steps": 10}, "model_options": {"warm_steps": 2}})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "gpt"}, "unknown model 'gpt'; known: additive, csl, linear, mean"),
        ({"model_options": {"max_stepz": 1}}, "unknown options of model 'csl': ['max_stepz']"),
        ({"model": "linear", "model_options": {"bandwidth": 0.1}}, "unknown options of model 'linear': ['bandwidth']"),
        ({"model": "linear", "model_options": {"seed": 1}}, "seed is set by the run"),
        ({"strategy": "cost_aware", "strategy_options": {"bass": "nipv"}}, "unknown options of strategy 'cost_aware'"),
        ({"strategy_options": {"time_limit_s": 3}}, "time_limit_s is set by the run"),
        ({"plugins": ["no/such/plugin.py"]}, "no/such/plugin.py: no such file"),
        ({"plugins": ["no_such_module_xyz"]}, "plugin no_such_module_xyz: cannot import"),
    ],
)
def test_bad_model_and_strategy_settings_are_one_line_errors(settings, message):
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict(settings).validate()
    assert message in str(info.value)


def test_strategy_options_reach_the_strategy(tmp_path):
    cfg = RunConfig(**FAST, strategy="cost_aware", strategy_options={"base": "nipv"}, model="linear")
    study = Study.create(tmp_path / "run", cfg)
    assert study.strategy.base.registry_name == "nipv" and type(study.model).__name__ == "LinearModel"


def test_a_new_plugin_is_one_file_with_its_decorator(tmp_path, monkeypatch):
    pkg = tmp_path / "labplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from experiment_design.registry import Registry\nTHINGS = Registry('thing', package='labplugins')\n"
    )
    (pkg / "widget.py").write_text("from labplugins import THINGS\n\n@THINGS.register('widget')\nclass Widget: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from labplugins import THINGS

    assert THINGS.names == ["widget"] and THINGS.get("widget").__name__ == "Widget"
    with pytest.raises(KeyError, match="unknown thing 'gadget'; known: widget"):
        THINGS.get("gadget")


def test_a_baseline_runs_the_loop_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = RunConfig(**FAST, model="linear", strategy="cost_aware", seed=1)  # every baseline saves the same state
    whole = tmp_path / "whole"
    metrics = Study.create(whole, cfg).run()
    assert metrics["risk"].between(0.0, 1.2).all(), "scored on every round, in baseline units"
    assert metrics["identifiability"].isna().all(), "no operators, no index"
    assert metrics["ident_latent_r2"].notna().all() and metrics["ident_ec50"].isna().all()
    crashed = tmp_path / "crashed"
    monkeypatch.setenv(faults.ENV, "1:fitted")
    with pytest.raises(faults.InjectedCrash):
        Study.create(crashed, cfg).run()
    monkeypatch.delenv(faults.ENV)
    Study.open(crashed).run()
    a = pd.read_parquet(whole / "metrics.parquet").drop(columns=TIMINGS)
    b = pd.read_parquet(crashed / "metrics.parquet").drop(columns=TIMINGS)
    pd.testing.assert_frame_equal(a, b)


def test_the_cli_takes_a_model_and_refuses_to_change_it_on_resume(tmp_path, capsys):
    cfg = tmp_path / "fast.json"
    cfg.write_text(json.dumps(FAST))
    root = tmp_path / "run"
    assert (
        main(
            [
                "--config",
                str(cfg),
                "--model",
                "mean",
                "--strategy",
                "random",
                "--out",
                str(root),
                "--quiet",
                "--no-report",
            ]
        )
        == 0
    )
    stored = json.loads((root / "config.json").read_text())["config"]
    assert stored["model"] == "mean" and stored["model_options"] == {}
    assert main(["--resume", str(root), "--model", "linear"]) == 2
    assert "model='mean', not 'linear'" in capsys.readouterr().err
    risk = pd.read_parquet(root / "metrics.parquet")["risk"]
    assert np.all(np.abs(risk - 1.0) < 0.2), "the mean of controls is the risk's reference"


@pytest.mark.slow
def test_a_model_and_an_oracle_defined_in_a_test_file_run_from_a_config_file(tmp_path, ray_instance):
    cfg = tmp_path / "plugin.toml"
    cfg.write_text(
        f'plugins = ["{Path(__file__).resolve()}"]\nmodel = "nearest_control"\noracle = "echo_world"\n'
        'strategy = "random"\nworld = "small"\nbudget = 14.0\nbatch_size = 4\nn_members = 2\ninitial_size = 4\n'
        "heldout_per_axis = 2\n"
    )
    import ray

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = tmp_path / "run"
    # joining a running Ray puts the oracle in an actor: the plug-in file's code must travel there by value
    address = ray.get_runtime_context().gcs_address
    done = subprocess.run(
        [sys.executable, "-m", "loop.run", "--config", str(cfg), "--out", str(out), "--quiet", "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["model"] == "nearest_control" and stored["oracle"] == "echo_world"
    assert stored["plugins"] == [str(Path(__file__).resolve())]
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["risk"].notna().all() and (out / "report.html").is_file()
    # The echoing oracle measured what the built-in simulator measures: random's design ignores the model.
    ref = tmp_path / "ref"
    Study.create(ref, RunConfig(**{**FAST, "model": "mean", "strategy": "random"}), local_oracle=True).run()
    mine, theirs = Ledger(out), Ledger(ref)
    assert mine.rounds() == theirs.rounds()
    for r in mine.rounds():
        a, b = mine.read_round(r), theirs.read_round(r)
        assert a.query_ids == b.query_ids
        for m in a.modalities:
            np.testing.assert_array_equal(a.modalities[m].X, b.modalities[m].X)
    # Without the plug-ins the names are unknown, and the error says which names are known (one fresh
    # interpreter, where this file's decorators never ran, for both flags).
    bad_args = (("--model", "nearest_control", "model"), ("--oracle", "echo_world", "--oracle"))
    code = (
        "from loop.run import main; "
        f"print([main([flag, name, '--out', {str(tmp_path / 'x')!r}]) for flag, name, _ in {bad_args}])"
    )
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert bad.stdout.strip() == "[2, 2]", bad.stdout + bad.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, bad.stderr
    for (_, name, kind), line in zip(bad_args, errors, strict=True):
        assert name in line and kind in line, line
