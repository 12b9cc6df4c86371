"""``backprop-verify bench``: the manual engine against torch autograd, on this machine, now.

Writes ``bench.csv`` (atomically) into ``--out`` and prints it as a table;
what each row measures is described in ``reports.bench.run`` and docs/bench.md.
Exit codes: 0 measured; 2 a bad option (``--threads`` from 1 to 4 × the CPUs,
``--out`` writable: checked before anything is measured); 130 Ctrl-C, 143
SIGTERM (the measurements have no checkpoints: a signal stops them at once).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from backprop_verify.reports.bench.measure import thread_limit
from backprop_verify.reports.bench.run import Plan, machine_header, measure, summary_table, to_csv
from backprop_verify.reports.commands import options
from backprop_verify.reports.rendering.io import atomic_write_text, immediate_interrupts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=options.output_folder, default="reports/out",
                        help="output folder (default: reports/out)")
    parser.add_argument("--quick", action="store_true",
                        help="small networks, few repetitions, no test-suite timing (a few seconds)")
    parser.add_argument("--threads", type=options.process_count, default=1,
                        help="BLAS / torch intra-op threads for both engines, at most "
                             f"{options.PROCESSES_PER_CPU} x the CPUs (default: 1)")


def main(args: argparse.Namespace) -> int:
    problem = options.writable_folder(args.out)
    if problem:
        print(f"backprop-verify bench: --out: {problem}", file=sys.stderr)
        return 2
    with immediate_interrupts():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    plan = Plan(args.quick)
    out = Path(args.out)
    started = time.perf_counter()
    with thread_limit(args.threads):
        header = machine_header(args.threads, plan)
        for line in header:
            print("# " + line)
        rows = measure(plan, args.threads)
    atomic_write_text(out / "bench.csv", to_csv(rows, header))
    print()
    print(summary_table(rows, header))
    print(f"\n{len(rows)} rows in {out / 'bench.csv'} ({time.perf_counter() - started:.1f} s)")
    return 0
