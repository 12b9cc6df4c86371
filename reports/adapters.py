"""The report's sections that other modules compute, each in one small function.

=============================  ================================================
function                       computed by
=============================  ================================================
``trajectory_scenarios()``     ``scenarios.trajectories``: every optimizer
                               variant in float64 and float32, and the
                               dead-unit case
``trajectory_rows(scenario)``  ``reports.trajectories.compare_trajectory``
                               (the precision horizon)
``digits_curves()``            ``reports.trajectories.digits_curves`` for each
                               ``scenarios.digits.OPTIMIZER_SETTINGS``
``errata_table()``             ``reports.textbook.check_scenario`` over every
                               worked example
``derivation_verdicts()``      ``reports.derivations.evaluate_all``
=============================  ================================================

The costly, deterministic tables are computed once per process.
"""
from __future__ import annotations

import functools

import pandas as pd

DTYPES = ("float64", "float32")


def trajectory_scenarios() -> list:
    """Built-in optimizer trajectory scenarios, added to the report's scenario set."""
    from scenarios.trajectories import dead_unit_scenario, trajectory_scenarios as variants

    return [s for dtype in DTYPES for s in variants(dtype)] + [dead_unit_scenario(dtype) for dtype in DTYPES]


def trajectory_rows(scenario) -> list | None:
    """``compare_trajectory``'s rows for a scenario with an optimizer: steps after
    the horizon are noted, not judged."""
    from reports.trajectories import compare_trajectory

    if scenario.optimizer is None:
        return None
    rows, _horizon = compare_trajectory(scenario)
    return list(rows)


def _cached_copy(function):
    """Computed once per process; every caller gets a fresh copy of the frame."""
    cached = functools.lru_cache(maxsize=1)(function)

    @functools.wraps(function)
    def wrapper():
        return cached().copy()

    wrapper.cache_clear = cached.cache_clear
    return wrapper


@_cached_copy
def digits_curves() -> pd.DataFrame:
    """Columns optimizer, engine, step, loss, accuracy: the digits run of every
    optimizer setting, by both engines (mini-batch training, 10 epochs)."""
    from reports.trajectories import digits_curves as train
    from scenarios.digits import OPTIMIZER_SETTINGS

    records = []
    for optimizer in sorted(OPTIMIZER_SETTINGS):
        result = train(optimizer)
        for engine in ("manual", "torch"):
            accuracy = float(result[f"{engine}_accuracy"])
            for step, loss in enumerate(result[f"{engine}_loss"], start=1):
                records.append({"optimizer": optimizer, "engine": engine, "step": step, "loss": float(loss),
                                "accuracy": accuracy})
    return pd.DataFrame(records, columns=["optimizer", "engine", "step", "loss", "accuracy"])


@_cached_copy
def errata_table() -> pd.DataFrame:
    """Every printed number of the worked examples with its verdict."""
    from reports.textbook import COLUMNS, check_scenario
    from scenarios.builtin import worked_examples

    rows = [row for scenario in worked_examples() for row in check_scenario(scenario)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


@_cached_copy
def derivation_verdicts() -> pd.DataFrame:
    """Each document's gradient formula with its verdict (holds / holds when … / wrong)."""
    from reports.derivations import evaluate_all, frame_of

    return frame_of(evaluate_all())
