"""What a report run shares between the hand-written engine's report (``reports.commands.report``) and a user's
engine's (``reports.commands.engine_report``): the files it writes, the command that reproduces it, the
progress bar, one thread."""
from __future__ import annotations

import argparse
import shlex
import sys

from backprop_verify.scenarios.generator import DEFAULT_RANDOM_TRANSFORMER_COUNT

# Every file a report can write (the plots' names come from ``reports.rendering.plots.PLOTS``).
TABLES = ("discrepancies.csv", "summary.md")
PAGE = "report.html"
CHANGES = "changes.md"


def reproduce_command(args: argparse.Namespace) -> str:
    """The command that reproduces the report's content (not where it is written, nor how fast)."""
    words = ["backprop-verify", "report", "--seed", str(args.seed), "--random", str(args.random),
             "--random-conv", str(args.random_conv), "--random-recurrent", str(args.random_recurrent),
             "--random-transformer", str(transformer_count(args))]
    if getattr(args, "engine", None):
        words += ["--engine", args.engine]
    if args.only:
        words += ["--only", args.only]
    if getattr(args, "detail", None):
        words += ["--detail", args.detail]
    return " ".join(shlex.quote(w) for w in words)


def transformer_count(args: argparse.Namespace) -> int:
    """``--random-transformer``: a namespace built by hand (tests, callers of ``build_report``) may lack it."""
    return getattr(args, "random_transformer", DEFAULT_RANDOM_TRANSFORMER_COUNT)


def progress(total: int, description: str):
    from tqdm import tqdm

    stream = getattr(sys.stderr, "unescaped", sys.stderr)  # its \r redraws the line (reports.cli._TerminalSafe)
    return tqdm(total=total, desc=description, unit="scenario", file=stream,
                disable=not stream.isatty(), dynamic_ncols=True, leave=False)


def one_thread() -> None:
    """One BLAS/torch thread, as in the pytest workers: the same arithmetic either way."""
    import torch
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    torch.set_num_threads(1)
    threadpool_limits(1)


def output_names(with_plots: bool = True, compare: bool = True) -> tuple[str, ...]:
    """The files a report writes: the tables; with plots, report.html and ``plots.PLOTS``; with
    ``--compare-to``, changes.md. ``output_names()``: every file a report can write."""
    from backprop_verify.reports.rendering.plots import PLOTS  # matplotlib: only once the run goes ahead

    return TABLES + ((PAGE, *PLOTS) if with_plots else ()) + ((CHANGES,) if compare else ())
