"""The summation floor: gradients that are sums of terms which cancel.

A bias gradient is a sum, ∂L/∂b_c = Σ_k δ_k over the n = N·H·W (or N·T)
entries of the layer's output gradient δ that share the bias; a linear
layer's weight gradient is a sum of n = N products, ∂L/∂W_jk = Σ_r δ_rj x_rk.
Where the exact sum is zero or much smaller than its terms — a bias feeding a
training-mode batch_norm (∂L/∂b = 0 exactly: the normalisation removes any
shift), a bias feeding a layer_norm over the axes it is constant on, a
softmax-cross-entropy δ that sums to zero over classes — the computed value is
what rounding leaves of the terms, and its size says nothing about the
precision. The absolute error of a computed sum is bounded by the size of the
terms, not of the result: recursive summation, pairwise summation and any
blocked order a BLAS chooses all satisfy

    |fl(Σ t_k) − Σ t_k|  ≤  γ_(n−1) Σ |t_k|,    γ_m = m·u / (1 − m·u) ≈ m·u

(Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2), with u the
unit roundoff of the scenario's dtype. Each engine sums its *own* terms, and
those differ by rounding too — they are compared at their own address (the
layer's ``output.grad``), where they pass or fail on their own. So for the
two engines' sums A = fl(Σ a_k) and B = fl(Σ b_k):

    |A − B|  ≤  Σ |a_k − b_k|  +  2 · n · u · Σ |b_k|        (to first order in u)

A manual-torch row that fails the ordinary criterion passes with the status
``floor`` when, at every element, |A − B| ≤ rtol · max|B| plus that bound.
A wrong derivative is not hidden: an error in the terms shows on the δ
address itself (not a sum, judged as usual); a wrong sum (a missing factor,
the wrong axes, a forgotten batch) makes A differ from fl(Σ a_k) by a
fraction of Σ|a_k|, where the floor is n·u of it plus what the terms already
disagree by. The first term is measured, not assumed: where the terms agree
to a few ulps, so must their sums; and it counts only where the terms' own
address passed — a wrong term fails there and excuses nothing downstream.

For a linear layer's weight, the terms are products δ_rj·x_rk and the bound
is Σ_r (|δa − δb|·|x_b| + |δ_a|·|x_a − x_b|) + 2·n·u·Σ_r |δ_b|·|x_b|. For a
conv2d kernel the terms are δ[n,o,i,j]·x[n,c,·,·] over n, i, j: the same bound
with the sums laid out as the kernel's own gradient (computed on the absolute
values by torch's ``conv2d_weight``). For the
γ of a normalisation (batch_norm, layer_norm, group_norm), the terms are δ·x̂ and x̂ is itself computed
inside each engine: the bound adds 2·Σ|δ|·e, e the rounding bound of x̂
(``_normalised``) — a layer_norm over a dimension of size 1 has x̂ = 0 exactly,
and an engine may leave 1e-14 of it.

Which parameters are sums of which terms is the catalogue's ``bias_sum``
(biases of linear, conv2d and the normalisations, and the γ of every
layer with ``statistics`` over the same axes); the weight of a linear layer sums δ_rj x_rk over
the rows r, a conv2d kernel δ·x over the samples and positions. Other gradients
(recurrent parameters, inputs) are not covered here; the conditioning floor
(``conditioning``) re-judges them.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from backprop_verify.reports.verification.compare import FAIL, FLOOR, Row
from backprop_verify.reports.verification.tolerance import UNIT_ROUNDOFF
from backprop_verify.scenarios.catalog import LAYERS
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trace import Trace


class Floor(NamedTuple):
    """The bound above for every element of one sum: ``measured`` (what the two engines' terms
    already differ by), ``rounding`` (2·n·u·Σ|b_k|, with x̂'s rounding for the norms' γ), ``count``
    (n) and ``terms``, the addresses the terms are judged at."""

    measured: np.ndarray
    rounding: np.ndarray
    count: int
    terms: tuple[str, ...]


def term_floors(scenario: Scenario, a: Trace, b: Trace) -> dict[str, Floor]:
    """address -> ``Floor`` for the gradients that are plain sums, from both engines' terms
    (``a`` the engine under test, ``b`` the reference)."""
    unit = UNIT_ROUNDOFF[scenario.dtype]
    floors = {}
    for i, layer in enumerate(scenario.layers):
        info = LAYERS.get(layer.type)
        address = f"layers.{i}.output.grad"
        if info is None or address not in a or address not in b or a[address].shape != b[address].shape:
            continue
        delta_a, delta_b = np.asarray(a[address], np.float64), np.asarray(b[address], np.float64)
        apart, size = np.abs(delta_a - delta_b), np.abs(delta_b)
        if layer.bias is not None and info.bias_sum and f"layers.{i}.bias.grad" in b:
            if info.bias_sum == "channel":
                axes = tuple(k for k in range(size.ndim) if k != 1)
            else:
                axes = tuple(range(size.ndim - np.ndim(layer.bias)))
            terms = size.sum(axis=axes)
            if terms.shape == np.shape(layer.bias):
                count = size.size // max(1, terms.size)
                floors[f"layers.{i}.bias.grad"] = Floor(apart.sum(axis=axes), 2.0 * count * unit * terms, count,
                                                        (address,))
        if info.statistics is not None and layer.weight is not None and f"layers.{i}.weight.grad" in b:
            layer_input = scenario.x if i == 0 else b.get(f"layers.{i - 1}.output")
            found = None if layer_input is None else _normalised(layer, np.asarray(layer_input, np.float64), unit)
            if found is not None:
                normalised, error, axes, group = found
                count = size.size // max(1, np.size(layer.weight))
                floors[f"layers.{i}.weight.grad"] = Floor(
                    (apart * normalised).sum(axis=axes),
                    (2.0 * size * error).sum(axis=axes) + 2.0 * count * unit * (size * normalised).sum(axis=axes),
                    count, (address,))
        if layer.type == "conv2d" and f"layers.{i}.weight.grad" in b:
            inputs = [scenario.x, scenario.x] if i == 0 else [trace.get(f"layers.{i - 1}.output") for trace in (a, b)]
            if all(value is not None for value in inputs):
                x_a, x_b = (np.asarray(value, np.float64) for value in inputs)
                count = size.shape[0] * size.shape[2] * size.shape[3]
                kernel_terms = functools.partial(_kernel_sum, layer)
                floors[f"layers.{i}.weight.grad"] = Floor(
                    kernel_terms(np.abs(x_b), apart) + kernel_terms(np.abs(x_a - x_b), np.abs(delta_a)),
                    2.0 * count * unit * kernel_terms(np.abs(x_b), size), count, (address, f"layers.{i - 1}.output"))
        if layer.type == "linear" and layer.weight is not None and f"layers.{i}.weight.grad" in b:
            inputs = [scenario.x, scenario.x] if i == 0 else [trace.get(f"layers.{i - 1}.output") for trace in (a, b)]
            if any(value is None for value in inputs):
                continue
            x_a, x_b = (np.asarray(value, np.float64).reshape(-1, layer.weight.shape[1]) for value in inputs)
            out = layer.weight.shape[0]
            if x_a.shape != x_b.shape or x_b.shape[0] * out != size.size:
                continue
            apart, size, delta_a = apart.reshape(-1, out), size.reshape(-1, out), np.abs(delta_a.reshape(-1, out))
            count = x_b.shape[0]
            floors[f"layers.{i}.weight.grad"] = Floor(apart.T @ np.abs(x_b) + delta_a.T @ np.abs(x_a - x_b),
                                                      2.0 * count * unit * (size.T @ np.abs(x_b)), count,
                                                      (address, f"layers.{i - 1}.output"))
    return floors


def _kernel_sum(layer, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Σ_{n,i,j} δ[n,o,i,j]·x[n,c,i·s + u·d − p, j·s + v·d − p] for every (o, c, u, v): the sum a conv2d kernel's
    gradient is, here of non-negative terms (torch's own weight-gradient routine, in float64)."""
    options = layer.params
    return torch.nn.grad.conv2d_weight(torch.from_numpy(x), tuple(layer.weight.shape), torch.from_numpy(delta),
                                       stride=options["stride"], padding=options["padding"],
                                       dilation=options["dilation"], groups=options["groups"]).numpy()


def _normalised(layer, x: np.ndarray, unit: float):
    """|x̂| of a normalisation's input x (the catalogue's ``statistics``: batch_norm, layer_norm,
    group_norm), a bound on the rounding error of x̂ at every element, the axes γ's gradient sums
    over (the spec's ``bias_sum``), and m, the size of each normalised group — or None.

    x̂ = (x − μ)/σ: μ, a mean of m values, is within m·u·max|x| of the exact mean; x − μ adds
    u·|x − μ|; σ = √(σ² + ε) is within (m + 2)·u relatively. So |x̂ − fl(x̂)| ≤ (m + 2)·u·(max|x|/σ + |x̂|),
    with max|x| ≤ |μ| + √(m·σ²) over the group — what a group of m equal values (x − μ = 0 exactly,
    σ = √ε) leaves of x̂ = 0.
    """
    spec = LAYERS.get(layer.type)
    if spec is None or spec.statistics is None:
        return None
    mean, variance, group = spec.statistics(layer, x)
    if spec.bias_sum == "channel":
        sum_axes = tuple(k for k in range(x.ndim) if k != 1)
    else:
        sum_axes = tuple(range(x.ndim - np.ndim(layer.weight)))
    deviation = np.sqrt(variance + float(layer.params.get("eps", 1e-5)))
    normalised = np.abs(x - mean) / deviation
    largest = np.abs(mean) + np.sqrt(group * variance)
    error = (group + 2) * unit * (largest / deviation + normalised)
    return normalised, error, sum_axes, group


def rejudge(rows: list[Row], a: Trace, b: Trace, floors: dict[str, Floor]) -> list[Row]:
    """``rows``, with failing rows whose every element lies within the summation floor marked ``floor``.

    The terms' measured difference counts only where the terms themselves passed: a wrong term
    is a failure at its own address, never an excuse for the sum it enters.
    """
    failed = {row.address for row in rows if row.status == FAIL}
    judged = []
    for row in rows:
        found = floors.get(row.address) if row.status == FAIL and math.isfinite(row.max_abs) else None
        if found is not None:
            trusted = not failed.intersection(found.terms)
            floor = found.rounding + found.measured if trusted else found.rounding
            x = np.asarray(a[row.address], np.float64)
            y = np.asarray(b[row.address], np.float64)
            if x.shape == y.shape == floor.shape and np.all(np.abs(x - y) <= row.tolerance * np.abs(y).max() + floor):
                bound = "Σ|a_k − b_k| + 2·n·u·Σ|b_k|" if trusted else "2·n·u·Σ|b_k|"
                row = row._replace(status=FLOOR, note=f"within the summation floor {bound} "
                                                      f"(n = {found.count} terms; at most {floor.max():.1e})")
        judged.append(row)
    return judged
