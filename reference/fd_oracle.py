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
within one ulp otherwise), so the representation error of θ_k ± h_k does not enter.

Blind spots. A central difference whose step crosses a point without a
derivative — a relu / leaky_relu / elu pre-activation changing sign, a
max-pool window whose maximum moves to another element (a tie: zeros that
dropout or relu produce), softplus crossing its threshold, bce's log clamp —
measures the average of two slopes, not the derivative. Every evaluation
therefore also returns the network's *branch code*: for each kinked layer
downstream of the perturbed tensor, which side of its kink every element is
on (``KINK_CODES``: the sign of z, the argmax of each window, …). Where the
code at θ + h_k or θ − h_k differs from the code at θ, the step crossed a
kink, and that element of the gradient is recorded as a blind spot
(``Trace.blind``) — left out of every comparison, with a note naming the
kink — instead of a value that would look like a failure. The rest of the
address is judged as usual. A smaller step is not tried: at an exact tie
(the common case: several zeros in one window) no step avoids the kink, and
below h ≈ 6e-6 the round-off ε|L|/h grows with |L| rather than with the
gradient, which the tolerance cannot follow. Those elements are still judged
manual against torch, where PyTorch's subgradient is the convention.
Scenarios tagged "kink" (component grids that sit on a kink on purpose) skip
finite differences altogether.

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
from the layer the tensor feeds (layers before it are not recomputed). The
recurrent layers run their cells written out (``reference.network._CELL_FORMULAS``,
held to torch's modules by tests/test_fd_oracle_cells.py): torch's fused cells
have no batching rule.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap

from backprop_verify.scenarios.budget import FD_ENTRIES
from backprop_verify.scenarios.catalog import LOSSES as LOSS_CATALOG
from backprop_verify.scenarios.model import Layer, Scenario, walk_layers
from backprop_verify.scenarios.shapes import output_shape
from backprop_verify.scenarios.trace import BlindSpot, Trace, index_text
from backprop_verify.reference.network import build_network

__all__ = ["fd_oracle", "fd_refined", "fd_gradient", "fd_applicable", "FD_MAX_ENTRIES", "RELATIVE_STEP", "KINK_CODES",
           "LOSS_KINK_CODES"]

# cbrt(eps) for float64: the step that balances truncation against round-off.
RELATIVE_STEP: float = float(np.cbrt(np.finfo(np.float64).eps))

# Upper bound on the elements one batched evaluation may hold (about 32 MB of float64).
_CHUNK_ELEMENTS = 1 << 22

# Finite differences cost two forward passes per parameter and per input; above
# this many perturbed entries the oracle is skipped (manual-torch still runs). The loader's
# budget counts the same bound (scenarios.budget.FD_ENTRIES).
FD_MAX_ENTRIES = FD_ENTRIES


# --------------------------------------------------------------------------- kinks
#
# ``KINK_CODES[type](layer)`` -> (what the kink is, code(input, output) -> tensor):
# which side of its kink every element of a kinked layer is on, as a tensor
# that changes exactly when an evaluation crosses the kink. Every catalogue
# entry marked ``kinked`` needs one (``tests/test_catalogue.py``); None for a
# layer whose options make it smooth.

def _sign_of_input(name: str):
    return lambda layer: (f"{name} kink (z = 0)", lambda signal, output: signal > 0)


def _softplus_kink(layer: Layer):
    beta = float(layer.params.get("beta", 1.0))
    threshold = float(layer.params.get("threshold", 20.0))
    return ("softplus threshold", lambda signal, output: signal * beta > threshold)


def _max_pool2d_kink(layer: Layer):
    options = layer.params

    def code(signal, output):
        _, indices = F.max_pool2d(signal, options["kernel_size"], options["stride"], options["padding"],
                                  options["dilation"], ceil_mode=options["ceil_mode"], return_indices=True)
        return indices

    return ("max_pool2d tie", code)


def _rnn_kink(layer: Layer):
    if layer.params.get("nonlinearity") != "relu":
        return None
    return ("rnn relu kink (z = 0)", lambda signal, output: output > 0)


KINK_CODES: dict[str, Callable[[Layer], tuple[str, Callable] | None]] = {
    "relu": _sign_of_input("relu"),
    "leaky_relu": _sign_of_input("leaky_relu"),
    "elu": _sign_of_input("elu"),  # C¹ at 0 only for alpha = 1, and never C²: the step still averages curvatures
    "softplus": _softplus_kink,
    "max_pool2d": _max_pool2d_kink,
    "rnn": _rnn_kink,
    # No entry: every layer spec not ``kinked`` (linear, conv2d, avg_pool2d, the norms — batch_norm, layer_norm,
    # group_norm, smooth wherever ε > 0 —, dropout with its fixed mask, lstm, gru, embedding, flatten, last_step).
}

# The losses' own switches: torch's binary_cross_entropy clamps ln a and ln(1 − a) at −100.
_BCE_CLAMP = -100.0
LOSS_KINK_CODES: dict[str, tuple[str, Callable]] = {
    "bce": ("bce clamp of ln at -100",
            lambda a, t: torch.stack([torch.log(a) > _BCE_CLAMP, torch.log1p(-a) > _BCE_CLAMP])),
}


def fd_applicable(scenario: Scenario) -> bool:
    """Whether finite differences settle disputes on ``scenario``: float64, smooth
    (no "kink" or "no-fd" tag), without truncated backpropagation through time,
    and of modest size (at most ``FD_MAX_ENTRIES``
    perturbed entries: parameters, inputs and the outputs of layers with
    parameters)."""
    if scenario.dtype != "float64" or "kink" in scenario.tags or "no-fd" in scenario.tags:
        return False
    if any(layer.params.get("bptt_chunk") for _path, layer in walk_layers(scenario.layers)):
        return False  # truncated BPTT computes a truncated gradient on purpose, not the loss's gradient
    entries = scenario.parameter_count + scenario.x.size
    if entries > FD_MAX_ENTRIES:
        return False
    return entries + _perturbed_outputs(scenario.layers, scenario.x.shape) <= FD_MAX_ENTRIES


def _perturbed_outputs(layers, shape: tuple[int, ...], inside_block: bool = False) -> int:
    """The entries of the outputs finite differences perturb beyond the parameters and the input: those of
    the layers with parameters, of every layer inside a block, and the attention probabilities."""
    entries = 0
    for layer in layers:
        output = output_shape(layer, shape)
        if inside_block or layer.has_parameters or layer.layers:
            entries += math.prod(output)
        if layer.layers:
            entries += _perturbed_outputs(layer.layers, shape, inside_block=True)
        if layer.type == "multihead_attention":
            entries += shape[0] * layer.params["num_heads"] * shape[1] ** 2
        shape = output
    return entries


def _scale(theta: np.ndarray | torch.Tensor):
    """The default per-entry scale of the step: max(1, |θ_k|)."""
    if isinstance(theta, torch.Tensor):
        return torch.clamp(theta.abs(), min=1.0)
    return np.maximum(1.0, np.abs(theta))


# Losses on probabilities: the distance from the output a to the nearest
# singularity of the loss, which scales the step for dL/da (module docstring).
# The smallest step, in units in the last place of the entry: large enough that θ ± h are distinct floats
# whatever the rounding (the step taken, (θ + h) − (θ − h), is then exact and non-zero), small enough to stay
# inside a probability's domain as long as a is 4 ulps from 0 or 1; closer, the step crosses the bce clamp,
# a blind spot.
MIN_STEP_ULPS = 4.0
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
    losses_of: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    theta: torch.Tensor,
    steps: torch.Tensor,
    work_per_copy: int,
    base_code: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``losses_of`` at ``theta`` with per-entry steps ``steps``.

    ``losses_of`` maps a stack of K copies of ``theta`` (shape (K, *theta.shape))
    to their K losses and K branch codes (K, C); ``base_code`` (C,) is the code
    at ``theta``. The 2·P copies (entry k raised, entry k lowered) are built
    and evaluated in chunks of at most ``_CHUNK_ELEMENTS`` elements, with
    ``work_per_copy`` the number of elements one copy's evaluation touches.
    Returns the differences (theta's shape) and, per entry, the first position
    of the code that either step changed (−1 where neither did).
    """
    flat = theta.reshape(-1)
    n_entries = flat.numel()
    steps = steps.reshape(-1)
    plus = flat + steps
    minus = flat - steps
    taken = plus - minus  # exact: the step actually taken, 2 h_k up to rounding of θ ± h
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, 2 * max(work_per_copy, n_entries, base_code.numel())))
    difference = torch.empty(n_entries, dtype=flat.dtype)
    crossed = torch.full((n_entries,), -1, dtype=torch.int64)
    for start in range(0, n_entries, per_chunk):
        stop = min(n_entries, start + per_chunk)
        count = stop - start
        entries = torch.arange(start, stop)
        rows = torch.arange(count)
        copies = flat.expand(2 * count, n_entries).clone()
        copies[rows, entries] = plus[start:stop]
        copies[rows + count, entries] = minus[start:stop]
        values, codes = losses_of(copies.reshape(2 * count, *theta.shape))
        difference[start:stop] = values[:count] - values[count:]
        if base_code.numel():
            changed = (codes[:count] != base_code) | (codes[count:] != base_code)
            crossed[start:stop] = torch.where(changed.any(1), changed.to(torch.int8).argmax(1), -1)
    return (difference / taken).reshape(theta.shape), crossed.reshape(theta.shape)


def fd_oracle(scenario: Scenario, step: float | None = None) -> Trace:
    """Finite-difference trace of ``scenario`` in float64.

    Records ``loss`` and ``layers.{i}.output`` (a float64 forward pass), and by
    central differences ``layers.{i}.output.grad`` (perturbing layer i's output
    and running layers i+1.. on it), ``layers.{i}.weight.grad`` /
    ``.bias.grad`` and ``input.grad``. Each entry's step is h = factor·scale
    with factor = ``step`` or cbrt(eps) ≈ 6.1e-6 and scale = max(1, |θ|) (for
    the output fed to a loss on probabilities: the distance to the loss's
    singularity, see the module docstring) — so for entries with |θ| <= 1,
    ``step`` is the absolute step. Elements whose step crosses a kink are
    recorded in ``trace.blind`` (module docstring). No optimizer steps are traced.

    Beyond chains, every address is perturbed where it lives, and the network
    is run from the top-level layer that holds it (``Network.apply_path``'s
    ``replaced``): a residual block's inner outputs and parameters
    (``layers.{i}.layers.{j}.…``), the attention probabilities
    (``layers.{i}.attention.grad``: P replaced, P V and everything after it
    recomputed), a tied parameter's owner (every use sees the perturbed tensor:
    the sum over the uses) and each tied use alone (its own share).
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
    network.cell_formulas = True  # recurrent cells that vmap can batch
    x = network.inputs(cast.x)
    targets = network.tensor(cast.y)
    inner_outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():  # recorded: the attention probabilities and a block's branch input, to perturb
        outputs, records = network.recorded_forward(
            x, observe=lambda path, _signal, output: inner_outputs.__setitem__(path, output))
    records = {address: value for address, value in records.items() if address.endswith((".attention", ".branch"))}
    per_sample = [math.prod(tensor.shape[1:]) for tensor in [x, *outputs]]
    work_per_copy = x.shape[0] * max(per_sample) * max(1, n_layers)

    kinks = {}  # layer path -> (what the kink is, code)
    for path, layer in walk_layers(cast.layers):
        make = KINK_CODES.get(layer.type)
        found = make(layer) if make is not None else None
        if found is not None:
            kinks[path] = found
    loss_kink = LOSS_KINK_CODES.get(cast.loss.type)

    def evaluate(start: int, signal: torch.Tensor, replaced: dict[str, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, list, list]:
        """The loss, the branch codes (one tensor per kink) and where each comes from (a layer path, or None
        for the loss) when ``signal`` is fed to top-level layer ``start`` with the tensors ``replaced`` by
        address (start = n_layers: it is the output)."""
        codes, sources = [], []

        def observe(path: str, layer_input: torch.Tensor, output: torch.Tensor) -> None:
            if path in kinks:
                codes.append(kinks[path][1](layer_input, output))
                sources.append(path)

        for path in network.top[start:]:
            signal = network.apply_path(path, signal, replaced, observe)
        if loss_kink is not None:
            codes.append(loss_kink[1](signal, targets))
            sources.append(None)
        return network.loss_of(signal, targets), codes, sources

    def one_code(codes: list) -> torch.Tensor:
        return torch.cat([c.reshape(-1).to(torch.float64) for c in codes]) if codes else torch.zeros(0)

    def central(address: str, theta: torch.Tensor, one_copy: Callable[[torch.Tensor], tuple],
                scale: torch.Tensor | None = None) -> None:
        steps = factor * (_scale(theta) if scale is None else scale)
        # Never below MIN_STEP_ULPS units in the last place of θ: a probability a = 1 − 5e-12 scales its step
        # to 3e-17, under half an ulp of 1, and θ ± h would both round to θ (0/0).
        spacing = torch.nextafter(theta.abs(), torch.full_like(theta, math.inf)) - theta.abs()
        steps = torch.maximum(steps, MIN_STEP_ULPS * spacing)
        _, base_codes, sources = one_copy(theta)
        gradient, crossed = _batched_central_difference(batched(one_copy), theta, steps, work_per_copy,
                                                        one_code(base_codes))
        trace.put(address, gradient.numpy())
        if (crossed >= 0).any():
            trace.blind[address] = _blind_spot(crossed.numpy(), base_codes, sources)

    def _blind_spot(crossed: np.ndarray, base_codes: list, sources: list) -> BlindSpot:
        """Which kink the first crossing element's step crossed, and where."""
        first = int(np.flatnonzero(crossed.reshape(-1) >= 0)[0])
        position = int(crossed.reshape(-1)[first])
        for source, code in zip(sources, base_codes):
            if position < code.numel():
                where = index_text(position, tuple(code.shape))
                what = kinks[source][0] if source is not None else loss_kink[0]
                at = f"{source}{where}" if source is not None else f"the loss{where}"
                break
            position -= code.numel()
        return BlindSpot(crossed >= 0, f"fd step at {index_text(first, tuple(crossed.shape))} crosses a {what} at {at}")

    def batched(one_copy: Callable[[torch.Tensor], tuple]) -> Callable[[torch.Tensor], tuple]:
        def flat(copy):
            loss, codes, _sources = one_copy(copy)
            return loss, one_code(codes)

        return vmap(flat)

    probability_scale = None
    if LOSS_CATALOG[cast.loss.type].input_domain == "probability":
        probability_scale = _PROBABILITY_SCALES.get(cast.loss.type, _PROBABILITY_SCALES["bce"])

    def perturbed(start: int, signal: torch.Tensor, address: str) -> Callable[[torch.Tensor], tuple]:
        """The loss as a function of the tensor at ``address`` alone, run from top-level layer ``start``."""
        return lambda theta: evaluate(start, signal, {address: theta})

    with torch.no_grad():
        trace.put("loss", network.loss_of(outputs[-1], targets).numpy())
        for i, output in enumerate(outputs):
            trace.put(f"layers.{i}.output", output.numpy())
        for path, output in inner_outputs.items():
            if path.count(".") > 1:  # inside a block
                trace.put(f"{path}.output", output.numpy())

        def step_scale(start: int, value: torch.Tensor) -> torch.Tensor | None:
            """Probability-aware steps for a tensor that reaches a loss on
            probabilities unchanged (only identity layers from ``start`` on)."""
            if probability_scale is None:
                return None
            if all(cast.layers[j].type == "identity" for j in range(start, n_layers)):
                return probability_scale(value)
            return None

        for i, output in enumerate(outputs):
            central(f"layers.{i}.output.grad", output, lambda perturbed_output, i=i: evaluate(i + 1, perturbed_output),
                    step_scale(i + 1, output))
            layer_input = x if i == 0 else outputs[i - 1]
            for path in [p for p in network.parameters_of if p == f"layers.{i}" or p.startswith(f"layers.{i}.")]:
                if path != f"layers.{i}":
                    central(f"{path}.output.grad", inner_outputs[path], perturbed(i, layer_input, f"{path}.output"))
                tensors = network.tensors(path)  # parameters, states, each tied use as it sees its owner
                for name, value in tensors.items():
                    central(f"{path}.{name}.grad", value, perturbed(i, layer_input, f"{path}.{name}"))
                for record in ("branch", "attention"):
                    if f"{path}.{record}" in records:
                        central(f"{path}.{record}.grad", records[f"{path}.{record}"],
                                perturbed(i, layer_input, f"{path}.{record}"))
        if not network.token_ids:  # token ids have no gradient
            central("input.grad", x, lambda perturbed_input: evaluate(0, perturbed_input), step_scale(0, x))
    return trace


def fd_refined(scenario: Scenario, coarse: Trace) -> Trace:
    """``coarse`` (``fd_oracle(scenario)``) refined by Richardson extrapolation.

    The central difference's error is c₂h² + c₄h⁴ + …: with the same scales
    at half the step, (4·D(h/2) − D(h))/3 cancels the h² term. Where the
    network's curvature is large — a normalisation over values of small
    variance, whose derivatives grow like 1/σ^k — the h² term alone can reach
    a few 1e-6 of the gradient; extrapolated, it is ~1e-10. Round-off grows
    only by the factor (4·2 + 1)/3 = 3 (ε|L|/h at h/2, weighted by 4/3).
    Blind spots of either step are blind in the result.
    """
    fine = fd_oracle(scenario, step=RELATIVE_STEP / 2)
    refined = Trace("fd", coarse, blind=coarse.blind)
    for address, value in fine.items():
        if address.endswith(".grad") and address in coarse:
            refined[address] = (4.0 * value - coarse[address]) / 3.0
    for address, spot in fine.blind.items():
        earlier = refined.blind.get(address)
        refined.blind[address] = spot if earlier is None else BlindSpot(earlier.mask | spot.mask, earlier.first)
    return refined
