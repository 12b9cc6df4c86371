"""The conditioning floor: addresses whose value the scenario's dtype cannot determine.

The absolute floor of ``tolerance`` assumes that every Jacobian the backward
pass multiplies by has a modest norm, so that a gradient's rounding error is
a few ulps of the loss gradient. A normalisation layer breaks that
assumption where a channel's (or a sample's) variance is small: its backward
multiplies by γ/σ, σ = √(σ² + ε), which can reach γ/√ε ≈ 300·γ, and the
gradients behind it are sums of large terms that cancel (a conv bias feeding
a LayerNorm over its own channel: Σδ ≈ 0 by construction). Two correct
engines then differ by what the cancellation leaves of their rounding, and
that is a property of the scenario, not of either engine.

Such an address is recognised from the reference alone, never from the
engine under test, as the trajectory horizon is (``horizon``): torch is run a
second time where only rounding differs —

* a float32 scenario: in float64 on the same (float32) numbers;
* a float64 scenario: with the input and every weight and bias moved one ulp
  (``numpy.nextafter``), float64 having no wider dtype —

and e = max|torch − torch'| over the address measures how far rounding alone
moves it. Two correct engines each within e of the exact value are within 2e
of each other (the triangle inequality), so a manual-torch row that fails the
ordinary criterion passes with the status ``floor`` when

    max|a − b|  ≤  rtol · max|b| + 2e,

and the note says so. A wrong derivative is not hidden: where rounding moves
an address by e, a missing factor moves it by a fraction of its size, and an
address is excused only as far as torch itself cannot pin it down. Only rows
that fail are re-judged, so the second run costs nothing on a passing
scenario. Optimizer steps are judged by the horizon instead.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from backprop_verify import reference
from backprop_verify.reports.verification.compare import FAIL, FLOOR, Row, family_scales, step_of
from backprop_verify.reports.verification.tolerance import FLOOR_ULPS, UNIT_ROUNDOFF
from backprop_verify.scenarios.catalog import LAYERS
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trace import Trace

_LAYER = re.compile(r"^layers\.([0-9]+)\.")


def normalisation_gains(scenario: Scenario, trace: Trace) -> dict[int, float]:
    """layer index -> the gain of a normalisation there (a catalogue layer with ``statistics``:
    batch_norm, layer_norm, group_norm): max over its groups of |γ|/√(σ² + ε), σ² the group's
    variance in ``trace`` (training-mode statistics; the running variance in eval mode). A group of
    equal values has σ² = 0 and gain |γ|/√ε ≈ 316·|γ|."""
    gains = {}
    for i, layer in enumerate(scenario.layers):
        spec = LAYERS.get(layer.type)
        if spec is None or spec.statistics is None:
            continue
        x = scenario.x if i == 0 else trace.get(f"layers.{i - 1}.output")
        if x is None:
            continue
        x = np.asarray(x, np.float64)
        _, variance, _ = spec.statistics(layer, x)
        gamma = np.ones(1) if layer.weight is None else np.abs(np.asarray(layer.weight, np.float64))
        if layer.weight is not None and spec.bias_sum == "channel":
            gamma = gamma.reshape((1, -1) + (1,) * (x.ndim - 2))
        gains[i] = float((gamma / np.sqrt(variance + float(layer.params.get("eps", 1e-5)))).max())
    return gains


def amplification(address: str, gains: dict[int, float]) -> float:
    """Π max(1, gain) over the normalisation layers a gradient ``address`` is upstream of (1 for others)."""
    if not address.endswith(".grad"):
        return 1.0
    match = _LAYER.match(address)
    # layer j's output or parameter gradient is upstream of layers j + 1, …; input.grad of every layer
    position = int(match.group(1)) if match else -1
    factor = 1.0
    for index, gain in gains.items():
        if index > position:
            factor *= max(1.0, gain)
    return factor


def rounding_twin(scenario: Scenario) -> Scenario:
    """The scenario as it differs from itself by rounding alone, without its optimizer
    (float32: computed in float64; float64: inputs, weights and biases one ulp up)."""
    single_pass = dataclasses.replace(scenario, optimizer=None)
    if scenario.dtype == "float32":
        return single_pass.astype("float64")

    def nudge(value):
        return None if value is None else np.nextafter(value, np.inf)

    layers = tuple(layer.with_parameters(nudge) for layer in scenario.layers)
    return dataclasses.replace(single_pass, layers=layers, x=nudge(single_pass.x))


def rejudge(scenario: Scenario, rows: list[Row], torch_trace: Trace) -> list[Row]:
    """``rows`` (manual-torch), with failing single-pass rows that lie within the
    conditioning floor marked ``floor`` (see the module docstring)."""
    failing = [row.address for row in rows if row.status == FAIL and not step_of(row.address)
               and row.address in torch_trace and np.isfinite(row.max_abs)]
    if not failing:
        return rows
    twin = reference.run(rounding_twin(scenario))
    floors = {}
    for address in failing:
        if address in twin and twin[address].shape == torch_trace[address].shape:
            moved = np.abs(np.asarray(torch_trace[address], np.float64) - np.asarray(twin[address], np.float64))
            floors[address] = 2.0 * float(moved.max()) if moved.size else 0.0
    wider = "float64" if scenario.dtype == "float32" else "float64 one ulp away"
    gains = normalisation_gains(scenario, torch_trace)
    gradient_scale = family_scales(torch_trace)[0]
    judged = []
    for row in rows:
        atol = floors.get(row.address) if row.status == FAIL else None
        if atol is not None:
            scale = float(np.abs(np.asarray(torch_trace[row.address], np.float64)).max())
            gain = amplification(row.address, gains)
            amplified = FLOOR_ULPS * UNIT_ROUNDOFF[scenario.dtype] * gradient_scale * gain if gain > 1 else 0.0
            if row.max_abs <= row.tolerance * scale + atol:
                row = row._replace(status=FLOOR, note=f"within the conditioning floor {atol:.1e} "
                                                      f"(torch {scenario.dtype} against {wider})")
            elif row.max_abs <= row.tolerance * scale + amplified:
                row = row._replace(status=FLOOR, note=f"within the absolute floor times the normalisation's "
                                                      f"gain {gain:.3g} ({amplified:.1e})")
        judged.append(row)
    return judged
