"""Run configuration: CLI flags, a TOML/JSON file, and what goes into config.json."""

from __future__ import annotations

import json
import math
import platform
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiment_design import DesignSpace

WORLDS = ("small", "default", "large")
#: Keys of config.json that must match when a run is resumed.
IDENTITY_KEYS = (
    "seed",
    "world",
    "oracle",
    "strategy",
    "budget",
    "batch_size",
    "n_members",
    "initial_size",
    "initial_controls_h",
    "initial_budget_fraction",
    "heldout_per_axis",
    "data",
    "data_mapping",
    "costs",
    "world_overrides",
    "model",
    "model_options",
    "strategy_options",
    "plugins",
)


class SettingError(ValueError):
    """A setting that cannot work with this world or data, found once the run has started."""


def _data_location(data: str) -> str:
    """``data`` made absolute (so ``--resume`` works from any folder), checked to exist.

    Raises:
        ValueError: If no file, directory or matching ``.h5ad`` file is there.
    """
    from simulators.lab_formats import is_screen_pattern

    path = Path(data).expanduser()
    if is_screen_pattern(path) and not path.is_dir():  # a glob: its folder must hold a match
        if not any(path.parent.resolve().glob(path.name)):
            raise ValueError(f"--data {data}: no file matches")
        return str(path.parent.resolve() / path.name)
    if not path.exists():
        raise ValueError(f"--data {data}: no such file or directory")
    return str(path.resolve())


@dataclass
class RunConfig:
    """Everything that determines a run (timings and paths aside).

    Attributes:
        budget: Total budget in cost units (one scRNA well = 1.0), initial
            design included.
        strategy: Registered acquisition strategy name.
        seed: Root seed of the world, the model and the strategy.
        batch_size: Queries proposed per round (q).
        world: Simulator preset: small, default or large.
        oracle: A registered oracle (:mod:`simulators.registry`): ``sim`` (simulator),
            ``lab`` (measured data in pool mode, needs ``data``), a plug-in's; or
            ``plates`` (prospective: each round stops after
            proposing; ``loop.propose`` lays it on plates and ``loop.ingest``
            feeds the readout back; the space comes from ``data`` if given,
            else from the ``world`` preset).
        data: Lab data: a ``.h5ad``, ``.csv`` or ``.parquet`` file, or a directory or glob of
            ``.h5ad`` files read as one screen (one file per plate or cell line).
        n_members: Ensemble members.
        initial_size: Space-filling queries of the initial design (controls in
            every context come on top).
        initial_controls_h: Times (hours) of the initial controls per context.
        initial_budget_fraction: Most of the budget the initial design may spend.
        heldout_per_axis: Queries per evaluation axis, measured once at the
            start, free of the budget and never trained on (0: no evaluation).
        time_limit_s: Safety limit of one round's acquisition, seconds. What a
            seed proposes is set by counts (pool size, scoring chunks, greedy
            steps), not by the clock; a proposal that hits this limit still
            returns a valid batch and is flagged ``acquire_truncated`` in
            ``metrics.parquet`` (it may then differ on another machine). The
            default runs never come near it.
        workers: CPUs for a local Ray instance (default: all).
        address: Ray cluster address to join instead of starting one.
        costs: Assay name → cost override in budget units.
        world_overrides: Keyword overrides for the simulator preset.
        data_mapping: How to read ``data`` (:func:`simulators.lab_formats.read_options`):
            ``columns`` (cslab column → the file's), ``units`` (the file's ``dose_unit``
            values → cslab's), ``features`` (feature columns of a tidy table),
            ``modality`` (of a tidy table without a ``modality`` column).
        model: Registered model name (:mod:`models.registry`): ``csl`` or a baseline
            (``mean``, ``additive``, ``linear``, :mod:`models.baselines`), or a plug-in's.
        model_options: Keyword options of the model (for ``csl`` its fit settings,
            :class:`models.fitting.FitConfig`, e.g. ``{"max_steps": 300}``). A config that
            gives ``model`` as a table of options (the older layout) means these for ``csl``.
        strategy_options: Keyword options of the strategy (``{"target": "synergy"}`` for
            ``discovery``, ``{"base": "nipv"}`` for ``cost_aware``); ``time_limit_s`` comes
            from its own key.
        plugins: Modules (``mylab.models``) or ``.py`` files imported before the model and the
            strategy are looked up, so their ``@register`` decorators add them.
    """

    budget: float = 200.0
    strategy: str = "cost_aware"
    seed: int = 0
    batch_size: int = 16
    world: str = "default"
    oracle: str = "sim"
    data: str | None = None
    n_members: int = 5
    initial_size: int = 16
    initial_controls_h: tuple[float, ...] = (24.0,)
    initial_budget_fraction: float = 0.25
    heldout_per_axis: int = 8
    time_limit_s: float = 300.0
    workers: int | None = None
    address: str | None = None
    costs: dict[str, float] = field(default_factory=dict)
    world_overrides: dict = field(default_factory=dict)
    model: str = "csl"
    model_options: dict = field(default_factory=dict)
    strategy_options: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    data_mapping: dict = field(default_factory=dict)

    def validate(self) -> RunConfig:
        """Check values; raise ``ValueError`` with a one-line reason."""
        from acquisition.registry import STRATEGIES
        from experiment_design.registry import load_plugins
        from models.registry import MODELS

        self.plugins = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in self.plugins)
        load_plugins(self.plugins)  # stored absolute, so a resume or a Ray worker finds them
        if not (self.budget > 0 and math.isfinite(self.budget)):
            raise ValueError(f"--budget must be a positive, finite number of cost units, got {self.budget}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {self.n_members}")
        if self.world not in WORLDS:
            raise ValueError(f"--world must be one of {', '.join(WORLDS)}, got {self.world!r}")
        from simulators.registry import ORACLES

        if self.oracle != "plates" and self.oracle not in ORACLES:
            raise ValueError(f"--oracle must be one of {', '.join([*ORACLES.names, 'plates'])}, got {self.oracle!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGIES.names)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(MODELS.names)}")
        if self.oracle == "lab" and not self.data:
            raise ValueError("--oracle lab needs --data FILE")
        if self.data:
            self.data = _data_location(self.data)
        if not 0 < self.initial_budget_fraction <= 1:
            raise ValueError(f"initial_budget_fraction must be in (0, 1], got {self.initial_budget_fraction}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.initial_size < 0 or self.heldout_per_axis < 0:
            raise ValueError("initial_size and heldout_per_axis must be >= 0")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive, got {self.time_limit_s}")
        from simulators.lab_formats import read_options

        read_options(self.data_mapping)  # unknown keys or wrong types: a one-line error
        check_options(
            f"model {self.model!r}", MODELS.get(self.model), self.model_options, fixed=("space", "n_members", "seed")
        )
        if "time_limit_s" in self.strategy_options:
            raise ValueError(f"strategy {self.strategy!r}: time_limit_s is set by the run, not in its options")
        try:  # building a strategy is cheap, and it checks its own options (cost_aware passes some to its base)
            STRATEGIES.get(self.strategy)(time_limit_s=self.time_limit_s, **self.strategy_options)
        except TypeError as exc:
            raise ValueError(
                f"unknown options of strategy {self.strategy!r}: {sorted(self.strategy_options)} ({exc})"
            ) from None
        for name, cost in self.costs.items():
            if not float(cost) > 0:
                raise ValueError(f"cost of assay {name!r} must be positive, got {cost}")
        return self

    def build_model(self, space: DesignSpace) -> object:
        """The run's model, untrained: ``MODELS[model](space, n_members, seed, **model_options)``.

        Plug-in modules of :attr:`plugins` must be loaded first
        (:func:`experiment_design.registry.load_plugins`).
        """
        from models.registry import MODELS

        return MODELS.get(self.model)(space, n_members=self.n_members, seed=self.seed, **self.model_options)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["initial_controls_h"] = list(self.initial_controls_h)
        d["plugins"] = list(self.plugins)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        d = normalise(d)
        if "initial_controls_h" in d:
            d["initial_controls_h"] = tuple(float(t) for t in d["initial_controls_h"])
        if "plugins" in d:
            d["plugins"] = tuple(str(p) for p in d["plugins"])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> dict:
        """Read the settings of a TOML or JSON config file (as a dict of overrides)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file")
        try:
            if path.suffix == ".toml":
                d = tomllib.loads(path.read_text())
            else:
                d = json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--config {path}: cannot parse ({exc})") from None
        d = normalise({k.replace("-", "_"): v for k, v in d.items()})
        cls.from_dict(d)  # reject unknown keys early
        return d


def normalise(settings: dict) -> dict:
    """A copy of ``settings`` in the current layout: ``model = {options}`` (older) → ``model_options``.

    Raises:
        ValueError: Both ``model`` as options and ``model_options`` given.
    """
    d = dict(settings)
    if isinstance(d.get("model"), dict):
        if d.get("model_options"):
            raise ValueError("give the model's options once: in model_options, not also as model = {...}")
        d["model_options"] = d.pop("model")
        d["model"] = "csl"
    return d


def check_options(what: str, cls: type, options: dict, fixed: tuple[str, ...]) -> None:
    """Raise ValueError naming options that ``cls`` does not take (or that the run sets itself).

    The options a class takes are its ``option_names()`` where it defines one (``csl``: its fit
    settings), else the keyword parameters of its constructor.
    """
    import inspect

    if not isinstance(options, dict):
        raise ValueError(f"options of {what} must be a table of name = value, got {options!r}")
    taken = sorted(set(options) & set(fixed))
    if taken:
        raise ValueError(f"{what}: {', '.join(taken)} is set by the run, not in its options")
    if hasattr(cls, "option_names"):
        known = set(cls.option_names())
    else:
        params = inspect.signature(cls).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        known = set(params) - set(fixed)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown options of {what}: {unknown}; known: {sorted(known)}")


def versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("cslab", "torch", "botorch", "gpytorch", "ray", "numpy", "pandas", "pyarrow", "anndata"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
