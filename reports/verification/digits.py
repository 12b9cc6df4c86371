"""A real-data trajectory: the digits network trained by both engines.

``digits_curves(optimizer)`` trains ``scenarios.digits.digits_scenario`` with
the manual engine and with torch.optim and returns both loss curves, the test
accuracies, the wall times and the worst step discrepancy;
``digits_table()`` gathers every ``OPTIMIZER_SETTINGS`` run into a
``DigitsCurves``: the curves the report plots, the table it shows (first and
last losses, worst relative difference, test accuracies) and the relative
difference of the two curves at every update, so that rendering only formats. ``python -m reports.verification.digits`` prints both runs and
checks that the bundled data equal ``sklearn.datasets.load_digits()``.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reports.verification.horizon import compare_trajectory
from backprop_verify.scenarios.digits import OPTIMIZER_SETTINGS, accuracy, bundled_digits, digits_data, digits_scenario

DIGITS_COLUMNS = ["optimizer", "engine", "step", "loss", "accuracy"]
DIFFERENCE_COLUMNS = ["optimizer", "step", "rel_diff"]
DIGITS_SOURCE = "reports.verification.digits.digits_curves (mini-batches of 64, 10 epochs)"


@dataclass(frozen=True)
class DigitsCurves:
    """The digits runs and their numbers."""
    curves: pd.DataFrame        # DIGITS_COLUMNS: the loss at every update, the test accuracy, by engine
    table: pd.DataFrame         # one row per optimizer: steps, first loss, last losses, worst rel. diff, accuracies
    differences: pd.DataFrame   # DIFFERENCE_COLUMNS: |loss_manual − loss_torch| / |loss_torch| at every update
    source: str = DIGITS_SOURCE

    def copy(self) -> DigitsCurves:
        return dataclasses.replace(self, curves=self.curves.copy(), table=self.table.copy(),
                                   differences=self.differences.copy())


def digits_curves(optimizer: str = "adam", epochs: int = 10, batch_size: int = 64, dtype: str = "float64") -> dict:
    """Train the digits network with both engines and return both loss curves and accuracies."""
    scenario = digits_scenario(optimizer, epochs=epochs, batch_size=batch_size, dtype=dtype)
    _, _, x_test, labels_test = digits_data(scenario.seed)
    start = time.perf_counter()
    manual_trace = manual.run(scenario)
    manual_seconds = time.perf_counter() - start
    start = time.perf_counter()
    torch_trace = reference.run(scenario)
    torch_seconds = time.perf_counter() - start
    rows, last = compare_trajectory(scenario, manual_trace, torch_trace)
    steps = scenario.optimizer.steps

    def final(trace):
        return [(trace[f"step{steps}.layers.{i}.weight"], trace[f"step{steps}.layers.{i}.bias"]) for i in (0, 2)]

    losses = {name: np.array([float(trace[f"step{t}.loss"]) for t in range(1, steps + 1)])
              for name, trace in (("manual", manual_trace), ("torch", torch_trace))}
    return {
        "scenario": scenario.name, "steps": steps, "updates_per_epoch": scenario.updates_per_epoch,
        "manual_loss": losses["manual"], "torch_loss": losses["torch"],
        "manual_accuracy": accuracy(final(manual_trace), x_test, labels_test),
        "torch_accuracy": accuracy(final(torch_trace), x_test, labels_test),
        "manual_seconds": manual_seconds, "torch_seconds": torch_seconds,
        "worst_rel": max(r.max_rel for r in rows), "failures": sum(not r.passed for r in rows), "horizon": last,
    }


def digits_table() -> DigitsCurves:
    """The digits run of every optimizer setting, by both engines (mini-batches of 64, 10 epochs),
    with the numbers derived from them. Deterministic, so computed once per process; each caller
    gets a copy."""
    return _digits_table().copy()


@functools.lru_cache(maxsize=1)
def _digits_table() -> DigitsCurves:
    curves = _curves()
    return DigitsCurves(curves=curves, table=summary_table(curves), differences=curve_differences(curves))


def summary_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per optimizer: updates, first loss, last loss by each engine, the worst relative difference
    of the two curves, the test accuracies."""
    records = []
    for optimizer, group in curves.groupby("optimizer", sort=True):
        wide = group.pivot_table(index="step", columns="engine", values="loss", aggfunc="first")
        if not {"manual", "torch"} <= set(wide.columns):
            continue
        diff = (wide["manual"] - wide["torch"]).abs() / wide["torch"].abs()
        records.append({"optimizer": optimizer or "—", "steps": int(wide.index.max()),
                        "first loss": float(wide["torch"].iloc[0]),
                        "last loss (manual)": float(wide["manual"].iloc[-1]),
                        "last loss (torch)": float(wide["torch"].iloc[-1]),
                        "worst rel. diff": float(diff.max())})
        if "accuracy" in group.columns:
            accuracy = group.groupby("engine")["accuracy"].first()
            records[-1].update({"test accuracy (manual)": float(accuracy.get("manual", float("nan"))),
                                "test accuracy (torch)": float(accuracy.get("torch", float("nan")))})
    return pd.DataFrame(records)


def curve_differences(curves: pd.DataFrame) -> pd.DataFrame:
    """|loss_manual − loss_torch| / |loss_torch| at every update of every optimizer both engines ran."""
    parts = []
    for optimizer, group in curves.groupby("optimizer", sort=True):
        wide = group.pivot_table(index="step", columns="engine", values="loss", aggfunc="first")
        if {"manual", "torch"} <= set(wide.columns):
            diff = (wide["manual"] - wide["torch"]).abs() / wide["torch"].abs()
            parts.append(pd.DataFrame({"optimizer": optimizer, "step": wide.index, "rel_diff": diff.to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=DIFFERENCE_COLUMNS)


def _curves() -> pd.DataFrame:
    records = []
    for optimizer in sorted(OPTIMIZER_SETTINGS):
        result = digits_curves(optimizer)
        for engine in ("manual", "torch"):
            test_accuracy = float(result[f"{engine}_accuracy"])
            for step, loss in enumerate(result[f"{engine}_loss"], start=1):
                records.append({"optimizer": optimizer, "engine": engine, "step": step, "loss": float(loss),
                                "accuracy": test_accuracy})
    return pd.DataFrame(records, columns=DIGITS_COLUMNS)


def main() -> int:  # pragma: no cover - prints the measured numbers
    # scikit-learn takes seconds to import; only this check needs it.
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)  # the report's and the tests' setting
    pixels, labels = bundled_digits()
    reference_set = load_digits()
    same = np.array_equal(pixels, reference_set.data) and np.array_equal(labels, reference_set.target)
    print(f"digits (64-32-10); data identical to sklearn.datasets.load_digits(): {same}")
    failures = 0 if same else 1
    for optimizer in sorted(OPTIMIZER_SETTINGS):
        run = digits_curves(optimizer)
        failures += run["failures"]
        print(f"{run['scenario']}: {run['steps']} updates, final loss manual {run['manual_loss'][-1]:.6f} "
              f"torch {run['torch_loss'][-1]:.6f}, test accuracy manual {run['manual_accuracy']:.4f} "
              f"torch {run['torch_accuracy']:.4f}, worst rel {run['worst_rel']:.2e}, "
              f"time manual {run['manual_seconds']:.2f} s torch {run['torch_seconds']:.2f} s")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
