"""Acquisition strategies; importing the package registers every strategy by name."""

from acquisition import (  # noqa: F401 - imported to register
    cost_aware,
    disagreement,
    discovery,
    dose_grid,
    eig,
    fisher,
    nipv,
    random_design,
    sobol,
    uncertainty,
)
from acquisition.base import Strategy
from acquisition.registry import STRATEGIES, get, register

__all__ = ["STRATEGIES", "Strategy", "get", "register"]
