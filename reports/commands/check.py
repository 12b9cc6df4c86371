"""``backprop-verify check FILE...``: the numbers a worked example printed, judged.

Every file is validated first; if any is invalid, the error (file, field,
problem) is printed and nothing is run or written (exit 2). Then each file runs
through the NumPy engine and PyTorch autograd in float64, every ``[[expect]]``
and every named check of the example gets a verdict (``reports.textbook.errata``), a
table (address, printed, computed, verdict) is printed per example, and
``textbook.csv`` (columns ``example,at,printed,decimals,manual,reference,verdict``)
is written atomically into ``--out``. A printed number with more digits than the
engines' float64 values resolve is judged at float64's resolution (the table then
shows the computed value with every digit float64 has, and a section "Judged at
float64's resolution" lists such rows with the note that says why). Every ``[[claim]]`` (a derivation stated as
a formula, ``reports.textbook.claims``) is judged ``holds`` or ``wrong`` against
autograd, printed under its example (``worst_rel (all draws)``: the worst over
the file's data and every draw; under a wrong claim, the first breaking draw and
its own discrepancy) and written to ``claims.csv`` (columns
``example,statement,at,verdict,worst_rel,draws``) beside textbook.csv, in the
same atomic write. A claim's formula is first evaluated on zero arrays of the
file's shapes: one that cannot be evaluated is an invalid file (exit 2).

Exit codes: 0 every verdict is match or rounding and every claim holds; 1 any erratum, any wrong claim, or any
``disagree`` (the two engines disagree beyond the tolerance policy: a bug in an
engine, reported loudly and never averaged; finite differences, where they
apply, say which side they take); 2 an invalid file or option (a FILE that
is not a regular file — a folder, a FIFO, a device —, the same FILE twice, an
``--out`` that cannot be written, an ``--out`` another run is writing into),
checked before anything runs; 130 Ctrl-C, 143 SIGTERM (nothing written).

``--derivations`` also runs the registry of the documents' gradient formulas
(``reports.textbook.derivations``) against autograd, prints their verdicts and writes
``derivations.csv``; their verdicts describe the documents and do not change
the exit code (except an internal inconsistency, exit 1).

The files go into ``--out`` together, with ``manifest.json`` last, once
everything is computed; the folder is the run's while it runs
(``reports.rendering.io.RunFolder``: a second run into it is refused, exit 2),
and the files of the folder's earlier ``check`` run that this one does not
write (``derivations.csv`` before a run without ``--derivations``) are removed.

Ctrl-C and SIGTERM stop ``check`` at once, wherever they land (inside a claim's
evaluation or an engine run too: ``immediate_interrupts``; neither engine calls
Python code from inside torch), except while its files are being renamed into
place.

The arguments and every file are checked before torch (or pandas) is imported:
the engines, the claims and the tables are imported inside the functions that
use them, so a refusal costs a fraction of a second.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from backprop_verify.reports.commands import options
from backprop_verify.reports.rendering.io import FolderRefused, RunFolder, immediate_interrupts
from backprop_verify.scenarios.loader import DEFAULT_LIMITS, Limits, ScenarioError, load_scenario
from backprop_verify.scenarios.model import Scenario

TEXTBOOK, CLAIMS, DERIVATIONS = "textbook.csv", "claims.csv", "derivations.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE", help="worked-example scenario files (TOML) with [[expect]] tables")
    parser.add_argument("--out", type=options.output_folder, default="reports/out",
                        help="output folder for textbook.csv (default: reports/out)")
    parser.add_argument("--limit", type=options.limit, action="append", default=[], metavar="NAME=N",
                        help="raise one of the loader's limits for this run (" + ", ".join(options.LIMIT_NAMES)
                             + "; docs/scenario-format.md#limits)")
    parser.add_argument("--derivations", action="store_true",
                        help="also check every document's gradient formulas against autograd (derivations.csv)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the totals line (no tables, no failure lines)")


# The functions below that judge or print verdicts import ``reports.textbook.errata`` (and the claims, the
# comparison, pandas) where they run: those modules import torch, which only a run that goes ahead needs.

def _computed(row: dict) -> str:
    from backprop_verify.reports.textbook.errata import DISAGREE

    if row["verdict"] == DISAGREE:
        return f"manual {_number(row['manual'])} ≠ torch {_number(row['reference'])}"
    if row.get("resolution") is not None:  # printed beyond float64's resolution: every digit float64 has
        return repr(float(row["reference"]))
    return _number(row["reference"])


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".6g") if abs(value) >= 1e-4 else format(value, ".4e")


def _table(rows: list[dict]) -> str:
    headers = ("address", "printed", "computed", "verdict")
    cells = [(r["at"], r["printed"], _computed(r), r["verdict"]) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    line = lambda values: "  " + "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(c) for c in cells])


def _failure_line(row: dict) -> str:
    """An erratum or a disagreement at a printed number: where, both engines' values, the tolerance."""
    from backprop_verify.reports.textbook.errata import DISAGREE
    from backprop_verify.reports.verification.tolerance import tolerance as tolerance_of

    if row["verdict"] == DISAGREE:
        tolerance = f"tolerance {tolerance_of('float64', 'manual-torch'):.0e} relative (the engines disagree)"
    elif row.get("exact"):
        tolerance = "tolerance 0 (a count: equality)"
    elif row.get("resolution") is not None:
        tolerance = (f"tolerance ±{row['resolution']:.2g} around the engines' values (float64's resolution here: "
                     f"the printed {row['decimals']} decimals are finer)")
    else:
        unit = f"1e-{row['decimals']}" if row["decimals"] else "1"
        tolerance = f"tolerance ±{unit} (one unit of the printed {row['decimals']} decimals)"
    return (f"FAIL {row['example']} {row['at']}: printed {row['printed']}, manual {_exact(row['manual'])}, "
            f"torch {_exact(row['reference'])}; {row['verdict']}; {tolerance}")


def _exact(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else format(float(value), ".17g")


def _engine_failure_lines(example) -> list[str]:
    """Where manual and torch disagree anywhere in the example (float64): one line per address, with
    its worst element (``reports.rendering.table.failure_line``), from the traces its verdicts were
    judged on (no engine runs again). ``example``: an ``errata.ExampleCheck``."""
    from backprop_verify.reports.rendering.table import failure_line
    from backprop_verify.reports.verification.compare import FAIL, compare

    rows = compare(example.manual, example.reference, "float64", "manual-torch")
    return [failure_line({"scenario": example.scenario.name, "pair": "manual-torch", **row._asdict()})
            for row in rows if row.status == FAIL]


def csv_text(rows: list[dict]) -> str:
    """The textbook.csv contents: one line per verdict, in file and check order."""
    import pandas as pd

    from backprop_verify.reports.textbook.errata import COLUMNS

    frame = pd.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], columns=list(COLUMNS))
    return frame.to_csv(index=False, float_format="%.15g", lineterminator="\n")


def _file_problems(files: list[str]) -> list[str]:
    """FILE arguments that are not regular files (a folder, a FIFO that would block, a device such as
    /dev/zero that never ends) or that name a file already given: one problem line each."""
    problems, seen = [], {}
    for name in files:
        path = Path(name)
        try:
            if not path.exists():
                problems.append(f"{name}: no such file; expected a scenario file (TOML)")
                continue
            if not path.is_file():
                kind = "a folder" if path.is_dir() else "not a regular file"
                problems.append(f"{name}: {kind}; expected a scenario file (TOML)")
                continue
            identity = (path.stat().st_dev, path.stat().st_ino)
        except OSError as err:
            problems.append(f"{name}: cannot be read ({err.strerror}); expected a scenario file (TOML)")
            continue
        if identity in seen:
            problems.append(f"{name}: the same file as {seen[identity]}, given twice; expected each FILE once")
            continue
        seen[identity] = name
    return problems


@dataclasses.dataclass
class _Checked:
    """Every example run: its verdicts (``errata.ExampleCheck``, with the traces they were judged on), its
    claims (``claims.ClaimResult``) and, with ``--derivations``, the registry's results."""
    examples: list = dataclasses.field(default_factory=list)
    claims: list = dataclasses.field(default_factory=list)
    derivations: list | None = None

    @property
    def rows(self) -> list[dict]:
        return [row for example in self.examples for row in example.rows]


def _refused(args: argparse.Namespace) -> bool:
    """Step 1: the FILE arguments and ``--out``, before anything is read (exit 2, one line each)."""
    if not args.files and not args.derivations:
        print("backprop-verify check: FILE: none given; expected at least one scenario file (or --derivations)",
              file=sys.stderr)
        return True
    problems = _file_problems(args.files)
    problem = options.writable_folder(args.out)
    if problem:
        problems.append(f"--out: {problem}")
    return options.refused("check", problems)


def _invalid(err: ScenarioError, what: str = "run or written") -> None:
    print(f"backprop-verify check: {err}", file=sys.stderr)
    print(f"nothing was {what}", file=sys.stderr)


def _load_all(files: list[str], limits: Limits) -> list[Scenario] | None:
    """Step 2: every file loaded (NumPy only), then every claim's formula evaluated on zero arrays of the
    file's shapes (no engine runs); None, after the message, if any file is invalid."""
    scenarios = []
    for path in files:
        try:
            scenarios.append(load_scenario(path, limits))
        except ScenarioError as err:
            _invalid(err)
            return None
    if not any(scenario.claims for scenario in scenarios):
        return scenarios
    from backprop_verify.reports.textbook import claims as claim_checks  # torch: the files are read and good

    for scenario in scenarios:
        try:
            claim_checks.validate_claims(scenario, limits)
        except ScenarioError as err:
            _invalid(err)
            return None
    return scenarios


def _check_all(scenarios: list[Scenario], limits: Limits, quiet: bool) -> _Checked | None:
    """Step 3: each example through both engines once (``errata.check_example``), its claims judged, its
    table printed; None, after the message, if a claim's evaluation-time guard refuses the data."""
    from backprop_verify.reports.textbook import claims as claim_checks
    from backprop_verify.reports.textbook.errata import check_example

    checked = _Checked()
    for scenario in scenarios:
        example = check_example(scenario)
        checked.examples.append(example)
        try:
            claims = claim_checks.check_claims(scenario, limits, first=(example.manual, example.reference))
        except ScenarioError as err:  # an evaluation-time guard on the data: refused, nothing written
            _invalid(err, "written")
            return None
        checked.claims += claims
        if not quiet:
            _print_example(scenario, example.rows, claims)
    return checked


def _print_example(scenario: Scenario, rows: list[dict], claims: list) -> None:
    from backprop_verify.reports.textbook import claims as claim_checks

    print(f"{scenario.name} ({scenario.path})")
    print(_table(rows) if rows else "  (no printed numbers to check)")
    if claims:
        print("  claims (each formula against autograd, on the file's data and seeded random draws):")
        print(claim_checks.claims_text(claims))
    print()


def _files(checked: _Checked, examples: bool) -> dict[str, str]:
    """Step 5's files: textbook.csv and claims.csv (if any FILE was given), derivations.csv (with
    ``--derivations``)."""
    files = {}
    if examples:
        from backprop_verify.reports.textbook import claims as claim_checks

        files[TEXTBOOK] = csv_text(checked.rows)
        files[CLAIMS] = claim_checks.csv_text(checked.claims)
    if checked.derivations is not None:
        from backprop_verify.reports.textbook.derivations import frame_of

        files[DERIVATIONS] = frame_of(checked.derivations).to_csv(index=False, float_format="%.3e",
                                                                  lineterminator="\n")
    return files


def _summarise(out: Path, checked: _Checked, quiet: bool) -> int:
    """Step 6: the totals, then (unless ``--quiet``) the wrong claims, the rows judged at float64's
    resolution, every verdict other than match and the failure lines; the exit status (0 or 1)."""
    from backprop_verify.reports.textbook import claims as claim_checks
    from backprop_verify.reports.textbook.errata import DISAGREE, ERRATUM, MATCH, PASSING, ROUNDING

    rows, claim_results, files = checked.rows, checked.claims, len(checked.examples)
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in (MATCH, ROUNDING, ERRATUM, DISAGREE)}
    print(f"{len(rows)} printed number{'s' * (len(rows) != 1)} in {files} file{'s' * (files != 1)}: "
          + ", ".join(f"{n} {v}" for v, n in counts.items()) + f"; rows in {out / TEXTBOOK}")
    wrong_claims = [r for r in claim_results if r.verdict == claim_checks.WRONG]
    if claim_results:
        print(f"{len(claim_results)} claim{'s' * (len(claim_results) != 1)}: "
              f"{len(claim_results) - len(wrong_claims)} holds, {len(wrong_claims)} wrong; rows in {out / CLAIMS}")
    if not quiet:
        _print_wrong_claims(wrong_claims)
        _print_findings(rows)
        _print_failures(checked)
    disagreements = [r for r in rows if r["verdict"] == DISAGREE]
    if disagreements:
        print(f"\nbackprop-verify check: manual and torch DISAGREE beyond the tolerance policy at "
              f"{len(disagreements)} address(es); no verdict is given there — an engine is wrong "
              f"(run `backprop-verify report` to locate it)", file=sys.stderr)
    return 1 if wrong_claims or any(r["verdict"] not in PASSING for r in rows) else 0


def _print_wrong_claims(wrong_claims: list) -> None:
    from backprop_verify.reports.textbook import claims as claim_checks

    if not wrong_claims:
        return
    print("\nWrong claims (the first draw that breaks each, with its own discrepancy; draw 0 is the file's "
          "data; worst_rel is the worst over all draws):")
    for r in wrong_claims:
        print(f"  wrong  {r.example}  {r.at}: {r.statement} — formula {r.formula}; "
              f"{claim_checks.first_breaking_draw(r)}; worst_rel {r.worst_rel:.2e} "
              + ("(the file's data, its only draw)" if r.draws == 0 else f"(all draws, 0–{r.draws})"))


def _print_findings(rows: list[dict]) -> None:
    """The rows judged at float64's resolution, then every verdict other than match."""
    from backprop_verify.reports.textbook.errata import MATCH

    beyond = [r for r in rows if r.get("resolution") is not None]
    if beyond:
        print("\nJudged at float64's resolution (printed with more digits than the engines' float64 values "
              "resolve; match: the printed number reads as that float64):")
        for r in beyond:
            print(f"  {r['verdict']:8}  {r['example']}  {r['at']}: printed {r['printed']}, "
                  f"computed {_computed(r)} — {r['note']}")
    findings = [r for r in rows if r["verdict"] != MATCH]
    if findings:
        print("\nNot a match:")
        for r in findings:
            print(f"  {r['verdict']:8}  {r['example']}  {r['at']}: printed {r['printed']}, "
                  f"computed {_computed(r)}" + (f" — {r['note']}" if r.get("note") else ""))


def _print_failures(checked: _Checked) -> None:
    """One line per erratum or disagreement, then, for an example whose engines disagree, every address
    where they do (from the example's own traces)."""
    from backprop_verify.reports.textbook.errata import DISAGREE, PASSING

    failing = [r for r in checked.rows if r["verdict"] not in PASSING]
    disputed = [e for e in checked.examples if any(r["verdict"] == DISAGREE for r in e.rows)]
    if not failing and not disputed:
        return
    print("\nFailures (one line each: the address and element, both engines' values there, the tolerance):")
    for r in failing:
        print(_failure_line(r))
    for example in disputed:
        for line in _engine_failure_lines(example):
            print(line)


def _print_derivations(out: Path, results: list) -> int:
    """Step 7 (``--derivations``): the registry's verdicts; 1 only for an internal inconsistency."""
    from backprop_verify.reports.textbook.derivations import derivation_text

    print("\nDerivations (each formula against torch autograd over seeded random inputs):")
    print(derivation_text(results))
    print(f"rows in {out / DERIVATIONS}")
    inconsistent = [r for r in results if r.inconsistent]
    for r in inconsistent:
        print(f"backprop-verify check: derivation {r.id}: {r.inconsistent}", file=sys.stderr)
    return 1 if inconsistent else 0


def main(args: argparse.Namespace) -> int:
    """Refuse bad arguments; load and validate every file; take the output folder; check each example
    (both engines once) and, if asked, the derivations; publish the files and the manifest together;
    summarise. From the first step to the publishing, a signal stops the command where it lands."""
    if _refused(args):
        return 2
    limits = dataclasses.replace(DEFAULT_LIMITS, **dict(args.limit))
    with immediate_interrupts():
        scenarios = _load_all(args.files, limits)
    if scenarios is None:
        return 2
    out = Path(args.out)
    writes = ((TEXTBOOK, CLAIMS) if scenarios else ()) + ((DERIVATIONS,) if args.derivations else ())
    command_line = getattr(args, "command_line", None) or ["backprop-verify", "check"]
    try:
        with RunFolder.claim(out, "check", command_line) as folder:
            folder.expect(outputs=(TEXTBOOK, CLAIMS, DERIVATIONS), writes=writes)
            with immediate_interrupts():
                checked = _check_all(scenarios, limits, args.quiet) if scenarios else _Checked()
                if checked is None:
                    return 2
                if args.derivations:
                    from backprop_verify.reports.textbook.derivations import evaluate_all  # torch

                    checked.derivations = evaluate_all()
                files = _files(checked, examples=bool(scenarios))
            folder.publish(files)
    except FolderRefused as err:
        options.refused("check", [f"--out: {err}"])
        return 2
    # The files are written: from here a signal is only recorded (reports.cli then says the files are complete).
    status = _summarise(out, checked, args.quiet) if scenarios else 0
    if checked.derivations is not None:
        status = max(status, _print_derivations(out, checked.derivations))
    return status
