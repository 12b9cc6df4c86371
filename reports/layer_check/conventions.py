"""At kinks: is a difference from torch a convention, or a wrong derivative?

At a kink (relu at 0, LeakyReLU at 0, a tie of max) the derivative does not
exist; any one-sided derivative is a defensible value there, and torch picks
one by convention (relu′(0) = 0, LeakyReLU′(0) = the slope, ties of max go to
the first element). A layer that picks the other side is not wrong — but a
value that is neither side is, and a "kink draw" (integer inputs, ties) of a
layer whose forward is smooth there has no kink at all.

So, on a kink draw, for every element where a gradient row fails the layer
against torch, the left and right derivatives of the layer's own forward are
measured by one-sided differences (``finite_differences.one_sided``) and the
element is:

``convention``     a kink (left ≠ right) and the layer's value is one of them;
``not one-sided``  a kink, and the layer's value is neither side;
``no kink``        left = right: the derivative exists there, and a difference is a real one.

A row whose every failing element is a convention gets the status
``convention`` (it passes, with a note naming the point and both values);
``strict_kinks=True`` keeps it ``fail``. "Equal" is judged as finite
differences are (``tolerance(dtype, "manual-fd")``, normwise over the address,
with its absolute floor scaled by max|g|).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.reference.fd_oracle import FD_MAX_ENTRIES
from backprop_verify.reports.layer_check.contract import Signature, Subject, upstream_value
from backprop_verify.reports.layer_check.finite_differences import one_sided
from backprop_verify.reports.layer_check.table import CONVENTION, LayerRow
from backprop_verify.reports.verification.compare import FAIL
from backprop_verify.reports.verification.tolerance import absolute_floor, tolerance
from backprop_verify.scenarios.trace import Trace, index_text

CONVENTION_KINK, NOT_ONE_SIDED, NO_KINK = "convention", "not one-sided", "no kink"


def at_kinks(row: LayerRow, mine: Trace, theirs: Trace, subject: Subject, signature: Signature, arrays, values,
             upstreams, strict: bool) -> LayerRow:
    """``row`` (a failing layer-torch gradient row of a kink draw) with its kink verdict."""
    address = row.quantity  # an input's or parameter's gradient: "{name}.grad"
    target = address[:-len(".grad")]
    a = np.asarray(mine[address], dtype=np.float64)
    b = np.asarray(theirs[address], dtype=np.float64)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return row
    g_scale = float(np.abs(upstream_value(upstreams)).max()) if upstreams else 0.0
    b_scale = float(np.abs(b).max())
    difference = np.abs(a - b).reshape(-1)
    bound = row.tolerance * b_scale + absolute_floor(row.dtype, "manual-torch") * g_scale
    elements = sorted(np.flatnonzero(difference > bound).tolist(), key=lambda flat: -difference[flat])
    if not elements or len(elements) > FD_MAX_ENTRIES:
        return row
    left, right, theta = one_sided(subject, signature, arrays, values, upstreams, target, elements)
    near = tolerance(row.dtype, "manual-fd") * b_scale + absolute_floor(row.dtype, "manual-fd") * g_scale
    kink_near = tolerance("float64", "manual-fd") * b_scale + absolute_floor("float64", "manual-fd") * g_scale
    verdicts = []
    for n, flat in enumerate(elements):
        value, reference = a.reshape(-1)[flat], b.reshape(-1)[flat]
        sides = [side for side, one in (("left", left[n]), ("right", right[n])) if abs(value - one) <= near]
        torch_sides = [side for side, one in (("left", left[n]), ("right", right[n])) if abs(reference - one) <= near]
        point = f"{index_text(flat, a.shape)} ({target} = {theta[n]:.10g})"
        if abs(left[n] - right[n]) <= kink_near:
            agrees = ("the layer agrees with it, torch does not" if sides
                      else "torch agrees with it, the layer does not" if torch_sides else "neither agrees with it")
            verdicts.append((NO_KINK, f"no kink at {point}: left and right derivatives agree ({left[n]:.10g}); "
                                      f"the layer gives {value:.10g}, torch {reference:.10g}: {agrees}"))
        elif sides:
            torch_side = f" (the {torch_sides[0]} derivative)" if torch_sides else ""
            verdicts.append((CONVENTION_KINK, f"convention at {point}: the layer gives {value:.10g}, the {sides[0]} "
                                              f"derivative; torch {reference:.10g}{torch_side}"))
        else:
            verdicts.append((NOT_ONE_SIDED, f"at {point}, a kink (left derivative {left[n]:.10g}, right "
                                            f"{right[n]:.10g}): the layer gives {value:.10g}, neither side; torch "
                                            f"{reference:.10g}"))
    kinds = [kind for kind, _ in verdicts]
    kind = next(k for k in (NOT_ONE_SIDED, NO_KINK, CONVENTION_KINK) if k in kinds)
    note = next(text for k, text in verdicts if k == kind)
    if len(set(kinds)) == 1 and len(kinds) > 1:
        note += f" (likewise at the {len(kinds) - 1} other elements that differ)"
    elif len(kinds) > 1:
        said = {CONVENTION_KINK: "one-sided at a kink", NOT_ONE_SIDED: "neither side of a kink", NO_KINK: "no kink"}
        note += (f" ({len(kinds)} elements differ: "
                 f"{', '.join(f'{kinds.count(k)} {said[k]}' for k in said if k in kinds)})")
    status = CONVENTION if kind == CONVENTION_KINK and not strict else FAIL
    return row._replace(status=status, kink=kind, note=note + (f"; {row.note}" if row.note else ""))
