"""pytest collects a user's worked-example files (reports/textbook/examples_plugin.py, the pytest11
entry point): run on the demo folder docs/examples/ with pytester."""
import shutil
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "docs" / "examples"


@pytest.fixture
def book(pytester):
    shutil.copytree(DEMO / "book", pytester.path / "book")
    shutil.copy(DEMO / "pytest.ini", pytester.path / "pytest.ini")
    return pytester


@pytest.mark.subprocess
def test_every_printed_number_is_a_test_and_every_verdict_shows(book):
    """Under pytest-xdist (-n 1: a controller and a worker, the channel every -n N uses), as a book's CI would run it."""
    result = book.runpytest_subprocess("-p", "no:cacheprovider", "--continue-on-collection-errors", "-rA",
                                       "-n", "1")
    result.assert_outcomes(passed=4, failed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR collecting book/ch4_draft.toml*",
        "ch4_draft.toml: layers[[]0[]].weight: expected shape (out, 2) (out, in)*",
        "*ch3.toml::layers.2.weight.grad[[]1,1[]]*",
        "erratum: printed 0.0896, computed 0.0868484787966*a slip: 0.1481 · 0.5866 is 0.0869",
        "*printed numbers that pass as rounding*",
        "book/ch3.toml::loss: printed 0.3628, exact 0.36287121753*",
        "PASSED book/ch3.toml::layers.1.output[[]0,0[]]",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["wrong: ∂E/∂W² = (a² − t)(a¹)ᵀ — the book's first draft*first broken on draw 0*",
                                 "PASSED book/ch3.toml::claim[[]0[]]"], consecutive=False)


@pytest.mark.subprocess
def test_nothing_is_collected_without_the_option_and_disagreeing_engines_fail_loudly(pytester):
    """Without the option the plugin is idle (torch never imported); with --bv-examples and an
    injected bug in the manual sigmoid's derivative, the numbers behind it are 'disagree'.
    (Runs in subprocesses: torch cannot be imported twice into one process, as in-process
    pytester runs would.)"""
    shutil.copytree(DEMO / "book", pytester.path / "book")
    (pytester.path / "book" / "ch4_draft.toml").unlink()
    pytester.makeconftest("""
import sys
def pytest_sessionfinish(session):
    open("torch-imported.txt", "w").write(str("torch" in sys.modules))
""")
    idle = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert idle.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert (pytester.path / "torch-imported.txt").read_text() == "False"  # the plugin costs nothing unused

    pytester.makeconftest("""
from backprop_verify.manual.activations import ACTIVATIONS

_backward = ACTIVATIONS["sigmoid"].backward
ACTIVATIONS["sigmoid"].backward = lambda self, grad: 2.0 * _backward(self, grad)  # the injected bug
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bv-examples", "book/*.toml")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 2 and outcomes.get("failed", 0) + outcomes.get("passed", 0) == 6
    result.stdout.fnmatch_lines(["disagree: printed -0.0727; the engines disagree beyond the tolerance policy*"])
