"""The numbers README.md and docs/ quote from a report run, against a fresh run.

One default report (``backprop-verify report --no-plots``: seed 0, the default
counts) runs once, in a subprocess, and one test — one, so that ``pytest -n 2``
cannot hand its parts to two workers and run the report twice — reads what each
document quotes (parsed out of the document, never copied here), compares it
with what that run wrote, and reports every difference at once:

* README.md, "What a report says": the result line and the per-component rows
  it quotes, against ``summary.md``;
* docs/report.md, "Measured": the default run's scenarios, addresses and the
  size of ``discrepancies.csv``;
* docs/tolerance.md, "Measured worst cases": a run restricted by ``--only``
  (the regular expression is read from the document's command). Its numbers are
  the default run's rows of the scenarios that expression selects — the same
  scenarios, verified the same way — summarised by the report's own
  ``component_summary``, so the one default run covers it too.

When the engine or the policy changes the numbers, these tests fail, naming the
document, what it quotes and what the run gives: update the document from a run
(never the other way round). Wall times (docs/report.md, docs/bench.md) are
measurements of a machine and are not checked here.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REPORT_DOC = ROOT / "docs" / "report.md"
TOLERANCE_DOC = ROOT / "docs" / "tolerance.md"
TOTALS = re.compile(r"^\d[\d,]* scenarios, ")  # how the result line of summary.md starts
UPDATE = "\n-> update the document from a run (`backprop-verify report --no-plots`), never the other way round"

pytestmark = pytest.mark.subprocess


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """The default seed-0 report's folder, its summary.md, and (computed when first asked) the rows of
    the scenarios docs/tolerance.md's ``--only`` selects with their per-component summary."""

    folder: Path
    summary: str

    @functools.cached_property
    def restricted(self):
        from backprop_verify.reports.rendering.table import component_summary, read_csv_text
        from backprop_verify.scenarios.builtin import report_scenarios

        _, only = _tolerance_doc()
        frame = read_csv_text((self.folder / "discrepancies.csv").read_text(encoding="utf-8"))
        scenarios = report_scenarios(only=only)  # the default counts and seed, as the run's
        names = {s.name for s in scenarios}
        rows = frame[frame["scenario"].isin(names)]
        if set(rows["scenario"]) != names:
            raise AssertionError(f"the default run has no rows for {sorted(names - set(rows['scenario']))[:5]}, "
                                 f"which --only '{only}' (docs/tolerance.md) selects")
        return rows, component_summary(rows, {s.name: s.component_names() for s in scenarios})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """The default seed-0 report (discrepancies.csv, summary.md), run once."""
    out = tmp_path_factory.mktemp("default-report")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "backprop_verify.reports.cli", "report", "--no-plots", "--out", str(out)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                               stdin=subprocess.DEVNULL)
    # 0: every address passed; 1: some failed (the documents may then quote failures): both are a run.
    if completed.returncode not in (0, 1) or not (out / "summary.md").is_file():
        pytest.fail(f"`backprop-verify report --no-plots` exited {completed.returncode} without a report; "
                    f"stderr ends:\n{completed.stderr[-3000:]}")
    return Run(out, (out / "summary.md").read_text(encoding="utf-8"))


def test_the_numbers_the_documents_quote_are_the_default_run_s(run):
    problems = []
    for check in (readme_result_line, readme_component_rows, report_doc_default_run, tolerance_doc_totals,
                  tolerance_doc_worst_cases):
        try:
            check(run)
        except AssertionError as err:
            problems.append(str(err))
    assert not problems, "\n\n".join(problems)


def _require(condition, message: str) -> None:
    """A failed check as an AssertionError with only ``message`` (the one test collects them all)."""
    if not condition:
        raise AssertionError(message)


def _section(markdown: str, heading: str, where: str) -> list[str]:
    """The lines of a ``## heading`` section, up to the next ``## ``."""
    lines = markdown.splitlines()
    try:
        start = lines.index(f"## {heading}") + 1
    except ValueError:
        raise AssertionError(f"{where} has no section '## {heading}'") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def _run_totals_line(summary: str) -> str:
    found = [line for line in _section(summary, "Result", "summary.md") if TOTALS.match(line)]
    _require(len(found) == 1,
             f"summary.md's '## Result' has {len(found)} totals lines; expected one:\n{summary[:2000]}")
    return found[0]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _run_component_table(summary: str) -> tuple[list[str], dict[tuple[str, str, str], list[str]]]:
    """summary.md's per-component table: its header cells, and every row's cells by (component, dtype, pair)."""
    rows = [_cells(line) for line in _section(summary, "Per component", "summary.md") if line.startswith("|")]
    _require(len(rows) > 2, "summary.md's '## Per component' has no table")
    header, body = rows[0], rows[2:]  # rows[1] is the |---| line
    return header, {tuple(r[:3]): r for r in body}


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*(?:\.\d+)?(?:e[+-]\d+)?", text)


def _differences(quoted: str, actual: str) -> str:
    """The numbers that differ, in order ("94628 → 94802"), when both texts hold as many numbers."""
    a, b = _numbers(quoted), _numbers(actual)
    if len(a) != len(b):
        return ""
    changed = [f"{x} → {y}" for x, y in zip(a, b) if x.replace(",", "") != y.replace(",", "")]
    return f"\n  numbers quoted → numbers of the run: {', '.join(changed)}" if changed else ""


# ----------------------------------------------------------------------------- README.md


def _readme_report_block() -> list[str]:
    """The fenced block of README.md that quotes the result line (and the sample rows)."""
    text = README.read_text(encoding="utf-8")
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        lines = block.splitlines()
        if any(TOTALS.match(line) for line in lines):
            return lines
    raise AssertionError("README.md quotes no result line (a fenced block with a line 'N scenarios, …'); "
                         "expected the one under 'What a report says'")


def _readme_totals() -> str:
    lines = _readme_report_block()
    start = next(i for i, line in enumerate(lines) if TOTALS.match(line))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return " ".join(" ".join(lines[start:end]).split())  # the quote is wrapped: one line, single spaces


def readme_result_line(run: Run) -> None:
    quoted, actual = _readme_totals(), " ".join(_run_totals_line(run.summary).split())
    _require(quoted == actual, (
        f"README.md ('What a report says') quotes the result line\n  {quoted}\n"
        f"but the default seed-0 report (backprop-verify report --no-plots) gives, in summary.md,\n  {actual}"
        + _differences(quoted, actual) + UPDATE))


def readme_component_rows(run: Run) -> None:
    rows = [_cells(line) for line in _readme_report_block() if line.startswith("|")]
    _require(len(rows) >= 2,
             "README.md's quoted report has no per-component rows; expected a header and sample rows")
    quoted_header, quoted_rows = rows[0], rows[1:]
    header, table = _run_component_table(run.summary)
    _require(quoted_header == header, (
        f"README.md quotes the per-component header\n  {quoted_header}\nbut the run's summary.md has\n  {header}"))
    problems = []
    for row in quoted_rows:
        key = tuple(row[:3])
        if key not in table:
            problems.append(f"README.md quotes a row for {' '.join(key)}, which the run's per-component table "
                            "does not have")
            continue
        for column, said, got in zip(header, row, table[key]):
            if said != got:
                problems.append(f"README.md row {' '.join(key)}: {column} quoted {said}, the run gives {got}")
    _require(not problems,
             "\n".join(problems) + "\n(the default seed-0 report, summary.md '## Per component')" + UPDATE)


# ----------------------------------------------------------------------------- docs/report.md


def report_doc_default_run(run: Run) -> None:
    text = " ".join(REPORT_DOC.read_text(encoding="utf-8").split())
    quoted = re.search(r"the default run \((\d[\d,]*) scenarios, (\d[\d,]*) addresses; "
                       r"`discrepancies\.csv` ≈ (\d+(?:\.\d+)?) MB\)", text)
    _require(quoted, "docs/report.md ('Measured') no longer quotes 'the default run (N scenarios, M addresses; "
                     "`discrepancies.csv` ≈ S MB)'; expected it (or update this test with the document)")
    actual = re.match(r"(\d+) scenarios, (\d+) addresses compared", _run_totals_line(run.summary))
    _require(actual, "summary.md's result line does not start 'N scenarios, M addresses compared': "
                     + run.summary[:500])
    said = (_number(quoted[1]), _number(quoted[2]))
    got = (int(actual[1]), int(actual[2]))
    if said != got:
        raise AssertionError(f"docs/report.md ('Measured') quotes the default run as {said[0]:,} scenarios, "
                             f"{said[1]:,} addresses; the default seed-0 report gives {got[0]:,} scenarios, "
                             f"{got[1]:,} addresses" + UPDATE)
    # ≈ stands for the size rounded to the digits shown (MB = 10⁶ bytes), as a printed number does in `check`
    digits = len(quoted[3].partition(".")[2])
    size = (run.folder / "discrepancies.csv").stat().st_size / 1e6
    _require(round(size, digits) == float(quoted[3]), (
        f"docs/report.md ('Measured') quotes `discrepancies.csv` ≈ {quoted[3]} MB; the default seed-0 report "
        f"writes {size:.{digits + 2}f} MB" + UPDATE))


# ----------------------------------------------------------------------------- docs/tolerance.md


def _tolerance_doc() -> tuple[str, str]:
    """docs/tolerance.md's 'Measured worst cases' section (text) and the --only expression of its command."""
    text = TOLERANCE_DOC.read_text(encoding="utf-8")
    section = text.partition("## Measured worst cases")[2].partition("\n## ")[0]
    _require(section, "docs/tolerance.md has no section '## Measured worst cases'")
    command = re.search(r"backprop-verify report --only '([^']+)'", section)
    _require(command,
             "docs/tolerance.md ('Measured worst cases') has no `backprop-verify report --only '…'` command")
    return section, command[1]


def _update_restricted(only: str) -> str:
    return (f"\n-> update the document from a run (`backprop-verify report --only '{only}' --no-plots`), never the "
            "other way round")


def tolerance_doc_totals(run: Run) -> None:
    section, only = _tolerance_doc()
    flat = " ".join(section.split())
    quoted = re.search(r"\((\d[\d,]*) scenarios, (\d[\d,]*) addresses, (\d[\d,]*) failures, "
                       r"(\d[\d,]*) floor passes\)", flat)
    _require(quoted, "docs/tolerance.md ('Measured worst cases') no longer quotes '(N scenarios, M addresses, "
                     "F failures, P floor passes)'; expected it (or update this test with the document)")
    rows, _ = run.restricted
    said = tuple(_number(q) for q in quoted.groups())
    got = (rows["scenario"].nunique(), len(rows), int((rows["status"] == "fail").sum()),
           int((rows["status"] == "floor").sum()))
    names = ("scenarios", "addresses", "failures", "floor passes")
    if said != got:
        raise AssertionError(f"docs/tolerance.md ('Measured worst cases', --only '{only}') quotes "
                             + ", ".join(f"{n:,} {name}" for n, name in zip(said, names))
                             + "; the default seed-0 report's rows of those scenarios give "
                             + ", ".join(f"{n:,} {name}" for n, name in zip(got, names)) + _update_restricted(only))


def tolerance_doc_worst_cases(run: Run) -> None:
    from backprop_verify.reports.rendering.table import cell

    section, only = _tolerance_doc()
    table = [_cells(line) for line in section.splitlines() if line.startswith("| ")]
    _require(len(table) > 1 and table[0][0] == "component",
             "docs/tolerance.md ('Measured worst cases') has no table headed '| component | …'")
    columns = []
    for heading in table[0][1:]:  # "manual–torch float64": the pair (en dash) and the dtype
        pair, _, dtype = heading.partition(" ")
        columns.append((pair.replace("–", "-"), dtype))
    _, summary = run.restricted
    worst = {(r.component, r.dtype, r.pair): cell(r.worst_max_rel) for r in summary.itertuples()}
    problems = []
    for row in table[1:]:
        if set(row[0]) <= {"-"}:
            continue  # the |---| line
        for (pair, dtype), said in zip(columns, row[1:]):
            got = worst.get((row[0], dtype, pair), "—")  # no such row: nothing to quote
            if said != got:
                problems.append(f"{row[0]} {pair} {dtype}: quoted {said}, the run gives {got}")
    quoted_components = {row[0] for row in table[1:] if not set(row[0]) <= {"-"}}
    missing = sorted({c for c, _, _ in worst} - quoted_components)
    if missing:
        problems.append(f"components the run has and the table does not quote: {', '.join(missing)}")
    _require(not problems, f"docs/tolerance.md ('Measured worst cases', worst_max_rel of --only '{only}'):\n  "
                           + "\n  ".join(problems)
                           + "\n(the default seed-0 report's rows of those scenarios, per component)"
                           + _update_restricted(only))
