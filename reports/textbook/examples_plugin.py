"""pytest collects worked-example files: every printed number one test item.

Registered through the ``pytest11`` entry point, so it is active wherever
backprop-verify is installed — and costs nothing until it is asked for: with
neither the ini option ``backprop_verify_examples = GLOB …`` nor the
command-line option ``--bv-examples GLOB``, nothing is walked or collected and
torch is not imported.

Each ``[[expect]]`` of a matching file, and each named check of its example,
is one item with the id ``FILE::ADDRESS`` (``book/ch3.toml::layers.2.weight.grad[0,1]``);
each ``[[claim]]`` is one item ``FILE::claim[k]`` that passes when the claim
``holds`` and fails, with the first draw that breaks it, when it is ``wrong``.
The verdicts are ``reports.textbook.errata``'s: ``match`` passes; ``rounding``
passes and is listed in the terminal summary with the exact value;
``erratum`` and ``disagree`` fail with one line — printed, computed, the
note, what each engine says. A file that does not load is one collection
error naming the file and the field; a claim refused on the file's data (an
evaluation guard that only the data trips) fails its item with that one line.
The engines run once per file and process, when its first item runs (so
``pytest -n 2`` spreads files, not work already done).

A book's CI that asked for files and checked none must fail, not pass: every
glob has to name at least one regular ``.toml`` file that this run collects,
or the session stops with a ``pytest.UsageError`` (exit 4) naming the glob and
what it matched (see ``expand`` and ``_check_globs``).
"""
from __future__ import annotations

import dataclasses
import errno
import fnmatch
import os
import posixpath
import stat
from pathlib import Path

import pytest

INI = "backprop_verify_examples"
ROUNDING_PROPERTY = "backprop_verify_rounding"
# Directory listings one glob may take. Each (folder, position in the glob) is listed at most once, so only
# a tree this large (outside norecursedirs) reaches it; the bound keeps a mistaken glob from hanging a run.
MAX_LISTINGS = 100_000
EXPECTED = "expected at least one worked-example .toml file"
SHOWN = 5  # paths quoted in one message


def pytest_addoption(parser):
    group = parser.getgroup("backprop-verify", "backprop-verify discrepancy report")
    group.addoption("--bv-examples", action="append", default=[], metavar="GLOB",
                    help="collect the worked-example files matching GLOB (relative to the rootdir; ** allowed): "
                         "one test per printed number")
    parser.addini(INI, "worked-example files to collect, as globs relative to the rootdir (** allowed)",
                  type="args", default=[])


def _globs(config) -> list[tuple[str, str]]:
    """(glob, where it was given) for every glob asked for, the command line's first."""
    ini = f"{INI} in {config.inipath.name}" if config.inipath else INI
    return ([(glob, "--bv-examples") for glob in config.getoption("bv_examples") or []]
            + [(glob, ini) for glob in config.getini(INI) or []])


def pytest_configure(config):
    config._bv_example_files = set()  # absolute paths matching a glob, filled at session start; empty: idle
    if _globs(config):
        config.pluginmanager.register(_RoundingSummary(), "backprop-verify-rounding")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's session start launches workers
def pytest_sessionstart(session):
    config = session.config
    globs = _globs(config)
    if not globs:
        return
    root, ignored = Path(config.rootpath), _ignored_by_pytest(config)
    matched = {glob: expand(glob, root, ignored) for glob in dict.fromkeys(glob for glob, _ in globs)}
    if not hasattr(config, "workerinput"):  # the controller checks (xdist workers start only if it passes)
        _check_globs(config, globs, matched)
    config._bv_example_files = {path.resolve() for matches in matched.values() for path in matches.files}


def _ignored_by_pytest(config):
    """``ignored(path)``: whether pytest's collection skips ``path`` — its own ``pytest_ignore_collect``
    hook, the one its collection asks for every folder and file (norecursedirs, virtualenvs, --ignore,
    --ignore-glob, collect_ignore of the conftests loaded so far)."""
    return lambda path: bool(config.hook.pytest_ignore_collect(collection_path=path, config=config))


def pytest_collect_file(file_path: Path, parent):
    files = getattr(parent.config, "_bv_example_files", None)
    if files and file_path.suffix == ".toml" and file_path.resolve() in files:
        return ExampleFile.from_parent(parent, path=file_path)
    return None


# --------------------------------------------------------------------------- which files a glob names

@dataclasses.dataclass
class Matches:
    """What one glob names under the rootdir, sorted out the way pytest's collection sees it."""
    files: list[Path] = dataclasses.field(default_factory=list)        # regular .toml files pytest collects
    others: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, what it is instead)
    skipped: list[str] = dataclasses.field(default_factory=list)     # paths pytest's collection skips
    problem: str = ""  # the glob itself cannot name files under the rootdir (empty, outside it, too wide)


def _glob_parts(glob: str, root: Path) -> tuple[list[str], str]:
    """The glob's segments relative to the rootdir, or the reason it has none."""
    if not glob.strip():
        return [], "is empty; expected a glob such as 'book/**/*.toml'"
    relative = glob
    if os.path.isabs(glob):
        relative = os.path.relpath(glob, root)
        if relative.startswith(".."):
            relative = os.path.relpath(glob, root.resolve())
    relative = posixpath.normpath(relative.replace(os.sep, "/"))
    if relative == ".." or relative.startswith("../") or os.path.isabs(relative):
        return [], f"is outside the rootdir {root}; expected a glob relative to it"
    parts = [] if relative == "." else relative.split("/")
    if parts and parts[-1] == "**":  # 'book/**': everything under book, at any depth
        parts.append("*")
    return parts, ""


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder ``path`` leads to, following symlinks; None when it is not one."""
    try:
        info = os.stat(path)
    except OSError:  # missing, a broken symlink, a symlink loop, unreadable
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def _listdir(directory: Path) -> list[str]:
    """The names in ``directory``, sorted (an unreadable folder has none)."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _kind(path: Path) -> str:
    """What a matched path is: "" for a regular file, else its description."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink loop, not a file"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "a broken symlink, not a file"
        return f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    return "a device, not a file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def _matches_name(name: str, part: str) -> bool:
    """fnmatch, case-sensitive; as in the shell, a wildcard does not match a leading dot."""
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def expand(glob: str, root: Path, ignored) -> Matches:
    """Walk the rootdir along ``glob`` as pytest's collection walks it, and sort out what matches.

    Segments are matched one folder at a time — a literal name is looked up, a wildcard segment
    (``*``, ``?``, ``[…]``) matched against the folder's names, ``**`` any number of folders, none
    included — so only the folders the glob can reach are listed. ``ignored(path)`` is pytest's
    ``pytest_ignore_collect`` (norecursedirs — ``node_modules``, ``.*``, ``venv``, ``build`` … by
    default — virtualenvs, ``--ignore``, ``collect_ignore``): a folder it skips is not entered and a
    file it skips is not a match, since pytest would never collect it. Symlinks are followed, as
    pytest follows them, but each (folder, position in the glob) is walked once: a symlink back into
    a folder already walked — a loop, or two links into each other under a package folder — adds
    nothing and costs nothing, and a symlink to itself is a path that leads nowhere. At most
    ``MAX_LISTINGS`` folders are listed.
    """
    parts, problem = _glob_parts(glob, root)
    matches = Matches(problem=problem)
    if problem:
        return matches
    walked: set[tuple[tuple[int, int], int]] = set()
    listings = 0
    stack = [(root, "", 0)]  # (folder, its path relative to the rootdir, the segment to match in it)
    while stack:
        directory, relative, i = stack.pop()
        identity = _identity(directory)
        if identity is None or (identity, i) in walked:
            continue
        walked.add((identity, i))
        if i == len(parts):  # the glob ends at this folder
            matches.others.append((relative or ".", "a folder"))
            continue
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            stack.append((directory, relative, i + 1))  # zero folders
        magic = part == "**" or any(c in part for c in "*?[")
        if magic:
            listings += 1
            if listings > MAX_LISTINGS:
                matches.problem = (f"walks more than {MAX_LISTINGS:,} folders; expected a narrower glob "
                                   "(or the folders to skip in norecursedirs)")
                return matches
        names = _listdir(directory) if magic else [part]
        for name in reversed(names):  # the stack pops the first name first
            if part == "**" and name.startswith("."):
                continue
            if magic and part != "**" and not _matches_name(name, part):
                continue
            path, path_relative = directory / name, posixpath.join(relative, name)
            if not os.path.lexists(path):
                continue
            if part != "**" and last:
                _sort_out(matches, path, path_relative, ignored)
            elif _identity(path) is not None:
                if ignored(path):
                    matches.skipped.append(path_relative)
                else:
                    stack.append((path, path_relative, i if part == "**" else i + 1))
    return matches


def _sort_out(matches: Matches, path: Path, relative: str, ignored) -> None:
    """File a path the glob's last segment matched."""
    kind = _kind(path)
    if kind:
        matches.others.append((relative, kind))
    elif not path.name.endswith(".toml"):
        matches.others.append((relative, "not a .toml file"))
    elif ignored(path):
        matches.skipped.append(relative)
    else:
        matches.files.append(path)


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _what_matched(matches: Matches, root: Path) -> str:
    """Why a glob names no file to collect, or "" when it names some."""
    if matches.problem:
        return matches.problem
    if matches.files:
        return ""
    skipped = (f"; pytest's collection skips {_listing(sorted(matches.skipped))} (norecursedirs, --ignore, "
               "collect_ignore or a virtualenv)") if matches.skipped else ""
    if not matches.others:
        return f"matched nothing under the rootdir {root}{skipped}; {EXPECTED}"
    others = sorted(matches.others)
    if all(kind == "a folder" for _, kind in others):
        folder = others[0][0]
        example = "**/*.toml" if folder == "." else f"{folder}/**/*.toml"
        return (f"matched only folders: {_listing([path for path, _ in others])}{skipped}; {EXPECTED} "
                f"(the files under a folder: {example!r})")
    described = _listing([f"{path} is {kind}" for path, kind in others])
    return f"matched no regular .toml file: {described}{skipped}; {EXPECTED}"


def _collected_from(config) -> list[Path] | None:
    """The paths this run collects from (its arguments, or testpaths), absolute; None for --pyargs."""
    if config.getoption("pyargs", False):
        return None
    start = Path(config.invocation_params.dir)
    return [Path(os.path.abspath(start / arg.split("::")[0])) for arg in config.args]


def _out_of_reach(config, files: list[Path], starts: list[Path]) -> str:
    """Why none of ``files`` becomes a test in this run (pytest walks only its paths), or ""."""
    root = Path(config.rootpath)
    if any(start == path or start in path.parents for path in files for start in starts):
        return ""
    given = "testpaths" if config.args_source == pytest.Config.ArgsSource.TESTPATHS else "its arguments"
    return (f"matched {_listing(sorted(os.path.relpath(path, root) for path in files))}, which this run does not "
            f"collect: pytest collects only from {_listing([os.path.relpath(start, root) for start in starts])} "
            f"({given}); expected their folder among pytest's paths (on the command line or in testpaths)")


def _check_globs(config, globs: list[tuple[str, str]], matched: dict[str, Matches]) -> None:
    """Stop the session (``pytest.UsageError``, exit 4) for every glob that names no file this run collects.

    A glob must match at least one regular ``.toml`` file that pytest's collection does not skip; a
    folder or another file beside one is fine. When the files lie outside what pytest collects from
    — a file pytest never walks to is never a test — that is an error too, if the glob was asked for
    on the command line or the paths come from ``testpaths`` (a configuration that can never check
    the book); a run given its own paths, or started in a sub-folder, checks what it was given.
    """
    starts = _collected_from(config)
    from_testpaths = config.args_source == pytest.Config.ArgsSource.TESTPATHS
    problems = []
    for glob, source in globs:
        matches = matched[glob]
        problem = _what_matched(matches, Path(config.rootpath))
        if not problem and starts is not None and (source == "--bv-examples" or from_testpaths):
            problem = _out_of_reach(config, [Path(os.path.abspath(path)) for path in matches.files], starts)
        if problem:
            problems.append(f"{source} {glob!r}: {problem}")
    if problems:
        raise pytest.UsageError(*dict.fromkeys(problems))


# --------------------------------------------------------------------------- the items

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
        """Every verdict of the file, computed once per process (both engines run here). A refusal
        (``ScenarioError``) while computing them is each item's one-line failure."""
        if self._rows is None:
            from backprop_verify.reports.textbook.errata import check_scenario  # heavy: runs manual and torch
            from backprop_verify.scenarios.loader import ScenarioError

            try:
                self._rows = {row["at"]: row for row in check_scenario(self.scenario)}
            except ScenarioError as err:
                self._rows = err
        if isinstance(self._rows, Exception):
            raise ExampleFailure(f"refused: {self._rows}")
        return self._rows

    def claims(self) -> list:
        """Every claim's result, computed once per process: a ``ClaimResult``, or the ``ScenarioError``
        that refused the claim on the data (an evaluation guard that the zero arrays of the load-time
        check do not trip, such as an exponent read from the file's weights).

        A claim refused before any engine runs (``validate_claims``) is set aside with its error and the
        others are checked again; one refused on the data is its own result (``check_claims(each=True)``,
        the engines run once per draw for all of them). Each claim's item fails for its own formula only."""
        if self._claims is None:
            from backprop_verify.reports.textbook.claims import check_claims  # heavy: runs manual and torch on every draw
            from backprop_verify.scenarios.loader import ScenarioError

            results: dict[int, object] = {}
            remaining = list(enumerate(self.scenario.claims))  # (index in the file, claim)
            field = "claim[{}].formula"
            while remaining:
                subset = dataclasses.replace(self.scenario, claims=tuple(claim for _, claim in remaining))
                try:
                    judged = check_claims(subset, each=True)
                except ScenarioError as err:
                    refused = next((j for j in range(len(remaining)) if err.field == field.format(j)), None)
                    if refused is None:  # not one claim's refusal: every claim not yet judged fails with it
                        results.update((k, err) for k, _ in remaining)
                        break
                    k, _ = remaining.pop(refused)
                    results[k] = ScenarioError(err.file, field.format(k), err.problem)
                    continue
                for (k, _), result in zip(remaining, judged):  # a refusal renamed by the claim's place in the file
                    results[k] = (ScenarioError(result.file, field.format(k), result.problem)
                                  if isinstance(result, ScenarioError) else result)
                break
            self._claims = [results[k] for k in range(len(self.scenario.claims))]
        return self._claims


class ExampleFailure(Exception):
    """A printed number that is an erratum, or where the engines disagree; a claim that is wrong or
    refused on the data."""


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
        if isinstance(result, Exception):  # refused on the data: the file and field, in one line
            raise ExampleFailure(f"refused: {result}")
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
