"""pytest collects worked-example files: every printed number one test item.

Registered through the ``pytest11`` entry point, so it is active wherever
backprop-verify is installed — and costs nothing until it is asked for: with
neither the ini option ``backprop_verify_examples = GLOB …`` nor the
command-line option ``--bv-examples GLOB``, nothing is collected and torch is
not imported.

Each ``[[expect]]`` of a matching file, and each named check of its example,
is one item with the id ``FILE::ADDRESS`` (``book/ch3.toml::layers.2.weight.grad[0,1]``);
each ``[[claim]]`` is one item ``FILE::claim[k]`` that passes when the claim
``holds`` and fails, with the first draw that breaks it, when it is ``wrong``.
The verdicts are ``reports.textbook.errata``'s: ``match`` passes; ``rounding``
passes and is listed in the terminal summary with the exact value;
``erratum`` and ``disagree`` fail with one line — printed, computed, the
note, what each engine says. A file that does not load is one collection
error naming the file and the field. The engines run once per file and
process, when its first item runs (so ``pytest -n 2`` spreads files, not
work already done).
"""
from __future__ import annotations

import glob
from pathlib import Path

import pytest

INI = "backprop_verify_examples"
ROUNDING_PROPERTY = "backprop_verify_rounding"


def pytest_addoption(parser):
    group = parser.getgroup("backprop-verify", "backprop-verify discrepancy report")
    group.addoption("--bv-examples", action="append", default=[], metavar="GLOB",
                    help="collect the worked-example files matching GLOB (relative to the rootdir; ** allowed): "
                         "one test per printed number")
    parser.addini(INI, "worked-example files to collect, as globs relative to the rootdir (** allowed)",
                  type="args", default=[])


def _patterns(config) -> list[str]:
    return list(config.getoption("bv_examples") or []) + list(config.getini(INI) or [])


def pytest_configure(config):
    patterns = _patterns(config)
    root = Path(config.rootpath)
    config._bv_example_files = {  # absolute paths matching any pattern; empty: the plugin stays idle
        (root / match).resolve() for pattern in patterns
        for match in glob.glob(pattern, root_dir=root, recursive=True) if match.endswith(".toml")
    }
    if patterns:
        config.pluginmanager.register(_RoundingSummary(), "backprop-verify-rounding")


def pytest_collect_file(file_path: Path, parent):
    files = getattr(parent.config, "_bv_example_files", None)
    if files and file_path.suffix == ".toml" and file_path.resolve() in files:
        return ExampleFile.from_parent(parent, path=file_path)
    return None


class ExampleFile(pytest.File):
    """One worked-example file: an item per printed number and per named check."""

    def collect(self):
        # Only here — a file was asked for — are the loader and the checks (and with them torch) imported:
        # the plugin is loaded by every pytest run where backprop-verify is installed.
        from backprop_verify.reports.textbook.claims import validate_claims
        from backprop_verify.reports.textbook.errata import named_checks_for
        from backprop_verify.scenarios.loader import ScenarioError, load_scenario

        try:
            self.scenario = load_scenario(self.path)
            validate_claims(self.scenario)
        except ScenarioError as err:
            raise self.CollectError(str(err)) from None
        addresses = [expect.at for expect in self.scenario.expects]
        addresses += [check.at for check in named_checks_for(self.scenario.name)]
        self._rows = None
        self._claims = None
        for address in dict.fromkeys(addresses):
            yield ExampleItem.from_parent(self, name=address)
        for k in range(len(self.scenario.claims)):
            yield ClaimItem.from_parent(self, name=f"claim[{k}]")

    def rows(self) -> dict[str, dict]:
        """Every verdict of the file, computed once per process (both engines run here)."""
        if self._rows is None:
            from backprop_verify.reports.textbook.errata import check_scenario  # heavy: runs manual and torch

            self._rows = {row["at"]: row for row in check_scenario(self.scenario)}
        return self._rows


    def claims(self) -> list:
        """Every claim's result, computed once per process."""
        if self._claims is None:
            from backprop_verify.reports.textbook.claims import check_claims  # heavy: runs manual and torch on every draw

            self._claims = check_claims(self.scenario)
        return self._claims


class ExampleFailure(Exception):
    """A printed number that is an erratum, or where the engines disagree."""


class _FileItem(pytest.Item):
    """An item of an ``ExampleFile``: its failures are one line, its location the file."""

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ExampleFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"{self.parent.path.name}::{self.name}"


class ExampleItem(_FileItem):
    """One printed number (or named check)."""

    def runtest(self):
        # heavy (errata imports torch): loaded with the file's checks, never by an idle plugin
        from backprop_verify.reports.textbook.errata import DISAGREE, PASSING, ROUNDING

        row = self.parent.rows()[self.name]
        if row["verdict"] == ROUNDING:
            self.user_properties.append((ROUNDING_PROPERTY, f"{self.nodeid}: printed {row['printed']}, "
                                                            f"exact {row['reference']!r}"))
        if row["verdict"] in PASSING:
            return
        note = f" — {row['note']}" if row.get("note") else ""
        if row["verdict"] == DISAGREE:
            raise ExampleFailure(f"disagree: printed {row['printed']}; the engines disagree beyond the tolerance "
                                 f"policy: manual {row['manual']!r}, torch {row['reference']!r}{note}")
        raise ExampleFailure(f"{row['verdict']}: printed {row['printed']}, computed {row['reference']!r} "
                             f"(manual {row['manual']!r}, torch {row['reference']!r}){note}")


class ClaimItem(_FileItem):
    """One ``[[claim]]``: its formula against autograd on the file's data and on its draws."""

    def runtest(self):
        result = self.parent.claims()[int(self.name[len("claim["):-1])]
        if result.verdict != "holds":
            note = f" — {result.note}" if result.note else ""
            raise ExampleFailure(f"{result.verdict}: {result.statement} ({result.formula} at {result.at}); "
                                 f"worst normwise discrepancy {result.worst_rel:.3g}, first broken on draw "
                                 f"{result.broken_at}{note}")


class _RoundingSummary:
    """The rounding verdicts of this session, listed at its end (from xdist workers
    too: user properties travel with the test reports)."""

    def __init__(self):
        self.lines: set[str] = set()

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.lines.update(value for name, value in report.user_properties if name == ROUNDING_PROPERTY)

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.section("backprop-verify: printed numbers that pass as rounding")
            for line in sorted(self.lines):
                terminalreporter.write_line(line)
