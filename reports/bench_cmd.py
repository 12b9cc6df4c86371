"""``backprop-verify bench``: the manual engine against torch autograd, on this machine, now.

Writes ``bench.csv`` (atomically) into ``--out`` and prints it as a table. One
row per measurement; ``section`` says which kind:

* ``fwd_bwd`` — forward + loss + backward of one network in one dtype: median
  seconds per step of each engine with the interquartile range, their ratio,
  the achieved matmul GFLOP/s and its fraction of the matmul peak;
* ``peak`` — NumPy's matmul peak for a dtype (one n×n matmul, best of a few);
* ``throughput`` — random-architecture verifications per second;
* ``suite`` — wall time of the default test suite, serial and with ``-n 2``;
* ``machine`` — where and how: CPU, NumPy's BLAS, torch, the thread count (in ``note``).

Figures from a shared machine are noisy: compare the ratios within one run
(repetitions are interleaved, so both engines see the same load), not the
absolute times across runs.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from reports import bench
from reports.io import atomic_write_text

COLUMNS = (
    "section", "case", "dtype", "batch", "threads", "repeats",
    "manual_s", "manual_iqr_s", "manual_min_s", "torch_s", "torch_iqr_s", "torch_min_s", "ratio",
    "manual_gflops", "torch_gflops", "peak_gflops", "pct_of_peak", "torch_pct_of_peak",
    "per_second", "wall_s", "note",
)


class Plan:
    """How much to measure: the full run, or ``--quick`` (small cases, few repetitions)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.cases = bench.QUICK_CASES if quick else bench.CASES
        self.repeats = 5 if quick else 15
        self.large_repeats = 5  # cases whose single step takes ≳ 0.1 s
        self.min_sample_s = 0.005 if quick else 0.02
        self.peak_size = 1024 if quick else 4096
        self.peak_repeats = 3
        self.verifications = 100 if quick else 500
        self.suite = not quick


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports/out", help="output folder (default: reports/out)")
    parser.add_argument("--quick", action="store_true",
                        help="small networks, few repetitions, no test-suite timing (a few seconds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS / torch intra-op threads for both engines (default: 1)")


def main(args: argparse.Namespace) -> int:
    if args.threads < 1:
        print("backprop-verify bench: --threads: expected a count >= 1", file=sys.stderr)
        return 2
    plan = Plan(args.quick)
    out = Path(args.out)
    started = time.perf_counter()
    with bench.thread_limit(args.threads):
        header = machine_header(args.threads, plan)
        for line in header:
            print("# " + line)
        rows = measure(plan, args.threads)
    text = to_csv(rows, header)
    atomic_write_text(out / "bench.csv", text)
    print()
    print(summary_table(rows))
    print(f"\n{len(rows)} rows in {out / 'bench.csv'} ({time.perf_counter() - started:.1f} s)")
    return 0


# --------------------------------------------------------------------------- measuring


def measure(plan: Plan, threads: int) -> list[dict]:
    rows: list[dict] = []
    peaks: dict[str, float] = {}
    for dtype in bench.DTYPES:
        peak, seconds = bench.matmul_peak(dtype, plan.peak_size, plan.peak_repeats)
        peaks[dtype] = peak
        rows.append(_row(section="peak", case=f"matmul-{plan.peak_size}", dtype=dtype, threads=threads,
                         repeats=plan.peak_repeats, peak_gflops=peak, wall_s=seconds,
                         note=f"NumPy A @ B, {plan.peak_size}x{plan.peak_size}, best of {plan.peak_repeats}"))
    for case in plan.cases:
        for dtype in bench.DTYPES:
            rows.append(fwd_bwd_row(case, dtype, peaks[dtype], plan, threads))
            print(_progress(rows[-1]), flush=True)
    seconds, failures = bench.verification_throughput(plan.verifications)
    rows.append(_row(section="throughput", case="random_verify", dtype="mixed", threads=threads,
                     repeats=plan.verifications, per_second=plan.verifications / seconds, wall_s=seconds,
                     note=f"random_scenario + manual.run + reference.run + compare; {failures} failed addresses"))
    if plan.suite:
        root = str(Path(__file__).resolve().parent.parent)
        for workers, label in ((None, "pytest -q"), (2, "pytest -q -n 2")):
            seconds, code = bench.suite_wall_time(workers, root)
            rows.append(_row(section="suite", case=f"suite-n{workers or 1}", dtype="mixed", threads=threads,
                             repeats=1, wall_s=seconds, note=f"python -m {label}: exit code {code}"))
    return rows


def fwd_bwd_row(case: bench.BenchCase, dtype: str, peak: float, plan: Plan, threads: int) -> dict:
    scenario = bench.case_scenario(case, dtype)
    steps = {"manual": bench.manual_step(scenario), "torch": bench.torch_step(scenario)}
    flops = bench.matmul_flops(case.widths, case.batch)
    large = flops > 1e9
    repeats = plan.large_repeats if large else plan.repeats
    timings = bench.time_interleaved(steps, repeats, 0.0 if large else plan.min_sample_s,
                                     warmup=1 if large else 3)
    manual, torch = timings["manual"], timings["torch"]
    manual_gflops = flops / manual.median / 1e9
    torch_gflops = flops / torch.median / 1e9
    return _row(section="fwd_bwd", case=f"{case.name}-{case.label}", dtype=dtype, batch=case.batch,
                threads=threads, repeats=repeats,
                manual_s=manual.median, manual_iqr_s=manual.iqr, manual_min_s=min(manual.samples),
                torch_s=torch.median, torch_iqr_s=torch.iqr, torch_min_s=min(torch.samples),
                ratio=manual.median / torch.median,
                manual_gflops=manual_gflops, torch_gflops=torch_gflops, peak_gflops=peak,
                pct_of_peak=100.0 * manual_gflops / peak, torch_pct_of_peak=100.0 * torch_gflops / peak,
                note=f"{case.hidden} hidden, {case.output} output, {case.loss[0]} ({case.loss[1]}); "
                     f"{flops / 1e6:.3g} MFLOP per step")


def _row(**values) -> dict:
    return {column: values.get(column, "") for column in COLUMNS}


# --------------------------------------------------------------------------- printing


def machine_header(threads: int, plan: Plan) -> list[str]:
    """What was measured where: printed first, and kept in the CSV as ``machine`` rows."""
    import torch

    return [
        f"backprop-verify bench ({'quick' if plan.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"{platform.machine()}, {os.cpu_count() or 1} CPUs; Python {platform.python_version()}",
        f"NumPy {np.__version__}: {bench.blas_description()}",
        f"torch {torch.__version__}: {torch.get_num_threads()} intra-op thread(s)",
        f"both engines: {threads} thread(s); repetitions interleaved; times are medians in seconds per step",
    ]


def to_csv(rows: list[dict], header: list[str]) -> str:
    """The rows as CSV (floats with 6 significant digits), preceded by one ``machine`` row per header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for line in header:
        writer.writerow(_row(section="machine", case="", note=line))
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _progress(row: dict) -> str:
    return (f"  {row['case']:<26} {row['dtype']:<8} manual {_seconds(row['manual_s'])}  "
            f"torch {_seconds(row['torch_s'])}  ratio {row['ratio']:.2f}")


def _seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:8.1f} µs"
    if value < 1.0:
        return f"{value * 1e3:8.2f} ms"
    return f"{value:8.3f} s "


def summary_table(rows: list[dict]) -> str:
    """A Markdown table of the fwd_bwd rows, then one line per other measurement."""
    from reports.table import markdown
    import pandas as pd

    fwd = [r for r in rows if r["section"] == "fwd_bwd"]
    frame = pd.DataFrame({
        "case": [r["case"] for r in fwd],
        "dtype": [r["dtype"] for r in fwd],
        "batch": [r["batch"] for r in fwd],
        "manual": [_seconds(r["manual_s"]).strip() for r in fwd],
        "torch": [_seconds(r["torch_s"]).strip() for r in fwd],
        "ratio": [f"{r['ratio']:.2f}" for r in fwd],
        "manual GFLOP/s": [f"{r['manual_gflops']:.3g}" for r in fwd],
        "% of peak": [f"{r['pct_of_peak']:.0f}" for r in fwd],
        "torch % of peak": [f"{r['torch_pct_of_peak']:.0f}" for r in fwd],
    })
    lines = [markdown(frame), ""]
    for r in rows:
        if r["section"] == "peak":
            lines.append(f"matmul peak {r['dtype']}: {r['peak_gflops']:.1f} GFLOP/s ({r['note']})")
        elif r["section"] == "throughput":
            lines.append(f"random-architecture verification: {r['per_second']:.0f} per second ({r['note']})")
        elif r["section"] == "suite":
            lines.append(f"test suite {r['note'].split(':')[0]}: {r['wall_s']:.1f} s wall ({r['note'].split(': ')[1]})")
    return "\n".join(lines)


__all__ = ["COLUMNS", "add_arguments", "main", "measure", "to_csv"]
