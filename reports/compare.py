"""Address-by-address comparison of two Traces."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from reports.tolerance import absolute_floor, parameter_floor, tolerance
from scenarios.trace import Trace

_STEP = re.compile(r"^step([0-9]+)\.")


@dataclass(frozen=True)
class Row:
    """One address compared: ``max_rel`` is normwise, max|a−b| / max|b|."""

    address: str
    max_abs: float
    max_rel: float
    tolerance: float
    passed: bool
    note: str = ""


def step_of(address: str) -> int:
    m = _STEP.match(address)
    return int(m.group(1)) if m else 0


def compare(a: Trace, b: Trace, dtype: str = "float64", pair: str | None = None,
            addresses=None) -> list[Row]:
    """One row per address of ``b`` (or of ``addresses``), in ``b``'s order.

    ``b`` is the reference side. An address missing from ``a`` fails.
    """
    pair = pair or f"{a.engine}-{b.engine}"
    floor = absolute_floor(dtype, pair)
    grad_scale, output_scale = family_scales(b)
    rows = []
    for address in (addresses if addresses is not None else b.keys()):
        tol = tolerance(dtype, pair, step_of(address))
        if address not in a or address not in b:
            missing = a.engine if address not in a else b.engine
            rows.append(Row(address, math.nan, math.nan, tol, False, f"missing in {missing}"))
            continue
        initial = address.partition(".")[2]
        if step_of(address) and not address.endswith((".grad", ".loss")) and initial in b:
            # A parameter after t updates, against its own initial size (reports.tolerance).
            atol = parameter_floor(dtype, pair, step_of(address)) * _max_abs(b[initial])
            rows.append(_compare_arrays(address, a[address], b[address], tol, atol))
            continue
        if address.endswith(".grad"):
            scale = grad_scale
        elif address.startswith("layers.") and address.endswith(".output"):
            scale = output_scale
        else:
            scale = 0.0
        rows.append(_compare_arrays(address, a[address], b[address], tol, floor * scale))
    return rows


def family_scales(trace: Trace) -> tuple[float, float]:
    """(max|∂L/∂ last layer output|, max|any layer output|) — see reports.tolerance."""
    outputs = [k for k in trace if k.startswith("layers.") and k.endswith(".output")]
    output_scale = max((_max_abs(trace[k]) for k in outputs), default=0.0)
    last = max((int(k.split(".")[1]) for k in outputs), default=None)
    grad_key = f"layers.{last}.output.grad"
    grad_scale = _max_abs(trace[grad_key]) if grad_key in trace else 0.0
    return grad_scale, output_scale


def _max_abs(value: np.ndarray) -> float:
    value = np.abs(np.asarray(value, dtype=np.float64))
    value = value[np.isfinite(value)]
    return float(value.max()) if value.size else 0.0


def _compare_arrays(address: str, x: np.ndarray, y: np.ndarray, tol: float, atol: float = 0.0) -> Row:
    if x.shape != y.shape:
        return Row(address, math.nan, math.nan, tol, False, f"shape {x.shape} vs {y.shape}")
    if x.size == 0:
        return Row(address, 0.0, 0.0, tol, True)
    x64 = x.astype(np.float64, copy=False)
    y64 = y.astype(np.float64, copy=False)
    if not (np.isfinite(x64).all() and np.isfinite(y64).all()):
        same = bool(np.array_equal(x64, y64, equal_nan=True))
        return Row(address, 0.0 if same else math.inf, 0.0 if same else math.inf, tol, same,
                   "non-finite values" + (" (identical)" if same else ""))
    max_abs = float(np.max(np.abs(x64 - y64)))
    scale = float(np.max(np.abs(y64)))
    if scale == 0.0:
        max_rel = 0.0 if max_abs == 0.0 else math.inf
    else:
        max_rel = max_abs / scale
    if max_abs <= tol * scale:
        return Row(address, max_abs, max_rel, tol, True)
    within_floor = max_abs <= tol * scale + atol
    return Row(address, max_abs, max_rel, tol, within_floor,
               f"within absolute floor {atol:.1e}" if within_floor else "")
