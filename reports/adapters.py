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
                                       ``trajectory_scenarios([dtype])``,
                                       ``builtin_trajectory_scenarios()``; plus
                                       ``dead_unit_scenario([dtype])``
``digits_curves()``                    ``reports.trajectories``: ``digits_curves([optimizer])``
                                       per ``scenarios.digits.OPTIMIZER_SETTINGS``,
                                       ``digits_loss_curves()``; otherwise the
                                       report's own full-batch run
                                       (``reports.runner.digits_curves``)
``errata_table()``                     ``reports.textbook``: ``errata_table()``,
                                       ``textbook_verdicts()``, ``verdicts()``,
                                       ``check_worked_examples()``, else
                                       ``check_scenario(s)`` over the worked examples
``derivation_verdicts()``              ``reports.derivations``:
                                       ``derivation_verdicts()``, ``verdicts()``,
                                       ``check_derivations()``, else
                                       ``frame_of(evaluate_all())``
=====================================  ===========================================

Tables may come back as a pandas DataFrame, a list of dicts or a list of
dataclass instances; ``as_frame`` turns each into a DataFrame.
"""
from __future__ import annotations

import dataclasses
import functools
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


def _accepts(function, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def trajectory_scenarios() -> list | None:
    """Built-in optimizer trajectory scenarios (added to the report's scenario set).

    A provider taking ``dtype`` is called for float64 and float32; so is
    ``scenarios.trajectories.dead_unit_scenario`` when it exists.
    """
    function = _provider("scenarios.trajectories",
                         ("builtin_trajectories", "trajectory_scenarios", "builtin_trajectory_scenarios"))
    if function is None:
        return None
    dtypes = ("float64", "float32") if _accepts(function, "dtype") else (None,)
    scenarios = []
    for dtype in dtypes:
        scenarios += list(function() if dtype is None else function(dtype=dtype))
    extra = _provider("scenarios.trajectories", ("dead_unit_scenario",))
    if extra is not None:
        scenarios += [extra(dtype=dtype) for dtype in ("float64", "float32")] if _accepts(extra, "dtype") \
            else [extra()]
    return scenarios


def _digits_frame(result, optimizer: str) -> pd.DataFrame | None:
    """``reports.trajectories.digits_curves`` → rows optimizer, engine, step, loss[, accuracy].

    Accepts a frame with those columns, or a dict with ``manual_loss`` /
    ``torch_loss`` arrays (per update) and optional ``manual_accuracy`` /
    ``torch_accuracy``.
    """
    if isinstance(result, dict) and "manual_loss" in result and "torch_loss" in result:
        records = []
        for engine in ("manual", "torch"):
            accuracy = result.get(f"{engine}_accuracy")
            for step, loss in enumerate(result[f"{engine}_loss"], start=1):
                record = {"optimizer": optimizer, "engine": engine, "step": step, "loss": float(loss)}
                if accuracy is not None:
                    record["accuracy"] = float(accuracy)
                records.append(record)
        return pd.DataFrame(records)
    frame = as_frame(result)
    if frame is None or not {"engine", "loss"} <= set(frame.columns):
        return None
    if "step" not in frame.columns:
        frame = frame.rename(columns={"epoch": "step", "update": "step"})
    if "optimizer" not in frame.columns:
        frame = frame.assign(optimizer=optimizer)
    return frame


def digits_curves() -> tuple[pd.DataFrame, str]:
    """(curves with columns optimizer, engine, step, loss[, accuracy]; where they come from).

    ``reports.trajectories.digits_curves(optimizer)`` is called once per
    optimizer setting in ``scenarios.digits.OPTIMIZER_SETTINGS`` (or once with
    no argument); without it, the report's own full-batch run is used.
    """
    function = _provider("reports.trajectories", ("digits_curves", "digits_loss_curves"))
    if function is not None:
        settings = None
        if _accepts(function, "optimizer"):
            try:
                settings = sorted(importlib.import_module("scenarios.digits").OPTIMIZER_SETTINGS)
            except (ModuleNotFoundError, AttributeError):
                settings = None
        frames = [_digits_frame(function(optimizer), optimizer) for optimizer in settings] if settings \
            else [_digits_frame(function(), "")]
        if frames and all(f is not None for f in frames):
            return pd.concat(frames, ignore_index=True), "reports.trajectories (mini-batch training)"
    from reports.runner import digits_curves as own

    return own(), "reports.runner (full-batch gradient descent)"


def _cached_copy(function):
    """Deterministic, costly sections: computed once per process, a fresh copy per call."""
    cached = functools.lru_cache(maxsize=1)(function)

    @functools.wraps(function)
    def wrapper():
        value = cached()
        return value.copy() if isinstance(value, pd.DataFrame) else value

    wrapper.cache_clear = cached.cache_clear
    return wrapper


@_cached_copy
def errata_table() -> pd.DataFrame | None:
    """Textbook expectations with verdicts (match / rounding / erratum / disagree).

    A table function if ``reports.textbook`` has one; otherwise its
    ``check_scenario(scenario)`` over every built-in worked example.
    """
    function = _provider("reports.textbook",
                         ("errata_table", "textbook_verdicts", "verdicts", "check_worked_examples"))
    if function is not None:
        return as_frame(function())
    check = _provider("reports.textbook", ("check_scenario",))
    if check is None:
        return None
    from scenarios.builtin import worked_examples

    rows = [row for scenario in worked_examples() for row in check(scenario)]
    columns = getattr(importlib.import_module("reports.textbook"), "COLUMNS", None)
    return pd.DataFrame(rows, columns=list(columns) if columns else None)


@_cached_copy
def derivation_verdicts() -> pd.DataFrame | None:
    """Each document's gradient formula with its verdict (holds / holds when … / wrong).

    ``reports.derivations``: a table function, or ``frame_of(evaluate_all())``.
    """
    function = _provider("reports.derivations", ("derivation_verdicts", "verdicts", "check_derivations"))
    if function is not None:
        return as_frame(function())
    evaluate_all = _provider("reports.derivations", ("evaluate_all",))
    if evaluate_all is None:
        return None
    frame_of = _provider("reports.derivations", ("frame_of",))
    results = evaluate_all()
    return frame_of(results) if frame_of is not None else as_frame(results)


def trajectory_rows(scenario) -> list | None:
    """The trajectory module's own judgement of a scenario's ``step{t}`` addresses.

    ``reports.trajectories.compare_trajectory(scenario) -> (rows, horizon)``
    applies the float32 horizon (steps after it are noted, not judged) and the
    comparison of step addresses only; None when the module is absent.
    """
    function = _provider("reports.trajectories", ("compare_trajectory",))
    if function is None or getattr(scenario, "optimizer", None) is None:
        return None
    result = function(scenario)
    return list(result[0] if isinstance(result, tuple) else result)
