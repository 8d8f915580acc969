"""Oracles: what answers queries with measurements.

Contract
--------
``Oracle.measure(queries) -> MeasurementBatch``:

* validates every query against ``self.space`` first and raises
  ``ValueError`` naming the query and the field before anything is measured;
* returns one obs row per unit (cell, spot or well) per modality of the
  query's assay, carrying the query's metadata under the
  :mod:`experiment_design.keys` names (``replicate`` counts from 0,
  ``specimen`` is ``"<query_id>:<replicate>"``, ``unit`` the cell / spot
  index within the specimen);
* is reproducible and order-free: a query's randomness derives only from
  ``(world seed, query_id, replicate)``, so measuring A then B gives the same
  data as B then A, or A alone;
* ``layout`` optionally places each specimen on a plate:
  ``{(query_id, replicate): (plate, well)}`` with wells like ``"B07"``;
  without it an oracle chooses positions itself (deterministically from the
  seed, query id and replicate). Positions go into the ``plate`` and ``well``
  obs columns (empty strings for tissue patches).

``BaseSimulator`` is an ``Oracle`` that knows its truth and fills the template
``measure = validate → _latent → _observe``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from experiment_design import DesignSpace, GroundTruth, MeasurementBatch, Query

#: ``{(query_id, replicate): (plate, well)}``.
Layout = Mapping[tuple[str, int], tuple[str, str]]


class Oracle(ABC):
    """Answers queries with measurements.

    Attributes:
        space: The design space the oracle can measure.

    """

    space: DesignSpace
    #: Feature names per modality (what every readout must match).
    var_names: dict[str, tuple[str, ...]]

    @classmethod
    def factory(cls, settings: object) -> Callable[[], Oracle]:
        """A picklable zero-argument builder of this oracle for a run (the loop builds it in a Ray actor).

        Args:
            settings: The run's settings (``loop.config.RunConfig``: ``world``, ``seed``, ``data``, ...).
        """
        raise NotImplementedError(f"{cls.__name__} has no factory(settings); the loop cannot build it")

    @abstractmethod
    def measure(self, queries: Sequence[Query], layout: Layout | None = None) -> MeasurementBatch:
        """Measure queries; see the module docstring for the contract."""

    def validate(self, queries: Sequence[Query]) -> None:
        """Raise ``ValueError`` for the first invalid query."""
        for q in queries:
            self.space.validate(q)


def query_rng(seed: int, query_id: str, replicate: int, stream: str = "") -> np.random.Generator:
    """The generator of one (query, replicate): independent of call order.

    Args:
        seed: World seed.
        query_id: The query's id.
        replicate: Replicate index (0-based).
        stream: Optional sub-stream name (e.g. ``"rna"``) so modalities draw
            independently.

    """
    digest = hashlib.sha256(f"{seed}|{query_id}|{replicate}|{stream}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32))


class BaseSimulator(Oracle):
    """A synthetic world with known truth.

    Subclasses implement :meth:`_latent` and :meth:`_observe` and
    :attr:`truth`; :meth:`measure` is the template.
    """

    seed: int

    def measure(self, queries: Sequence[Query], layout: Layout | None = None) -> MeasurementBatch:
        """Validate, compute latent states, observe them through each assay."""
        queries = list(queries)
        self.validate(queries)
        latent = self._latent(queries)
        return self._observe(queries, latent, layout)

    @abstractmethod
    def _latent(self, queries: Sequence[Query]) -> object:
        """Latent state of every (query, replicate, cell), in the subclass's form."""

    @abstractmethod
    def _observe(self, queries: Sequence[Query], latent: object, layout: Layout | None) -> MeasurementBatch:
        """Observe latent states through each query's assay."""

    @property
    @abstractmethod
    def truth(self) -> GroundTruth:
        """Every ground-truth parameter, as data."""
