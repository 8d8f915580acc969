"""The model protocol that the loop and acquisition strategies rely on.

Contract
--------
* ``fit(data)`` trains on every observation so far (a ``MeasurementBatch``,
  the concatenated ledger) and warm-starts from the previous fit's parameters
  when called again. ``map_fn`` (default the builtin ``map``) lets the caller
  fan independent work (ensemble members) out, e.g. over Ray; models never
  import Ray.
* ``predict(queries)`` returns a :class:`Prediction`: per readout, the mean,
  its epistemic (across members) and aleatoric variance, and each member's
  mean. The readout ``"programs"`` (function-space program activities,
  ``(n, K)``) is always present; modality readouts (``"rna"``, ...) are
  per-unit expected values in the modality's feature space.
* ``to_botorch()`` returns a ``botorch.models.model.Model`` over the
  ``DesignSpace`` encoding whose outputs are function-space readouts.
* ``state_dict()`` / ``load_state_dict(state)`` checkpoint and restore a fit.

Capabilities some models have: :class:`LaplaceModel` (``fisher`` and
``cost_aware`` use its parameter posterior; without it they fall back to
readout EIG) and :class:`OperatorModel` (identifiability scores its
operators). The baselines (:mod:`models.baselines`) have neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from experiment_design import DesignSpace, MeasurementBatch, Query

PROGRAMS = "programs"


@dataclass
class Prediction:
    """Predictions for ``n`` queries from an ensemble of ``M`` members.

    Attributes:
        members: readout → ``(M, n, F)`` member means.
        aleatoric: readout → ``(n, F)`` mean over members of each member's
            observation-noise variance (0 where a readout has no noise model).

    """

    members: dict[str, np.ndarray]
    aleatoric: dict[str, np.ndarray]

    def mean(self, readout: str = PROGRAMS) -> np.ndarray:
        """``(n, F)`` ensemble mean."""
        return self.members[readout].mean(axis=0)

    def epistemic(self, readout: str = PROGRAMS) -> np.ndarray:
        """``(n, F)`` variance across members."""
        m = self.members[readout]
        return m.var(axis=0, ddof=1) if m.shape[0] > 1 else np.zeros(m.shape[1:])

    def total(self, readout: str = PROGRAMS) -> np.ndarray:
        """``(n, F)`` epistemic + aleatoric variance."""
        return self.epistemic(readout) + self.aleatoric.get(readout, 0.0)


class PosteriorTooLarge(RuntimeError):
    """A model's dense Laplace posterior over its intervention parameters would not fit in memory.

    Raised by ``LaplaceModel.laplace`` before allocating; ``fisher`` then values candidates by the
    readouts' EIG instead.
    """


@runtime_checkable
class LaplaceModel(Protocol):
    """Optional: a model with a Gauss–Newton posterior over its intervention parameters (``fisher`` reads it).

    ``laplace(queries, networks=None)`` returns one posterior per member (objects with ``sigma0``
    ``(P+1, P+1)``, ``gains(sigma, support, factors, G=None)``, ``update(sigma, support, factor)``,
    ``weighted(sigma)`` and ``score(sigma)``; :class:`models.laplace.MemberPosterior`), the ``(n, width)``
    parameter support of each query and, per member, ``(n, width, R)`` information factors of one
    specimen of each query. Raises :class:`PosteriorTooLarge` when the posterior would not fit in memory.
    """

    def laplace(self, queries: Sequence[Query], networks: Sequence | None = None) -> tuple[list, object, list]:
        """Posteriors, supports and information factors of ``queries``."""
        ...


@runtime_checkable
class OperatorModel(Protocol):
    """Capability: learned CSL operators, which identifiability scores (:func:`models.identifiability.score`).

    ``operator_parameters()`` gives per member ``log10_ec50``, ``hill``, ``emax`` ``(M, T, K)``,
    ``tau_h`` ``(M, T)``, ``interactions`` ``(M, T, T)`` and ``propagator`` ``(M, K, K)``;
    ``networks`` and ``states`` the fitted members (:class:`models.csl.CSLEnsemble`). A model without
    it (a baseline) gets the parts it can have (the latent ones, against a simulator's truth) and NaN
    for the rest.
    """

    def operator_parameters(self) -> dict[str, np.ndarray]:
        """Learned operator parameters per member."""
        ...

    @property
    def networks(self) -> list:
        """The fitted member networks."""
        ...


@runtime_checkable
class Model(Protocol):
    """What the loop and the strategies need from a CSL model."""

    space: DesignSpace

    def fit(self, data: MeasurementBatch, map_fn: Callable = map) -> object:
        """Fit on all data so far (warm start); returns a fit summary."""

    def predict(self, queries: Sequence[Query]) -> Prediction:
        """Predict function-space and modality readouts with uncertainty."""

    def to_botorch(self) -> object:
        """A ``botorch`` Model over the design encoding."""

    def state_dict(self) -> dict:
        """Everything needed to resume after :meth:`fit` (picklable; the loop checkpoints it every round)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
