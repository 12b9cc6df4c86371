"""Hostile input to the commands: every bad option, output folder or
``--compare-to`` table is exit 2 with one line naming it and what was expected,
no traceback, nothing written; SIGINT and SIGTERM leave nothing behind; the
verdict arithmetic takes any printed number.

The cases are in ``tests/cases_hostile_cli.py``; the refusals run in this
process (each is refused before any work starts: milliseconds).
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pytest_cases import parametrize_with_cases

from backprop_verify.reports.cli import main
from backprop_verify.reports.commands import options
from backprop_verify.reports.rendering.io import Interrupted, atomic_write_many, checkpoint, interrupt_handlers
from backprop_verify.reports.rendering.table import read_csv_text, validate_csv_text
from backprop_verify.reports.textbook.errata import ERRATUM, MATCH, ROUNDING, verdict
from tests.helpers import descendants, reaped, running, snapshot

import cases_hostile_cli

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = {"discrepancies.csv": b"old csv\n", "summary.md": b"old summary\n"}


def assert_refused(argv: list[str], expected: tuple[str, ...], tmp_path: Path, capsys) -> str:
    """``backprop-verify ARGV`` exits 2 with one line naming the option or file and what was
    expected, no traceback, and leaves ``tmp_path`` (with a previous report in ``out``) as it was."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for name, data in PREVIOUS.items():
        (out / name).write_bytes(data)
    argv = [word.replace("{out}", str(out)).replace("{tmp}", str(tmp_path)) for word in argv]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    message = lines[0]
    assert message.startswith(f"backprop-verify {argv[0]}: "), message
    assert "; expected " in message, message
    assert "Traceback" not in captured.err + captured.out
    for word in expected:
        assert word in message, (word, message)
    assert snapshot(tmp_path) == before
    return message


@parametrize_with_cases("case", cases=cases_hostile_cli)
def test_hostile_command_line_is_refused(case, tmp_path, capsys):
    argv, expected = case
    assert_refused(argv, expected, tmp_path, capsys)


# ----------------------------------------------------------------------------- what is still accepted


def test_the_good_table_of_the_cases_is_a_valid_table():
    validate_csv_text(cases_hostile_cli.GOOD_TABLE)
    without_status = "\n".join(line.rsplit(",", 1)[0] for line in cases_hostile_cli.GOOD_TABLE.splitlines()) + "\n"
    validate_csv_text(without_status)  # an older report, written before the status column
    assert len(read_csv_text(cases_hostile_cli.GOOD_TABLE)) == 3


@pytest.mark.parametrize("pattern", [
    r"activation-sigmoid-saturation-f64|activation-relu-kink-f32|seed004|random-s[12]-",
    r"sigmoid", r"^loss-(bce|mse)-", r"f(32|64)$", r"random-s[0-9]+-depth[2-4]", r"(-f64)?$", r"a{2,5}b",
])
def test_ordinary_only_patterns_are_accepted(pattern):
    assert options.only_pattern(pattern) == pattern


def test_probing_the_output_folder_leaves_nothing_behind(tmp_path):
    assert options.writable_folder(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    assert options.writable_folder(tmp_path / "kept") is None
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not list((tmp_path / "kept").iterdir())


@pytest.mark.parametrize("text, limit", [("0", 0), ("+7", 7), (" 12 ", 12), (str(2**63 - 1), 2**63 - 1)])
def test_seed_accepts_integers_in_range(text, limit):
    assert options.seed(text) == limit


# ----------------------------------------------------------------------------- verdict arithmetic


@pytest.mark.parametrize("value, printed, expected", [
    (0.5, "0." + "5" + "0" * 28, MATCH),                   # 29 decimals: 0.5 is exact in binary
    # 0.1 is 0.1000000000000000055511…: 29 decimals are finer than float64 resolves there (1 ulp = 1.4e-17),
    # and "0.1000…0" reads back as the same float: judged at float64's resolution, a match.
    (0.1, "0.1" + "0" * 28, MATCH),
    (0.1, "0.1000000000000000055511151231257827", MATCH),  # its 34 first decimals
    (0.1, "0.10000000000000000555111512312578270211815834045410156250" + "0" * 40, MATCH),  # every decimal, and more
    (1e30, "1" + "0" * 30, MATCH),                         # the float is 1000000000000000019884624838656; 1 ulp = 1.4e14
    (1e30, "1000000000000000019884624838656", MATCH),
    (1e30, "1000000000000000019884624838657", MATCH),      # reads back as the same float
    (1e154, "1" + "0" * 154, MATCH),
    (1e154, "1000000000000001" + "0" * 139, ERRATUM),      # the 16th digit wrong: 1e139 is ~5 ulps there
    (1.7976931348623157e308, str(int(1.7976931348623157e308)), MATCH),
    (-1.7976931348623157e308, "−" + str(int(1.7976931348623157e308)) + "." + "0" * 60, MATCH),
    (5e-324, "0." + "0" * 400, ROUNDING),                   # the smallest subnormal printed as 0: one ulp away
    (5e-324, "0." + "0" * 323, MATCH),
    (1e-300, "0." + "0" * 299 + "1", MATCH),
    (0.6434, "≈ 0.643", MATCH), (0.6436, "0.643", ROUNDING), (0.6446, "0.643", ERRATUM),
])
def test_verdict_is_exact_for_any_decimals_and_magnitude(value, printed, expected):
    assert verdict(value, printed) == expected


def test_verdict_of_an_exact_count_with_many_digits():
    assert verdict(2.0**100, str(2**100), exact=True) == MATCH
    assert verdict(2.0**100, str(2**100 + 1), exact=True) == ERRATUM


# ----------------------------------------------------------------------------- interrupts


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_raised_at_the_next_checkpoint_and_a_second_at_once(signum):
    with interrupt_handlers():
        os.kill(os.getpid(), signum)
        time.sleep(0.01)  # delivered: recorded, not raised
        with pytest.raises(Interrupted) as info:
            checkpoint()
        assert info.value.signum == signum and info.value.exit_code == 128 + signum
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signum)
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
    checkpoint()  # nothing pending once the handlers are gone


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_sigterm_while_temporary_files_are_written_leaves_no_temporary_file(tmp_path, monkeypatch):
    previous = {"discrepancies.csv": b"old csv\n", "summary.md": b"old summary\n"}
    for name, data in previous.items():
        (tmp_path / name).write_bytes(data)
    honest_fsync = os.fsync

    def fsync_then_sigterm(fd):
        honest_fsync(fd)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)

    monkeypatch.setattr(os, "fsync", fsync_then_sigterm)
    with interrupt_handlers(), pytest.raises(Interrupted):
        atomic_write_many({tmp_path / name: b"new" for name in previous})
    assert snapshot(tmp_path) == previous


def _no_temporary_files(scratch: Path) -> list[str]:
    # torch's own compile cache (torch._dynamo creates tempfile.gettempdir()/torchinductor_<user> when
    # imported, and keeps it across runs by design) is not a temporary file of the command.
    return [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_sigint_while_xdist_workers_run_ends_them_and_removes_the_scratch_folder(tmp_path, monkeypatch):
    """In this process (no second torch import): SIGINT while ``rows_with_xdist``'s pytest controller and
    its two workers run. The checkpoint of its poll loop raises, the process group is ended and waited
    for, the scratch folder (with pytest's --basetemp) is gone."""
    import argparse
    import tempfile

    from backprop_verify.reports.commands.report import rows_with_xdist

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: set[int] = set()
    inside = threading.Event()

    def interrupt_once_the_workers_run():
        deadline = time.monotonic() + 120
        while inside.is_set() and time.monotonic() < deadline:
            seen.update(descendants(os.getpid()))
            if len(running(seen)) >= 3:  # the pytest controller and its two workers
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_once_the_workers_run, daemon=True)
    # The whole default scenario set: it cannot finish before the signal.
    args = argparse.Namespace(workers=2, seed=0, random=300, random_conv=100, random_recurrent=60, only=None)
    with interrupt_handlers(), pytest.raises(Interrupted) as info:
        inside.set()
        watcher.start()
        try:
            rows_with_xdist(args, 1)
        finally:
            inside.clear()
    watcher.join()
    assert info.value.signum == signal.SIGINT
    assert len(seen) >= 3, f"the workers never started: {sorted(seen)}"
    assert not running(seen), f"left running: {sorted(running(seen))}"
    assert _no_temporary_files(scratch) == []


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize("signum", [signal.SIGTERM], ids=["SIGTERM"])
def test_signal_to_report_with_workers_leaves_nothing_behind(signum, tmp_path):
    """SIGTERM (as a CI runner sends it) to ``report --workers 2`` while its pytest-xdist workers run:
    exit 143, one line, the pytest controller and both workers gone, no temporary folder, the previous
    report intact. (SIGINT takes the same path: the test above, in this process, and
    ``test_report.py::test_ctrl_c_midway_leaves_previous_report_intact``.)"""
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    for name, data in PREVIOUS.items():
        (out / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(scratch))
    # The whole default scenario set: it cannot finish in the few seconds before the signal.
    process = subprocess.Popen([sys.executable, "-m", "backprop_verify.reports.cli", "report", "--workers", "2", "--no-plots",
                                "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen: set[int] = set()
    with reaped(process):
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            seen |= descendants(process.pid)
            if len(running(seen)) >= 3:  # the pytest controller and its two workers
                break
            time.sleep(0.05)
        assert len(seen) >= 3, f"the workers never started: {sorted(seen)}"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == 128 + signum, stderr[-2000:]
    assert stderr.splitlines() == [f"backprop-verify report: interrupted by {signal.Signals(signum).name}; "
                                   "nothing was written, the previous files are unchanged"], stderr[-2000:]
    assert not running(seen), f"left running: {sorted(running(seen))}"
    assert _no_temporary_files(scratch) == []
    assert snapshot(out) == PREVIOUS
