"""``discrepancies.csv`` written cell by cell (``table.csv_text``) against pandas' ``to_csv`` of the same table
(``table.csv_text_plain``, the plain form): the same bytes, on cells that need quoting, missing and non-finite
numbers, and on the rows of a real run. Each formatting rule has a mutant that the comparison catches."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from backprop_verify.reports.rendering import table
from backprop_verify.reports.verification.compare import COLUMNS

# Cells the csv module quotes (comma, quote, line breaks), missing text, and numbers NaN, ±inf and tiny.
HOSTILE = [
    {"scenario": "b, with a comma", "pair": "manual-torch", "dtype": "float64", "address": "layers.0.weight.grad",
     "max_abs": 1.5e-300, "max_rel": math.inf, "tolerance": 1e-10, "passed": False,
     "note": 'says "no"\nthen\rstops', "status": "fail", "worst_index": "[0,1]", "value": -0.1,
     "reference_value": 1 / 3, "triage": "manual alone"},
    {"scenario": "a", "pair": "manual-fd", "dtype": "float32", "address": "loss",
     "max_abs": math.nan, "max_rel": -math.inf, "tolerance": 2e-5, "passed": True,
     "note": None, "status": "pass", "worst_index": "", "value": None, "reference_value": math.nan,
     "triage": ""},
    {"scenario": "a", "pair": "manual-fd", "dtype": "float32", "address": "input.grad",
     "max_abs": 0.0, "max_rel": 0.0, "tolerance": 2e-5, "passed": True,
     "note": "π ≈ 3.14159, ∂L/∂x", "status": "floor", "worst_index": "[2]", "value": 5e-324,
     "reference_value": -0.0, "triage": math.nan},
]


def test_hostile_cells_are_written_as_pandas_writes_them():
    frame = pd.DataFrame(HOSTILE, columns=list(COLUMNS))
    assert table.csv_text(frame) == table.csv_text_plain(frame)


def test_a_real_run_s_rows_are_written_as_pandas_writes_them(tmp_path):
    from backprop_verify.reports.cli import build_parser
    from backprop_verify.reports.commands.report import main

    out = tmp_path / "run"
    args = build_parser().parse_args(["report", "--no-plots", "--quiet", "--out", str(out), "--random", "3",
                                      "--random-conv", "1", "--random-recurrent", "1", "--random-transformer", "1",
                                      "--only", "^(random|seed004)"])
    assert main(args) == 0
    text = (out / "discrepancies.csv").read_text(encoding="utf-8")
    frame = table.read_csv_text(text)
    assert text.count("\n") > 100
    assert table.csv_text(frame) == table.csv_text_plain(frame) == text


MUTANTS = {
    "quotes-not-doubled": ("_quoted", lambda cell: f'"{cell}"' if any(c in cell for c in ',"\n\r') else cell),
    "no-quotes": ("_quoted", lambda cell: cell),
    "missing-as-empty": ("_column_text", None),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_injected_bug_in_the_cell_writer_is_caught(monkeypatch, mutant):
    name, replacement = MUTANTS[mutant]
    if mutant == "missing-as-empty":
        original = table._column_text

        def replacement(column_name, column):
            return [("" if cell == "nan" and column_name in ("note", "triage") else cell)
                    for cell in original(column_name, column)]
    monkeypatch.setattr(table, name, replacement)
    frame = pd.DataFrame(HOSTILE, columns=list(COLUMNS))
    assert table.csv_text(frame) != table.csv_text_plain(frame)
