"""Test configuration: one BLAS/torch thread per process.

The suite's networks are tiny; extra threads only add contention, and with
``pytest -n 2`` two processes would oversubscribe the cores.

torch is imported (and told to use one thread) by a session fixture, so only
the processes that run tests import it: under ``pytest -n 2`` the xdist
controller, which runs none, starts its workers without first spending two
seconds on ``import torch``.
"""
import os

import pytest

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# `pytest --report-dir DIR` writes DIR/discrepancies.csv (see reports/pytest_plugin.py).
pytest_plugins = ("reports.pytest_plugin", "pytester")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Tests that start processes of their own run first (the order is otherwise
    unchanged): under ``pytest -n 2`` the longest of them, the report's
    ``--workers 2`` run, then overlaps the rest of the suite on the other worker
    instead of running alone at its end."""
    items.sort(key=lambda item: item.get_closest_marker("subprocess") is None)
