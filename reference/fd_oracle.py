"""The finite-difference oracle: gradients from loss values alone, in float64.

When the hand-written engine and autograd disagree, central differences settle
it: they need nothing but forward evaluations of the loss, so they share no
derivative code with either side. The forward pass is PyTorch's, on the same
network as autograd's (``reference.network.build_network``), under
``torch.no_grad``; the scenario is cast to float64 first.

Each derivative is the central difference

    dL/dθ_k ≈ [L(θ + h_k e_k) - L(θ - h_k e_k)] / (2 h_k)

with error ≈ h_k² |L'''| / 6 (truncation) + eps |L| / h_k (round-off in the two
loss values). The two terms balance at h ≈ cbrt(3 eps |L| / |L'''|), i.e. at
h ≈ cbrt(eps) ≈ 6.1e-6 when L and L''' are of order one, where the total error
is ≈ eps^(2/3) ≈ 4e-11. We scale the step with the entry, h_k = cbrt(eps) ·
scale_k with scale_k = max(1, |θ_k|), so that it stays a fixed number of ulps
above θ_k's own resolution for large entries, and divide by the step actually taken,
(θ_k + h_k) - (θ_k - h_k) (exact by Sterbenz's lemma when h_k < |θ_k|/3, and
within one ulp otherwise), so the representation error of θ_k ± h_k does not enter. A relu / leaky_relu kink
within h_k of an evaluation point gives the average of the two slopes; tests
keep finite differences away from kinks (the scenario tag "kink").

One exception to scale_k = max(1, |θ_k|): the network's output when the loss
takes probabilities (catalogue ``input_domain = "probability"``). There L
contains ln a (and, for bce, ln(1 - a)), whose derivatives grow like 1/a^n, so
the truncation error relative to dL/da is ≈ (h/a)²/3 — 1e-7 already at
a = 0.01 with h = 6e-6, and a - h < 0 gives NaN. For that output the scale is
the distance to the nearest singularity: scale_k = a_k for cross_entropy
(ln a only) and min(a_k, 1 - a_k) for bce; the relative error is then
≈ cbrt(eps)²/3 ≈ 1e-11 whatever a is, and the round-off term,
eps·|L| / (cbrt(eps)·a), stays small next to dL/da = -t/a.

Evaluations are batched: the 2·P perturbed copies of one tensor are stacked and
run through the rest of the network at once with ``torch.func.vmap``, starting
from the layer the tensor feeds (layers before it are not recomputed).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.func import vmap

from scenarios.catalog import LOSSES as LOSS_CATALOG
from scenarios.model import Scenario
from scenarios.shapes import output_shape
from scenarios.trace import Trace
from reference.network import build_network

__all__ = ["fd_oracle", "fd_gradient", "fd_applicable", "FD_MAX_ENTRIES", "RELATIVE_STEP"]

# cbrt(eps) for float64: the step that balances truncation against round-off.
RELATIVE_STEP: float = float(np.cbrt(np.finfo(np.float64).eps))

# Upper bound on the elements one batched evaluation may hold (about 32 MB of float64).
_CHUNK_ELEMENTS = 1 << 22

# Finite differences cost two forward passes per parameter and per input; above
# this many perturbed entries the oracle is skipped (manual-torch still runs).
FD_MAX_ENTRIES = 2000


def fd_applicable(scenario: Scenario) -> bool:
    """Whether finite differences settle disputes on ``scenario``: float64, smooth
    (no "kink" or "no-fd" tag), without truncated backpropagation through time,
    and of modest size (at most ``FD_MAX_ENTRIES``
    perturbed entries: parameters, inputs and the outputs of layers with
    parameters)."""
    if scenario.dtype != "float64" or "kink" in scenario.tags or "no-fd" in scenario.tags:
        return False
    if any(layer.params.get("bptt_chunk") for layer in scenario.layers):
        return False  # truncated BPTT computes a truncated gradient on purpose, not the loss's gradient
    entries = scenario.parameter_count + scenario.x.size
    if entries > FD_MAX_ENTRIES:
        return False
    shape = scenario.x.shape
    for layer in scenario.layers:
        shape = output_shape(layer, shape)
        if layer.has_parameters:
            entries += math.prod(shape)
    return entries <= FD_MAX_ENTRIES


def _scale(theta: np.ndarray | torch.Tensor):
    """The default per-entry scale of the step: max(1, |θ_k|)."""
    if isinstance(theta, torch.Tensor):
        return torch.clamp(theta.abs(), min=1.0)
    return np.maximum(1.0, np.abs(theta))


# Losses on probabilities: the distance from the output a to the nearest
# singularity of the loss, which scales the step for dL/da (module docstring).
_PROBABILITY_SCALES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cross_entropy": lambda a: a,
    "bce": lambda a: torch.minimum(a, 1.0 - a),
}


def fd_gradient(
    f: Callable[[np.ndarray], float], theta: np.ndarray, h: float | np.ndarray | None = None
) -> np.ndarray:
    """Central-difference gradient of a scalar function ``f`` of a NumPy array.

    ``h`` is an absolute step (scalar or one per entry); by default
    h_k = cbrt(eps)·max(1, |θ_k|) (see the module docstring). ``f`` receives a
    fresh float64 array of ``theta``'s shape on every call. Returns a float64
    array of ``theta``'s shape.
    """
    point = np.array(theta, dtype=np.float64, copy=True)
    steps = np.broadcast_to(
        RELATIVE_STEP * _scale(point) if h is None else np.asarray(h, dtype=np.float64), point.shape
    )
    flat = point.reshape(-1)
    flat_steps = steps.reshape(-1)
    grad = np.empty(flat.size, dtype=np.float64)
    for k in range(flat.size):
        theta_k = flat[k]
        plus, minus = theta_k + flat_steps[k], theta_k - flat_steps[k]
        flat[k] = plus
        value_plus = float(np.asarray(f(point.copy())).reshape(()))
        flat[k] = minus
        value_minus = float(np.asarray(f(point.copy())).reshape(()))
        flat[k] = theta_k
        grad[k] = (value_plus - value_minus) / (plus - minus)
    return grad.reshape(point.shape)


def _batched_central_difference(
    losses_of: Callable[[torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    steps: torch.Tensor,
    work_per_copy: int,
) -> torch.Tensor:
    """Central differences of ``losses_of`` at ``theta`` with per-entry steps ``steps``.

    ``losses_of`` maps a stack of K copies of ``theta`` (shape (K, *theta.shape))
    to their K losses. The 2·P copies (entry k raised, entry k lowered) are
    built and evaluated in chunks of at most ``_CHUNK_ELEMENTS`` elements, with
    ``work_per_copy`` the number of elements one copy's evaluation touches.
    """
    flat = theta.reshape(-1)
    n_entries = flat.numel()
    steps = steps.reshape(-1)
    plus = flat + steps
    minus = flat - steps
    taken = plus - minus  # exact: the step actually taken, 2 h_k up to rounding of θ ± h
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, 2 * max(work_per_copy, n_entries)))
    difference = torch.empty(n_entries, dtype=flat.dtype)
    for start in range(0, n_entries, per_chunk):
        stop = min(n_entries, start + per_chunk)
        count = stop - start
        entries = torch.arange(start, stop)
        rows = torch.arange(count)
        copies = flat.expand(2 * count, n_entries).clone()
        copies[rows, entries] = plus[start:stop]
        copies[rows + count, entries] = minus[start:stop]
        values = losses_of(copies.reshape(2 * count, *theta.shape))
        difference[start:stop] = values[:count] - values[count:]
    return (difference / taken).reshape(theta.shape)


def fd_oracle(scenario: Scenario, step: float | None = None) -> Trace:
    """Finite-difference trace of ``scenario`` in float64.

    Records ``loss`` and ``layers.{i}.output`` (a float64 forward pass), and by
    central differences ``layers.{i}.output.grad`` (perturbing layer i's output
    and running layers i+1.. on it), ``layers.{i}.weight.grad`` /
    ``.bias.grad`` and ``input.grad``. Each entry's step is h = factor·scale
    with factor = ``step`` or cbrt(eps) ≈ 6.1e-6 and scale = max(1, |θ|) (for
    the output fed to a loss on probabilities: the distance to the loss's
    singularity, see the module docstring) — so for entries with |θ| <= 1,
    ``step`` is the absolute step. No optimizer steps are traced.
    """
    if step is not None and not step > 0:
        raise ValueError(f"fd_oracle: step must be positive, got {step!r}")
    factor = RELATIVE_STEP if step is None else float(step)
    cast = scenario.astype("float64")
    trace = Trace("fd")
    n_layers = len(cast.layers)
    # Running statistics are not updated by the perturbed passes (a training-mode
    # batch_norm normalises with the statistics of each pass's own batch).
    network = build_network(cast, requires_grad=False, track_running_stats=False)
    x = network.inputs(cast.x)
    targets = network.tensor(cast.y)
    with torch.no_grad():
        outputs = network.forward(x)
    per_sample = [math.prod(tensor.shape[1:]) for tensor in [x, *outputs]]
    work_per_copy = x.shape[0] * max(per_sample) * max(1, n_layers)

    def loss_from(start: int, signal: torch.Tensor) -> torch.Tensor:
        """The loss when ``signal`` is fed to layer ``start`` (start = n_layers: it is the output)."""
        return network.loss(signal, targets, start)

    def central(
        theta: torch.Tensor, one_copy: Callable[[torch.Tensor], torch.Tensor], scale: torch.Tensor | None = None
    ) -> np.ndarray:
        steps = factor * (_scale(theta) if scale is None else scale)
        return _batched_central_difference(batched(one_copy), theta, steps, work_per_copy).numpy()

    # torch has no batching rule for the recurrent cells (aten::lstm_cell, rnn_tanh):
    # their scenarios evaluate the perturbed copies one after another.
    recurrent = any(layer.type in ("rnn", "lstm", "gru") for layer in cast.layers)

    def batched(one_copy: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        if recurrent:
            return lambda copies: torch.stack([one_copy(copy) for copy in copies])
        return vmap(one_copy)

    probability_scale = None
    if LOSS_CATALOG[cast.loss.type].input_domain == "probability":
        probability_scale = _PROBABILITY_SCALES.get(cast.loss.type, _PROBABILITY_SCALES["bce"])

    with torch.no_grad():
        trace.put("loss", network.loss_of(outputs[-1], targets).numpy())
        for i, output in enumerate(outputs):
            trace.put(f"layers.{i}.output", output.numpy())

        def step_scale(start: int, value: torch.Tensor) -> torch.Tensor | None:
            """Probability-aware steps for a tensor that reaches a loss on
            probabilities unchanged (only identity layers from ``start`` on)."""
            if probability_scale is None:
                return None
            if all(cast.layers[j].type == "identity" for j in range(start, n_layers)):
                return probability_scale(value)
            return None

        for i, output in enumerate(outputs):
            scale = step_scale(i + 1, output)
            trace.put(
                f"layers.{i}.output.grad",
                central(output, lambda perturbed, i=i: loss_from(i + 1, perturbed), scale),
            )
            layer_input = x if i == 0 else outputs[i - 1]
            for name, value in {**network.parameters_of[i], **network.states_of[i]}.items():
                trace.put(
                    f"layers.{i}.{name}.grad",
                    central(value, lambda theta, i=i, name=name, layer_input=layer_input: loss_from(
                        i + 1, network.apply(i, layer_input, **{name: theta}))),
                )
        if not network.token_ids:  # token ids have no gradient
            trace.put("input.grad", central(x, lambda perturbed: loss_from(0, perturbed), step_scale(0, x)))
    return trace
