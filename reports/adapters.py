"""Where the report picks up sections that other modules provide.

Every optional input of the report goes through one small function here, so
that a module that appears later (or renames a function) needs an edit in this
file only. Each adapter returns ``None`` when its provider is absent, and the
report then says "not available" for that section.

=====================================  ===========================================
adapter                                looks for (first found wins)
=====================================  ===========================================
``trajectory_scenarios()``             ``scenarios.trajectories``:
                                       ``builtin_trajectories()``,
                                       ``trajectory_scenarios()``,
                                       ``builtin_trajectory_scenarios()``
``digits_curves()``                    ``reports.trajectories``: ``digits_curves()``,
                                       ``digits_loss_curves()``; otherwise the
                                       report's own full-batch run
                                       (``reports.runner.digits_curves``)
``errata_table()``                     ``reports.textbook``: ``errata_table()``,
                                       ``textbook_verdicts()``, ``verdicts()``,
                                       ``check_worked_examples()``
``derivation_verdicts()``              ``reports.derivations``:
                                       ``derivation_verdicts()``, ``verdicts()``,
                                       ``check_derivations()``
=====================================  ===========================================

Tables may come back as a pandas DataFrame, a list of dicts or a list of
dataclass instances; ``as_frame`` turns each into a DataFrame.
"""
from __future__ import annotations

import dataclasses
import importlib

import pandas as pd


def _provider(module_name: str, function_names: tuple[str, ...]):
    """The first of ``function_names`` that ``module_name`` defines, or None."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            return None
        raise
    for name in function_names:
        function = getattr(module, name, None)
        if callable(function):
            return function
    return None


def as_frame(value) -> pd.DataFrame | None:
    """A DataFrame from a DataFrame, a list of dicts or a list of dataclasses."""
    if value is None:
        return None
    if isinstance(value, pd.DataFrame):
        return value.reset_index(drop=True)
    records = []
    for item in value:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            records.append(dataclasses.asdict(item))
        elif isinstance(item, dict):
            records.append(dict(item))
        else:
            records.append({"value": str(item)})
    return pd.DataFrame(records)


def trajectory_scenarios() -> list | None:
    """Built-in optimizer trajectory scenarios (added to the report's scenario set)."""
    function = _provider("scenarios.trajectories",
                         ("builtin_trajectories", "trajectory_scenarios", "builtin_trajectory_scenarios"))
    return None if function is None else list(function())


def digits_curves() -> tuple[pd.DataFrame, str]:
    """(curves with columns optimizer, engine, step|epoch, loss; where they come from)."""
    function = _provider("reports.trajectories", ("digits_curves", "digits_loss_curves"))
    if function is not None:
        frame = as_frame(function())
        if frame is not None and {"engine", "loss"} <= set(frame.columns):
            if "step" not in frame.columns:
                frame = frame.rename(columns={"epoch": "step", "update": "step"})
            if "optimizer" not in frame.columns:
                frame = frame.assign(optimizer="")
            return frame, "reports.trajectories"
    from reports.runner import digits_curves as own

    return own(), "reports.runner (full-batch gradient descent)"


def errata_table() -> pd.DataFrame | None:
    """Textbook expectations with verdicts (match / rounding / erratum)."""
    function = _provider("reports.textbook",
                         ("errata_table", "textbook_verdicts", "verdicts", "check_worked_examples"))
    return None if function is None else as_frame(function())


def derivation_verdicts() -> pd.DataFrame | None:
    """Each document's gradient formula with its verdict (holds / holds when … / wrong)."""
    function = _provider("reports.derivations", ("derivation_verdicts", "verdicts", "check_derivations"))
    return None if function is None else as_frame(function())
