"""Run a Scenario through the hand-written engine and record its Trace.

The network is the scenario's layers in order — ``Linear`` for z = Wx + b, an
activation for a = σ(z) — followed by the loss L(a, t). Backpropagation walks
the layers in reverse, each layer turning ∂L/∂(its output) into ∂L/∂(its input)
by its own hand-written ``backward``; for a linear layer the incoming gradient
is δ = ∂L/∂z and the layer stores ∂L/∂W = δᵀx and ∂L/∂b = Σ_rows δ.

Addresses recorded (see ``scenarios.trace``): ``loss``, ``layers.{i}.output``,
``layers.{i}.output.grad``, ``layers.{i}.weight`` / ``.bias`` and their
``.grad``, ``input.grad`` — all at the initial parameters on the full batch —
and, with an optimizer, ``step{t}.loss`` (computed in update t on its
mini-batch, before it is applied), ``step{t}.layers.{i}.weight.grad`` /
``.bias.grad`` (the gradient update t used, after clipping) and
``step{t}.layers.{i}.weight`` / ``.bias`` (after update t and weight clipping).
Mini-batches come from ``scenarios.schedule.batch_schedule``, shared with the
torch mirror.

Everything runs in ``scenario.np_dtype``; the scenario's arrays are never
mutated (weights are copied once, when the network is built).
"""
from __future__ import annotations

import numpy as np

from manual.activations import ACTIVATIONS
from manual.clipping import clip_grad_norm, clip_grad_value, clip_weights
from manual.layers import Linear
from manual.losses import LOSSES
from manual.optimizers import OPTIMIZERS
from scenarios.model import Scenario
from scenarios.schedule import batch_schedule, is_full_batch_in_order
from scenarios.trace import Trace

ENGINE_NAME = "manual"


def build_network(scenario: Scenario) -> list:
    """One layer object per ``scenario.layers`` entry, parameters copied into ``scenario.np_dtype``."""
    dtype = scenario.np_dtype
    network = []
    for index, spec in enumerate(scenario.layers):
        if spec.is_linear:
            weight = np.array(spec.weight, dtype=dtype, copy=True)
            bias = None if spec.bias is None else np.array(spec.bias, dtype=dtype, copy=True)
            network.append(Linear(weight, bias))
        elif spec.type in ACTIVATIONS:
            network.append(ACTIVATIONS[spec.type](**spec.params))
        else:
            raise ValueError(
                f"scenario {scenario.name!r}, layer {index}: unknown type {spec.type!r}; "
                f"expected 'linear' or one of {sorted(ACTIVATIONS)}"
            )
    return network


def build_loss(scenario: Scenario):
    if scenario.loss.type not in LOSSES:
        raise ValueError(
            f"scenario {scenario.name!r}: unknown loss {scenario.loss.type!r}; expected one of {sorted(LOSSES)}"
        )
    return LOSSES[scenario.loss.type](scenario.loss.reduction)


def forward(network: list, x: np.ndarray) -> list[np.ndarray]:
    """The output of every layer: z for a linear layer, a for an activation."""
    outputs = []
    for layer in network:
        x = layer.forward(x)
        outputs.append(x)
    return outputs


def backward(network: list, grad_output: np.ndarray, input_grad: bool = True):
    """Chain rule from ∂L/∂(network output) back to the input.

    Returns (grads, ∂L/∂x) where grads[i] = ∂L/∂(output of layer i) — δ for a
    linear layer — and ∂L/∂x is None when ``input_grad`` is False and the first
    layer is linear (it then skips that product).
    """
    grads = [None] * len(network)
    grad = grad_output
    for index in range(len(network) - 1, -1, -1):
        grads[index] = grad
        layer = network[index]
        if index == 0 and isinstance(layer, Linear):
            grad = layer.backward(grad, input_grad=input_grad)
        else:
            grad = layer.backward(grad)
    return grads, grad


def parameters(network: list) -> list[np.ndarray]:
    return [p for layer in network if isinstance(layer, Linear) for p in layer.parameters]


def gradients(network: list) -> list[np.ndarray]:
    return [g for layer in network if isinstance(layer, Linear) for g in layer.gradients]


def _parameter_addresses(network: list) -> list[str]:
    """``layers.{i}.weight`` / ``.bias`` in the order of ``parameters(network)``."""
    return [f"layers.{index}.{name}" for index, layer in enumerate(network) if isinstance(layer, Linear)
            for name in (("weight",) if layer.bias is None else ("weight", "bias"))]


def clip_gradients(grads: list[np.ndarray], spec) -> list[np.ndarray]:
    """The optimizer spec's gradient clipping, by global norm first, then by value."""
    if spec.clip_grad_norm is not None:
        grads = clip_grad_norm(grads, spec.clip_grad_norm)
    if spec.clip_grad_value is not None:
        grads = clip_grad_value(grads, spec.clip_grad_value)
    return grads


def run(scenario: Scenario) -> Trace:
    """Forward, backward and (optionally) the optimizer trajectory of ``scenario``.

    Training loop, one update t = 1..steps on the batch ``batch_schedule`` gives::

        forward, loss L_t, backward       → step{t}.loss
        clip_grad_norm, clip_grad_value   → step{t}.layers.{i}.weight.grad (the gradient used)
        optimizer step, clip_weights      → step{t}.layers.{i}.weight
    """
    dtype = scenario.np_dtype
    x = np.asarray(scenario.x, dtype=dtype)  # read-only here: no copy needed
    target = np.asarray(scenario.y, dtype=dtype)
    network = build_network(scenario)
    loss_fn = build_loss(scenario)
    trace = Trace(engine=ENGINE_NAME)
    params = parameters(network)
    addresses = _parameter_addresses(network)

    # Initial parameters, full batch: everything.
    for address, param in zip(addresses, params):
        trace.put(address, param)
    outputs = forward(network, x)
    loss = loss_fn.forward(outputs[-1], target)
    grads, input_gradient = backward(network, loss_fn.backward())
    trace.put("loss", loss)
    for index, layer in enumerate(network):
        trace.put(f"layers.{index}.output", outputs[index])
        trace.put(f"layers.{index}.output.grad", grads[index])
    for address, grad in zip(addresses, gradients(network)):
        trace.put(f"{address}.grad", grad)
    trace.put("input.grad", input_gradient)
    del outputs, grads

    spec = scenario.optimizer
    if spec is not None:
        if spec.type not in OPTIMIZERS:
            raise ValueError(
                f"scenario {scenario.name!r}: unknown optimizer {spec.type!r}; expected one of {sorted(OPTIMIZERS)}"
            )
        optimizer = OPTIMIZERS[spec.type](params, spec.learning_rate, **spec.options)
        samples = x.shape[0]
        for step, indices in enumerate(batch_schedule(scenario), start=1):
            full = is_full_batch_in_order(indices, samples)
            # The initial full-batch pass already computed update 1's loss and gradient.
            if step > 1 or not full:
                batch_x, batch_target = (x, target) if full else (x[indices], target[indices])
                loss = loss_fn.forward(forward(network, batch_x)[-1], batch_target)
                backward(network, loss_fn.backward(), input_grad=False)
            grads = clip_gradients(gradients(network), spec)
            trace.put(f"step{step}.loss", loss)
            for address, grad in zip(addresses, grads):
                trace.put(f"step{step}.{address}.grad", grad)
            optimizer.step(grads)
            if spec.clip_weights is not None:
                clip_weights(params, *spec.clip_weights)
            for address, param in zip(addresses, params):
                trace.put(f"step{step}.{address}", param)
    return trace


__all__ = ["run", "build_network", "build_loss", "forward", "backward", "parameters", "gradients", "clip_gradients"]
