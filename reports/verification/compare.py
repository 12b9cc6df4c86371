"""Address-by-address comparison of two Traces, each row with an explicit status.

Status (``Row.status``), the one thing code reads to decide anything:

``pass``        max|a − b| ≤ rtol·max|b| (the relative criterion)
``floor``       passed only within the absolute floor above it (``tolerance``)
``not_judged``  reported, not judged: trajectory steps after the precision
                horizon (``horizon``), optimizers with no torch reference
``fail``        anything else: beyond the tolerance, missing, of another shape,
                non-finite where the reference is not

``passed`` is ``status != "fail"``. The note only explains a row to a reader.
"""
from __future__ import annotations

import itertools
import math
import re
from typing import NamedTuple

import numpy as np

from backprop_verify.reports.verification.tolerance import absolute_floor, parameter_floor, tolerance
from backprop_verify.scenarios.trace import Trace, index_text

_STEP = re.compile(r"^step([0-9]+)\.")


PASS, FLOOR, NOT_JUDGED, FAIL = "pass", "floor", "not_judged", "fail"
STATUSES = (PASS, FLOOR, NOT_JUDGED, FAIL)

# The columns of discrepancies.csv, in order: a Row with the scenario, the
# engine pair and the dtype in front; ``passed`` is ``status != "fail"``.
COLUMNS = ("scenario", "pair", "dtype", "address", "max_abs", "max_rel", "tolerance", "passed", "note", "status",
           "worst_index", "value", "reference_value", "triage")
# worst_index, value and reference_value locate the worst element: the index of
# the largest |a − b| in the address syntax (``[0,1]``, ``[3,0,1,1]``, empty for
# a scalar or when there is no element to name) and both engines' values there.
WORST_COLUMNS = ("worst_index", "value", "reference_value")
# ``triage``, on a failing row only: which side is the odd one out at that address, from
# the three pairs' statuses (``reports.verification.runner.triage``); empty elsewhere.
MANUAL_ALONE, TORCH_ALONE, ORACLE, ALL_APART, UNSETTLED, BELOW_FD = (
    "manual alone", "torch alone", "oracle", "all three apart", "no finite differences", "below fd resolution")
TRIAGES = (MANUAL_ALONE, TORCH_ALONE, ORACLE, ALL_APART, UNSETTLED, BELOW_FD)
TRIAGE_MEANING = {
    MANUAL_ALONE: "manual ≠ torch = fd: the hand derivation is wrong there",
    TORCH_ALONE: "manual = fd ≠ torch: the reference's network differs from the scenario",
    ORACLE: "manual = torch ≠ fd: look for a kink or tie the oracle crossed",
    ALL_APART: "manual, torch and fd all disagree",
    UNSETTLED: "manual ≠ torch; finite differences do not judge this address",
    BELOW_FD: "manual ≠ torch, both within finite differences' coarser tolerance",
}


class Row(NamedTuple):
    """One address compared: ``max_rel`` is normwise, max|a−b| / max|b|."""

    address: str
    max_abs: float
    max_rel: float
    tolerance: float
    status: str
    note: str = ""
    worst_index: str = ""                  # the element of the largest |a − b|: "[0,1]"; "" for a scalar
    value: float = math.nan                # a there (the engine under test)
    reference_value: float = math.nan      # b there (the reference side)

    @property
    def passed(self) -> bool:
        return self.status != FAIL


def step_of(address: str) -> int:
    """t for an address ``step{t}.…``, 0 for the initial-parameter addresses."""
    if not address.startswith("step"):
        return 0
    m = _STEP.match(address)
    return int(m.group(1)) if m else 0


def compare(a: Trace, b: Trace, dtype: str = "float64", pair: str | None = None,
            addresses=None) -> list[Row]:
    """One row per address of ``b`` (or of ``addresses``), in ``b``'s order.

    ``b`` is the reference side. An address missing from ``a`` fails.
    """
    pair = pair or f"{a.engine}-{b.engine}"
    floor = absolute_floor(dtype, pair)
    addresses = list(addresses if addresses is not None else b.keys())
    blind = {**getattr(a, "blind", {}), **getattr(b, "blind", {})}
    if blind:
        a, b = _without_blind_spots(a, b, blind)
    maxima = _finite_maxima(a, b, addresses)
    grad_scale, output_scale = family_scales(b, maxima)
    tolerances: dict[int, float] = {}  # by update number
    rows = []
    for address in addresses:
        step = step_of(address)
        tol = tolerances.get(step)
        if tol is None:
            tol = tolerances[step] = tolerance(dtype, pair, step)
        known = maxima.get(address)  # None: missing, mismatched, empty or non-finite
        if known is None and (address not in a or address not in b):
            missing = a.engine if address not in a else b.engine
            rows.append(Row(address, math.nan, math.nan, tol, FAIL, f"missing in {missing}"))
            continue
        if step and not address.endswith((".grad", ".loss")):
            initial = address.partition(".")[2]
            if initial in b:
                # A parameter after t updates, against its own initial size (``tolerance.parameter_floor``).
                atol = parameter_floor(dtype, pair, step) * _max_abs(b[initial])
                rows.append(_compare_arrays(address, a[address], b[address], tol, atol) if known is None
                            else _judge(address, *known[:2], tol, atol, *known[2:]))
                continue
        if address.endswith(".grad"):
            scale = grad_scale
        elif address.endswith(".output") and address.startswith("layers."):
            scale = output_scale
        else:
            scale = 0.0
        if known is None:
            rows.append(_compare_arrays(address, a[address], b[address], tol, floor * scale))
        else:
            max_abs, scale_b, *worst = known
            rows.append(_judge(address, max_abs, scale_b, tol, floor * scale, *worst))
    if blind:
        rows = [_with_blind_spot(row, blind[row.address]) if row.address in blind else row for row in rows]
    return rows


def _without_blind_spots(a: Trace, b: Trace, blind: dict) -> tuple[Trace, Trace]:
    """Copies of ``a`` and ``b`` whose blind elements (``Trace.blind``) are 0 on both sides,
    so that they count neither in max|a − b| nor in max|b|."""
    a, b = Trace(a.engine, a), Trace(b.engine, b)
    for address, spot in blind.items():
        for trace in (a, b):
            if address in trace and trace[address].shape == spot.mask.shape:
                value = trace[address].copy()
                value[spot.mask] = 0.0
                trace[address] = value
    return a, b


def _with_blind_spot(row: Row, spot) -> Row:
    """``row`` with its blind elements named in the note; ``not_judged`` when no element was judged."""
    note = (f"{spot.count} of {spot.mask.size} element{'s' * (spot.mask.size != 1)} not judged: {spot.first}"
            + (f"; {row.note}" if row.note else ""))
    if spot.count == spot.mask.size:
        return row._replace(status=NOT_JUDGED, note=note)
    return row._replace(note=note)


def _worst(x: np.ndarray, y: np.ndarray, flat: int) -> tuple[str, float, float]:
    """(index text, x there, y there) for the element ``flat``."""
    return index_text(flat, y.shape), float(x.flat[flat]), float(y.flat[flat])


def _finite_maxima(a: Trace, b: Trace, addresses: list[str]) -> dict[str, tuple]:
    """(max|a − b|, max|b|, worst index, a there, b there) in float64 for every
    address where both are finite, computed for all addresses at once: a trace
    holds dozens of small arrays, and one NumPy call on their concatenation
    costs what one call on each would. The worst element is the first (C order)
    where |a − b| reaches its maximum: found with one comparison against the
    maxima repeated over their segments, then one look-up per address.

    Addresses missing from a side, of different or empty shapes, or holding a
    non-finite value are left out; ``_compare_arrays`` handles them one by one.
    """
    names, xs, ys, shapes = [], [], [], []
    for address in addresses:
        x, y = a.get(address), b.get(address)
        if x is not None and y is not None and x.shape == y.shape and x.size:
            names.append(address)
            xs.append(x.ravel())
            ys.append(y.ravel())
            shapes.append(y.shape)
    if not names:
        return {}
    sizes = [y.size for y in ys]
    starts = list(itertools.accumulate(sizes[:-1], initial=0))
    x = np.concatenate(xs, dtype=np.float64)
    y = np.concatenate(ys, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite addresses are redone one by one
        difference = np.abs(x - y)
    max_abs = np.maximum.reduceat(difference, starts)
    # The first position of each segment's maximum (a NaN segment has none: it is left out below).
    hits = np.flatnonzero(difference == np.repeat(max_abs, sizes))
    if not hits.size:
        return {}
    first = hits[np.minimum(np.searchsorted(hits, starts), hits.size - 1)]
    x_at, y_at = x[first].tolist(), y[first].tolist()
    max_b = np.maximum.reduceat(np.abs(y, out=y), starts)
    known = {}
    for name, d, m, at, start, shape, value, reference_value in zip(
            names, max_abs.tolist(), max_b.tolist(), first.tolist(), starts, shapes, x_at, y_at):
        if math.isfinite(d) and math.isfinite(m):
            known[name] = (d, m, index_text(at - start, shape), value, reference_value)
    return known


def family_scales(trace: Trace, known: dict[str, tuple[float, float]] | None = None) -> tuple[float, float]:
    """(max|∂L/∂ last layer output|, max|any layer output|) — see ``reports.verification.tolerance``.

    ``known`` may hold ``_finite_maxima``'s (max|a − b|, max|trace[address]|)
    for addresses whose values are all finite.
    """
    known = known or {}

    def max_abs(address: str) -> float:
        return known[address][1] if address in known else _max_abs(trace[address])

    outputs = [k for k in trace if k.startswith("layers.") and k.endswith(".output")]
    output_scale = max((max_abs(k) for k in outputs), default=0.0)
    last = max((int(k.split(".")[1]) for k in outputs), default=None)
    grad_key = f"layers.{last}.output.grad"
    grad_scale = max_abs(grad_key) if grad_key in trace else 0.0
    return grad_scale, output_scale


def _max_abs(value: np.ndarray) -> float:
    """max|value| over the finite entries (0.0 if there are none).

    |v| and max are exact in any float dtype, so no float64 copy is needed; the
    finite entries are filtered out only when the plain maximum is not finite.
    """
    value = np.asarray(value)
    if value.size == 0:
        return 0.0
    largest = float(np.abs(value).max())
    if math.isfinite(largest):
        return largest
    value = np.abs(value.astype(np.float64, copy=False))
    value = value[np.isfinite(value)]
    return float(value.max()) if value.size else 0.0


def _compare_arrays(address: str, x: np.ndarray, y: np.ndarray, tol: float, atol: float = 0.0) -> Row:
    if x.shape != y.shape:
        return Row(address, math.nan, math.nan, tol, FAIL, f"shape {x.shape} vs {y.shape}")
    if x.size == 0:
        return Row(address, 0.0, 0.0, tol, PASS)
    # Two reductions on the usual path: NaN and ±inf propagate through max, so
    # max|y| is finite exactly when every y is, and then max|x − y| is finite
    # exactly when every x is (or when a difference overflowed — checked).
    scale = float(np.abs(y).max())
    x64, y64 = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
    if math.isfinite(scale):
        difference = np.abs(x64 - y64)
        flat = int(difference.argmax())
        max_abs = float(difference.flat[flat])
        if math.isfinite(max_abs) or np.isfinite(x).all():
            return _judge(address, max_abs, scale, tol, atol, *_worst(x, y, flat))
    same = bool(np.array_equal(x64, y64, equal_nan=True))
    # The worst element of a non-finite address: the first where the two differ (NaN against a number
    # or another infinity counts as infinitely far); the first non-finite one when they are identical.
    # (At least 1-D: the loss is a 0-d array, and arithmetic on 0-d arrays gives scalars.)
    x1, y1 = np.atleast_1d(x64), np.atleast_1d(y64)
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.abs(x1 - y1)
    difference[(x1 == y1) | (np.isnan(x1) & np.isnan(y1))] = 0.0
    difference[np.isnan(difference)] = math.inf
    flat = int(np.argmax(~np.isfinite(y1) | ~np.isfinite(x1))) if same else int(difference.argmax())
    return Row(address, 0.0 if same else math.inf, 0.0 if same else math.inf, tol, PASS if same else FAIL,
               _non_finite_note(x1, y1, flat, same), *_worst(x, y, flat))


def _non_finite_note(x: np.ndarray, y: np.ndarray, flat: int, same: bool) -> str:
    """What a row with inf or NaN says: agreeing non-finite values are agreement, and the row names them."""
    count = int((~np.isfinite(x) | ~np.isfinite(y)).sum())
    where = f"{count} of {y.size} elements" if y.size > 1 else "the value"
    if same:
        return f"non-finite values (identical): {where} {float(y.flat[flat])} on both sides"
    return f"non-finite values: {float(x.flat[flat])} against {float(y.flat[flat])} (first difference)"


def _judge(address: str, max_abs: float, scale: float, tol: float, atol: float,
           worst_index: str = "", value: float = math.nan, reference_value: float = math.nan) -> Row:
    """Pass when max|a − b| ≤ tol·max|b|, or within the absolute floor ``atol`` above it."""
    if scale == 0.0:
        max_rel = 0.0 if max_abs == 0.0 else math.inf
    else:
        max_rel = max_abs / scale
    worst = (worst_index, value, reference_value)
    if max_abs <= tol * scale:
        return Row(address, max_abs, max_rel, tol, PASS, "", *worst)
    if max_abs <= tol * scale + atol:
        return Row(address, max_abs, max_rel, tol, FLOOR, f"within absolute floor {atol:.1e}", *worst)
    return Row(address, max_abs, max_rel, tol, FAIL, "", *worst)
