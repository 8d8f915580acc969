"""Acquisition strategies; every module of the package is registered on first look-up (:mod:`acquisition.registry`)."""

from acquisition.base import Proposal, Strategy
from acquisition.registry import STRATEGIES, get, register

__all__ = ["STRATEGIES", "Proposal", "Strategy", "get", "register"]
