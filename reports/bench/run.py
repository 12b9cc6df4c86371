"""The ``bench`` run: what to measure (``Plan``), the rows of ``bench.csv``, the printed table.

One row per measurement; ``section`` says which kind:

* ``fwd_bwd`` — forward + loss + backward of one network in one dtype: median
  seconds per step of each engine with the interquartile range, their ratio,
  the achieved matmul GFLOP/s and its fraction of the matmul peak;
* ``conv_layers`` — the same for the conv2d layers of a convolutional case
  alone (forward and backward on the input and δ of one step): the im2col
  engine's fraction of NumPy's own matmul peak, here a 1024×1024 matmul timed
  interleaved with the layers;
* ``peak`` — NumPy's matmul peak for a dtype: a 4096×4096 matmul (1024 with
  ``--quick``) timed in the same interleaved loop as the large network, median
  in ``peak_gflops``, best in ``note``;
* ``throughput`` — random-architecture verifications per second (``random_verify``)
  and, interleaved with them, the bare engines' forward+backward on the same
  architectures (``random_bare``) and building those scenarios alone
  (``random_build``);
* ``suite`` — wall time of the default test suite, serial and with ``-n 2``;
* ``machine`` — where and how: CPU, NumPy's BLAS, torch, the kernels each runs, the thread count (in ``note``).

Figures from a shared machine are noisy: compare the ratios within one run
(repetitions are interleaved, so both engines see the same load), not the
absolute times across runs.
"""
from __future__ import annotations

import csv
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from backprop_verify import reports
from backprop_verify.reports.bench import measure as bench
from backprop_verify.reports.rendering.table import markdown

THROUGHPUT_LABELS = {
    "random_verify": "random-architecture verification",
    "random_bare": "bare engines",
    "random_build": "building the scenarios",
}

COLUMNS = (
    "section", "case", "dtype", "batch", "threads", "repeats",
    "manual_s", "manual_iqr_s", "manual_min_s", "torch_s", "torch_iqr_s", "torch_min_s", "ratio",
    "manual_gflops", "torch_gflops", "peak_gflops", "pct_of_peak", "torch_pct_of_peak",
    "best_pct_of_peak", "torch_best_pct_of_peak",
    "per_second", "wall_s", "note",
)


class Plan:
    """How much to measure: the full run, or ``--quick`` (small cases, few repetitions)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.cases = bench.QUICK_CASES if quick else bench.CASES
        self.repeats = 5 if quick else 15
        self.min_sample_s = 0.002 if quick else 0.02
        # Cases of more than LARGE_FLOPS per step: one call per sample, few samples,
        # and the matmul peak timed in the same interleaved loop.
        self.large_repeats = 3
        self.peak_size = 1024 if quick else 4096
        self.peak_repeats = 3  # when no large case carries the peak (--quick)
        self.verifications = 100 if quick else 500
        self.throughput_repeats = 2 if quick else 5
        self.suite = not quick
        self.startup_repeats = 1 if quick else 7
        self.conv_cases = [case for case in self.cases if isinstance(case, bench.ConvBenchCase)]


LARGE_FLOPS = 1e9


# --------------------------------------------------------------------------- measuring


def measure(plan: Plan, threads: int) -> list[dict]:
    rows: list[dict] = []
    timed = []  # (case, dtype, timings)
    peak_samples: dict[str, list[float]] = {dtype: [] for dtype in bench.DTYPES}
    for case in plan.cases:
        for dtype in bench.DTYPES:
            timings = time_case(case, dtype, plan)
            if "peak" in timings:
                peak_samples[dtype] += timings.pop("peak").samples
            timed.append((case, dtype, timings))
            print(_progress(case, dtype, timings), flush=True)

    peaks = {}
    for dtype in bench.DTYPES:
        step, flops = bench.matmul_step(dtype, plan.peak_size)
        if not peak_samples[dtype]:
            peak_samples[dtype] = bench.time_interleaved({"peak": step}, plan.peak_repeats, 0.0, warmup=1)["peak"].samples
        peak = bench.Timing(peak_samples[dtype])
        peaks[dtype] = (flops / peak.median / 1e9, flops / min(peak.samples) / 1e9)
        rows.append(_row(section="peak", case=f"matmul-{plan.peak_size}", dtype=dtype, threads=threads,
                         repeats=len(peak.samples), peak_gflops=peaks[dtype][0], wall_s=peak.median,
                         note=f"NumPy A @ B, {plan.peak_size}x{plan.peak_size}: median of {len(peak.samples)}; "
                              f"best {peaks[dtype][1]:.1f} GFLOP/s"))
    for case, dtype, timings in timed:
        rows.append(fwd_bwd_row(case, dtype, timings, peaks[dtype], threads))
    rows += conv_layer_rows(plan, threads)

    measured = bench.verification_throughput(plan.verifications, repeats=plan.throughput_repeats)
    for case, timing, what in (
        ("random_verify", measured.verify,
         f"random_scenario + manual.run + reference.run + compare; {measured.failures} failed addresses; "
         f"{measured.machinery:.2f}x the bare engines' time; Traces and comparison "
         f"{100 * measured.machinery_share:.0f} % of it"),
        ("random_bare", measured.bare,
         "the same architectures: one forward + loss + backward of each engine, nothing recorded or compared"),
        ("random_build", measured.build,
         "the same architectures: random_scenario alone"),
    ):
        rows.append(_row(section="throughput", case=case, dtype="mixed", threads=threads,
                         repeats=len(timing.samples), per_second=1.0 / timing.median,
                         wall_s=timing.median * plan.verifications,
                         note=f"{plan.verifications} architectures, median of {len(timing.samples)}; {what}"))
    with tempfile.TemporaryDirectory(prefix="backprop-verify-startup.") as scratch:
        startup, code = bench.startup_times(plan.startup_repeats, scratch)
    rows.append(_row(section="startup", case="startup", dtype="mixed", threads=threads,
                     repeats=len(startup.samples), wall_s=startup.median,
                     note=f"backprop-verify check {bench.STARTUP_EXAMPLE} --quiet, a fresh process each time: median "
                          f"of {len(startup.samples)}, best {min(startup.samples):.2f} s; exit code {code}"))
    if plan.suite:
        root = str(Path(reports.__file__).resolve().parent.parent)  # the checkout holding tests/
        for workers, label in ((None, "pytest -q"), (2, "pytest -q -n 2")):
            seconds, code = bench.suite_wall_time(workers, root)
            rows.append(_row(section="suite", case=f"suite-n{workers or 1}", dtype="mixed", threads=threads,
                             repeats=1, wall_s=seconds, note=f"python -m {label}: exit code {code}"))
    return rows


CONV_PEAK_SIZE = 1024
"""The matmul timed interleaved with the conv layers: NumPy's 1024×1024 product runs within 2 % of
the 4096×4096 one's GFLOP/s (CPU time, one thread) and lasts a few of the layers' passes."""


def conv_layer_rows(plan: Plan, threads: int) -> list[dict]:
    """One ``conv_layers`` row per convolutional case and dtype: the conv2d layers alone
    (``measure.conv_layer_steps``), the two engines and NumPy's ``CONV_PEAK_SIZE`` matmul interleaved,
    so that the fraction of the peak is taken under the same load as the layers."""
    rows = []
    for case in plan.conv_cases:
        for dtype in bench.DTYPES:
            manual_layers, torch_layers, flops = bench.conv_layer_steps(case.scenario(dtype))
            peak_step, peak_flops = bench.matmul_step(dtype, CONV_PEAK_SIZE)
            timings = bench.time_interleaved({"manual": manual_layers, "torch": torch_layers, "peak": peak_step},
                                             plan.repeats, plan.min_sample_s, warmup=3)
            peak = timings.pop("peak")
            peaks = (peak_flops / peak.median / 1e9, peak_flops / min(peak.samples) / 1e9)
            rows.append(timing_row("conv_layers", case.case_id, case.batch, dtype, timings, flops, peaks, threads,
                                   "the conv2d layers alone: forward, ∂L/∂W, ∂L/∂b, ∂L/∂x but the first; "
                                   f"{flops / 1e6:.3g} MFLOP per pass; peak: NumPy A @ B, "
                                   f"{CONV_PEAK_SIZE}x{CONV_PEAK_SIZE}, interleaved, best {peaks[1]:.1f} GFLOP/s"))
            print(_progress(f"{case.case_id} conv layers", dtype, timings), flush=True)
    return rows


def time_case(case: bench.BenchCase | bench.ConvBenchCase | bench.RecurrentBenchCase, dtype: str, plan: Plan) -> dict[str, bench.Timing]:
    """Interleaved timings of the manual and torch steps (and, for a large case, the matmul peak)."""
    scenario = case.scenario(dtype)
    steps = {"manual": bench.manual_step(scenario), "torch": bench.torch_step_for(case, scenario)}
    if case.flops() < LARGE_FLOPS:
        return bench.time_interleaved(steps, plan.repeats, plan.min_sample_s, warmup=3)
    for step in steps.values():  # warm up the networks only: the matmul needs none
        step()
    if not plan.quick:
        steps["peak"] = bench.matmul_step(dtype, plan.peak_size)[0]
    return bench.time_interleaved(steps, plan.large_repeats, 0.0, warmup=0)


def fwd_bwd_row(case: bench.BenchCase | bench.ConvBenchCase | bench.RecurrentBenchCase, dtype: str, timings: dict[str, bench.Timing],
                peak: tuple[float, float], threads: int) -> dict:
    """One ``fwd_bwd`` row; ``peak`` is (median, best) GFLOP/s of the matmul in this dtype."""
    flops = case.flops()
    return timing_row("fwd_bwd", case.case_id, case.batch, dtype, timings, flops, peak, threads,
                      f"{case.description}; {flops / 1e6:.3g} MFLOP per step")


def timing_row(section: str, case_id: str, batch: int, dtype: str, timings: dict[str, bench.Timing], flops: int,
               peak: tuple[float, float], threads: int, note: str) -> dict:
    """A row of the manual and torch timings of ``flops`` matmul FLOPs; ``peak`` is (median, best) GFLOP/s."""
    manual, torch = timings["manual"], timings["torch"]
    gflops = {name: (flops / t.median / 1e9, flops / min(t.samples) / 1e9) for name, t in timings.items()}
    return _row(section=section, case=case_id, dtype=dtype, batch=batch,
                threads=threads, repeats=len(manual.samples),
                manual_s=manual.median, manual_iqr_s=manual.iqr, manual_min_s=min(manual.samples),
                torch_s=torch.median, torch_iqr_s=torch.iqr, torch_min_s=min(torch.samples),
                ratio=manual.median / torch.median,
                manual_gflops=gflops["manual"][0], torch_gflops=gflops["torch"][0], peak_gflops=peak[0],
                pct_of_peak=100.0 * gflops["manual"][0] / peak[0],
                torch_pct_of_peak=100.0 * gflops["torch"][0] / peak[0],
                best_pct_of_peak=100.0 * gflops["manual"][1] / peak[1],
                torch_best_pct_of_peak=100.0 * gflops["torch"][1] / peak[1],
                note=note)


def _row(**values) -> dict:
    return {column: values.get(column, "") for column in COLUMNS}


# --------------------------------------------------------------------------- printing


def machine_header(threads: int, plan: Plan) -> list[str]:
    """What was measured where: printed first, and kept in the CSV as ``machine`` rows."""
    return [
        f"backprop-verify bench ({'quick' if plan.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"{platform.machine()}, {os.cpu_count() or 1} CPUs; Python {platform.python_version()}",
        f"NumPy {np.__version__}: {bench.blas_description()}",
        f"torch {torch.__version__}: {torch.get_num_threads()} intra-op thread(s)",
        f"kernels: {bench.kernel_description()}",
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


def _progress(case, dtype: str, timings: dict[str, bench.Timing]) -> str:
    manual, torch = timings["manual"].median, timings["torch"].median
    label = case if isinstance(case, str) else case.case_id
    return (f"  {label:<26} {dtype:<8} manual {_seconds(manual)}  "
            f"torch {_seconds(torch)}  ratio {manual / torch:.2f}")


def _seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:8.1f} µs"
    if value < 1.0:
        return f"{value * 1e3:8.2f} ms"
    return f"{value:8.3f} s "


def summary_table(rows: list[dict], header: list[str] = ()) -> str:
    """The kernels each side runs (from ``header``, ``machine_header``'s lines), a Markdown table of
    the fwd_bwd and conv_layers rows, then one line per other measurement."""
    timed = [r for r in rows if r["section"] in ("fwd_bwd", "conv_layers")]
    frame = pd.DataFrame({
        "case": [r["case"] + (" (conv layers)" if r["section"] == "conv_layers" else "") for r in timed],
        "dtype": [r["dtype"] for r in timed],
        "batch": [r["batch"] for r in timed],
        "manual": [_seconds(r["manual_s"]).strip() for r in timed],
        "torch": [_seconds(r["torch_s"]).strip() for r in timed],
        "ratio": [f"{r['ratio']:.2f}" for r in timed],
        "manual GFLOP/s": [f"{r['manual_gflops']:.3g}" for r in timed],
        "% of peak": [f"{r['pct_of_peak']:.0f}" for r in timed],
        "torch % of peak": [f"{r['torch_pct_of_peak']:.0f}" for r in timed],
        "best %": [f"{r['best_pct_of_peak']:.0f}" for r in timed],
        "torch best %": [f"{r['torch_best_pct_of_peak']:.0f}" for r in timed],
    })
    kernels = [line for line in header if line.startswith("kernels: ")]
    lines = [f"ratio = manual / torch; {kernels[0]}" if kernels else "ratio = manual / torch", "",
             markdown(frame), ""]
    for r in rows:
        if r["section"] == "peak":
            lines.append(f"matmul peak {r['dtype']}: {r['peak_gflops']:.1f} GFLOP/s ({r['note']})")
        elif r["section"] == "throughput":
            label = THROUGHPUT_LABELS[r["case"]]
            lines.append(f"{label}: {r['per_second']:.0f} per second ({r['note']})")
        elif r["section"] == "startup":
            lines.append(f"check start-up: {r['wall_s']:.2f} s wall ({r['note']})")
        elif r["section"] == "suite":
            lines.append(f"test suite {r['note'].split(':')[0]}: {r['wall_s']:.1f} s wall ({r['note'].split(': ')[1]})")
    return "\n".join(lines)


__all__ = ["COLUMNS", "Plan", "conv_layer_rows", "machine_header", "measure", "summary_table", "timing_row", "to_csv"]
