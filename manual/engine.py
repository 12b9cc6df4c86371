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

Beyond chains: a ``residual`` block's inner layers are recorded under
``layers.{i}.layers.{j}.…`` like the top-level ones (outputs, gradients,
parameters and their updates). A tied parameter (``Layer.tied``) is its
owner's array itself (transposed where the shapes differ): the optimizer
updates it once, under the owner's address, with the sum of every use's
gradient (``tied_gradient``); the Trace shows each use's own share at the
tied layer's address (``layers.{j}.weight.grad``, at the initial parameters).

Everything runs in ``scenario.np_dtype``; the scenario's arrays are never
mutated (weights are copied once, when the network is built).

The driver asks nothing of the hand-written classes beyond the engine protocol
(``manual.protocol``): ``run(scenario, engine)`` runs any ``Engine`` — manual's
own is ``MANUAL``, registered through that same declaration — and reads each
layer's kind (dropout's mask, an embedding's token ids, a block's inner
layers, the buffers) from the scenario's entry and the catalogue, never from
the class.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual import (attention, conv, dropout, embedding, normalization, pooling,  # noqa: F401
                                    recurrent, residual)  # — they register
from backprop_verify.manual.activations import ACTIVATIONS
from backprop_verify.manual.clipping import clip_grad_norm, clip_grad_value, clip_weights
from backprop_verify.manual.layers import LAYERS, attribute, build_layer
from backprop_verify.manual.losses import LOSSES
from backprop_verify.manual.optimizers import OPTIMIZERS
from backprop_verify.manual.protocol import Engine
from backprop_verify.scenarios.catalog import LAYERS as LAYER_SPECS
from backprop_verify.scenarios.masks import dropout_mask
from backprop_verify.scenarios.model import Scenario, walk_layers
from backprop_verify.scenarios.schedule import batch_schedule, is_full_batch_in_order
from backprop_verify.scenarios.trace import Trace, split_address

ENGINE_NAME = "manual"

# The hand-written engine, declared through the protocol any engine uses: every layer, activation, loss
# and optimizer of the catalogue (``tests/test_engine_protocol.py`` checks that none is missing).
MANUAL = Engine(ENGINE_NAME, LAYERS, ACTIVATIONS, LOSSES, OPTIMIZERS)


class Network(list):
    """The layer objects in order; ``specs``: {address prefix: the scenario's entry} and ``kinds``: {address
    prefix: its type} of every layer, a block's inner layers included; ``ties``: {tied address: (owner
    address, transposed)} — each use of a tied parameter beyond its owner's (``layers.5.weight`` →
    ``("layers.0.weight", False)``)."""

    specs: dict = {}
    kinds: dict[str, str] = {}
    ties: dict[str, tuple[str, bool]] = {}
    uses: list | None = None  # ``_uses``, kept by ``build_network`` once the network is complete


def kind_of(network: list, path: str, layer) -> str:
    """The scenario type of the layer at ``path``: from the network's ``kinds``, else the class's registered
    ``name`` (manual's classes carry it)."""
    return getattr(network, "kinds", {}).get(path) or getattr(layer, "name", "")


def _is_layer(kind: str) -> bool:
    """A catalogue layer (its backward takes ``input_grad``), not an activation."""
    return kind in LAYER_SPECS


def walk(network: list, prefix: str = "layers", kinds: dict[str, str] | None = None):
    """(address prefix, layer object) of every layer, a residual block's inner layers (its ``layers``) right
    after the block."""
    kinds = getattr(network, "kinds", {}) if kinds is None else kinds
    for index, layer in enumerate(network):
        path = f"{prefix}.{index}"
        yield path, layer
        if (kinds.get(path) or getattr(layer, "name", "")) == "residual":
            yield from walk(layer.layers, f"{path}.layers", kinds)


def build_network(scenario: Scenario, engine: Engine = MANUAL) -> Network:
    """One layer object per ``scenario.layers`` entry, built by ``engine`` with its parameters copied into
    ``scenario.np_dtype``; a tied parameter is then replaced by its owner's array (``.T`` where the shapes
    differ, a view: the owner's updates reach it)."""
    network = Network(engine.build_layer(spec, scenario.np_dtype, f"scenario {scenario.name!r}, layer {index}: ")
                      for index, spec in enumerate(scenario.layers))
    network.specs = dict(walk_layers(scenario.layers))
    network.kinds = {path: spec.type for path, spec in network.specs.items()}
    objects = dict(walk(network))
    network.ties = {}
    for path, spec in walk_layers(scenario.layers):
        for name, owner in spec.tied.items():
            owner_path, owner_name = split_address(owner)
            shared = getattr(objects[owner_path], attribute(owner_name))
            transposed = spec.is_transposed(name, shared)
            setattr(objects[path], attribute(name), shared.T if transposed else shared)
            network.ties[f"{path}.{name}"] = (owner, transposed)
    network.uses = _uses(network)
    return network


def build_loss(scenario: Scenario, engine: Engine = MANUAL):
    """``engine``'s loss for the scenario, with its reduction."""
    if scenario.loss.type not in engine.losses:
        raise ValueError(
            f"scenario {scenario.name!r}: unknown loss {scenario.loss.type!r}; expected one of {sorted(engine.losses)}"
        )
    return engine.losses[scenario.loss.type](scenario.loss.reduction)


def forward(network: list, x: np.ndarray, seed: int = 0, update: int = 1) -> list[np.ndarray]:
    """The output of every layer: z for a linear layer, a for an activation.

    A dropout layer (a layer whose catalogue spec is given a ``mask``) first
    receives its mask for this pass (``scenarios.masks``: the scenario's
    ``seed``, the layer, the ``update``, the input's shape).
    """
    outputs = []
    specs = getattr(network, "specs", {})
    for index, layer in enumerate(network):
        path = f"layers.{index}"
        kind = kind_of(network, path, layer)
        if _is_layer(kind) and "mask" in LAYER_SPECS[kind].data:
            p = specs[path].params["p"] if path in specs else layer.p
            layer.mask = dropout_mask(seed, index, update, x.shape, p).astype(x.dtype)
        x = layer.forward(x, **getattr(layer, "initial_states", {}))  # h0 / c0 given to a recurrent layer
        outputs.append(x)
    return outputs


def network_input(network: list, x: np.ndarray) -> np.ndarray:
    """The network's input: token ids (int64) in front of an embedding (a layer whose spec takes
    ``token_ids``), else ``x`` itself."""
    kind = kind_of(network, "layers.0", network[0]) if network else ""
    return x.astype(np.int64) if _is_layer(kind) and LAYER_SPECS[kind].grid_inputs == "token_ids" else x


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
        if index == 0 and _is_layer(kind_of(network, "layers.0", layer)):  # a layer can skip ∂L/∂x
            grad = layer.backward(grad, input_grad=input_grad)
        else:
            grad = layer.backward(grad)
    return grads, grad


def _uses(network: list) -> list[tuple[str, object, str]]:
    """(address, layer, name) of every learned array each layer uses, in layer order (a block's inner
    layers in place), weight before bias — tied ones included. Walked once per ``Network``
    (``build_network`` keeps the list: a training step asks for it four times)."""
    kept = getattr(network, "uses", None)
    if kept is not None:
        return kept
    return [(f"{path}.{name}", layer, name) for path, layer in walk(network)
            for name in getattr(layer, "parameter_names", ())]


def _parameter_addresses(network: list) -> list[str]:
    """The addresses of ``parameters(network)``: every learned array but the tied uses."""
    ties = getattr(network, "ties", {})
    return [address for address, _layer, _name in _uses(network) if address not in ties]


def parameters(network: list) -> list[np.ndarray]:
    """Every learned array, in layer order, weight before bias (the optimizer's order); a tied one once."""
    ties = getattr(network, "ties", {})
    return [getattr(layer, attribute(name)) for address, layer, name in _uses(network) if address not in ties]


def use_gradients(network: list) -> dict[str, np.ndarray]:
    """address -> the gradient of each use after ``backward``, a tied use's own share at its own address."""
    return {address: getattr(layer, f"{attribute(name)}_grad") for address, layer, name in _uses(network)}


def tied_gradient(owner_gradient: np.ndarray, use_gradient: np.ndarray, transposed: bool) -> np.ndarray:
    """One tensor used twice: ∂L/∂W = Σ over its uses, each use's share laid out as the owner's."""
    return owner_gradient + (use_gradient.T if transposed else use_gradient)


def gradients(network: list) -> list[np.ndarray]:
    """∂L/∂(every parameter), in the order of ``parameters(network)``: a tied parameter's is the sum over
    its uses."""
    uses = use_gradients(network)
    ties = getattr(network, "ties", {})
    total = {address: grad for address, grad in uses.items() if address not in ties}
    for address, (owner, transposed) in ties.items():
        total[owner] = tied_gradient(total[owner], uses[address], transposed)
    return [total[address] for address in _parameter_addresses(network)]


def _put_state(trace: Trace, network: list, prefix: str) -> None:
    """Every layer's buffers (the catalogue's ``LayerInfo.buffers``: batch_norm's running statistics) as they are now."""
    for path, layer in walk(network):
        kind = kind_of(network, path, layer)
        for name in LAYER_SPECS[kind].buffers if _is_layer(kind) else ():
            trace.put(f"{prefix}{path}.{name}", getattr(layer, name))


def _put_outputs(trace: Trace, network: list, outputs: list, grads: list, prefix: str = "layers",
                 kinds: dict[str, str] | None = None) -> None:
    """Every layer's output and ∂L/∂output, a residual block's inner ones (its ``outputs`` and ``grads``)
    after the block's own."""
    kinds = getattr(network, "kinds", {}) if kinds is None else kinds
    for index, layer in enumerate(network):
        path = f"{prefix}.{index}"
        trace.put(f"{path}.output", outputs[index])
        trace.put(f"{path}.output.grad", grads[index])
        if (kinds.get(path) or getattr(layer, "name", "")) == "residual":
            _put_outputs(trace, layer.layers, layer.outputs, layer.grads, f"{path}.layers", kinds)


def clip_gradients(grads: list[np.ndarray], spec) -> list[np.ndarray]:
    """The optimizer spec's gradient clipping, by global norm first, then by value."""
    if spec.clip_grad_norm is not None:
        grads = clip_grad_norm(grads, spec.clip_grad_norm)
    if spec.clip_grad_value is not None:
        grads = clip_grad_value(grads, spec.clip_grad_value)
    return grads


def run(scenario: Scenario, engine: Engine = MANUAL) -> Trace:
    """Forward, backward and (optionally) the optimizer trajectory of ``scenario``, through ``engine``'s
    classes (``manual.protocol``; the hand-written ones by default). The Trace carries the engine's name.

    Training loop, one update t = 1..steps on the batch ``batch_schedule`` gives::

        forward, loss L_t, backward       → step{t}.loss
        clip_grad_norm, clip_grad_value   → step{t}.layers.{i}.weight.grad (the gradient used)
        optimizer step, clip_weights      → step{t}.layers.{i}.weight
    """
    dtype = scenario.np_dtype
    x = np.asarray(scenario.x, dtype=dtype)  # read-only here: no copy needed
    target = np.asarray(scenario.y, dtype=dtype)
    network = build_network(scenario, engine)
    loss_fn = build_loss(scenario, engine)
    trace = Trace(engine=engine.name)
    params = parameters(network)
    addresses = _parameter_addresses(network)

    # Initial parameters, full batch: everything (a tied parameter also as its use sees it).
    for address, layer, name in _uses(network):
        trace.put(address, getattr(layer, attribute(name)))
    x = network_input(network, x)
    outputs = forward(network, x, scenario.seed)
    loss = loss_fn.forward(loss_input(outputs[-1]), loss_input(target))
    grads, input_gradient = backward(network, loss_fn.backward().reshape(outputs[-1].shape))
    trace.put("loss", loss)
    _put_outputs(trace, network, outputs, grads)
    for address, grad in {**use_gradients(network), **dict(zip(addresses, gradients(network)))}.items():
        trace.put(f"{address}.grad", grad)  # a tied use's own share; the owner's the sum over its uses
    _put_state(trace, network, "")
    for path, layer in walk(network):
        recorded = getattr(layer, "recorded", None) if _is_layer(kind_of(network, path, layer)) else None
        for name, value in (recorded() if recorded is not None else {}).items():
            trace.put(f"{path}.{name}", value)  # mask, cell, cell.grad, h0.grad, attention (``LayerInfo.records``)
    if input_gradient is not None:
        trace.put("input.grad", input_gradient)
    del outputs, grads

    spec = scenario.optimizer
    if spec is not None:
        if spec.type not in engine.optimizers:
            raise ValueError(f"scenario {scenario.name!r}: unknown optimizer {spec.type!r}; expected one of "
                             f"{sorted(engine.optimizers)}")
        optimizer = engine.optimizers[spec.type](params, spec.learning_rate, **spec.options)
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


__all__ = ["LAYERS", "MANUAL", "Network", "kind_of", "run", "build_layer", "build_network", "build_loss", "forward",
           "backward", "parameters", "gradients", "use_gradients", "tied_gradient", "walk", "clip_gradients"]
