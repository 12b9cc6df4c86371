"""Files within every limit that would demand unbounded work, and values that are errors, not verdicts.

A book's contributor can write a small legal file whose run needs 60 GiB (one large convolution), 30 GiB
(forty layers on a large input) or hours (an LSTM over 10⁶ steps, many claims with many draws). The loader
estimates the whole run from the shapes (``scenarios.budget``) and refuses it, naming the quantity, the
estimate and the limit, before any data of that size exist. Infinite and NaN values are compared and
reported like any other, and text from the file is escaped where it is shown.
"""
from __future__ import annotations

import csv
import io
import math
import tracemalloc

import numpy as np
import pytest

from backprop_verify import manual
from backprop_verify.reports.textbook import claims as claim_checks
from backprop_verify.reports.textbook.escape import spreadsheet_cell, terminal_text
from backprop_verify.reports.verification.compare import FAIL, PASS, compare
from backprop_verify.scenarios import ScenarioError, budget, load_scenario
from backprop_verify.scenarios.loader import Limits
from backprop_verify.scenarios.shapes import output_shape

LOSS = '[loss]\ntype = "mse"\nreduction = "mean"\n'

CONV_256 = '''
[[layers]]
type = "conv2d"
out_channels = 1
kernel_size = 256
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 1
init = "xavier_uniform"
''' + LOSS + '''
[data]
x = {generate = "normal", shape = [1, 1, 512, 512]}
y = [[1.0]]
'''

TANH_40 = ('[data]\nx = {generate = "normal", shape = [1, 16777216]}\ny = {generate = "normal", shape = [1, 16777216]}\n'
           + LOSS + '[[layers]]\ntype = "tanh"\n' * 40)

LSTM_STEPS = '''
[[layers]]
type = "lstm"
hidden_size = 2
[[layers]]
type = "last_step"
''' + LOSS + '''
[data]
x = {generate = "normal", shape = [1, STEPS, 1]}
y = [[0.0, 0.0]]
'''

CLAIMS = '''
[[layers]]
type = "linear"
out = 1
init = "xavier_uniform"
''' + LOSS + '''
[data]
x = {generate = "normal", shape = [64, 8192]}
y = {generate = "normal", shape = [64, 1]}
'''
HEAVY_CLAIM = '''
[[claim]]
statement = "heavy"
at = "layers.0.output"
formula = "z[0] + 0 * sum(x @ T(x))"
draws = 100
'''


def _write(tmp_path, text: str, name: str = "book.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refusal(path, limits: Limits = Limits()) -> tuple[str, int]:
    """The loader's message, and the bytes it allocated at its peak while refusing."""
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError) as err:
            load_scenario(path, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(err.value), peak


@pytest.mark.parametrize("text, field, words", [
    (CONV_256, "layers[0]", ("GiB of memory", "conv2d", "limit memory", "--limit memory=N")),
    (TANH_40, "layers", ("GiB of memory", "the 40 layers'", "limit memory")),
    (LSTM_STEPS.replace("STEPS", "1000000"), "layers[0]", ("operations", "lstm's forward and backward",
                                                          "limit work", "--limit work=N")),
], ids=["conv2d-kernel-256-on-512x512", "40-tanh-layers-on-2^24-values", "lstm-over-10^6-steps"])
def test_a_legal_file_whose_run_is_unbounded_is_refused_before_its_data_exist(tmp_path, text, field, words):
    message, peak = _refusal(_write(tmp_path, text))
    assert message.startswith(f"book.toml: {field}: the run needs about "), message
    for word in words:
        assert word in message, message
    # Refused from the shapes: no generated input (128 MiB for 2²⁴ values), no column buffer exists.
    assert peak < 16 * 2**20, f"refusing allocated {peak:,} bytes"


def test_a_raised_limit_admits_the_run_up_to_the_machine(tmp_path):
    path = _write(tmp_path, LSTM_STEPS.replace("STEPS", "100000"))
    message, _ = _refusal(path, Limits(work=10**9))
    assert "limit work" in message
    assert load_scenario(path, Limits(work=10**12)).x.shape == (1, 100_000, 1)


def test_many_claims_with_many_draws_are_refused_naming_the_claims(tmp_path):
    """Thirty claims of 100 draws each: the formulas' evaluations at every draw, counted without running them."""
    path = _write(tmp_path, CLAIMS + HEAVY_CLAIM * 30)
    scenario = load_scenario(path)  # the engines' share is small: the loader admits the file
    with pytest.raises(ScenarioError) as err:
        claim_checks.validate_claims(scenario)
    message = str(err.value)
    assert message.startswith("book.toml: claim: the run needs about"), message
    assert "evaluating the claims' formulas at every draw" in message and "limit work" in message
    claim_checks.validate_claims(load_scenario(_write(tmp_path, CLAIMS + HEAVY_CLAIM, "one.toml")))  # one fits


def test_validating_a_claim_does_no_arithmetic_on_arrays(monkeypatch, tmp_path):
    """The formulas are checked dry: shapes, limits and guards, every array result zeros that allocate nothing."""
    scenario = load_scenario(_write(tmp_path, CLAIMS + HEAVY_CLAIM))
    calls = []
    monkeypatch.setattr(np, "matmul", lambda *a, **k: calls.append(a) or 0.0)
    claim_checks.validate_claims(scenario)
    assert calls == []


# ----------------------------------------------------------------------------- the estimate is an upper bound

SMALL_NETS = {
    "conv": '''
[[layers]]
type = "conv2d"
out_channels = 8
kernel_size = 5
padding = 2
[[layers]]
type = "relu"
[[layers]]
type = "max_pool2d"
kernel_size = 2
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 3
init = "xavier_uniform"
''' + LOSS + '''
[data]
x = {generate = "normal", shape = [16, 3, 32, 32]}
y = {generate = "normal", shape = [16, 3]}
''',
    "lstm": LSTM_STEPS.replace("hidden_size = 2", "hidden_size = 32").replace("[1, STEPS, 1]", "[8, 200, 16]")
                      .replace("y = [[0.0, 0.0]]", 'y = {generate = "normal", shape = [8, 32]}'),
    "tanh-stack": ('[data]\nx = {generate = "normal", shape = [64, 4096]}\ny = {generate = "normal", shape = [64, 4096]}\n'
                   + LOSS + '[[layers]]\ntype = "tanh"\n' * 12),
}


def _gpt_block():
    from backprop_verify.scenarios.transformer import gpt_mini_scenario

    return gpt_mini_scenario("float64")


@pytest.mark.parametrize("name", [*SMALL_NETS, "gpt-mini"])
def test_the_memory_estimate_bounds_what_the_manual_engine_allocates(tmp_path, name):
    """The estimate counts both engines: the NumPy engine's measured peak is within its half."""
    scenario = _gpt_block() if name == "gpt-mini" else load_scenario(_write(tmp_path, SMALL_NETS[name]))
    shapes, shape = [], scenario.x.shape
    for layer in scenario.layers:
        shape = output_shape(layer, shape)
        shapes.append(shape)
    estimate = budget.estimate(scenario.layers, shapes, scenario.x.shape, scenario.optimizer)
    tracemalloc.start()
    try:
        manual.run(scenario)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= estimate.memory / budget.ENGINES, (name, peak, estimate.memory)


# ----------------------------------------------------------------------------- non-finite values are compared

def _traces(a: float, b: float):
    return {"loss": np.array(a)}, {"loss": np.array(b)}


@pytest.mark.parametrize("a, b, status, words", [
    (math.inf, math.inf, PASS, "identical"),
    (math.nan, math.nan, PASS, "identical"),
    (math.inf, -math.inf, FAIL, "inf against -inf"),
    (math.nan, 1.0, FAIL, "nan against 1.0"),
])
def test_a_non_finite_loss_is_compared_not_a_crash(a, b, status, words):
    from backprop_verify.scenarios.trace import Trace

    x, y = (Trace(engine, t) for engine, t in zip(("manual", "torch"), _traces(a, b)))
    (row,) = compare(x, y, "float64", "manual-torch")
    assert row.status == status and words in row.note, row


def test_a_file_whose_loss_overflows_gets_verdicts_from_check(tmp_path, capsys):
    """Weights of 1e150: the loss is inf in both engines. check compares it (agreement) and judges the
    printed number against it (an erratum), exit 1 — no traceback."""
    from backprop_verify.reports.cli import main

    path = _write(tmp_path, '''
[[layers]]
type = "linear"
weight = [[1e150, 2e150], [3.0, 4.0]]
bias = [0.0, 0.0]
''' + LOSS.replace("mean", "half_sum") + '''
[data]
x = [[1e150, 1e150]]
y = [[1.0, 0.0]]
[[expect]]
at = "loss"
printed = "1"
''')
    code = main(["check", str(path), "--out", str(tmp_path / "out")])
    output = capsys.readouterr()
    assert code == 1, output
    assert "Traceback" not in output.err
    assert "printed 1, computed inf" in output.out


# ----------------------------------------------------------------------------- text from the file, shown safely

def test_control_characters_of_a_statement_are_escaped_on_the_terminal():
    hostile = "δ = a − t\x1b]0;pwned\x07\x1b[2J\nnext"
    assert terminal_text(hostile) == "δ = a − t\\x1b]0;pwned\\x07\\x1b[2J\\x0anext"
    result = claim_checks.ClaimResult(example="e", statement=hostile, at="loss", formula="t", verdict="holds",
                                      worst_rel=0.0, draws=0)
    assert "\x1b" not in claim_checks.claims_text([result]) and "\\x1b]0;pwned" in claim_checks.claims_text([result])


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)"])
def test_a_statement_a_spreadsheet_would_evaluate_is_written_as_text(cell):
    assert spreadsheet_cell(cell) == "'" + cell
    result = claim_checks.ClaimResult(example="e", statement=cell, at="loss", formula="t", verdict="holds",
                                      worst_rel=0.0, draws=0)
    (row,) = csv.DictReader(io.StringIO(claim_checks.csv_text([result])))
    assert row["statement"] == "'" + cell


@pytest.mark.parametrize("cell", ["\tx", "\rx", "a\nb", "\x1b[2J"])
def test_a_control_character_in_a_statement_is_one_visible_escape_in_claims_csv(cell):
    """A CR that the CSV writer would leave unquoted (it breaks the row), a tab that starts a formula."""
    result = claim_checks.ClaimResult(example="e", statement=cell, at="loss", formula="t", verdict="holds",
                                      worst_rel=0.0, draws=0)
    text = claim_checks.csv_text([result])
    assert len(text.splitlines()) == 2, text
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["statement"] == terminal_text(cell) and "\\x" in row["statement"]


def test_ordinary_text_is_left_as_written():
    assert spreadsheet_cell("∂L/∂w = δ a") == "∂L/∂w = δ a" and terminal_text("∂L/∂w = δ a") == "∂L/∂w = δ a"


def test_check_prints_a_file_s_escape_sequences_as_text(tmp_path, capsys):
    """A name and a claim statement with escape sequences (retitle the window, clear the screen): the terminal
    gets them as visible text; claims.csv as text too."""
    from backprop_verify.reports.cli import main

    path = _write(tmp_path, 'name = "book\\u001b]0;pwned\\u0007"\n' + '''
[[layers]]
type = "linear"
weight = [[0.5, -0.25]]
bias = [0.1]
''' + LOSS + '''
[data]
x = [[1.0, 2.0]]
y = [[1.0]]
[[claim]]
statement = "wrong\\u001b[2J"
at = "layers.0.output.grad"
formula = "z[0] - t"
''')
    code = main(["check", str(path), "--out", str(tmp_path / "out")])
    output = capsys.readouterr()
    assert code == 1, output  # the claim is wrong: L = (z − t)², ∂L/∂z = 2(z − t), not z − t
    assert "\x1b" not in output.out + output.err and "\x07" not in output.out + output.err
    assert "book\\x1b]0;pwned\\x07" in output.out and "wrong\\x1b[2J" in output.out
    assert "\x1b" not in (tmp_path / "out" / "claims.csv").read_text()


def test_a_file_refused_for_its_cost_is_refused_before_torch_is_imported(tmp_path):
    """The budget's refusals (the loader's, and the claims' counted in the dry validation) cost a fraction of a
    second: in a fresh interpreter, exit 2 for each and torch never imported."""
    import subprocess
    import sys

    files = [_write(tmp_path, CONV_256, "conv.toml"), _write(tmp_path, CLAIMS + HEAVY_CLAIM * 30, "claims.toml")]
    code = ("import sys\nfrom backprop_verify.reports.cli import main\n"
            f"codes = [main(['check', path, '--out', {str(tmp_path / 'out')!r}]) for path in sys.argv[1:]]\n"
            "print(codes, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[2, 2] False", done.stdout + done.stderr
    assert "limit memory" in done.stderr and "limit work" in done.stderr and not (tmp_path / "out").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_printed_text_is_escaped_but_the_progress_bar_redraws_its_line():
    """A command's output passes through ``reports.cli._TerminalSafe`` (a file's escape sequence shows as
    ``\\x1b``); the progress bar, the program's own output, keeps its carriage returns."""
    from backprop_verify.reports.cli import _TerminalSafe
    from backprop_verify.reports.commands.report_run import progress

    terminal = _Terminal()
    safe = _TerminalSafe(terminal)
    safe.write("name\x1b[2J\tok\n")
    assert terminal.getvalue() == "name\\x1b[2J\tok\n"
    terminal.seek(0)
    terminal.truncate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", safe)
        with progress(3, "verifying") as bar:
            bar.update(3)
    assert "\r" in terminal.getvalue() and "\\x0d" not in terminal.getvalue()
