"""Test configuration: one BLAS/torch thread per process.

The suite's networks are tiny; extra threads only add contention, and with
``pytest -n 2`` two processes would oversubscribe the cores.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

torch.set_num_threads(1)

# `pytest --report-dir DIR` writes DIR/discrepancies.csv (see reports/pytest_plugin.py).
pytest_plugins = ("reports.pytest_plugin",)
