"""``backprop-verify report``: every built-in scenario, every engine pair, one report.

Writes into ``--out`` (default ``reports/out``), all files replaced together
(``reports.rendering.io.atomic_write_many``) only once everything is computed:
``discrepancies.csv``, ``summary.md``, ``report.html``, the PNG plots of
``reports.rendering.plots.PLOTS``, with ``--compare-to``, ``changes.md``, and
last ``manifest.json`` (the run, its command line, every file it wrote). The
folder is the run's (``reports.rendering.io.RunFolder``): a second run into it
is refused while this one runs, and the files of the earlier report that this
one does not write (``report.html`` and the plots before a ``--no-plots`` run,
``changes.md`` before a run without ``--compare-to``) are removed.

Exit codes: 0 every address passed (and nothing regressed); 1 a failure, or a
regression against ``--compare-to``; 2 bad options, a folder another run holds
or a broken run; 130 Ctrl-C, 143 SIGTERM (previous files untouched, no
temporary file, folder or worker left).

Every option, the output folder's writability and the ``--compare-to`` table
are checked before any work starts (``reports.commands.options``,
``reports.rendering.diff.read_old``), and before torch is imported: a refusal
costs a fraction of a second. The engines, pandas and matplotlib are imported
inside the functions that use them, once the run is known to go ahead.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backprop_verify import reports
from backprop_verify.reports.commands import options
from backprop_verify.reports.commands.report_run import CHANGES, PAGE, output_names, reproduce_command
from backprop_verify.reports.commands.report_run import one_thread as _one_thread
from backprop_verify.reports.commands.report_run import progress as _progress
from backprop_verify.reports.commands.report_run import transformer_count
from backprop_verify.reports.rendering.io import SCRATCH_PREFIX, FolderRefused, RunFolder, checkpoint
from backprop_verify.scenarios.generator import (DEFAULT_RANDOM_CONV_COUNT, DEFAULT_RANDOM_COUNT, DEFAULT_RANDOM_RECURRENT_COUNT,
                                 DEFAULT_RANDOM_TRANSFORMER_COUNT, DEFAULT_SEED)



class _Lazy:
    """A value of a help text computed only when ``--help`` is printed (argparse formats ``%(name)s`` from
    the action's attributes): its module imports matplotlib, which a refusal must not pay for."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __str__(self) -> str:
        return str(getattr(importlib.import_module(self.module), self.name))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=options.output_folder, default="reports/out", metavar="DIR",
                        help="output folder (default: reports/out)")
    parser.add_argument("--seed", type=options.seed, default=DEFAULT_SEED,
                        help=f"seed of the random architectures, 0 to 2**63-1 (default: {DEFAULT_SEED})")
    parser.add_argument("--random", type=options.random_count, default=DEFAULT_RANDOM_COUNT, metavar="N",
                        help=f"number of seeded random architectures, 0 to {options.MAX_RANDOM} "
                             f"(default: {DEFAULT_RANDOM_COUNT})")
    parser.add_argument("--random-conv", dest="random_conv", type=options.random_count,
                        default=DEFAULT_RANDOM_CONV_COUNT, metavar="N",
                        help=f"number of seeded random convolutional architectures (default: {DEFAULT_RANDOM_CONV_COUNT})")
    parser.add_argument("--random-recurrent", dest="random_recurrent", type=options.random_count,
                        default=DEFAULT_RANDOM_RECURRENT_COUNT, metavar="N",
                        help=f"number of seeded random recurrent architectures (default: {DEFAULT_RANDOM_RECURRENT_COUNT})")
    parser.add_argument("--random-transformer", dest="random_transformer", type=options.random_count,
                        default=DEFAULT_RANDOM_TRANSFORMER_COUNT, metavar="N",
                        help="number of seeded random transformer architectures "
                             f"(default: {DEFAULT_RANDOM_TRANSFORMER_COUNT})")
    parser.add_argument("--workers", type=options.process_count, default=1, metavar="N",
                        help="verify scenarios in N processes with pytest-xdist (pytest -n N), at most "
                             f"{options.PROCESSES_PER_CPU} x the CPUs; default 1: in this process")
    parser.add_argument("--compare-to", default=None, metavar="OLD_DIR",
                        help="compare with the report in OLD_DIR; exit 1 on new failures or discrepancies grown >10x")
    parser.add_argument("--only", type=options.only_pattern, default=None, metavar="REGEX",
                        help="only scenarios whose name matches REGEX (re.search)")
    parser.add_argument("--no-plots", dest="plots", action="store_false",
                        help="skip the PNG plots and report.html (discrepancies.csv and summary.md only)")
    detail = parser.add_argument(
        "--detail", type=options.only_pattern, default=None, metavar="REGEX",
        help="report.html: also a section (addresses, heatmaps of |a-b|) for every scenario whose name matches "
             "REGEX (re.search); at most %(max_sections)s sections in all")
    detail.max_sections = _Lazy("backprop_verify.reports.rendering.sections", "MAX_SECTIONS")
    parser.add_argument("--engine", default=None, metavar="MODULE:ATTRIBUTE",
                        help="verify this engine (a backprop_verify.manual.Engine, e.g. mypackage.adapter:engine) "
                             "instead of the hand-written one, in this process; writes discrepancies.csv, summary.md, "
                             "not_applicable.csv and shrunk/*.toml (no plots) — docs/engine.md")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the totals line (no per-component table, no failure lines)")


class UsageError(ValueError):
    pass


def environment() -> dict[str, str]:
    """Versions of Python, NumPy, PyTorch and the BLAS libraries in use."""
    import numpy
    import torch

    blas = numpy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    torch_blas = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return {
        "Python": platform.python_version(),
        "NumPy": numpy.__version__,
        "PyTorch": torch.__version__,
        "NumPy BLAS": f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip(),
        "PyTorch BLAS": torch_blas.group(1) if torch_blas else "unknown",
        "Machine": f"{platform.system()} {platform.machine()}",
    }


def rows_in_process(scenarios: list, detail: str | None = None,
                    with_maps: bool = True) -> tuple[str, dict]:
    """(discrepancies.csv text, {scenario name: difference maps}), every scenario verified in this
    process, each engine once. The maps of the scenarios that will get a report.html section are taken
    from their traces right after each is verified (``sections.keep_maps``); every other trace is
    dropped at once, so memory stays bounded."""
    from backprop_verify.reports.rendering.sections import MAX_SECTIONS, keep_maps
    from backprop_verify.reports.rendering.table import csv_text, rows_frame
    from backprop_verify.reports.verification.detail import KeptMaps
    from backprop_verify.reports.verification.runner import report_verification  # torch

    rows = []
    kept = KeptMaps(MAX_SECTIONS)
    with _progress(len(scenarios), "verifying") as bar:
        for scenario in scenarios:
            checkpoint()
            verified = report_verification(scenario)
            rows += verified.rows
            if with_maps:
                keep_maps(kept, verified, detail)
            bar.update(1)
    return csv_text(rows_frame(rows)), kept.maps()


def rows_with_xdist(args: argparse.Namespace, total: int, with_maps: bool = True,
                    scratch_parent: Path | None = None) -> tuple[str, dict]:
    """(discrepancies.csv text, {scenario name: difference maps}) from ``pytest -n WORKERS --pyargs
    backprop_verify.reports.commands.report_suite --report-dir SCRATCH``. The workers take the maps of the
    scenarios that will get a section from their own traces (``--report-maps``): the report's process
    never runs an engine again for a section.

    SCRATCH is a ``.backprop-verify-scratch.*`` folder in ``scratch_parent`` (the output folder, whose next
    run removes it if this process is killed; the system's temporary folder if None). The pytest run dies
    with this process, even by kill -9: it holds the read end of a pipe whose write end only this process
    has (``--report-parent-pipe``); when it reads end-of-file, the controller removes SCRATCH and ends its
    process group, and each worker is killed by the kernel when the controller dies
    (``reports.commands.pytest_plugin``)."""
    from backprop_verify.reports.rendering.sections import MAX_SECTIONS
    from backprop_verify.reports.verification.detail import KeptMaps

    package = Path(reports.__file__).resolve().parent
    root = package.parent
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=scratch_parent) as scratch:
        progress = Path(scratch) / "progress"
        progress.touch()
        log = Path(scratch) / "pytest.log"
        maps_file = Path(scratch) / "maps.npz"
        parent_pipe, parent_alive = os.pipe()  # both ends close-on-exec; pass_fds hands the read end on
        # By module name (--pyargs): the suite imports as backprop_verify.reports.commands.report_suite
        # wherever it is installed.
        command = [sys.executable, "-m", "pytest", "--pyargs", "backprop_verify.reports.commands.report_suite", "-q",
                   "-p", "no:cacheprovider",
                   "-p", "backprop_verify.reports.commands.pytest_plugin", "-n", str(args.workers), f"--rootdir={root}",
                   "--report-dir", scratch, "--report-seed", str(args.seed), "--report-random", str(args.random),
                   "--report-random-conv", str(args.random_conv),
                   "--report-random-recurrent", str(args.random_recurrent),
                   "--report-random-transformer", str(transformer_count(args)),
                   "--report-progress", str(progress), "--report-parent-pipe", str(parent_pipe),
                   # pytest's own temporary folders inside the scratch folder, removed with it
                   f"--basetemp={Path(scratch) / 'basetemp'}"]
        if args.only:
            command += ["--report-only", args.only]
        if with_maps:
            command += ["--report-maps", str(maps_file)]
            if getattr(args, "detail", None):
                command += ["--report-detail", args.detail]
        # A report started from inside a pytest-xdist worker must not look like one to its own pytest.
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("PYTEST_XDIST_") or k == "PYTEST_CURRENT_TEST")}
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = "1"
        try:
            with open(log, "wb") as log_file, _progress(total, f"verifying ({args.workers} workers)") as bar:
                # Its own session and process group: a Ctrl-C on the terminal reaches this process only, and
                # stopping the run ends the whole group — the pytest controller and every xdist worker.
                process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, cwd=root, env=env, start_new_session=True,
                                           pass_fds=(parent_pipe,))
                os.close(parent_pipe)
                parent_pipe = None
                try:
                    while process.poll() is None:
                        checkpoint()
                        time.sleep(0.2)
                        bar.update(progress.stat().st_size - bar.n)
                finally:
                    stop_process_group(process)
        finally:
            for end in (parent_pipe, parent_alive):
                if end is not None:
                    os.close(end)
        # pytest: 0 all passed, 1 some tests failed (failing rows are data); anything else broke.
        if process.returncode not in (0, 1):
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pytest -n {args.workers} exited with {process.returncode}:\n{tail}")
        csv_path = Path(scratch) / "discrepancies.csv"
        if not csv_path.is_file():
            raise RuntimeError("pytest finished without writing discrepancies.csv:\n"
                               + log.read_text(errors="replace")[-3000:])
        maps = KeptMaps.load(maps_file, MAX_SECTIONS).maps() if with_maps and maps_file.is_file() else {}
        return csv_path.read_text(encoding="utf-8"), maps


def stop_process_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """End ``process`` (started with ``start_new_session=True``) and every process of its group:
    SIGTERM, up to ``grace`` seconds for them to exit, then SIGKILL; waits for ``process``."""
    group = process.pid  # a session leader's process group id is its pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the controller, so its group can empty
            if not _group_alive(group):
                break
            time.sleep(0.02)
        else:
            continue
        break
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _group_alive(group: int) -> bool:
    """Whether a process of ``group`` is still running (zombies, which an absent reaper may leave, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def selected_scenarios(args: argparse.Namespace) -> list:
    """The run's scenarios (NumPy only, no engine); ``UsageError`` if ``--only`` or ``--detail`` selects none."""
    from backprop_verify.scenarios.builtin import report_scenarios

    scenarios = report_scenarios(args.random, args.seed, args.only, args.random_conv, args.random_recurrent,
                                 transformer_count(args))
    if not scenarios:
        raise UsageError(f"--only: {args.only!r} matches no scenario; expected a pattern that matches at least one "
                         "scenario name (re.search)")
    detail = getattr(args, "detail", None)
    if detail and not any(re.search(detail, s.name) for s in scenarios):
        raise UsageError(f"--detail: {detail!r} matches no scenario of this run; expected a pattern that matches "
                         "at least one scenario name (re.search)")
    return scenarios


def read_old(folder: str):
    """The ``--compare-to`` table (``reports.rendering.diff.read_old``, pandas); ``UsageError`` if it is
    missing or damaged."""
    from backprop_verify.reports.rendering import diff

    try:
        return diff.read_old(folder)
    except diff.CompareError as err:
        raise UsageError(str(err)) from None


def build_report(args: argparse.Namespace, timestamp: str | None = None, with_plots: bool = True,
                 old=None, scenarios: list | None = None, scratch_parent: Path | None = None):
    """(files to write: name -> bytes or text, ReportData). Writes nothing.

    ``old``: the ``--compare-to`` table already read by ``read_old`` (read here if not given);
    ``scenarios``: those of ``selected_scenarios(args)`` (chosen here if not given);
    ``scratch_parent``: where ``--workers`` keeps its scratch folder (``rows_with_xdist``).
    """
    # The engines (torch), pandas and matplotlib: imported here, once the options are known to be good.
    from backprop_verify.reports.rendering import diff
    from backprop_verify.reports.rendering.html import render_html
    from backprop_verify.reports.rendering.plots import all_plots
    from backprop_verify.reports.rendering.sections import build_sections
    from backprop_verify.reports.rendering.summary import ReportData, render_changes_markdown, render_markdown
    from backprop_verify.reports.rendering.table import read_csv_text
    from backprop_verify.reports.textbook.derivations import derivation_verdicts
    from backprop_verify.reports.textbook.errata import errata_table
    from backprop_verify.reports.verification.attention import attention_table
    from backprop_verify.reports.verification.digits import digits_table
    from backprop_verify.reports.verification.recurrent import recurrent_gradient
    from backprop_verify.reports.verification.vanishing import vanishing_gradient

    if old is None and args.compare_to:
        old = read_old(args.compare_to)
    _one_thread()  # every number in the report (rows, vanishing gradient, digits) from one thread
    if scenarios is None:
        scenarios = selected_scenarios(args)
    detail = getattr(args, "detail", None)
    if args.workers > 1:
        csv, maps = rows_with_xdist(args, len(scenarios), with_maps=with_plots, scratch_parent=scratch_parent)
    else:
        csv, maps = rows_in_process(scenarios, detail, with_maps=with_plots)
    checkpoint()
    frame = read_csv_text(csv)  # the summary is computed from the file's own numbers
    missing = sorted({s.name for s in scenarios} - set(frame["scenario"]))
    if missing:
        raise RuntimeError(f"{len(missing)} scenarios produced no rows, e.g. {missing[:5]}")

    sections = {}
    for name, compute in (("vanishing", vanishing_gradient), ("recurrent", recurrent_gradient),
                          ("digits", digits_table), ("errata", errata_table), ("derivations", derivation_verdicts)):
        checkpoint()  # between sections: a Ctrl-C or SIGTERM stops here, never inside torch
        sections[name] = compute()
    checkpoint()
    data = ReportData(
        seed=args.seed, random_count=args.random, random_conv_count=args.random_conv,
        random_recurrent_count=args.random_recurrent, random_transformer_count=transformer_count(args),
        only=args.only, frame=frame,
        components={s.name: s.component_names() for s in scenarios},
        command=reproduce_command(args),
        timestamp=timestamp or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        environment=environment(), detail=detail, **sections)
    files: dict[str, bytes | str] = {"discrepancies.csv": csv, "summary.md": render_markdown(data)}
    if old is not None:
        data.changes = diff.changes(old, frame)
        data.compared_to = str(args.compare_to)
        files[CHANGES] = render_changes_markdown(data.changes, data.compared_to)
    if with_plots:
        checkpoint()
        data.attention = attention_table()  # the page's alone (summary.md has no attention section)
        checkpoint()
        data.sections, data.sections_left_out = build_sections(frame, {s.name: s for s in scenarios}, detail,
                                                                        maps)
        checkpoint()
        plots = all_plots(data)
        checkpoint()
        files.update(plots)
        files[PAGE] = render_html(data, plots)
    return files, data


def main(args: argparse.Namespace) -> int:
    """Check everything that can be checked before the run (before torch is imported); take the output
    folder; run; publish the files and the manifest; print. ``--engine``: ``engine_report.main``."""
    if getattr(args, "engine", None) is not None:
        from backprop_verify.reports.commands import engine_report

        return engine_report.main(args)
    prefix = "backprop-verify report"
    problems = []
    if args.compare_to is not None and not Path(args.compare_to).is_dir():
        problems.append(f"--compare-to: {args.compare_to} is not a folder; expected a folder written by "
                        "backprop-verify report")
    problem = options.writable_folder(args.out)
    if problem:
        problems.append(f"--out: {problem}")
    if options.refused("report", problems):
        return 2
    with_plots = getattr(args, "plots", True)
    try:
        old = read_old(args.compare_to) if args.compare_to else None
        scenarios = selected_scenarios(args)
    except UsageError as err:
        print(f"{prefix}: {err}", file=sys.stderr)
        return 2
    command_line = getattr(args, "command_line", None) or ["backprop-verify", "report"]
    try:
        with RunFolder.claim(args.out, "report", command_line, {"seed": args.seed}) as folder:
            folder.expect(outputs=output_names(), writes=output_names(with_plots, old is not None))
            try:
                files, data = build_report(args, with_plots=with_plots, old=old, scenarios=scenarios,
                                           scratch_parent=folder.path)
            except (UsageError, RuntimeError) as err:
                print(f"{prefix}: {err}", file=sys.stderr)
                return 2
            folder.publish(files)
    except FolderRefused as err:
        print(f"{prefix}: --out: {err}", file=sys.stderr)
        return 2
    return _print_results(args, data)


def _print_results(args: argparse.Namespace, data) -> int:
    """The per-component table, the failure lines, the totals line, the changes; the exit status."""
    from backprop_verify.reports.rendering import diff
    from backprop_verify.reports.rendering.table import failure_lines, markdown

    out = Path(args.out)
    totals = data.totals()
    quiet = getattr(args, "quiet", False)
    if not quiet:
        print(markdown(data.by_component))
        lines = failure_lines(data.frame)
        if lines:
            print(f"\n{totals['failures']} failures (address[worst element]: both values there; tolerance):")
            print("\n".join(lines))
    regressed = data.changes is not None and diff.regressed(data.changes)
    since = ""
    if quiet and data.changes is not None:
        counts = diff.counts(data.changes)
        since = (f"; since {args.compare_to}: {counts['new failure']} new failures, {counts['grown >10x']} grown >10x"
                 + (" — REGRESSION" if regressed else ""))
    print(("" if quiet else "\n") + f"{totals['scenarios']} scenarios, {totals['rows']} addresses compared, "
          f"{totals['failures']} failures, {totals['floor_passes']} passed only on the absolute floor; "
          f"seed {args.seed}; report in {out}/" + since)
    if data.changes is not None and not quiet:
        counts = diff.counts(data.changes)
        print(f"since {args.compare_to}: {counts['new failure']} new failures, {counts['grown >10x']} grown >10x, "
              f"{counts['fixed']} fixed, {counts['removed']} scenario/pair entries removed" + (" — REGRESSION" if regressed else ""))
        if regressed:
            print(markdown(data.changes[data.changes["change"].isin(diff.REGRESSIONS)].head(50)))
    return 1 if totals["failures"] or regressed else 0
