"""One design study: the closed loop over rounds, on disk, resumable.

A round is ``propose → measure → fit → score``; round 0 proposes the
initial design (controls in every context plus a space-filling set). Each
step writes its artefact atomically, then the round's status
(:class:`~loop.rounds.RoundStatus`), so :meth:`Study.run` on an existing run
folder picks up after the last completed step and ends with the same ledger
and metrics as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from acquisition.base import Proposal
from acquisition.registry import STRATEGIES
from experiment_design import DesignSpace, MeasurementBatch, Perturbation, Query, keys
from experiment_design.registry import load_plugins
from loop import faults
from loop.config import IDENTITY_KEYS, RunConfig, SettingError, normalise, versions
from loop.distributed import OracleClient, init_ray, ray_map, ray_wanted, share_plugins
from loop.heldout import HeldOut, reference_queries
from loop.ledger import Ledger
from loop.rounds import RoundStatus, RoundStore, is_run_folder
from loop.storage import RunFolderError, atomic_write, clean_temporaries, read_json, write_json
from models.identifiability import score
from simulators.lab import LabAdapter
from simulators.registry import ORACLES

S = RoundStatus
MAX_ROUNDS = 10_000


class AwaitingReadout(Exception):  # noqa: N818 - a state, not an error
    """A prospective round is proposed and waits for its plate readout."""


def with_costs(space: DesignSpace, costs: dict[str, float]) -> DesignSpace:
    """The space with assay costs overridden by name."""
    unknown = set(costs) - set(space.assay_index)
    if unknown:
        raise ValueError(f"costs name unknown assays {sorted(unknown)}; known: {list(space.assay_index)}")
    assays = tuple(dataclasses.replace(a, cost=float(costs.get(a.name, a.cost))) for a in space.assays)
    return dataclasses.replace(space, assays=assays)


def round_rng(seed: int, round_index: int) -> np.random.Generator:
    """The strategy's generator for one round (independent of resumes)."""
    return np.random.default_rng([seed, round_index, 0xC51AB])


class Study:
    """A run folder plus the objects that act on it.

    Use :meth:`create` for a new run and :meth:`open` to resume one.

    Args:
        root: Run folder.
        config: The run's configuration.
        oracle_factory: Picklable zero-argument callable building the oracle
            (default: the simulator of ``config``).
        local_oracle: Call the oracle in this process (``True``) or in a Ray actor (``False``). Default:
            a Ray actor when the run joins a cluster (``config.address``, ``RAY_ADDRESS``) or Ray already
            runs in this process, else in-process (:func:`loop.distributed.ray_wanted`), so a single local
            run starts no Ray at all (its ensemble is fitted in this process).
        oracle_backoff_s: First wait before retrying a failed oracle call (doubles per retry).
        fit_map: ``map``-like callable running the member fits (default: Ray tasks). A run that is
            itself one of many parallel Ray tasks (``loop.compare``) passes ``map``: its fits then run
            in its own process, and never wait behind the other runs for a CPU. Results are the same.
        save: Called after each finished step (and once the run folder is created): a run folder
            on shared storage uploads its local copy (:func:`loop.remote.working_copy`).
    """

    def __init__(
        self,
        root: Path,
        config: RunConfig,
        oracle_factory: Callable | None = None,
        local_oracle: bool | None = None,
        oracle_backoff_s: float = 0.5,
        fit_map: Callable | None = None,
        save: Callable[[], object] | None = None,
    ) -> None:
        self.root, self.config = Path(root), config
        self._save = save or (lambda: None)
        self._fit_map = fit_map
        self.store, self.ledger = RoundStore(root), Ledger(root)
        self._oracle_factory = oracle_factory
        self._local_oracle = local_oracle
        self._backoff_s = oracle_backoff_s
        self._oracle: OracleClient | None = None
        self._ray_started = False
        self._end_reason = ""
        self.truth = None
        self._lab: LabAdapter | None = None  # the pool-mode oracle: what is handed out comes from it
        self.features: dict[str, list[str]] = {}  # feature names per modality, where known (readouts must match)
        share_plugins(load_plugins(config.plugins))  # a plug-in registers itself (also in a Ray worker)
        # A prospective (plates) run has no oracle: its space is the earlier data's (no pool) or the world's.
        source = ORACLES.get(("lab" if config.data else "sim") if config.oracle == "plates" else config.oracle)
        factory = source.factory(config)
        oracle = factory()
        self._oracle_factory = oracle_factory or factory
        # an in-process oracle is this one (a second copy of a large screen would double its memory);
        # oracles are stateless across calls (the simulator draws per query, the lab adapter is told what is used)
        self._oracle_instance = oracle if oracle_factory is None else None
        self.features = {m: list(v) for m, v in oracle.var_names.items()}
        self.truth = getattr(oracle, "truth", None)
        base_space = oracle.space
        if config.oracle == "plates":
            base_space = dataclasses.replace(base_space, pool=())
        elif base_space.pool:
            self._lab = oracle
        self.space = with_costs(base_space, config.costs)
        # Prospective (plates) runs have no oracle to measure stress sets with.
        self.heldout = (
            HeldOut(root, self.space, config.seed, config.heldout_per_axis)
            if config.heldout_per_axis > 0 and config.oracle != "plates"
            else None
        )
        if self.heldout is not None:
            self.space = self.heldout.restrict(self.space)
        self.model = config.build_model(self.space)
        self.strategy = STRATEGIES.get(config.strategy)(time_limit_s=config.time_limit_s, **config.strategy_options)

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, root: str | Path, config: RunConfig, **kwargs: object) -> Study:
        """Start a new run folder.

        Raises:
            RunFolderError: If ``root`` exists and is not empty.
        """
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            hint = " (it is a cslab run: use --resume)" if is_run_folder(root) else ""
            raise RunFolderError(f"{root} exists and is not empty{hint}; refusing to overwrite")
        config.validate()
        study = cls(root, config, **kwargs)
        lo, hi = study.space.time_range_h
        bad = [t for t in config.initial_controls_h if not lo <= t <= hi]
        if bad and not study.space.pool:
            raise ValueError(f"initial_controls_h {bad} lie outside the time range [{lo}, {hi}] h")
        write_json(
            study.store.config_path,
            {
                "config": config.to_dict(),
                "space": study.space.to_dict(),
                "features": study.features,
                "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        study._save()
        return study

    @classmethod
    def open(cls, root: str | Path, expect: dict | None = None, **kwargs: object) -> Study:
        """Reopen a run folder for resuming.

        Args:
            root: Run folder.
            expect: Config values the caller asked for; any that differ from
                the stored ones (seed, world, strategy, ...) are an error.
            **kwargs: Passed to the constructor (``oracle_factory``, ``local_oracle``, ``oracle_backoff_s``,
                ``fit_map``).

        Raises:
            RunFolderError: Missing or corrupt config, or a mismatch.
        """
        root = Path(root)
        cfg_path = RoundStore(root).config_path
        if not cfg_path.is_file():
            raise RunFolderError(f"{root}: no config.json; not a cslab run folder (or it was never started)")
        try:
            stored = RunConfig.from_dict(read_json(cfg_path)["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(f"{cfg_path}: corrupt or foreign config ({exc})") from None
        asked = {k: v for k, v in normalise(expect or {}).items() if k in IDENTITY_KEYS and v is not None}
        try:  # the asked values in the stored layout (lists as tuples, older model tables as options)
            wanted = RunConfig.from_dict({**stored.to_dict(), **asked})
        except (TypeError, ValueError) as exc:
            raise RunFolderError(f"{root}: cannot compare the asked settings with the stored ones ({exc})") from None
        for key in asked:
            if getattr(stored, key) != getattr(wanted, key):
                raise RunFolderError(
                    f"{root}: run was made with {key}={getattr(stored, key)!r}, not {getattr(wanted, key)!r}; "
                    "resume without changing it, or start a new run"
                )
        clean_temporaries(root)
        study = cls(root, stored, **kwargs)
        last = study.store.last_round()
        measured = (
            [r for r in range(last + 1) if (study.store.read_status(r) or {}).get("status", 0) >= S.MEASURED]
            if last is not None
            else []
        )
        try:
            study.ledger.verify(measured)
        except ValueError as exc:
            raise RunFolderError(str(exc)) from None
        return study

    # ------------------------------------------------------------- running
    @property
    def oracle(self) -> OracleClient:
        """The oracle client (the Ray actor starts on first use)."""
        if self._oracle is None:
            local = self._local_oracle
            if local is None:
                local = not ray_wanted(self.config.address)
            if not local:
                self._ensure_ray()
            self._oracle = OracleClient(
                self._oracle_factory, backoff_s=self._backoff_s, local=local, instance=self._oracle_instance
            )
        return self._oracle

    def _ray_map(self, fn: Callable, items: Iterable) -> list:
        """:func:`loop.distributed.ray_map`, starting Ray on first use (a batched fit never calls it)."""
        self._ensure_ray()
        return ray_map(fn, items)

    def _ensure_ray(self) -> None:
        """Start (or join) Ray on first use; a run that only proposes never starts it."""
        self._ray_started = init_ray(self.config.address, self.config.workers) or self._ray_started

    def spent(self, upto: int) -> float:
        """Cost of every measured round ``<= upto`` (derived from the proposals)."""
        total = 0.0
        for r in range(upto + 1):
            rec = self.store.read_status(r)
            if rec and rec["status"] >= S.MEASURED:
                total += self.space.cost(self.store.read_proposal(r))
        return total

    def run(
        self,
        on_round: Callable[[dict], None] | None = None,
        on_stage: Callable[[int, str], None] | None = None,
    ) -> object:
        """Run (or resume) until the budget is spent.

        Args:
            on_round: Called with each round's metrics row when it is scored.
            on_stage: Called with (round, stage name) as each stage starts.

        Returns:
            The metrics table (``pandas.DataFrame``).
        """
        try:
            self._measure_heldout()
            self._save()
            r = self._resume_point()
            while r < MAX_ROUNDS:
                rec = self.store.read_status(r)
                if rec is None and not self._propose(r, on_stage):
                    self.store.mark_finished(r, self.spent(r - 1), self._end_reason)
                    self._save()
                    break
                self._save()
                rec = self.store.read_status(r)
                if rec["status"] < S.MEASURED:
                    self._measure(r, on_stage)
                    self._save()
                if self.store.read_status(r)["status"] < S.FITTED:
                    self._fit(r, on_stage)
                    self._save()
                if self.store.read_status(r)["status"] < S.SCORED:
                    row = self._score(r, on_stage)
                    self._save()
                    if on_round:
                        on_round(row)
                r += 1
            else:
                self.store.mark_finished(r, self.spent(r - 1), f"round limit ({MAX_ROUNDS}) reached")
                self._save()
            return self.store.read_metrics()
        finally:
            if self._ray_started:
                import ray

                ray.shutdown()
                self._ray_started = False
                self._oracle = None

    def _measure_heldout(self) -> None:
        """Measure the stress sets and the risk's reference controls once (free of the budget); stored ones are kept.

        The reference controls hand out no specimen of measured data (they are never trained on, and a
        design may still buy the same conditions). A run scored before they existed (2026-12-08) keeps its
        training-data yardstick, so its risk curve has one definition throughout.
        """
        if self.heldout is None:
            return
        for axis in self.heldout.missing():
            self.heldout.store(axis, self._measure_queries(self.heldout.sets[axis], self.heldout.specimens))
        if self.heldout.reference_path.is_file() or len(self.store.read_metrics()):
            return
        specimens = self._lab.specimens if self._lab is not None else None
        queries = reference_queries(self.heldout.space, self.heldout.blocked, specimens=specimens)
        if queries:
            self.heldout.store_reference(self._measure_queries(queries, set))

    def _measure_queries(self, queries: list[Query], used: Callable[[], set[str]]) -> MeasurementBatch:
        """Measure through the oracle; lab data hands out specimens statelessly, excluding ``used()``."""
        if self._lab is None:
            return self.oracle.measure(queries)
        return self.oracle.measure(queries, exclude=sorted(used()))

    def _training_data(self, upto: int) -> MeasurementBatch:
        """The ledger up to a round, less what the stress sets hold out."""
        data = self.ledger.load(upto=upto)
        return self.heldout.trainable(data) if self.heldout is not None else data

    def _resume_point(self) -> int:
        """First round to work on; restores the model from the last fit."""
        last = self.store.last_round()
        if last is None:
            return 0
        rec = self.store.read_status(last)
        fitted = last if rec["status"] >= S.FITTED else last - 1
        if fitted >= 0:
            self._load_model(fitted)
        return last

    def _propose(self, r: int, on_stage: Callable | None) -> bool:
        """Propose round r; False when nothing fits in the budget left."""
        if on_stage:
            on_stage(r, "acquire")
        t0 = time.perf_counter()
        left = self.config.budget - self.spent(r - 1)
        rng = round_rng(self.config.seed, r)
        used = self._used_specimens(r - 1) if self._lab is not None else set()  # pool mode: what is handed out
        truncated = False  # the initial design is counts only
        if r == 0:
            queries = self._initial_design(min(left, self.config.initial_budget_fraction * self.config.budget), rng)
        else:
            if left < min(a.cost for a in self.space.assays) - 1e-9:
                self._end_reason = "budget spent"
                return False
            ledger = self.ledger.load(upto=r - 1)
            space = self._open_space(used)
            if self._lab is not None and not space.pool:
                self._end_reason = "every stored specimen measured"
                return False
            proposal = Proposal.of(self.strategy.propose(self.model, space, ledger, self.config.batch_size, left, rng))
            truncated, queries = proposal.truncated, list(proposal)
        if self.heldout is not None:
            queries = [q for q in queries if not self.heldout.blocked(q)]
        if self._lab is not None:
            queries = self._within_stock(queries, used)
        for q in queries:
            self.space.validate(q)
        if not queries and r == 0:
            raise SettingError(
                f"round 0: the initial design has no admissible query within {left:.1f} units "
                "(check the budget, initial_size and the held-out stress sets)"
            )
        if not queries:
            self._end_reason = "nothing admissible fits the budget left"
            return False
        cost = self.space.cost(queries)
        if cost > left + 1e-9:
            raise RuntimeError(f"strategy {self.config.strategy} proposed cost {cost:.2f} > budget left {left:.2f}")
        self.store.write_proposal(r, queries, self.space)
        self.store.write_status(r, S.PROPOSED, acquire_s=time.perf_counter() - t0, acquire_truncated=truncated)
        faults.checkpoint(r, "proposed")
        return True

    def _within_stock(self, queries: list[Query], used: set[str]) -> list[Query]:
        """Pool mode: each condition asked for at most the specimens it has left (one-sample data, repeats)."""
        left: dict[str, int] = {}
        out = []
        for q in queries:
            n = left.setdefault(q.query_id, sum(s not in used for s in self._lab.specimens(q.query_id)))
            k = min(q.replicates, n)
            if k > 0:
                out.append(q if k == q.replicates else q.with_replicates(k))
                left[q.query_id] = n - k
        return out

    def _used_specimens(self, upto: int) -> set[str]:
        """Specimens handed out by rounds ``<= upto`` that were measured, and by the stress sets.

        Derived from disk, so a resumed run hands out exactly what an uninterrupted one does.
        """
        used = self.heldout.specimens() if self.heldout is not None else set()
        rounds = [r for r in range(upto + 1) if (self.store.read_status(r) or {}).get("status", 0) >= S.MEASURED]
        for r in rounds:
            used.update(s for m in self.ledger.read_round(r).modalities.values() for s in m.obs[keys.SPECIMEN])
        return used

    def _open_space(self, used: set[str]) -> DesignSpace:
        """The space to propose from: for lab data, the pool less conditions whose specimens are all ``used``."""
        if self._lab is None:
            return self.space
        left = [q for q in self.space.pool if any(s not in used for s in self._lab.specimens(q.query_id))]
        return dataclasses.replace(self.space, pool=tuple(left))

    def _initial_design(self, left: float, rng: np.random.Generator) -> list[Query]:
        """Controls in every context, then a space-filling (Sobol) set."""
        assay = self.space.rna_assay()
        if self.space.pool:  # measured data: one stored control per context, where there is one
            by_context = {}
            for q in self.space.pool:
                if q.perturbation.is_control:
                    by_context.setdefault(q.context, q)
            controls = list(by_context.values())
        else:
            controls = [
                Query(Perturbation.control(), t, c, assay)
                for c in self.space.open_contexts
                for t in self.config.initial_controls_h
            ]
        filler = STRATEGIES.get("sobol")(time_limit_s=self.config.time_limit_s).propose(
            None, self.space, None, self.config.initial_size, left - self.space.cost(controls), rng
        )
        return STRATEGIES.get("sobol").fit_budget(controls + filler, self.space, left)

    def _measure(self, r: int, on_stage: Callable | None) -> None:
        if on_stage:
            on_stage(r, "measure")
        if self.config.oracle == "plates":
            raise AwaitingReadout(r)
        t0 = time.perf_counter()
        batch = self._measure_queries(self.store.read_proposal(r), lambda: self._used_specimens(r - 1))
        self.ledger.append(r, batch)
        self.store.write_status(r, S.MEASURED, measure_s=time.perf_counter() - t0)
        faults.checkpoint(r, "measured")

    def _fit(self, r: int, on_stage: Callable | None) -> None:
        if on_stage:
            on_stage(r, "fit")
        t0 = time.perf_counter()
        self.model.fit(self._training_data(r), map_fn=self._fit_map or self._ray_map)
        state = self.model.state_dict()
        atomic_write(self.store.model_path(r), lambda fh: torch.save(state, fh))
        self.store.write_status(r, S.FITTED, fit_s=time.perf_counter() - t0)
        faults.checkpoint(r, "fitted")

    def _load_model(self, r: int) -> None:
        path = self.store.model_path(r)
        try:
            state = torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported by path
            raise RunFolderError(f"{path}: unreadable model checkpoint ({exc})") from None
        self.model.load_state_dict(state)

    def _score(self, r: int, on_stage: Callable | None) -> dict:
        if on_stage:
            on_stage(r, "score")
        t0 = time.perf_counter()
        data = self._training_data(r)
        report = score(self.model, data, self.truth)
        risk = self.heldout.score(self.model, data).as_metrics() if self.heldout is not None else {}
        score_s = time.perf_counter() - t0
        rec = self.store.read_status(r)
        queries = self.store.read_proposal(r)
        timings = {k: float(rec.get(k, np.nan)) for k in ("acquire_s", "measure_s", "fit_s")}
        row = {
            "round": r,
            "spent": self.spent(r),
            "n_queries": len(data.query_ids),
            "round_queries": len(queries),
            "round_cost": self.space.cost(queries),
            "identifiability": float(report.index),
            "acquire_truncated": bool(rec.get("acquire_truncated", False)),
            **{f"ident_{k}": float(v) for k, v in report.parts.items()},
            "risk": np.nan,
            "risk_modality": np.nan,
            "risk_scale": np.nan,
            "risk_context": np.nan,
            "risk_intervention": np.nan,
            "risk_training_controls": np.nan,
            "calibration_90": np.nan,
            **risk,
            **timings,
            "score_s": score_s,
            "wall_s": sum(timings.values()) + score_s,
        }
        self.store.write_metric_row(row)
        self.store.write_status(r, S.SCORED, score_s=score_s)
        faults.checkpoint(r, "scored")
        return row
