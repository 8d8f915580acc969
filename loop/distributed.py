"""Ray plumbing: start or join a cluster, fan work out, host the oracle.

Only this module (and the loop that calls it) imports Ray. Workers pin BLAS
and torch to one thread each, so two cores are not oversubscribed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import ray

THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def share_plugins(modules: Iterable[object]) -> None:
    """Ship the code of plug-in files with the objects Ray pickles (a worker cannot import a file by path).

    Modules imported from a ``.py`` path (:func:`experiment_design.registry.load_plugins`) are pickled
    by value, so an oracle factory or model defined there reaches a Ray actor; an installed module
    (``mylab.models``) is pickled by reference as usual.
    """
    from ray import cloudpickle

    for m in modules:
        if m.__name__.startswith("cslab_plugin_"):
            cloudpickle.register_pickle_by_value(m)


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
    if ray.is_initialized():
        return False
    os.environ.update({k: os.environ.get(k, v) for k, v in THREAD_ENV.items()})
    kwargs: dict = dict(
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": dict(THREAD_ENV)},
    )
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # No idle workers started ahead of need: a run's Ray work is its oracle actor (a process of its own) and,
        # in a comparison, one task per run; each prestarted worker held ~50 MB PSS doing nothing.
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


_remote_call = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_pinned_call)


def ray_map(fn: Callable, items: Iterable) -> list:
    """``map`` over Ray tasks: ``fn(item)`` for each item, results in order.

    A task whose worker dies is retried up to three times by Ray; an
    exception raised by ``fn`` itself is re-raised here.
    """
    fn_ref = ray.put(fn)
    refs = [_remote_call.remote(fn_ref, item) for item in items]
    return ray.get(refs)


@ray.remote(max_restarts=2, max_task_retries=0)
class OracleActor:
    """Hosts an oracle in its own process."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self.oracle = factory()
        # The simulators are numpy: importing torch here only to cap its threads cost ~0.25 GB per actor.
        # An oracle built on torch (a plug-in) gets one thread, as every process sharing the machine.
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)

    def measure(self, queries: Sequence, layout: dict | None = None, **kwargs: object) -> object:
        """Forward to the oracle."""
        return self.oracle.measure(queries, layout=layout, **kwargs)


class OracleClient:
    """Calls an oracle (a Ray actor) with retries and exponential backoff.

    Args:
        factory: Picklable zero-argument callable that builds the oracle in
            the actor process.
        attempts: Calls before giving up.
        backoff_s: First wait between attempts; doubles each time.
        local: Call the oracle in this process instead of a Ray actor.
    """

    def __init__(
        self, factory: Callable[[], object], attempts: int = 4, backoff_s: float = 0.5, local: bool = False
    ) -> None:
        self.attempts, self.backoff_s = attempts, backoff_s
        self._local = factory() if local else None
        self._actor = None if local else OracleActor.remote(factory)

    def measure(self, queries: Sequence, layout: dict | None = None, **kwargs: object) -> object:
        """Measure with retries (``kwargs`` go to the oracle, e.g. ``exclude`` for lab data).

        Raises:
            ValueError: At once, if the oracle rejects a query (retrying cannot help).
            OracleFailed: After ``attempts`` failed calls, with the last error.
        """
        last: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                if self._local is not None:
                    return self._local.measure(queries, layout=layout, **kwargs)
                return ray.get(self._actor.measure.remote(list(queries), layout, **kwargs))
            except ValueError:
                raise
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, ValueError):
                    raise ValueError(str(exc.cause)) from None
                last = exc.cause or exc
            except Exception as exc:  # noqa: BLE001 - any oracle failure is retried, then reported
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2**attempt)
        raise OracleFailed(f"oracle failed {self.attempts} times; last error: {type(last).__name__}: {last}")
