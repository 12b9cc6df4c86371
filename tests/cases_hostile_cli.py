"""Hostile command lines: each case is (argv, words expected in the one-line message).

``{out}`` in argv is the output folder (it holds a previous report), ``{tmp}``
the test's folder; the case builds what it needs there (an existing file, a
FIFO, a damaged ``--compare-to`` table). Every case must end in exit 2, one
line ``backprop-verify COMMAND: OPTION or FILE: PROBLEM; expected WHAT``, no
traceback, and the whole folder byte for byte as it was
(``tests/test_hostile_cli.py::assert_refused``).
"""
import os

import pytest
from pytest_cases import case

from backprop_verify.reports.commands.options import MAX_RANDOM, max_processes
from backprop_verify.reports.rendering.table import BEFORE_WORST

# A table as written before the worst-element columns (still a valid baseline); tests/test_report.py
# covers the current 13 columns.
HEADER = ",".join(BEFORE_WORST)
ROWS = [
    "activation-relu-kink-f32,manual-torch,float32,input.grad,0.000000e+00,0.000000e+00,2.000000e-04,True,,pass",
    "activation-relu-kink-f32,manual-torch,float32,loss,1.192093e-07,2.980232e-08,2.000000e-04,True,,pass",
    "loss-bce-sum-saturated-f64,manual-torch,float64,loss,nan,nan,1.000000e-10,False,non-finite values,fail",
]
GOOD_TABLE = HEADER + "\n" + "\n".join(ROWS) + "\n"


def _old_report(tmp, text: str | bytes, summary: str | None = None) -> str:
    """A --compare-to folder holding ``text`` as its discrepancies.csv."""
    folder = tmp / "old"
    folder.mkdir()
    path = folder / "discrepancies.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    if summary is not None:
        (folder / "summary.md").write_text(summary)
    return str(folder)


def _report(*argv):
    return ["report", "--out", "{out}", "--random", "0", "--no-plots", *argv]


# ----------------------------------------------------------------------------- numeric options


@case(id="report-seed-negative")
def case_seed_negative():
    return _report("--seed", "-5"), ("--seed:", "-5", "expected an integer from 0 to")


@case(id="report-seed-not-integer")
def case_seed_fraction():
    return _report("--seed", "1.5"), ("--seed:", "not an integer", "expected an integer")


@case(id="report-seed-exponent")
def case_seed_exponent():
    return _report("--seed", "1e3"), ("--seed:", "not an integer",)


@case(id="report-seed-huge")
def case_seed_huge():
    return _report("--seed", "9" * 400), ("--seed:", "out of range", "9223372036854775807")


@case(id="report-seed-non-ascii-digits")
def case_seed_arabic_digits():
    return _report("--seed", "٣"), ("--seed:", "not an integer")


@case(id="report-random-negative")
def case_random_negative():
    return _report("--random", "-1"), ("--random:", f"expected a count from 0 to {MAX_RANDOM}")


@case(id="report-random-huge")
def case_random_huge():
    return _report("--random", str(MAX_RANDOM + 1)), ("--random:", "out of range", str(MAX_RANDOM))


@case(id="report-random-float")
def case_random_float():
    return _report("--random", "3.0"), ("--random:", "not an integer")


@case(id="report-workers-zero")
def case_workers_zero():
    return _report("--workers", "0"), ("--workers:", f"expected a count from 1 to {max_processes()}")


@case(id="report-workers-1000")
def case_workers_many():
    return _report("--workers", "1000"), ("--workers:", "out of range", "CPUs")


@case(id="report-workers-empty")
def case_workers_empty():
    return _report("--workers", ""), ("--workers:", "not an integer")


@case(id="report-seed-missing-value")
def case_seed_missing_value():
    return ["report", "--out", "{out}", "--seed"], ("--seed:", "expected one argument")


@case(id="report-unknown-option")
def case_unknown_option():
    return _report("--sed", "3"), ("unrecognized arguments", "expected")


@case(id="bench-threads-zero")
def case_threads_zero():
    return ["bench", "--quick", "--out", "{out}", "--threads", "0"], ("--threads:", "expected a count from 1 to")


@case(id="bench-threads-huge")
def case_threads_huge():
    return ["bench", "--quick", "--out", "{out}", "--threads", "1000000"], ("--threads:", "out of range")


@case(id="bench-threads-text")
def case_threads_text():
    return ["bench", "--quick", "--out", "{out}", "--threads", "two"], ("--threads:", "not an integer")


# ----------------------------------------------------------------------------- --only


@case(id="report-only-not-a-regex")
def case_only_invalid():
    return _report("--only", "["), ("--only:", "not a regular expression", "expected")


@case(id="report-only-nested-repeat")
def case_only_catastrophic():
    return _report("--only", "(a+)+$"), ("--only:", "exponential time", "expected a pattern without nested")


@case(id="report-only-repeated-alternation")
def case_only_alternation():
    return _report("--only", "(x|xx)*y"), ("--only:", "exponential time")


@case(id="report-only-adjacent-repeats")
def case_only_adjacent_repeats():
    # Polynomial, not exponential: each .* multiplies a failing match's work by the name's length.
    return _report("--only", ".*.*.*.*.*.*.*.*.*.*.*.*!"), ("--only:", "two repeats in a row", "expected one")


@case(id="report-detail-adjacent-repeats")
def case_detail_adjacent_repeats():
    return _report("--detail", ".*.*.*.*.*.*.*.*.*.*.*.*!"), ("--detail:", "two repeats in a row")


@case(id="report-only-four-repeats")
def case_only_four_repeats():
    return _report("--only", ".*a.*a.*a.*a!"), ("--only:", "4 repeats of variable length", "at most 3")


@case(id="report-only-repeats-in-a-conditional-group")
def case_only_repeats_in_a_conditional_group():
    return _report("--only", "(a)?(?(1)b.*c.*d.*e.*|z)!"), ("--only:", "4 repeats of variable length", "at most 3")


@case(id="report-only-thirty-optional-items")
def case_only_optional_items():
    return _report("--only", "a?" * 30 + "a" * 30), ("--only:", "30 optional items", "at most 8")


@case(id="check-limit-rank-beyond-numpy")
def case_limit_rank():
    return ["check", "--limit", "rank=100", "x.toml"], ("--limit:", "from 1 to 64", "NumPy's largest number of dimensions")


@case(id="check-limit-elements-beyond-memory")
def case_limit_elements():
    return ["check", "--limit", f"elements={2**62}", "x.toml"], ("--limit:", "float64 values this machine's")


@case(id="report-only-too-long")
def case_only_long():
    return _report("--only", "a" * 5000), ("--only:", "5000 characters", "at most 1000")


@case(id="report-only-matches-nothing")
def case_only_nothing():
    return _report("--only", "no-such-scenario"), ("--only:", "matches no scenario", "expected a pattern")


# ----------------------------------------------------------------------------- --out


@case(id="report-out-empty")
def case_out_empty():
    return ["report", "--out", "", "--random", "0"], ("--out:", "empty", "expected a folder")


@case(id="report-out-blank")
def case_out_blank():
    return ["report", "--out", "   ", "--random", "0"], ("--out:", "empty")


@case(id="report-out-proc")
def case_out_proc():
    return ["report", "--out", "/proc/backprop-verify-x", "--random", "0"], ("--out:", "cannot write there")


@case(id="report-out-existing-file")
def case_out_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return ["report", "--out", "{tmp}/a-file", "--random", "0"], ("--out:", "not a folder", "expected a folder")


@case(id="report-out-under-a-file")
def case_out_under_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return ["report", "--out", "{tmp}/a-file/sub/dir", "--random", "0"], ("--out:", "a-file is not a folder")


@case(id="report-out-read-only-folder")
def case_out_read_only(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write into a read-only folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return ["report", "--out", "{tmp}/locked/new", "--random", "0"], ("--out:", "cannot write there")


@case(id="check-out-empty")
def case_check_out_empty():
    return ["check", "--derivations", "--out", ""], ("--out:", "empty")


@case(id="check-out-proc")
def case_check_out_proc():
    return ["check", "--derivations", "--out", "/proc/backprop-verify-x"], ("--out:", "cannot write there")


@case(id="bench-out-existing-file")
def case_bench_out_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return ["bench", "--quick", "--out", "{tmp}/a-file"], ("--out:", "not a folder")


# ----------------------------------------------------------------------------- check FILE


@case(id="check-no-file")
def case_check_nothing():
    return ["check", "--out", "{out}"], ("FILE:", "none given", "expected at least one")


@case(id="check-missing-file")
def case_check_missing():
    return ["check", "{tmp}/nowhere.toml", "--out", "{out}"], ("nowhere.toml:", "no such file")


@case(id="check-same-file-twice")
def case_check_twice(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\n')
    return ["check", "{tmp}/a.toml", "{tmp}/./a.toml", "--out", "{out}"], ("given twice", "expected each FILE once")


@case(id="check-fifo")
def case_check_fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.toml")  # opening it to read would block: it must never be opened
    return ["check", "{tmp}/pipe.toml", "--out", "{out}"], ("pipe.toml:", "not a regular file")


@case(id="check-dev-zero")
def case_check_dev_zero():
    return ["check", "/dev/zero", "--out", "{out}"], ("/dev/zero:", "not a regular file")


@case(id="check-a-folder")
def case_check_folder(tmp_path):
    (tmp_path / "chapter").mkdir()
    return ["check", "{tmp}/chapter", "--out", "{out}"], ("chapter:", "a folder")


# ----------------------------------------------------------------------------- --compare-to


@case(id="compare-to-missing-folder")
def case_compare_missing():
    return _report("--compare-to", "{tmp}/nowhere"), ("--compare-to:", "not a folder")


@case(id="compare-to-folder-without-table")
def case_compare_empty_folder(tmp_path):
    (tmp_path / "old").mkdir()
    return _report("--compare-to", "{tmp}/old"), ("--compare-to:", "discrepancies.csv: no such file")


@case(id="compare-to-cut-mid-row")
def case_compare_cut(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE[:-25])), (
        "discrepancies.csv: line 4:", "expected")


@case(id="compare-to-cut-mid-field")
def case_compare_cut_field(tmp_path):
    cut = GOOD_TABLE[: GOOD_TABLE.index("1.192093e-07") + 5]
    return _report("--compare-to", _old_report(tmp_path, cut)), ("discrepancies.csv: line 3:", "expected 10")


@case(id="compare-to-no-final-newline")
def case_compare_no_newline(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.rstrip("\n"))), (
        "line 4:", "ends in the middle of a row", "expected a complete file")


@case(id="compare-to-empty-file")
def case_compare_empty_file(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, "")), ("line 1:", "empty", "expected the header")


@case(id="compare-to-wrong-header")
def case_compare_header(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace("max_rel", "maxrel", 1))), (
        "line 1:", "header", "expected scenario,pair,dtype")


@case(id="compare-to-extra-field")
def case_compare_extra(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace(",pass\n", ",pass,x\n", 1))), (
        "line 2:", "11 fields", "expected 10")


@case(id="compare-to-bad-float")
def case_compare_float(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace("2.980232e-08", "2.98e-0x", 1))), (
        "line 3:", "max_rel", "expected a number")


@case(id="compare-to-bad-passed")
def case_compare_passed(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace(",True,", ",yes,", 1))), (
        "line 2:", "passed 'yes'", "expected True or False")


@case(id="compare-to-unknown-pair")
def case_compare_pair(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace("manual-torch", "manual-jax", 1))), (
        "line 2:", "pair 'manual-jax'", "expected one of manual-torch")


@case(id="compare-to-unknown-dtype")
def case_compare_dtype(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace("float32", "float16", 1))), (
        "line 2:", "dtype 'float16'", "expected one of float64")


@case(id="compare-to-unknown-status")
def case_compare_status(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace(",pass\n", ",passed\n", 1))), (
        "line 2:", "status 'passed'", "expected one of pass")


@case(id="compare-to-passed-contradicts-status")
def case_compare_contradiction(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.replace(",True,,pass\n", ",False,,pass\n", 1))), (
        "line 2:", "passed False with status pass")


@case(id="compare-to-duplicate-key")
def case_compare_duplicate(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE + ROWS[0] + "\n")), (
        "line 5:", "appears again (first on line 2)", "expected each (scenario, pair, address) once")


@case(id="compare-to-not-utf8")
def case_compare_latin1(tmp_path):
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE.encode("utf-8") + b"caf\xe9\n")), (
        "is not UTF-8", "expected a CSV file")


@case(id="compare-to-summary-disagrees")
def case_compare_summary(tmp_path):
    summary = "## Result\n\n2 scenarios, 7 addresses compared (0 scenarios also against finite differences)\n"
    return _report("--compare-to", _old_report(tmp_path, GOOD_TABLE, summary)), (
        "3 rows", "records 7 addresses compared")


@case(id="compare-to-a-fifo")
def case_compare_fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    (tmp_path / "old").mkdir()
    os.mkfifo(tmp_path / "old" / "discrepancies.csv")
    return _report("--compare-to", "{tmp}/old"), ("discrepancies.csv: not a regular file",)
