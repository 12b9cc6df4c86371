"""Run a Scenario through the hand-written engine and record its Trace.

The network is the scenario's layers in order — ``Linear`` for z = Wx + b, an
activation for a = σ(z) — followed by the loss L(a, t). Backpropagation walks
the layers in reverse, each layer turning ∂L/∂(its output) into ∂L/∂(its input)
by its own hand-written ``backward``; for a linear layer the incoming gradient
is δ = ∂L/∂z and the layer stores ∂L/∂W = δᵀx and ∂L/∂b = Σ_rows δ.

Addresses recorded (see ``scenarios.trace``): ``loss``, ``layers.{i}.output``,
``layers.{i}.output.grad``, ``layers.{i}.weight`` / ``.bias`` and their
``.grad``, ``input.grad`` — all at the initial parameters on the full batch —
and, with an optimizer, ``step{t}.loss`` (computed in update t, before it is
applied) and ``step{t}.layers.{i}.weight`` / ``.bias`` (after update t).

Everything runs in ``scenario.np_dtype``; the scenario's arrays are never
mutated (weights are copied once, when the network is built).
"""
from __future__ import annotations

import numpy as np

from manual.activations import ACTIVATIONS
from manual.layers import Linear
from manual.losses import LOSSES
from manual.optimizers import OPTIMIZERS
from scenarios.model import Scenario
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


def _record_parameters(trace: Trace, network: list, prefix: str = "") -> None:
    for index, layer in enumerate(network):
        if isinstance(layer, Linear):
            trace.put(f"{prefix}layers.{index}.weight", layer.weight)
            if layer.bias is not None:
                trace.put(f"{prefix}layers.{index}.bias", layer.bias)


def _record_gradients(trace: Trace, network: list, prefix: str = "") -> None:
    for index, layer in enumerate(network):
        if isinstance(layer, Linear):
            trace.put(f"{prefix}layers.{index}.weight.grad", layer.weight_grad)
            if layer.bias is not None:
                trace.put(f"{prefix}layers.{index}.bias.grad", layer.bias_grad)


def run(scenario: Scenario) -> Trace:
    """Forward, backward and (optionally) the optimizer trajectory of ``scenario``."""
    dtype = scenario.np_dtype
    x = np.asarray(scenario.x, dtype=dtype)  # read-only here: no copy needed
    target = np.asarray(scenario.y, dtype=dtype)
    network = build_network(scenario)
    loss_fn = build_loss(scenario)
    trace = Trace(engine=ENGINE_NAME)

    # Initial parameters, full batch: everything.
    _record_parameters(trace, network)
    outputs = forward(network, x)
    loss = loss_fn.forward(outputs[-1], target)
    grads, input_gradient = backward(network, loss_fn.backward())
    trace.put("loss", loss)
    for index, layer in enumerate(network):
        trace.put(f"layers.{index}.output", outputs[index])
        trace.put(f"layers.{index}.output.grad", grads[index])
    _record_gradients(trace, network)
    trace.put("input.grad", input_gradient)
    del outputs, grads

    # Full-batch gradient descent. Update 1 reuses the forward/backward above.
    spec = scenario.optimizer
    if spec is not None:
        if spec.type not in OPTIMIZERS:
            raise ValueError(
                f"scenario {scenario.name!r}: unknown optimizer {spec.type!r}; expected one of {sorted(OPTIMIZERS)}"
            )
        optimizer = OPTIMIZERS[spec.type](parameters(network), spec.learning_rate, **spec.options)
        for step in range(1, spec.steps + 1):
            if step > 1:
                loss = loss_fn.forward(forward(network, x)[-1], target)
                backward(network, loss_fn.backward(), input_grad=False)
            trace.put(f"step{step}.loss", loss)
            _record_gradients(trace, network, prefix=f"step{step}.")
            optimizer.step(gradients(network))
            _record_parameters(trace, network, prefix=f"step{step}.")
    return trace


__all__ = ["run", "build_network", "build_loss", "forward", "backward", "parameters", "gradients"]
