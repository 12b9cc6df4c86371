"""``backprop-verify report``: every built-in scenario, every engine pair, one report.

Writes into ``--out`` (default ``reports/out``), all files replaced together
(``reports.rendering.io.atomic_write_many``) only once everything is computed:
``discrepancies.csv``, ``summary.md``, ``report.html``, the PNG plots of
``reports.rendering.plots.PLOTS`` and, with ``--compare-to``, ``changes.md``.

Exit codes: 0 every address passed (and nothing regressed); 1 a failure, or a
regression against ``--compare-to``; 2 bad options or a broken run; 130 Ctrl-C
(previous files untouched).
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits  # installed with scikit-learn
from tqdm import tqdm

import reports
from reports.rendering import diff
from reports.rendering.html import render_html
from reports.rendering.io import atomic_write_many
from reports.rendering.plots import all_plots
from reports.rendering.summary import ReportData, environment, render_changes_markdown, render_markdown
from reports.rendering.table import csv_text, markdown, read_csv_text, rows_frame
from reports.textbook.derivations import derivation_verdicts
from reports.textbook.errata import errata_table
from reports.verification.digits import digits_table
from reports.verification.runner import report_rows
from reports.verification.vanishing import vanishing_gradient
from scenarios.builtin import report_scenarios
from scenarios.generator import DEFAULT_RANDOM_COUNT, DEFAULT_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports/out", metavar="DIR", help="output folder (default: reports/out)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the random architectures (default: {DEFAULT_SEED})")
    parser.add_argument("--random", type=int, default=DEFAULT_RANDOM_COUNT, metavar="N",
                        help=f"number of seeded random architectures (default: {DEFAULT_RANDOM_COUNT})")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="verify scenarios in N processes with pytest-xdist (pytest -n N); default 1: in this process")
    parser.add_argument("--compare-to", default=None, metavar="OLD_DIR",
                        help="compare with the report in OLD_DIR; exit 1 on new failures or discrepancies grown >10x")
    parser.add_argument("--only", default=None, metavar="REGEX",
                        help="only scenarios whose name matches REGEX (re.search)")
    parser.add_argument("--no-plots", dest="plots", action="store_false",
                        help="skip the PNG plots and report.html (discrepancies.csv and summary.md only)")


class UsageError(ValueError):
    pass


def reproduce_command(args: argparse.Namespace) -> str:
    """The command that reproduces the report's content (not where it is written, nor how fast)."""
    words = ["backprop-verify", "report", "--seed", str(args.seed), "--random", str(args.random)]
    if args.only:
        words += ["--only", args.only]
    return " ".join(shlex.quote(w) for w in words)


def _progress(total: int, description: str):
    return tqdm(total=total, desc=description, unit="scenario", file=sys.stderr,
                disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)


def _one_thread() -> None:
    """One BLAS/torch thread, as in the pytest workers: the same arithmetic either way."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def rows_in_process(scenarios: list) -> str:
    """discrepancies.csv text, every scenario verified in this process."""
    rows = []
    with _progress(len(scenarios), "verifying") as bar:
        for scenario in scenarios:
            rows += report_rows(scenario)
            bar.update(1)
    return csv_text(rows_frame(rows))


def rows_with_xdist(args: argparse.Namespace, total: int) -> str:
    """discrepancies.csv text from ``pytest -n WORKERS reports/report_suite.py --report-dir TMP``."""
    package = Path(reports.__file__).resolve().parent
    root = package.parent
    with tempfile.TemporaryDirectory(prefix="backprop-verify-") as scratch:
        progress = Path(scratch) / "progress"
        progress.touch()
        log = Path(scratch) / "pytest.log"
        command = [sys.executable, "-m", "pytest", str(package / "report_suite.py"), "-q", "-p", "no:cacheprovider",
                   "-p", "reports.pytest_plugin", "-n", str(args.workers), f"--rootdir={root}",
                   "--report-dir", scratch, "--report-seed", str(args.seed), "--report-random", str(args.random),
                   "--report-progress", str(progress)]
        if args.only:
            command += ["--report-only", args.only]
        # A report started from inside a pytest-xdist worker must not look like one to its own pytest.
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("PYTEST_XDIST_") or k == "PYTEST_CURRENT_TEST")}
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = "1"
        with open(log, "wb") as log_file, _progress(total, f"verifying ({args.workers} workers)") as bar:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=root, env=env)
            try:
                while process.poll() is None:
                    time.sleep(0.2)
                    bar.update(progress.stat().st_size - bar.n)
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
        # pytest: 0 all passed, 1 some tests failed (failing rows are data); anything else broke.
        if process.returncode not in (0, 1):
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pytest -n {args.workers} exited with {process.returncode}:\n{tail}")
        csv_path = Path(scratch) / "discrepancies.csv"
        if not csv_path.is_file():
            raise RuntimeError("pytest finished without writing discrepancies.csv:\n"
                               + log.read_text(errors="replace")[-3000:])
        return csv_path.read_text(encoding="utf-8")


def build_report(args: argparse.Namespace, timestamp: str | None = None, with_plots: bool = True):
    """(files to write: name -> bytes or text, ReportData). Writes nothing."""
    old = diff.read_old(args.compare_to) if args.compare_to else None
    _one_thread()  # every number in the report (rows, vanishing gradient, digits) from one thread
    scenarios = report_scenarios(args.random, args.seed, args.only)
    if not scenarios:
        raise UsageError(f"--only {args.only!r}: no scenario matches")
    if args.workers > 1:
        csv = rows_with_xdist(args, len(scenarios))
    else:
        csv = rows_in_process(scenarios)
    frame = read_csv_text(csv)  # the summary is computed from the file's own numbers
    missing = sorted({s.name for s in scenarios} - set(frame["scenario"]))
    if missing:
        raise RuntimeError(f"{len(missing)} scenarios produced no rows, e.g. {missing[:5]}")

    data = ReportData(
        seed=args.seed, random_count=args.random, only=args.only, frame=frame,
        components={s.name: s.component_names() for s in scenarios},
        command=reproduce_command(args),
        timestamp=timestamp or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        environment=environment(), vanishing=vanishing_gradient(), digits=digits_table(),
        errata=errata_table(), derivations=derivation_verdicts())
    files: dict[str, bytes | str] = {"discrepancies.csv": csv, "summary.md": render_markdown(data)}
    if old is not None:
        data.changes = diff.changes(old, frame)
        data.compared_to = str(args.compare_to)
        files["changes.md"] = render_changes_markdown(data.changes, data.compared_to)
    if with_plots:
        plots = all_plots(data)
        files.update(plots)
        files["report.html"] = render_html(data, plots)
    return files, data


def main(args: argparse.Namespace) -> int:
    problems = []
    if args.random < 0:
        problems.append("--random: expected a count >= 0")
    if args.workers < 1:
        problems.append("--workers: expected a count >= 1")
    if args.only is not None:
        try:
            re.compile(args.only)
        except re.error as err:
            problems.append(f"--only: not a regular expression ({err})")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        problems.append(f"--out: {args.out} exists and is not a folder")
    if args.compare_to is not None and not Path(args.compare_to).is_dir():
        problems.append(f"--compare-to: {args.compare_to} is not a folder")
    if problems:
        for problem in problems:
            print(f"backprop-verify report: {problem}", file=sys.stderr)
        return 2
    try:
        files, data = build_report(args, with_plots=getattr(args, "plots", True))
    except (UsageError, diff.CompareError, RuntimeError) as err:
        print(f"backprop-verify report: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write_many({out / name: content for name, content in files.items()})

    totals = data.totals()
    print(markdown(data.by_component))
    print(f"\n{totals['scenarios']} scenarios, {totals['rows']} addresses compared, {totals['failures']} failures, "
          f"{totals['floor_passes']} passed only on the absolute floor; seed {args.seed}; report in {out}/")
    regressed = False
    if data.changes is not None:
        counts = diff.counts(data.changes)
        regressed = diff.regressed(data.changes)
        print(f"since {args.compare_to}: {counts['new failure']} new failures, {counts['grown >10x']} grown >10x, "
              f"{counts['fixed']} fixed, {counts['removed']} scenario/pair entries removed" + (" — REGRESSION" if regressed else ""))
        if regressed:
            print(markdown(data.changes[data.changes["change"].isin(diff.REGRESSIONS)].head(50)))
    return 1 if totals["failures"] or regressed else 0
