"""Ray plumbing: start or join a cluster, fan work out, host the oracle.

Only this module (and the loop that calls it) imports Ray, and only when a run
uses it (:func:`ray_wanted`): a single local run with the batched ensemble fit
has nothing to fan out, so it calls its oracle in its own process and never
starts Ray's daemons (about 0.35 GB PSS and 5 s). Workers pin BLAS and torch
to one thread each, so two cores are not oversubscribed.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence

THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def pin_threads() -> None:
    """Set each of :data:`THREAD_ENV` that the environment does not set already.

    Call it before numpy or torch is imported: OpenBLAS reads the variable once, at load.
    """
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)


def share_plugins(modules: Iterable[object]) -> None:
    """Ship the code of plug-in files with the objects Ray pickles (a worker cannot import a file by path).

    Modules imported from a ``.py`` path (:func:`experiment_design.registry.load_plugins`) are pickled
    by value, so an oracle factory or model defined there reaches a Ray actor; an installed module
    (``mylab.models``) is pickled by reference as usual.
    """
    plugins = [m for m in modules if m.__name__.startswith("cslab_plugin_")]
    if not plugins:
        return
    from ray import cloudpickle

    for m in plugins:
        cloudpickle.register_pickle_by_value(m)


def ray_running() -> bool:
    """Ray is initialised in this process (checked without importing it)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def ray_wanted(address: str | None) -> bool:
    """A run's oracle goes to a Ray actor when the run joins a cluster or Ray already runs in this process.

    ``address`` (or ``RAY_ADDRESS`` in the environment) joins a cluster; a process that started Ray
    itself (a test session, a notebook) keeps using it. Otherwise the oracle is called in-process.
    """
    return bool(address or os.environ.get("RAY_ADDRESS")) or ray_running()


class OracleFailed(RuntimeError):
    """The oracle kept failing after every retry."""


def init_ray(address: str | None = None, workers: int | None = None) -> bool:
    """Start a local Ray instance (dashboard off, logs quiet) or join ``address``.

    Without ``address`` the instance is always a new local one (``address="local"``), even
    while a cluster started with ``ray start`` runs on this machine: plain ``ray.init()``
    would join that cluster instead. ``RAY_ADDRESS`` in the environment counts as ``address``.

    Returns:
        True if this call started Ray (the caller then shuts it down).
    """
    import ray

    if ray.is_initialized():
        return False
    pin_threads()
    kwargs: dict = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # workers on other machines get the thread settings through the runtime environment
        ray.init(address=address, runtime_env={"env_vars": dict(THREAD_ENV)}, **kwargs)
    else:
        # A local instance's workers inherit this process's environment (set above): no runtime environment,
        # whose set-up interpreter cost each worker 1-2 s more to start. No idle workers started ahead of
        # need: a run's Ray work is its oracle actor (a process of its own) and, in a comparison, one task per
        # run; each prestarted worker held ~50 MB PSS doing nothing.
        ray.init(
            address="local",
            num_cpus=workers or os.cpu_count() or 1,
            _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False},
            **kwargs,
        )
    return True


def _pinned_call(fn: Callable, item: object) -> object:
    """Run ``fn(item)`` with torch on one thread (inside a worker)."""
    import torch

    torch.set_num_threads(1)
    return fn(item)


@functools.cache
def _remote_call() -> object:
    """The Ray remote function of :func:`_pinned_call` (made on first use, so importing this module needs no Ray)."""
    import ray

    return ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_pinned_call)


def ray_map(fn: Callable, items: Iterable) -> list:
    """``map`` over Ray tasks: ``fn(item)`` for each item, results in order.

    A task whose worker dies is retried up to three times by Ray; an
    exception raised by ``fn`` itself is re-raised here.
    """
    import ray

    fn_ref = ray.put(fn)
    refs = [_remote_call().remote(fn_ref, item) for item in items]
    return ray.get(refs)


class OracleHost:
    """Hosts an oracle in its own process (as a Ray actor: :func:`oracle_actor`)."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self.oracle = factory()
        # The simulators are numpy: importing torch here only to cap its threads cost ~0.25 GB per actor.
        # An oracle built on torch (a plug-in) gets one thread, as every process sharing the machine.
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)

    def measure(self, queries: Sequence, layout: dict | None = None, **kwargs: object) -> object:
        """Forward to the oracle."""
        return self.oracle.measure(queries, layout=layout, **kwargs)


@functools.cache
def oracle_actor() -> object:
    """:class:`OracleHost` as a Ray actor class (restarted up to twice if its process dies)."""
    import ray

    return ray.remote(max_restarts=2, max_task_retries=0)(OracleHost)


class OracleClient:
    """Calls an oracle (a Ray actor) with retries and exponential backoff.

    Args:
        factory: Picklable zero-argument callable that builds the oracle in
            the actor process.
        attempts: Calls before giving up.
        backoff_s: First wait between attempts; doubles each time.
        local: Call the oracle in this process instead of a Ray actor.
        instance: With ``local``, an oracle ``factory`` already built (used instead of building another).
    """

    def __init__(
        self,
        factory: Callable[[], object],
        attempts: int = 4,
        backoff_s: float = 0.5,
        local: bool = False,
        instance: object | None = None,
    ) -> None:
        self.attempts, self.backoff_s = attempts, backoff_s
        self._local = (instance if instance is not None else factory()) if local else None
        self._actor = None if local else oracle_actor().remote(factory)

    def measure(self, queries: Sequence, layout: dict | None = None, **kwargs: object) -> object:
        """Measure with retries (``kwargs`` go to the oracle, e.g. ``exclude`` for lab data).

        Raises:
            ValueError: At once, if the oracle rejects a query (retrying cannot help).
            OracleFailed: After ``attempts`` failed calls, with the last error.
        """
        last: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                return self._call(queries, layout, kwargs)
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - any oracle failure is retried, then reported
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2**attempt)
        raise OracleFailed(f"oracle failed {self.attempts} times; last error: {type(last).__name__}: {last}")

    def _call(self, queries: Sequence, layout: dict | None, kwargs: dict) -> object:
        """One call; a failure inside the actor is re-raised as its cause (a rejected query as ``ValueError``)."""
        if self._local is not None:
            return self._local.measure(queries, layout=layout, **kwargs)
        import ray
        from ray.exceptions import RayTaskError

        try:
            return ray.get(self._actor.measure.remote(list(queries), layout, **kwargs))
        except RayTaskError as exc:
            if isinstance(exc.as_instanceof_cause(), ValueError):
                raise ValueError(str(exc.cause)) from None
            raise exc.cause or exc from None
