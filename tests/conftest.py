"""Test configuration: one BLAS/torch thread per process, and the seed sweep's options.

The suite's networks are tiny; extra threads only add contention, and with
``pytest -n 2`` two processes would oversubscribe the cores.

torch is imported (and told to use one thread) by a session fixture, so only
the processes that run tests import it: under ``pytest -n 2`` the xdist
controller, which runs none, starts its workers without first spending two
seconds on ``import torch``.

The seed sweep (``tests/test_sweep.py``, docs/sweep.md) runs only with
``-m sweep``. Its sweep seed is drawn here, once per run, from
``secrets`` unless ``--sweep-seed N`` names it; the xdist controller hands its
own to every worker (``pytest_configure_node``), so every worker collects the
same items, and the header of the run prints it.
"""
import argparse
import os
import re
import secrets

import pytest

from backprop_verify.reports.commands import options

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# `pytest --report-dir DIR` writes DIR/discrepancies.csv (see reports/commands/pytest_plugin.py).
pytest_plugins = ("backprop_verify.reports.commands.pytest_plugin", "pytester")

DEFAULT_SWEEP_SEEDS = 50
# A drawn sweep seed has 32 bits: short enough to retype, and any N in 0 .. 2**63-1 is accepted.
SWEEP_SEED_BITS = 32
# Properties a sweep item records; the controller adds them up for the closing line.
SWEEP_PROPERTIES = ("sweep_scenarios", "sweep_failing_rows", "sweep_failing_scenarios")


def sweep_seed_count(text: str) -> int:
    """``--sweep-seeds K``: 1 to options.MAX_RANDOM base seeds per family."""
    count = options.random_count(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} is out of range; expected at least one base seed per family")
    return count


def pytest_addoption(parser):
    group = parser.getgroup("backprop-verify sweep", "seed sweep (pytest -m sweep; docs/sweep.md)")
    group.addoption("--sweep-seed", type=options.seed, default=None, metavar="N",
                    help="the sweep seed the base seeds are drawn from, 0 to 2**63-1 "
                         "(default: a fresh one each run, printed in the header)")
    group.addoption("--sweep-seeds", type=sweep_seed_count, default=DEFAULT_SWEEP_SEEDS, metavar="K",
                    help=f"base seeds per random family (default {DEFAULT_SWEEP_SEEDS})")


class SweepTotals:
    """In the controller (or a run without xdist): what the sweep items recorded,
    added up for one closing line."""

    def __init__(self, config):
        self.config = config
        self.totals = dict.fromkeys(("items",) + SWEEP_PROPERTIES, 0)

    def pytest_runtest_logreport(self, report):
        properties = dict(report.user_properties)
        if report.when != "call" or "sweep_scenarios" not in properties:
            return
        self.totals["items"] += 1
        for name in SWEEP_PROPERTIES:
            self.totals[name] += properties.get(name, 0)

    def pytest_terminal_summary(self, terminalreporter):
        totals = self.totals
        if totals["items"]:
            terminalreporter.write_line(
                f"backprop-verify sweep: sweep seed {self.config.option.sweep_seed}; items: {totals['items']}, "
                f"scenarios: {totals['sweep_scenarios']}, failing rows: {totals['sweep_failing_rows']}, "
                f"failing scenarios: {totals['sweep_failing_scenarios']}")


def pytest_configure(config):
    """The run's sweep seed, into ``config.option.sweep_seed``: an xdist worker's
    comes from its controller, otherwise ``--sweep-seed`` or a fresh draw."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "sweep_seed" in workerinput:
        config.option.sweep_seed = workerinput["sweep_seed"]
    elif config.option.sweep_seed is None:
        config.option.sweep_seed = secrets.randbits(SWEEP_SEED_BITS)
    if workerinput is None:
        config.pluginmanager.register(SweepTotals(config), "backprop-verify-sweep-totals")
        if getattr(config.option, "dist", "no") == "load" and not dist_given(config):
            config.option.dist = "worksteal"


def dist_given(config) -> bool:
    """Whether the run names its xdist schedule itself (``--dist MODE``, ``-d``, in its arguments or in
    ``PYTEST_ADDOPTS``). When it does not, ``-n`` runs with ``worksteal`` rather than xdist's default
    ``load``: the suite's tests last from milliseconds to tens of seconds, and under ``load`` one worker
    could sit idle for the last tenth of the run while the other worked through the tests queued for it."""
    arguments = [*config.invocation_params.args, *os.environ.get("PYTEST_ADDOPTS", "").split()]
    return any(a in ("--dist", "-d") or a.startswith(("--dist=", "--distload")) for a in arguments)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: no error when xdist is absent or disabled
def pytest_configure_node(node):
    node.workerinput["sweep_seed"] = node.config.option.sweep_seed
    node.workerinput["schedule"] = node.config.option.dist  # what the controller chose (tests/test_suite_config.py)


def sweep_selected(config) -> bool:
    """Whether the ``-m`` expression names the ``sweep`` marker other than as the
    ini's ``not sweep`` (``-m sweep``, ``-m "sweep and not …"``): only then are
    sweep items kept (pytest's own ``-m`` then decides) and the header names the
    sweep seed."""
    expression = config.option.markexpr or ""
    return re.search(r"\bsweep\b", expression) is not None and not re.fullmatch(r"\s*not\s+sweep\s*", expression)


def pytest_report_header(config):
    if not sweep_selected(config):
        return None
    seed, count = config.option.sweep_seed, config.option.sweep_seeds
    return (f"backprop-verify sweep: sweep seed {seed}, {count} base seeds per random family "
            f"(pytest -m sweep --sweep-seed {seed} --sweep-seeds {count} runs the same items)")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Sweep items are left out unless ``-m`` names ``sweep`` (so ``-m "not
    subprocess"``, which replaces the ini's ``-m "not sweep"``, still leaves them
    out). Tests that start processes of their own run first (the order is
    otherwise unchanged): under ``pytest -n 2`` the longest of them, the report's
    ``--workers 2`` run, then overlaps the rest of the suite on the other worker
    instead of running alone at its end."""
    if not sweep_selected(config):
        sweeps = [item for item in items if item.get_closest_marker("sweep") is not None]
        if sweeps:
            config.hook.pytest_deselected(items=sweeps)
            items[:] = [item for item in items if item.get_closest_marker("sweep") is None]
    items.sort(key=lambda item: item.get_closest_marker("subprocess") is None)
