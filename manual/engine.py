"""Run a Scenario through the hand-written engine and record its Trace.

The network is the scenario's layers in order — ``Linear`` for z = Wx + b,
``Conv2d``, pooling, normalisation, dropout, an activation for a = σ(z) —
followed by the loss L(a, t). Backpropagation walks the layers in reverse,
each layer turning ∂L/∂(its output) into ∂L/∂(its input) by its own
hand-written ``backward``; for a linear layer the incoming gradient is
δ = ∂L/∂z and the layer stores ∂L/∂W = δᵀx and ∂L/∂b = Σ_rows δ.

Addresses recorded (see ``scenarios.trace``): ``loss``, ``layers.{i}.output``,
``layers.{i}.output.grad``, ``layers.{i}.weight`` / ``.bias`` and their
``.grad``, batch_norm's ``running_mean`` / ``running_var`` after the pass,
dropout's ``mask``, ``input.grad`` — all at the initial parameters on the full
batch — and, with an optimizer, ``step{t}.loss`` (computed in update t on its
mini-batch, before it is applied), ``step{t}.layers.{i}.weight.grad`` /
``.bias.grad`` (the gradient update t used, after clipping), the running
statistics after update t's forward pass, and ``step{t}.layers.{i}.weight`` /
``.bias`` (after update t and weight clipping). The first pass is update 1's
when update 1 takes the whole batch in order. Dropout masks come from
``scenarios.masks`` (update t's pass uses mask t).
Mini-batches come from ``scenarios.schedule.batch_schedule``, shared with the
torch mirror.

Everything runs in ``scenario.np_dtype``; the scenario's arrays are never
mutated (weights are copied once, when the network is built).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual import conv, normalization, pooling, recurrent  # noqa: F401 — their classes register
from backprop_verify.manual.activations import ACTIVATIONS
from backprop_verify.manual.clipping import clip_grad_norm, clip_grad_value, clip_weights
from backprop_verify.manual.dropout import Dropout
from backprop_verify.manual.embedding import Embedding
from backprop_verify.manual.layers import LAYERS, Learned
from backprop_verify.manual.losses import LOSSES
from backprop_verify.manual.optimizers import OPTIMIZERS
from backprop_verify.scenarios.catalog import LAYERS as LAYER_SPECS
from backprop_verify.scenarios.masks import dropout_mask
from backprop_verify.scenarios.model import Layer, Scenario
from backprop_verify.scenarios.schedule import batch_schedule, is_full_batch_in_order
from backprop_verify.scenarios.trace import Trace

ENGINE_NAME = "manual"


def build_layer(spec: Layer, dtype: np.dtype, where: str = ""):
    """The hand-written layer (or activation) for one ``scenario.layers`` entry: the registered class's
    ``from_spec`` (``manual.layers.LAYERS``: every layer class registers itself under its catalogue name)."""
    if spec.type in LAYERS:
        return LAYERS[spec.type].from_spec(spec, dtype)
    if spec.type in ACTIVATIONS:
        return ACTIVATIONS[spec.type](**spec.params)
    raise ValueError(f"{where}unknown type {spec.type!r}; expected one of {sorted(LAYERS) + sorted(ACTIVATIONS)}")


def build_network(scenario: Scenario) -> list:
    """One layer object per ``scenario.layers`` entry, parameters copied into ``scenario.np_dtype``."""
    return [build_layer(spec, scenario.np_dtype, f"scenario {scenario.name!r}, layer {index}: ")
            for index, spec in enumerate(scenario.layers)]


def build_loss(scenario: Scenario):
    if scenario.loss.type not in LOSSES:
        raise ValueError(
            f"scenario {scenario.name!r}: unknown loss {scenario.loss.type!r}; expected one of {sorted(LOSSES)}"
        )
    return LOSSES[scenario.loss.type](scenario.loss.reduction)


def forward(network: list, x: np.ndarray, seed: int = 0, update: int = 1) -> list[np.ndarray]:
    """The output of every layer: z for a linear layer, a for an activation.

    A dropout layer first receives its mask for this pass (``scenarios.masks``:
    the scenario's ``seed``, the layer, the ``update``, the input's shape).
    """
    outputs = []
    for index, layer in enumerate(network):
        if isinstance(layer, Dropout):
            layer.mask = dropout_mask(seed, index, update, x.shape, layer.p).astype(x.dtype)
        x = layer.forward(x, **getattr(layer, "initial_states", {}))  # h0 / c0 given to a recurrent layer
        outputs.append(x)
    return outputs


def network_input(network: list, x: np.ndarray) -> np.ndarray:
    """The network's input: token ids (int64) in front of an embedding, else ``x`` itself."""
    return x.astype(np.int64) if network and isinstance(network[0], Embedding) else x


def loss_input(output: np.ndarray) -> np.ndarray:
    """A loss on sequences (N, T, C) treats every leading axis as samples: (N·T, C)."""
    return output if output.ndim == 2 else output.reshape(-1, output.shape[-1])


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
        if index == 0 and isinstance(layer, Learned):  # layers (not activations) can skip ∂L/∂x
            grad = layer.backward(grad, input_grad=input_grad)
        else:
            grad = layer.backward(grad)
    return grads, grad


def parameters(network: list) -> list[np.ndarray]:
    """Every learned array, in layer order, weight before bias (the optimizer's order)."""
    return [p for layer in network if isinstance(layer, Learned) for p in layer.parameters]


def gradients(network: list) -> list[np.ndarray]:
    return [g for layer in network if isinstance(layer, Learned) for g in layer.gradients]


def _parameter_addresses(network: list) -> list[str]:
    """``layers.{i}.weight`` / ``.bias`` in the order of ``parameters(network)``."""
    return [f"layers.{index}.{name}" for index, layer in enumerate(network) if isinstance(layer, Learned)
            for name in layer.parameter_names]


def _put_state(trace: Trace, network: list, prefix: str) -> None:
    """Every layer's buffers (the catalogue's ``LayerInfo.buffers``: batch_norm's running statistics) as they are now."""
    for index, layer in enumerate(network):
        for name in LAYER_SPECS[layer.name].buffers if layer.name in LAYER_SPECS else ():
            trace.put(f"{prefix}layers.{index}.{name}", getattr(layer, name))


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
    x = network_input(network, x)
    outputs = forward(network, x, scenario.seed)
    loss = loss_fn.forward(loss_input(outputs[-1]), loss_input(target))
    grads, input_gradient = backward(network, loss_fn.backward().reshape(outputs[-1].shape))
    trace.put("loss", loss)
    for index, layer in enumerate(network):
        trace.put(f"layers.{index}.output", outputs[index])
        trace.put(f"layers.{index}.output.grad", grads[index])
    for address, grad in zip(addresses, gradients(network)):
        trace.put(f"{address}.grad", grad)
    _put_state(trace, network, "")
    for index, layer in enumerate(network):
        for name, value in (layer.recorded() if isinstance(layer, Learned) else {}).items():
            trace.put(f"layers.{index}.{name}", value)  # mask, cell, cell.grad, h0.grad (``LayerInfo.records``)
    if input_gradient is not None:
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
                output = forward(network, batch_x, scenario.seed, step)[-1]
                loss = loss_fn.forward(loss_input(output), loss_input(batch_target))
                backward(network, loss_fn.backward().reshape(output.shape), input_grad=False)
            grads = clip_gradients(gradients(network), spec)
            trace.put(f"step{step}.loss", loss)
            for address, grad in zip(addresses, grads):
                trace.put(f"step{step}.{address}.grad", grad)
            _put_state(trace, network, f"step{step}.")
            optimizer.step(grads)
            if spec.clip_weights is not None:
                clip_weights(params, *spec.clip_weights)
            for address, param in zip(addresses, params):
                trace.put(f"step{step}.{address}", param)
    return trace


__all__ = ["LAYERS", "run", "build_layer", "build_network", "build_loss", "forward", "backward", "parameters", "gradients", "clip_gradients"]
