"""pytest plugin: a test run writes the same ``discrepancies.csv`` as a report run.

Options (group "backprop-verify"):

``--report-dir DIR``
    After the run, write ``DIR/discrepancies.csv`` (atomically, with
    ``DIR/manifest.json``: ``reports.rendering.io.RunFolder``, the folder held
    by this run from start to end — another run into DIR is refused) with the rows
    of every scenario the run touched: each test that takes one Scenario
    argument (``tests/``: ``scenario``, from pytest-cases) or ``report_scenario`` argument
    (``reports/commands/report_suite.py``) contributes ``reports.verification.runner.report_rows(scenario)``
    — manual-torch for every scenario, manual-fd and torch-fd where the
    finite-difference oracle applies — exactly the rows ``backprop-verify
    report`` writes for it, every column of ``compare.COLUMNS`` (the worst
    element's ``worst_index``, ``value``, ``reference_value`` included). Rows travel with the test reports, so they reach
    the controlling process under pytest-xdist, on this host (``-n N``) or on
    others (``--tx ssh=...``); the controller merges, de-duplicates and sorts.
``--report-seed N``, ``--report-random N``, ``--report-random-conv N``, ``--report-random-recurrent N``,
``--report-random-transformer N``,
``--report-only REGEX``
    The scenario set that ``reports/commands/report_suite.py`` parametrizes over
    (default: seed 0, 300 random nets, every scenario).
``--report-progress FILE``
    Append one byte to FILE per finished test (the report command's progress bar).
``--report-maps FILE``, ``--report-detail REGEX``
    ``report --workers N`` with report.html: the |a − b| arrays of the scenarios
    that will get a section (failing, floor, not-judged rows, names matching
    ``--report-detail``), taken from the traces the worker verified them with
    (``reports.rendering.sections.keep_maps``), at most ``MAX_SECTIONS`` per
    worker; they travel to the controller in ``workeroutput`` when the worker
    finishes, and the controller writes the first ``MAX_SECTIONS`` of all of
    them to FILE (``reports.verification.detail.KeptMaps.save``). So a section
    never runs an engine again: each engine runs once per scenario.
``--report-parent-pipe FD``
    ``report --workers N`` only: FD is the read end of a pipe whose write end
    only the report's process holds, so the run dies with that process however
    it ends (kill -9 included). The controller watches it (a read returns at
    end-of-file the moment the report is gone), then removes ``--report-dir``
    (only a ``.backprop-verify-scratch.*`` folder) and kills its process group;
    each xdist worker asks the kernel for SIGKILL when the controller dies
    (Linux ``PR_SET_PDEATHSIG``; elsewhere a thread watching its parent pid).

Load it with ``-p backprop_verify.reports.commands.pytest_plugin`` (``tests/conftest.py`` loads it for the
test suite).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from backprop_verify.reports.commands import options
from backprop_verify.reports.rendering.io import SCRATCH_PREFIX, FolderRefused, RunFolder
from backprop_verify.reports.verification.compare import COLUMNS
from backprop_verify.reports.verification.detail import KeptMaps
from backprop_verify.scenarios.builtin import report_scenarios
from backprop_verify.scenarios.generator import (DEFAULT_RANDOM_CONV_COUNT, DEFAULT_RANDOM_COUNT, DEFAULT_RANDOM_RECURRENT_COUNT,
                                 DEFAULT_RANDOM_TRANSFORMER_COUNT, DEFAULT_SEED)
from backprop_verify.scenarios.model import Scenario

ROWS_PROPERTY = "backprop_verify_rows"
MAPS_OUTPUT = "backprop_verify_maps"  # the key of a worker's kept difference maps in its workeroutput
COLLECTOR = "backprop-verify-collector"
CSV = "discrepancies.csv"
CONTROLLER_PID = "backprop_verify_controller_pid"  # workerinput: the controller a worker must die with
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def pytest_addoption(parser):
    group = parser.getgroup("backprop-verify", "backprop-verify discrepancy report")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write DIR/discrepancies.csv with the rows of every scenario this run verified")
    group.addoption("--report-seed", type=options.seed, default=DEFAULT_SEED, metavar="N",
                    help=f"seed of the random architectures in reports/commands/report_suite.py (default {DEFAULT_SEED})")
    group.addoption("--report-random-recurrent", type=options.random_count,
                    default=DEFAULT_RANDOM_RECURRENT_COUNT, metavar="N",
                    help="number of random recurrent architectures in reports/commands/report_suite.py "
                         f"(default {DEFAULT_RANDOM_RECURRENT_COUNT})")
    group.addoption("--report-random-transformer", type=options.random_count,
                    default=DEFAULT_RANDOM_TRANSFORMER_COUNT, metavar="N",
                    help="number of random transformer architectures in reports/commands/report_suite.py "
                         f"(default {DEFAULT_RANDOM_TRANSFORMER_COUNT})")
    group.addoption("--report-random-conv", type=options.random_count, default=DEFAULT_RANDOM_CONV_COUNT, metavar="N",
                    help="number of random convolutional architectures in reports/commands/report_suite.py "
                         f"(default {DEFAULT_RANDOM_CONV_COUNT})")
    group.addoption("--report-random", type=options.random_count, default=DEFAULT_RANDOM_COUNT, metavar="N",
                    help=f"number of random architectures in reports/commands/report_suite.py (default {DEFAULT_RANDOM_COUNT})")
    group.addoption("--report-only", type=options.only_pattern, default=None, metavar="REGEX",
                    help="reports/commands/report_suite.py: only scenarios whose name matches REGEX")
    group.addoption("--report-progress", default=None, metavar="FILE",
                    help="append one byte to FILE per finished test")
    group.addoption("--report-maps", default=None, metavar="FILE",
                    help="write the |a-b| arrays of the scenarios that get a report.html section to FILE (.npz)")
    group.addoption("--report-detail", type=options.only_pattern, default=None, metavar="REGEX",
                    help="with --report-maps: scenarios whose name matches REGEX get a section too")
    group.addoption("--report-parent-pipe", type=int, default=None, metavar="FD",
                    help="(report --workers) end this run, its workers and its scratch --report-dir when FD, "
                         "the read end of a pipe, reaches end-of-file: the report's process is gone")


def pytest_generate_tests(metafunc):
    if "report_scenario" in metafunc.fixturenames:
        config = metafunc.config
        scenarios = report_scenarios(config.getoption("report_random"), config.getoption("report_seed"),
                                     only=config.getoption("report_only"),
                                     conv_count=config.getoption("report_random_conv"),
                                     recurrent_count=config.getoption("report_random_recurrent"),
                                     transformer_count=config.getoption("report_random_transformer"))
        metafunc.parametrize("report_scenario", scenarios, ids=[s.name for s in scenarios])


def record_rows(item, rows: list[dict]) -> None:
    """Attach ``rows`` to a test item or report (plain lists: they cross xdist's channel)."""
    item.user_properties.append((ROWS_PROPERTY, [[row[c] for c in COLUMNS] for row in rows]))


def record_verification(item, verified) -> None:
    """``record_rows`` of a ``runner.Verification``; with ``--report-maps``, its section's difference
    maps are kept too, from the traces it holds (no engine runs again)."""
    record_rows(item, verified.rows)
    collector = item.config.pluginmanager.get_plugin(COLLECTOR)
    if collector is not None and collector.maps is not None:
        from backprop_verify.reports.rendering.sections import keep_maps  # the heatmaps: only where maps are kept

        keep_maps(collector.maps, verified, collector.detail)


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


class _Collector:
    """Per process: the scenarios verified here; in the controller: every row."""

    def __init__(self, config):
        self.config = config
        self.report_dir = config.getoption("report_dir")
        self.progress = config.getoption("report_progress")
        self.verified: set[str] = set()
        self.rows: dict[tuple[str, str, str], list] = {}
        self.maps_file = config.getoption("report_maps")
        self.detail = config.getoption("report_detail")
        if self.maps_file:
            from backprop_verify.reports.rendering.sections import MAX_SECTIONS  # the heatmaps: only with maps

            self.maps = KeptMaps(MAX_SECTIONS)
        else:
            self.maps = None
        self.folder = None
        if self.report_dir is not None and not _is_worker(config):
            # The folder is this run's from now to pytest_unconfigure; refused before any test runs.
            self.folder = RunFolder.claim(self.report_dir, "pytest", ["pytest", *config.invocation_params.args])
            try:
                self.folder.expect(outputs=(CSV,), writes=(CSV,))
            except FolderRefused:
                self.folder.close()
                raise

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        # After teardown: a test's monkeypatches (e.g. an injected bug) are undone by then.
        if call.when != "teardown" or self.report_dir is None:
            return
        if any(name == ROWS_PROPERTY for name, _ in report.user_properties):
            return
        # pytest-cases passes a case through a fixture union: the Scenario may sit
        # under the union's name rather than "scenario"; take the one Scenario value.
        funcargs = getattr(item, "funcargs", None) or {}
        found = {value.name: value for value in funcargs.values() if isinstance(value, Scenario)}
        if len(found) != 1:
            return
        (scenario,) = found.values()
        if scenario.name in self.verified:
            return
        # heavy (imports torch): only processes that verify get here, never the xdist controller
        from backprop_verify.reports.verification.runner import report_verification

        self.verified.add(scenario.name)
        verified = report_verification(scenario)
        record_rows(report, verified.rows)
        if self.maps is not None:
            from backprop_verify.reports.rendering.sections import keep_maps

            keep_maps(self.maps, verified, self.detail)

    def pytest_runtest_logreport(self, report):
        if _is_worker(self.config):
            return
        for name, value in report.user_properties:
            if name == ROWS_PROPERTY:
                for row in value:
                    self.rows[(row[0], row[1], row[3])] = list(row)
        if self.progress and report.when == "teardown":
            with open(self.progress, "ab") as handle:
                handle.write(b".")

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """xdist controller: a worker's kept maps, merged (the first MAX_SECTIONS of all are kept)."""
        payload = getattr(node, "workeroutput", {}).get(MAPS_OUTPUT)
        if payload and self.maps is not None:
            self.maps.merge_payload(payload)

    def pytest_sessionfinish(self, session):
        if _is_worker(self.config):
            if self.maps is not None:
                self.config.workeroutput[MAPS_OUTPUT] = self.maps.payload()
            return
        if self.maps is not None:
            self.maps.save(Path(self.maps_file))
        if self.report_dir is None:
            return
        from backprop_verify.reports.rendering.table import csv_text, rows_frame  # pandas: only to write

        frame = rows_frame([dict(zip(COLUMNS, row)) for row in self.rows.values()])
        self.folder.publish({CSV: csv_text(frame)})
        self.written = (Path(self.report_dir) / CSV, len(frame))

    def pytest_unconfigure(self, config):
        if self.folder is not None:
            self.folder.close()

    def pytest_terminal_summary(self, terminalreporter):
        written = getattr(self, "written", None)
        if written:
            terminalreporter.write_line(f"backprop-verify: {written[1]} rows written to {written[0]}")


def _verifies_here(config) -> bool:
    """False in an xdist controller: its workers verify, it only merges rows."""
    return _is_worker(config) or not config.getoption("numprocesses", default=None)


def _watch_parent_pipe(fd: int, scratch: Path | None) -> None:
    """The controller of ``report --workers``: when the read end ``fd`` reaches end-of-file — the report's
    process, the only holder of the write end, is gone, however it ended — remove ``scratch`` and kill this
    process group (this controller and its xdist workers: report started them in a session of their own)."""
    def watch():
        while True:
            try:
                if not os.read(fd, 4096):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="backprop-verify: report's pipe", daemon=True).start()


def _die_with(controller: int) -> None:
    """An xdist worker of ``report --workers``: SIGKILL when its controller dies. Linux: the kernel sends it
    (``prctl(PR_SET_PDEATHSIG)``; then, if the controller died before that call, exit now); elsewhere a
    thread polls the parent pid."""
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != controller:
                os._exit(1)
            return

    def watch():
        while os.getppid() == controller:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="backprop-verify: controller", daemon=True).start()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: a worker of ``report --workers`` learns whose death it must not outlive."""
    if node.config.getoption("report_parent_pipe") is not None:
        node.workerinput[CONTROLLER_PID] = os.getpid()


def pytest_configure(config):
    if _is_worker(config) and config.workerinput.get(CONTROLLER_PID):
        _die_with(config.workerinput[CONTROLLER_PID])
    elif config.getoption("report_parent_pipe") is not None:
        try:
            os.fstat(config.getoption("report_parent_pipe"))
        except OSError:
            raise pytest.UsageError(f"--report-parent-pipe: {config.getoption('report_parent_pipe')} is not an open "
                                    "file descriptor; expected the read end of the pipe report --workers passes")
        report_dir = config.getoption("report_dir")
        scratch = Path(report_dir) if report_dir and Path(report_dir).name.startswith(SCRATCH_PREFIX) else None
        _watch_parent_pipe(config.getoption("report_parent_pipe"), scratch)
    if (config.getoption("report_dir") or config.getoption("report_progress")) and _verifies_here(config):
        # One BLAS/torch thread: the same arithmetic in every process, so the
        # rows do not depend on how the run is spread.
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        import torch  # heavy: only in processes that verify, never in the xdist controller

        torch.set_num_threads(1)
    try:
        collector = _Collector(config)
    except FolderRefused as err:
        raise pytest.UsageError(f"--report-dir: {err}") from None
    config.pluginmanager.register(collector, COLLECTOR)
