"""Command-line values checked before any work starts: counts within documented
limits, the output folder writable, ``--only`` a regular expression that runs
in bounded time.

Every check raises ``argparse.ArgumentTypeError`` (an argparse ``type=``
function) or returns a problem string; ``reports.cli`` prints either as one
line ``backprop-verify COMMAND: OPTION: PROBLEM; expected WHAT`` and exits 2.

Limits (docs/report.md, "Limits of the options"):

* ``--seed``: an integer from 0 to 2**63 − 1 (``MAX_SEED``);
* ``--random``: 0 to 10,000 random architectures (``MAX_RANDOM``; each is
  generated before the run starts, ~30× the default run's 300 takes minutes);
* ``--workers`` and ``bench --threads``: 1 to 4 × the CPUs of this machine
  (``max_processes()``; more only oversubscribes the cores — spread a larger
  run over hosts with pytest's own ``--tx``, docs/report.md);
* ``--only``: at most 1,000 characters, and no repeated group that itself
  repeats or alternates (``(a+)+``, ``(a|ab)*``): such patterns backtrack
  exponentially (a character class, ``[ab]+``, does the same job safely); at most
  3 repeats of variable length (``*``, ``+``, ``{m,n}``), never two in a row
  (``.*.*``): a failing match costs the name's length to the power of their
  number, and scenario names are at most 200 characters (the loader's limit);
  at most 8 optional items (``x?``), each of which doubles that work.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
from pathlib import Path
from re import _parser as parser  # the stdlib's own parse tree of a pattern (Python 3.11+)

import numpy as np

from backprop_verify.reports.rendering.io import make_folders
from backprop_verify.scenarios.budget import machine_memory, size_text
from backprop_verify.scenarios.loader import DEFAULT_LIMITS

MAX_SEED = 2**63 - 1
NUMPY_MAX_RANK = 64 if int(np.__version__.split(".")[0]) >= 2 else 32  # NPY_MAXDIMS
MAX_RANDOM = 10_000
MAX_ONLY_LENGTH = 1_000
MAX_VARIABLE_REPEATS = 3
MAX_OPTIONAL_ITEMS = 8
PROCESSES_PER_CPU = 4


def max_processes() -> int:
    """The bound on ``--workers`` and ``bench --threads``: 4 × the CPUs."""
    return PROCESSES_PER_CPU * (os.cpu_count() or 1)


def _integer(text: str, low: int, high: int, what: str, why: str = "") -> int:
    expected = f"expected {what} from {low} to {high}{why}"
    stripped = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", stripped) or not stripped.isascii():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {expected}")
    if len(stripped.lstrip("+-")) > 30:  # int() of a huge digit string is slow; nothing that long is in range
        raise argparse.ArgumentTypeError(f"{stripped[:20]}… is out of range; {expected}")
    value = int(stripped)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is out of range; {expected}")
    return value


def seed(text: str) -> int:
    return _integer(text, 0, MAX_SEED, "an integer")


def random_count(text: str) -> int:
    return _integer(text, 0, MAX_RANDOM, "a count")


LIMIT_NAMES = tuple(field.name for field in dataclasses.fields(DEFAULT_LIMITS))


def limit_ceilings() -> dict[str, tuple[int, str]]:
    """The most each limit may be raised to, and why: what NumPy and this machine can honour."""
    memory = machine_memory()
    values = memory // 8
    in_memory = f"the float64 values this machine's {size_text(memory)} of memory can hold"
    return {
        "file_bytes": (memory, f"this machine's {size_text(memory)} of memory"),
        "elements": (values, in_memory),
        "parameters": (values, in_memory),
        "trace_elements": (values, in_memory),
        "steps": (2**62, "a 64-bit count"),
        "rank": (NUMPY_MAX_RANK, "NumPy's largest number of dimensions"),
        "printed_digits": (sys.get_int_max_str_digits() or 4300, "the digits Python converts between text and number"),
        "memory": (memory, f"this machine's {size_text(memory)} of memory"),
        "work": (2**62, "a 64-bit count"),
    }


def limit(text: str) -> tuple[str, int]:
    """``check --limit NAME=N``: one of ``scenarios.loader.Limits`` raised (or lowered) for this run, at most
    to what NumPy and this machine can honour (``limit_ceilings``)."""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or name not in LIMIT_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r}; expected NAME=N with NAME one of {', '.join(LIMIT_NAMES)}")
    ceiling, why = limit_ceilings()[name]
    return name, _integer(value, 1, ceiling, f"{name} = an integer", f" ({why})")


def process_count(text: str) -> int:
    limit = max_processes()
    return _integer(text, 1, limit, "a count", f" ({PROCESSES_PER_CPU} × the {os.cpu_count() or 1} CPUs of this machine)")


_REPEATS = (parser.MAX_REPEAT, parser.MIN_REPEAT, getattr(parser, "POSSESSIVE_REPEAT", None))


def _nested_repeat(items, inside_repeat: bool = False) -> bool:
    """Whether a parsed pattern has a repeat (max > 1) whose body repeats or alternates."""
    for op, value in items:
        if op in _REPEATS:
            low, high, body = value
            if inside_repeat:
                return True
            if _nested_repeat(body, inside_repeat=high > 1):
                return True
        elif op is parser.BRANCH:
            if inside_repeat:
                return True
            if any(_nested_repeat(branch, inside_repeat) for branch in value[1]):
                return True
        elif op is parser.SUBPATTERN:
            if _nested_repeat(value[-1], inside_repeat):
                return True
        elif op in (parser.ASSERT, parser.ASSERT_NOT):
            if _nested_repeat(value[1], inside_repeat):
                return True
        elif op is parser.GROUPREF_EXISTS:
            if any(branch is not None and _nested_repeat(branch, inside_repeat) for branch in value[1:]):
                return True
    return False


def _sequences(items):
    """Every sequence of items in a parsed pattern: the pattern itself, and each group's, branch's,
    repeat's, look-around's and conditional group's body, recursively (the bodies ``_nested_repeat``
    walks)."""
    yield items
    for op, value in items:
        if op in _REPEATS:
            yield from _sequences(value[2])
        elif op is parser.SUBPATTERN:
            yield from _sequences(value[-1])
        elif op is parser.BRANCH:
            for branch in value[1]:
                yield from _sequences(branch)
        elif op in (parser.ASSERT, parser.ASSERT_NOT):
            yield from _sequences(value[1])
        elif op is parser.GROUPREF_EXISTS:  # (?(1)yes|no)
            for branch in value[1:]:
                if branch is not None:
                    yield from _sequences(branch)


def _repeat_counts(pattern: str) -> tuple[int, int, bool]:
    """(repeats of variable length — ``*``, ``+``, ``{2,9}`` —, optional items — ``x?`` —, whether two
    variable repeats follow each other directly, like ``.*.*`` or ``\\d+\\w*``). A failing match costs the
    name's length to the power of the first, times 2 to the power of the second; adjacent repeats only
    add cost (they match nothing the first could not)."""
    variable = optional = 0
    adjacent = False
    for sequence in _sequences(parser.parse(pattern)):
        previous = False
        for op, value in sequence:
            low, high = value[:2] if op in _REPEATS else (1, 1)
            repeat = high != low and high > 1
            variable += repeat
            optional += (low, high) == (0, 1)
            adjacent |= repeat and previous
            if op is not parser.AT:  # an anchor between two repeats does not separate them
                previous = repeat
    return variable, optional, adjacent


def only_pattern(text: str) -> str:
    """``--only``: a regular expression that cannot backtrack exponentially."""
    if len(text) > MAX_ONLY_LENGTH:
        raise argparse.ArgumentTypeError(f"{len(text)} characters; expected a regular expression of at most "
                                         f"{MAX_ONLY_LENGTH} characters")
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression ({err}); expected a Python regular "
                                         "expression (re.search)") from None
    if _nested_repeat(parser.parse(text)):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a group that itself repeats or alternates (it can take "
                                         "exponential time); expected a pattern without nested repetition, e.g. "
                                         "[ab]+ instead of (a|b)+")
    repeats, optional, adjacent = _repeat_counts(text)
    if optional > MAX_OPTIONAL_ITEMS:
        raise argparse.ArgumentTypeError(f"{text!r} has {optional} optional items (x?, x{{0,1}}); expected at most "
                                         f"{MAX_OPTIONAL_ITEMS} (each one doubles the work of a failing match)")
    if adjacent:
        raise argparse.ArgumentTypeError(f"{text!r} has two repeats in a row (like .*.* — the work of a failing "
                                         "match multiplies with each); expected one, e.g. .* instead of .*.*")
    if repeats > MAX_VARIABLE_REPEATS:
        raise argparse.ArgumentTypeError(f"{text!r} has {repeats} repeats of variable length (*, +, {{m,n}}); "
                                         f"expected at most {MAX_VARIABLE_REPEATS} (each multiplies the work of a "
                                         "failing match by the length of the name)")
    return text


def output_folder(text: str) -> str:
    """``--out``: not empty (checked for writability by ``writable_folder``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; expected a folder path (e.g. reports/out)")
    if "\x00" in text:
        raise argparse.ArgumentTypeError("contains a NUL character; expected a folder path")
    return text


def writable_folder(folder: str | os.PathLike) -> str | None:
    """None if files can be created in ``folder``; otherwise the problem, as
    ``PROBLEM; expected WHAT``. The folder (and missing parents) is created for
    the test and everything created is removed again: nothing is left behind.
    """
    path = Path(folder)
    created: list[Path] = []
    try:
        if path.exists() and not path.is_dir():
            return f"{folder} exists and is not a folder; expected a folder (or a path that does not exist yet)"
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"{existing} is not a folder; expected {folder} to be a folder that can be created"
        make_folders(path, created)
        fd, name = tempfile.mkstemp(prefix=".backprop-verify-probe.", dir=path)
        os.close(fd)
        os.unlink(name)
        return None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        return f"cannot write there ({reason}); expected a folder this user can create files in"
    finally:
        for part in reversed(created):
            try:
                part.rmdir()
            except OSError:
                pass


def refused(command: str, problems: list[str]) -> bool:
    """Print each problem as ``backprop-verify COMMAND: PROBLEM`` on stderr; whether there was any (exit 2)."""
    for problem in problems:
        print(f"backprop-verify {command}: {problem}", file=sys.stderr)
    return bool(problems)
