"""``backprop-verify report --engine MODULE:ATTRIBUTE``: the report's scenarios through a user's engine.

The user's engine (``manual.protocol.load_engine``) stands in for the
hand-written one: every scenario of the report's set that it supports
(``runner.engine_scenarios``, the same ``--seed``, ``--random…`` counts and
``--only``) is verified in this process by ``runner.report_verification(s,
engine=engine)``, its rows paired ``engine-torch``, ``engine-fd`` and
``torch-fd``. The run writes into ``--out`` through the report's
``RunFolder`` (lock, manifest, stale files of the earlier report removed):

* ``discrepancies.csv`` — the rows, in the report's format;
* ``summary.md`` — the engine, the totals, the failures, the shrunk networks and
  every scenario not applicable with its reason (``summary.render_engine_markdown``);
* ``not_applicable.csv`` — ``scenario,reason``, one line per scenario not run;
* ``shrunk/NAME-shrunk.toml`` — for each failing random network (at most
  ``MAX_SHRUNK``, in the report's order), the smallest scenario that still fails
  the same way (``shrink.shrink``); written before the manifest, and listed in
  summary.md and in the manifest's run entry (``shrunk``).

report.html and the plots are drawn for the hand-written engine's report (its
sections compare manual's traces): this run writes none and removes those of
an earlier report, as ``--no-plots`` does. An engine that raises on a scenario
fails that scenario — the exception named in summary.md and on the terminal —
and the other scenarios still run: one crash does not hide their verdicts.

Exit: 0 when no ``engine-torch`` or ``engine-fd`` row fails and the engine
raised on nothing; 1 otherwise (``torch-fd`` rows judge the oracle, not the
engine: counted, not the exit status); 2 as the report (bad options, a folder
another run holds).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import sys
from pathlib import Path

from backprop_verify.reports.rendering.io import FolderRefused, RunFolder, atomic_write_many, checkpoint

NOT_APPLICABLE = "not_applicable.csv"
SHRUNK = "shrunk"      # the subfolder of --out that holds the shrunk scenario files
MAX_SHRUNK = 5         # shrinking runs the engine on many candidates: at most this many failing networks a run
PREFIX = "backprop-verify report"


def load(spec: str):
    """The engine of ``--engine spec``, or None after printing the refusal (exit 2). NumPy only: no torch."""
    from backprop_verify.manual.protocol import EngineError, load_engine

    try:
        return load_engine(spec)
    except EngineError as err:
        print(f"{PREFIX}: --engine: {err}", file=sys.stderr)
        return None


def refusals(args: argparse.Namespace) -> list[str]:
    """The options ``--engine`` cannot take, each as ``--option: PROBLEM; expected WHAT``."""
    problems = []
    if args.workers > 1:
        problems.append(f"--workers: {args.workers} with --engine; expected 1 (a user's engine is verified in this "
                        "process: its module is imported here, not in pytest workers)")
    if args.compare_to is not None:
        problems.append("--compare-to: not with --engine; expected --compare-to on a report of the hand-written "
                        "engine")
    if getattr(args, "detail", None):
        problems.append("--detail: not with --engine; expected --detail without --engine (report.html is drawn "
                        "for the hand-written engine's report only)")
    return problems


def not_applicable_csv(not_applicable: list[tuple[str, str]]) -> str:
    """``scenario,reason``, one line per scenario the engine does not support, in the report's order."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["scenario", "reason"])
    writer.writerows(not_applicable)
    return text.getvalue()


def verify_all(engine, scenarios: list) -> tuple[list[dict], dict[str, str], dict[str, list[dict]]]:
    """(every row, {scenario: what the engine raised}, {failing random scenario: its rows}) — each scenario
    verified once; the rows of the failing random networks are kept for ``failure_kind``."""
    from backprop_verify.reports.commands.report_run import progress
    from backprop_verify.reports.verification.runner import report_verification  # torch

    rows, crashed, failing = [], {}, {}
    with progress(len(scenarios), f"verifying engine {engine.name!r}") as bar:
        for scenario in scenarios:
            checkpoint()
            try:
                verified = report_verification(scenario, engine=engine)
            except Exception as err:  # noqa: BLE001 — the user's engine crashed on this scenario: its verdict
                crashed[scenario.name] = f"raised {type(err).__name__}: {err}"
            else:
                rows += verified.rows
                if scenario.name.startswith("random-") and verified.failures():
                    failing[scenario.name] = verified.rows
            bar.update(1)
    return rows, crashed, failing


def shrink_failures(engine, scenarios: list, failing: dict[str, list[dict]]
                    ) -> tuple[dict[str, str], list[tuple[str, str]], list[tuple[str, str]]]:
    """({relative path: scenario file}, [(scenario, relative path)], [(scenario, why not shrunk)]) for the
    first ``MAX_SHRUNK`` failing random networks; the others are listed as beyond the cap."""
    from backprop_verify.reports.verification.shrink import failing_like, failure_kind, scenario_to_toml, shrink

    files, shrunk, not_shrunk = {}, [], []
    by_name = {s.name: s for s in scenarios}
    for position, name in enumerate(failing):
        if position >= MAX_SHRUNK:
            not_shrunk.append((name, f"beyond the first {MAX_SHRUNK} failing random networks of this run"))
            continue
        checkpoint()
        scenario = by_name[name]
        kind = failure_kind(scenario, failing[name])
        if kind is None:  # only engine-fd fails: shrinking follows the engine-torch rows
            not_shrunk.append((name, "only its engine-fd rows fail; shrinking follows engine-torch"))
            continue
        try:
            smallest = shrink(scenario, failing_like(kind, engine))
        except ValueError as err:
            not_shrunk.append((name, str(err)))
            continue
        path = f"{SHRUNK}/{smallest.name}.toml"
        files[path] = scenario_to_toml(smallest)
        shrunk.append((name, path))
    return files, shrunk, not_shrunk


def main(args: argparse.Namespace) -> int:
    """``report --engine``: refuse what it cannot take and a spec that does not load (before torch is
    imported), take the output folder, verify, shrink, publish, print."""
    from backprop_verify.reports.commands import options
    from backprop_verify.reports.commands.report_run import TABLES, output_names, reproduce_command, transformer_count

    problems = refusals(args)
    problem = options.writable_folder(args.out)
    if problem:
        problems.append(f"--out: {problem}")
    if options.refused("report", problems):
        return 2
    engine = load(args.engine)
    if engine is None:
        return 2
    from backprop_verify.reports.verification.runner import engine_scenarios

    scenarios, not_applicable = engine_scenarios(
        engine, random_count=args.random, seed=args.seed, conv_count=args.random_conv,
        recurrent_count=args.random_recurrent, transformer_count=transformer_count(args), only=args.only)
    if not scenarios and not not_applicable:
        print(f"{PREFIX}: --only: {args.only!r} matches no scenario; expected a pattern that matches at least one "
              "scenario name (re.search)", file=sys.stderr)
        return 2
    command_line = getattr(args, "command_line", None) or ["backprop-verify", "report", "--engine", args.engine]
    writes = TABLES + (NOT_APPLICABLE,)
    try:
        with RunFolder.claim(args.out, "report", command_line, {"seed": args.seed, "engine": engine.name}) as folder:
            folder.expect(outputs=output_names() + (NOT_APPLICABLE,), writes=writes)
            data, shrunk_files = build(args, engine, scenarios, not_applicable, reproduce_command(args))
            files = {"discrepancies.csv": data.csv, "summary.md": data.summary, NOT_APPLICABLE:
                     not_applicable_csv(not_applicable)}
            if shrunk_files:
                atomic_write_many({folder.path / name: text for name, text in shrunk_files.items()})
                folder.details["shrunk"] = sorted(shrunk_files)  # recorded in manifest.json's run entry
            folder.publish(files)
    except FolderRefused as err:
        print(f"{PREFIX}: --out: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"{PREFIX}: {err}", file=sys.stderr)
        return 2
    return print_results(args, data.report)


class _Built:
    def __init__(self, csv: str, summary: str, report):
        self.csv, self.summary, self.report = csv, summary, report


def build(args: argparse.Namespace, engine, scenarios: list, not_applicable: list[tuple[str, str]],
          command: str) -> tuple[_Built, dict[str, str]]:
    """(discrepancies.csv and summary.md text with the ``EngineReportData`` they come from, {relative path:
    shrunk scenario file}). Writes nothing."""
    from backprop_verify.reports.commands.report_run import one_thread, transformer_count
    from backprop_verify.reports.rendering.summary import EngineReportData, render_engine_markdown
    from backprop_verify.reports.rendering.table import csv_text, read_csv_text, rows_frame

    one_thread()  # every number from one thread, as in the hand-written engine's report
    rows, crashed, failing = verify_all(engine, scenarios)
    csv = csv_text(rows_frame(rows))
    frame = read_csv_text(csv)  # the summary is computed from the file's own numbers
    shrunk_files, shrunk, not_shrunk = shrink_failures(engine, scenarios, failing)
    checkpoint()
    data = EngineReportData(
        engine=engine.name, spec=args.engine, seed=args.seed,
        counts={"dense": args.random, "convolutional": args.random_conv, "recurrent": args.random_recurrent,
                "transformer": transformer_count(args)},
        only=args.only, frame=frame, components={s.name: s.component_names() for s in scenarios},
        command=command,
        timestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        not_applicable=list(not_applicable), crashed=crashed, shrunk=shrunk, not_shrunk=not_shrunk,
        max_shrunk=MAX_SHRUNK)
    return _Built(csv, render_engine_markdown(data), data), shrunk_files


def print_results(args: argparse.Namespace, data) -> int:
    """The failure lines (unless ``--quiet``), the shrunk files, the totals line naming the engine; the exit
    status: 1 when the engine fails a row or raised on a scenario, else 0."""
    from backprop_verify.reports.rendering.table import failure_lines

    out = Path(args.out)
    totals = data.totals()
    if not getattr(args, "quiet", False):
        lines = failure_lines(data.frame[data.engine_rows]) if not data.frame.empty else []
        lines += [f"FAIL {name}: {message}" for name, message in data.crashed.items()]
        if lines:
            print(f"{totals['failures']} failures of engine {data.engine!r} (address[worst element]: both values "
                  "there; tolerance):")
            print("\n".join(lines) + "\n")
    for name, path in data.shrunk:
        print(f"{name}: shrunk to {out / path}")
    print(f"engine {data.engine!r}: {totals['scenarios']} scenarios, {totals['rows']} addresses compared, "
          f"{totals['failures']} failures, {totals['not_applicable']} not applicable; report in {out}/")
    return 1 if totals["failures"] else 0
