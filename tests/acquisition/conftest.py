"""Load this folder's helpers under unique module names.

``tests/*/`` folders have no ``__init__.py``, so pytest puts each on
``sys.path`` and two folders' ``fakes.py`` would collide as module ``fakes``.
The helpers are registered as ``acquisition_fakes`` and
``acquisition_contracts`` instead; test modules import those names.
"""

import importlib.util
import os
import sys
from pathlib import Path

import torch

# Two cores shared by several test suites: stay on one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent


def _load(name: str, filename: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, HERE / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load("acquisition_fakes", "fakes.py")
_load("acquisition_contracts", "contracts.py")
