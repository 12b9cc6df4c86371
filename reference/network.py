"""The scenario's network in PyTorch: activations, losses and the one network builder.

``build_network(scenario)`` turns a Scenario into plain torch tensors and
functions — every layer, activation and loss from ``torch.nn.functional``
(linear layers as PyTorch writes them, z = x Wᵀ + b with W of shape (out, in);
conv2d, pooling, batch_norm, layer_norm, group_norm; dropout as a multiplication by the
scenario's mask) — built from the
Scenario alone, never from ``manual/``'s objects. Autograd
(``reference.torch_engine.run``), the finite-difference oracle
(``reference.fd_oracle``) and the benchmark's torch step all run this one
network.

Three registries, keyed by the catalogue's names (``scenarios.catalog``):

``LAYERS[type](layer, network, index) -> function(signal, parameters) -> output``
``ACTIVATIONS[name](params) -> callable(z) -> a`` (``params`` complete: the
catalogue fills in the defaults, ``make_activation``)
``LOSSES[name](a, t, reduction) -> scalar tensor``

Adding a layer means one ``@torch_layer(name)`` builder below, keyed by its catalogue
spec; an activation or a loss, one entry in the matching dict.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from backprop_verify.scenarios.catalog import activation_params
from backprop_verify.scenarios.masks import dropout_mask
from backprop_verify.scenarios.model import Layer, Loss, Scenario

__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "LOSSES",
    "TORCH_DTYPES",
    "Network",
    "build_network",
    "loss_function",
    "make_activation",
    "to_tensor",
]

TORCH_DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


def to_tensor(array: np.ndarray, np_dtype: np.dtype) -> torch.Tensor:
    """A torch tensor holding a private copy of ``array`` (the scenario is never shared)."""
    return torch.from_numpy(np.array(array, dtype=np_dtype, order="C", copy=True))


# --------------------------------------------------------------------------- activations


def _identity(pre_activation: torch.Tensor) -> torch.Tensor:
    return pre_activation


def _softmax(pre_activation: torch.Tensor) -> torch.Tensor:
    return F.softmax(pre_activation, dim=-1)


def _leaky_relu(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    slope = float(params["slope"])
    return lambda pre_activation: F.leaky_relu(pre_activation, negative_slope=slope)


def _elu(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha = float(params["alpha"])
    return lambda pre_activation: F.elu(pre_activation, alpha=alpha)


def _softplus(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    beta = float(params["beta"])
    threshold = float(params["threshold"])
    return lambda pre_activation: F.softplus(pre_activation, beta=beta, threshold=threshold)


def _gelu(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    approximate = str(params["approximate"])
    return lambda pre_activation: F.gelu(pre_activation, approximate=approximate)


ACTIVATIONS: dict[str, Callable[[dict[str, Any]], Callable[[torch.Tensor], torch.Tensor]]] = {
    "identity": lambda params: _identity,
    "sigmoid": lambda params: torch.sigmoid,
    "tanh": lambda params: torch.tanh,
    "relu": lambda params: F.relu,
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "softplus": _softplus,
    "silu": lambda params: F.silu,
    "swish": lambda params: F.silu,
    "mish": lambda params: F.mish,
    "gelu": _gelu,
    "softmax": lambda params: _softmax,
}


def make_activation(layer: Layer) -> Callable[[torch.Tensor], torch.Tensor]:
    """The torch function for an activation layer of the scenario, its parameters
    completed from the catalogue (``scenarios.catalog.activation_params``)."""
    try:
        make = ACTIVATIONS[layer.type]
    except KeyError:
        raise ValueError(
            f"reference: unknown layer type {layer.type!r}; expected 'linear' or one of {sorted(ACTIVATIONS)}"
        ) from None
    return make(activation_params(layer.type, layer.params))


# --------------------------------------------------------------------------- losses
#
# ``a`` is the network's output (probabilities for cross_entropy / bce, logits for
# the fused losses), ``t`` the targets, rows are samples. ``n_samples`` is a.shape[0].


def _unknown_reduction(loss: str, reduction: str, allowed: tuple[str, ...]) -> ValueError:
    return ValueError(f"reference: loss {loss!r} has no reduction {reduction!r}; expected one of {list(allowed)}")


_MSE_REDUCTIONS = ("sum", "half_sum", "mean", "half_mean", "batch_mean", "half_batch_mean")


def _mse(a: torch.Tensor, t: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return F.mse_loss(a, t, reduction="sum")
    if reduction == "mean":
        return F.mse_loss(a, t, reduction="mean")
    if reduction == "half_sum":
        return 0.5 * F.mse_loss(a, t, reduction="sum")
    if reduction == "half_mean":
        return 0.5 * F.mse_loss(a, t, reduction="mean")
    if reduction == "batch_mean":
        return F.mse_loss(a, t, reduction="sum") / a.shape[0]
    if reduction == "half_batch_mean":
        return F.mse_loss(a, t, reduction="sum") / (2 * a.shape[0])
    raise _unknown_reduction("mse", reduction, _MSE_REDUCTIONS)


def _cross_entropy(a: torch.Tensor, t: torch.Tensor, reduction: str) -> torch.Tensor:
    """-sum t ln a on probabilities (torch has no such loss on probabilities)."""
    total = -(t * torch.log(a)).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / a.shape[0]
    raise _unknown_reduction("cross_entropy", reduction, ("sum", "mean"))


def _torch_sum_or_mean(name: str, function: Callable[..., torch.Tensor]):
    """A torch loss whose own 'sum' / 'mean' reductions are the catalogue's."""

    def loss(a: torch.Tensor, t: torch.Tensor, reduction: str) -> torch.Tensor:
        if reduction not in ("sum", "mean"):
            raise _unknown_reduction(name, reduction, ("sum", "mean"))
        return function(a, t, reduction=reduction)

    loss.__name__ = name
    return loss


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]] = {
    "mse": _mse,
    "cross_entropy": _cross_entropy,
    # probability targets; torch's 'mean' is over samples, as the catalogue says
    "softmax_cross_entropy": _torch_sum_or_mean("softmax_cross_entropy", F.cross_entropy),
    # 'mean' over every element
    "bce": _torch_sum_or_mean("bce", F.binary_cross_entropy),
    "bce_with_logits": _torch_sum_or_mean("bce_with_logits", F.binary_cross_entropy_with_logits),
}


def loss_function(loss: Loss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(a, t) -> scalar`` for the scenario's loss and reduction."""
    try:
        function = LOSSES[loss.type]
    except KeyError:
        raise ValueError(f"reference: unknown loss {loss.type!r}; expected one of {sorted(LOSSES)}") from None
    reduction = loss.reduction
    return lambda a, t: function(a, t, reduction)


# --------------------------------------------------------------------------- layers
#
# ``LAYERS[type](layer, network, index) -> function(signal, parameters) -> output``:
# the torch function layer ``index`` applies, with its learned tensors passed
# in (``parameters["weight"]``, ``["bias"]``) so that the finite-difference
# oracle can substitute perturbed copies. Every function is
# ``torch.nn.functional``'s own.


LAYERS: dict[str, Callable[[Layer, "Network", int], Callable]] = {}


def torch_layer(name: str):
    """Decorator: register a layer's torch builder under its catalogue name (one torch function per
    ``scenarios.catalog.LAYERS`` spec); a name registered twice is an error."""

    def add(build):
        if name in LAYERS:
            raise ValueError(f"reference: layer {name!r} registered twice")
        LAYERS[name] = build
        return build

    return add


@torch_layer("linear")
def _linear(layer: Layer, network: "Network", index: int):
    return lambda signal, parameters: F.linear(signal, parameters["weight"], parameters.get("bias"))


@torch_layer("conv2d")
def _conv2d(layer: Layer, network: "Network", index: int):
    options = layer.params
    return lambda signal, parameters: F.conv2d(signal, parameters["weight"], parameters.get("bias"),
                                               stride=options["stride"], padding=options["padding"],
                                               dilation=options["dilation"], groups=options["groups"])


@torch_layer("max_pool2d")
def _max_pool2d(layer: Layer, network: "Network", index: int):
    options = layer.params
    return lambda signal, parameters: F.max_pool2d(signal, options["kernel_size"], options["stride"],
                                                   options["padding"], options["dilation"],
                                                   ceil_mode=options["ceil_mode"])


@torch_layer("avg_pool2d")
def _avg_pool2d(layer: Layer, network: "Network", index: int):
    options = layer.params
    return lambda signal, parameters: F.avg_pool2d(signal, options["kernel_size"], options["stride"],
                                                   options["padding"], ceil_mode=options["ceil_mode"],
                                                   count_include_pad=options["count_include_pad"])


@torch_layer("flatten")
def _flatten(layer: Layer, network: "Network", index: int):
    return lambda signal, parameters: torch.flatten(signal, 1)


@torch_layer("batch_norm")
def _batch_norm(layer: Layer, network: "Network", index: int):
    """Batch statistics in training mode — the running statistics updated in
    place unless the network does not track them (finite differences) — or
    the running statistics in evaluation mode."""
    options = layer.params
    buffers = network.buffers_of[index]

    def apply(signal, parameters):
        training = options["training"]
        track = network.track_running_stats or not training
        return F.batch_norm(signal, buffers["running_mean"] if track else None,
                            buffers["running_var"] if track else None, parameters.get("weight"),
                            parameters.get("bias"), training=training, momentum=options["momentum"],
                            eps=options["eps"])

    return apply


@torch_layer("layer_norm")
def _layer_norm(layer: Layer, network: "Network", index: int):
    options = layer.params
    return lambda signal, parameters: F.layer_norm(signal, tuple(signal.shape[-options["dims"]:]),
                                                   parameters.get("weight"), parameters.get("bias"),
                                                   eps=options["eps"])


@torch_layer("group_norm")
def _group_norm(layer: Layer, network: "Network", index: int):
    options = layer.params
    return lambda signal, parameters: F.group_norm(signal, options["num_groups"], parameters.get("weight"),
                                                   parameters.get("bias"), eps=options["eps"])


@torch_layer("dropout")
def _dropout(layer: Layer, network: "Network", index: int):
    """x · m / (1 − p) with the scenario's mask m (``scenarios.masks``) for the network's current update."""
    p = layer.params["p"]
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)

    def apply(signal, parameters):
        mask = network.mask(index, tuple(signal.shape), p)
        return signal * (mask * scale)

    return apply


def _recurrent(kind: str):
    """rnn / gru: ``torch.nn.RNN`` / ``torch.nn.GRU`` (batch_first) with the scenario's
    tensors put in (``torch.func.functional_call``); lstm: ``torch.nn.LSTMCell``
    step by step, so that every cell state c_t is a tensor of the graph (the
    Trace records c_t and ∂L/∂c_t; ``torch.nn.LSTM`` keeps only the last).
    Truncated backpropagation through time (``bptt_chunk`` = k > 0): the state
    passed from one chunk of k steps to the next is ``detach()``-ed."""

    def build(layer: Layer, network: "Network", index: int):
        options = layer.params
        hidden, chunk = options["hidden_size"], options["bptt_chunk"]
        features = layer.tensors["weight_ih"].shape[1]
        if kind == "lstm":
            module = torch.nn.LSTMCell(features, hidden, bias=options["bias"], dtype=network.torch_dtype)
        else:
            make = torch.nn.RNN if kind == "rnn" else torch.nn.GRU
            extra = {"nonlinearity": options["nonlinearity"]} if kind == "rnn" else {}
            module = make(features, hidden, bias=options["bias"], batch_first=True, dtype=network.torch_dtype, **extra)
        suffix = "" if kind == "lstm" else "_l0"

        def apply(signal, tensors):
            weights = {name + suffix: tensors[name] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                       if name in tensors}
            batch, steps = signal.shape[0], signal.shape[1]
            zeros = signal.new_zeros(batch, hidden)
            hidden_state = tensors.get("h0", zeros)
            cell_state = tensors.get("c0", zeros)
            width = chunk or steps
            outputs, cells = [], []
            for start in range(0, steps, width):
                if start:
                    hidden_state = hidden_state.detach()
                    cell_state = cell_state.detach()
                if kind == "lstm":
                    for t in range(start, min(start + width, steps)):
                        hidden_state, cell_state = torch.func.functional_call(
                            module, weights, (signal[:, t], (hidden_state, cell_state)))
                        outputs.append(hidden_state)
                        cells.append(cell_state)
                else:
                    part, last = torch.func.functional_call(
                        module, weights, (signal[:, start:start + width], hidden_state.unsqueeze(0)))
                    outputs += list(part.unbind(1))
                    hidden_state = last[0]
            if kind == "lstm":
                network.cells[index] = cells
            return torch.stack(outputs, dim=1)

        return apply

    return build


@torch_layer("last_step")
def _last_step(layer: Layer, network: "Network", index: int):
    return lambda signal, tensors: signal[:, -1]


@torch_layer("embedding")
def _embedding(layer: Layer, network: "Network", index: int):
    return lambda signal, tensors: F.embedding(signal, tensors["weight"])


for _kind in ("rnn", "lstm", "gru"):
    torch_layer(_kind)(_recurrent(_kind))


# --------------------------------------------------------------------------- the network


class Network:
    """A scenario's layers and loss as torch tensors and functions, in the scenario's dtype.

    ``parameters_of[i]`` holds layer i's learned tensors by name (``weight``,
    ``bias``: a private copy), ``parameters`` all of them in layer order,
    weight before bias — the order torch.optim is given them —
    ``buffers_of[i]`` batch_norm's running statistics (updated in place by
    training-mode passes when ``track_running_stats``), and ``functions[i]``
    the function layer i applies. ``update`` selects the dropout masks of the
    next forward pass (``scenarios.masks``). With ``requires_grad`` the
    parameters require gradients.
    """

    def __init__(self, scenario: Scenario, requires_grad: bool = True, track_running_stats: bool = True):
        if scenario.dtype not in TORCH_DTYPES:
            raise ValueError(f"reference: dtype {scenario.dtype!r}; expected one of {list(TORCH_DTYPES)}")
        self.np_dtype = np.dtype(scenario.dtype)
        self.torch_dtype = TORCH_DTYPES[scenario.dtype]
        self.seed = scenario.seed
        self.track_running_stats = track_running_stats
        self.update = 1
        self._masks: dict[tuple, torch.Tensor] = {}
        self.parameters_of: dict[int, dict[str, torch.Tensor]] = {}
        self.buffers_of: dict[int, dict[str, torch.Tensor]] = {}
        self.states_of: dict[int, dict[str, torch.Tensor]] = {}
        self.cells: dict[int, list[torch.Tensor]] = {}
        self.token_ids = bool(scenario.layers) and scenario.layers[0].type == "embedding"
        self.parameters: list[torch.Tensor] = []
        self.functions: list[Callable] = []
        for i, layer in enumerate(scenario.layers):
            self.parameters_of[i] = {name: self.tensor(value).requires_grad_(requires_grad)
                                     for name, value in layer.parameters.items()}
            self.parameters += self.parameters_of[i].values()
            self.buffers_of[i] = {name: self.tensor(value) for name, value in layer.buffers.items()}
            self.states_of[i] = {name: self.tensor(value).requires_grad_(requires_grad)
                                 for name, value in layer.states.items()}
            if layer.type in LAYERS:
                self.functions.append(LAYERS[layer.type](layer, self, i))
            else:
                activation = make_activation(layer)
                self.functions.append(lambda signal, parameters, activation=activation: activation(signal))
        loss_of = loss_function(scenario.loss)
        # A loss on sequences (N, T, C) treats every leading axis as samples.
        self.loss_of = lambda output, targets: loss_of(output.reshape(-1, output.shape[-1]),
                                                       targets.reshape(-1, targets.shape[-1]))

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A private copy of ``array`` in the network's dtype (inputs, targets)."""
        return to_tensor(array, self.np_dtype)

    def inputs(self, array: np.ndarray) -> torch.Tensor:
        """The network's input: token ids (int64) in front of an embedding, else ``tensor(array)``."""
        if self.token_ids:
            return torch.from_numpy(np.asarray(array).astype(np.int64))
        return self.tensor(array)

    def mask(self, index: int, shape: tuple[int, ...], p: float) -> torch.Tensor:
        """Dropout layer ``index``'s mask for the current update and this input shape."""
        key = (index, self.update, shape)
        if key not in self._masks:
            self._masks[key] = self.tensor(dropout_mask(self.seed, index, self.update, shape, p))
        return self._masks[key]

    def masks_used(self) -> list[tuple[tuple, torch.Tensor]]:
        """((layer, update, shape), mask) of every dropout mask drawn so far, in order."""
        return list(self._masks.items())

    def apply(self, index: int, signal: torch.Tensor, **replaced: torch.Tensor) -> torch.Tensor:
        """Layer ``index`` on ``signal``, with any of its parameters or states replaced (finite differences)."""
        return self.functions[index](signal, {**self._tensors(index), **replaced})

    def _tensors(self, index: int) -> dict[str, torch.Tensor]:
        return {**self.parameters_of[index], **self.states_of[index]} if self.states_of[index] \
            else self.parameters_of[index]

    def forward(self, signal: torch.Tensor, start: int = 0) -> list[torch.Tensor]:
        """The outputs of layers ``start``, ``start + 1``, … when ``signal`` is fed to layer ``start``."""
        outputs = []
        for index in range(start, len(self.functions)):
            signal = self.functions[index](signal, self._tensors(index))
            outputs.append(signal)
        return outputs

    def output(self, signal: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The network's output when ``signal`` is fed to layer ``start`` (``signal`` itself past the last layer)."""
        for index in range(start, len(self.functions)):
            signal = self.functions[index](signal, self._tensors(index))
        return signal

    def loss(self, signal: torch.Tensor, targets: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The scenario's loss of ``output(signal, start)`` against ``targets``."""
        return self.loss_of(self.output(signal, start), targets)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``grad = None``), before a new backward pass."""
        for parameter in self.parameters:
            parameter.grad = None


def build_network(scenario: Scenario, requires_grad: bool = True, track_running_stats: bool = True) -> Network:
    """The scenario's network in torch, in ``scenario.dtype`` (``Network``)."""
    return Network(scenario, requires_grad, track_running_stats)
