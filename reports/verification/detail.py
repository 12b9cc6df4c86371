"""The element-wise differences behind a report row, for the per-scenario sections of ``report.html``.

``discrepancies.csv`` keeps one line per address (max|a − b|, the worst element
and both values there); a reader looking for the *pattern* of a wrong
derivative (a whole row off: a missing factor; one element: a kink) needs the
whole array |a − b|. Keeping every array of every scenario would cost
gigabytes, so the report recomputes the traces afterwards, in its own process
and only for the few scenarios that get a section (``difference_maps``).
"""
from __future__ import annotations

import numpy as np

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reference.fd_oracle import fd_oracle
from backprop_verify.scenarios.model import Scenario


def difference_maps(scenario: Scenario, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[np.ndarray, float]]:
    """{(pair, address): (|a − b| in float64, max|b|)} for each wanted (pair, address) both sides hold
    with the same shape. ``pair`` is ``manual-torch``, ``manual-fd`` or ``torch-fd``; the
    finite-difference oracle runs only if a wanted pair needs it."""
    traces = {}

    def trace(engine: str):
        if engine not in traces:
            traces[engine] = {"manual": manual.run, "torch": reference.run, "fd": fd_oracle}[engine](scenario)
        return traces[engine]

    maps = {}
    for pair, address in wanted:
        engine, _, reference_engine = pair.partition("-")
        a, b = trace(engine), trace(reference_engine)
        if address not in a or address not in b or np.shape(a[address]) != np.shape(b[address]):
            continue
        x, y = np.asarray(a[address], np.float64), np.asarray(b[address], np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            difference = np.abs(x - y)
        difference[(x == y) | (np.isnan(x) & np.isnan(y))] = 0.0
        difference[np.isnan(difference)] = np.inf
        finite = np.abs(y[np.isfinite(y)])
        maps[(pair, address)] = (difference, float(finite.max()) if finite.size else 0.0)
    return maps
