"""Suite-wide settings: the longest test files are collected first.

The suite runs in parallel (``pytest-xdist``, one worker per core, each file on one worker;
``addopts`` in ``pyproject.toml``). With ``--no-loadscope-reorder`` files are handed to workers
in collection order (not xdist's most-tests-first order), so the few long ones go first and
the many short ones fill in behind them, instead of one long file running alone at the end.
"""

#: Test files that take tens of seconds each (real runs, subprocesses, clusters), longest first.
LONG_FIRST = (
    "tests/test_bench.py",
    "tests/loop/test_cluster.py",
    "tests/loop/test_study.py",
    "tests/loop/test_compare.py",
    "tests/loop/test_models.py",
    "tests/loop/test_lab_loop.py",
)


def pytest_collection_modifyitems(config, items):  # noqa: ANN001, ARG001
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_FIRST)))  # stable: order kept within
