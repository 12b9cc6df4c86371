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

``LAYERS[type](layer, network, path) -> function(signal, parameters) -> output`` (``path``: the
layer's address prefix, ``layers.3`` or, inside a block, ``layers.3.layers.1``)
``ACTIVATIONS[name](params) -> callable(z) -> a`` (``params`` complete: the
catalogue fills in the defaults, ``make_activation``)
``LOSSES[name](a, t, reduction) -> scalar tensor``

Adding a layer means one ``@torch_layer(name)`` builder below, keyed by its catalogue
spec; an activation or a loss, one entry in the matching dict.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from backprop_verify.scenarios.catalog import activation_params
from backprop_verify.scenarios.masks import dropout_mask
from backprop_verify.scenarios.model import Layer, Loss, Scenario, walk_layers
from backprop_verify.scenarios.trace import split_address

__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "LOSSES",
    "TORCH_DTYPES",
    "Network",
    "attention_mask",
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
# ``LAYERS[type](layer, network, path) -> function(signal, parameters) -> output``:
# the torch function the layer at ``path`` (``layers.3``, ``layers.3.layers.1``)
# applies, with its learned tensors passed in (``parameters["weight"]``,
# ``["bias"]``) so that the finite-difference oracle can substitute perturbed
# copies. Every function is ``torch.nn.functional``'s own, or written from
# torch operations where an intermediate must be a tensor of the graph (the
# attention probabilities).


LAYERS: dict[str, Callable[[Layer, "Network", str], Callable]] = {}


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
def _linear(layer: Layer, network: "Network", path: str):
    return lambda signal, parameters: F.linear(signal, parameters["weight"], parameters.get("bias"))


@torch_layer("conv2d")
def _conv2d(layer: Layer, network: "Network", path: str):
    options = layer.params
    return lambda signal, parameters: F.conv2d(signal, parameters["weight"], parameters.get("bias"),
                                               stride=options["stride"], padding=options["padding"],
                                               dilation=options["dilation"], groups=options["groups"])


@torch_layer("max_pool2d")
def _max_pool2d(layer: Layer, network: "Network", path: str):
    options = layer.params
    return lambda signal, parameters: F.max_pool2d(signal, options["kernel_size"], options["stride"],
                                                   options["padding"], options["dilation"],
                                                   ceil_mode=options["ceil_mode"])


@torch_layer("avg_pool2d")
def _avg_pool2d(layer: Layer, network: "Network", path: str):
    options = layer.params
    return lambda signal, parameters: F.avg_pool2d(signal, options["kernel_size"], options["stride"],
                                                   options["padding"], ceil_mode=options["ceil_mode"],
                                                   count_include_pad=options["count_include_pad"])


@torch_layer("flatten")
def _flatten(layer: Layer, network: "Network", path: str):
    return lambda signal, parameters: torch.flatten(signal, 1)


@torch_layer("batch_norm")
def _batch_norm(layer: Layer, network: "Network", path: str):
    """Batch statistics in training mode — the running statistics updated in
    place unless the network does not track them (finite differences) — or
    the running statistics in evaluation mode."""
    options = layer.params
    buffers = network.buffers_of[path]

    def apply(signal, parameters):
        training = options["training"]
        track = network.track_running_stats or not training
        return F.batch_norm(signal, buffers["running_mean"] if track else None,
                            buffers["running_var"] if track else None, parameters.get("weight"),
                            parameters.get("bias"), training=training, momentum=options["momentum"],
                            eps=options["eps"])

    return apply


@torch_layer("layer_norm")
def _layer_norm(layer: Layer, network: "Network", path: str):
    options = layer.params
    return lambda signal, parameters: F.layer_norm(signal, tuple(signal.shape[-options["dims"]:]),
                                                   parameters.get("weight"), parameters.get("bias"),
                                                   eps=options["eps"])


@torch_layer("group_norm")
def _group_norm(layer: Layer, network: "Network", path: str):
    options = layer.params
    return lambda signal, parameters: F.group_norm(signal, options["num_groups"], parameters.get("weight"),
                                                   parameters.get("bias"), eps=options["eps"])


@torch_layer("dropout")
def _dropout(layer: Layer, network: "Network", path: str):
    """x · m / (1 − p) with the scenario's mask m (``scenarios.masks``) for the network's current update
    (a top-level layer: the loader keeps dropout out of blocks)."""
    p = layer.params["p"]
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)

    def apply(signal, parameters):
        mask = network.mask(int(path.split(".")[1]), tuple(signal.shape), p)
        return signal * (mask * scale)

    return apply


def _recurrent(kind: str):
    """rnn / gru: ``torch.nn.RNN`` / ``torch.nn.GRU`` (batch_first) with the scenario's
    tensors put in (``torch.func.functional_call``); lstm: ``torch.nn.LSTMCell``
    step by step, so that every cell state c_t is a tensor of the graph (the
    Trace records c_t and ∂L/∂c_t; ``torch.nn.LSTM`` keeps only the last).
    Truncated backpropagation through time (``bptt_chunk`` = k > 0): the state
    passed from one chunk of k steps to the next is ``detach()``-ed."""

    def build(layer: Layer, network: "Network", path: str):
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
                if network.cell_formulas:
                    for t in range(start, min(start + width, steps)):
                        hidden_state, cell_state = _CELL_FORMULAS[kind](signal[:, t], hidden_state, cell_state,
                                                                        tensors, options)
                        outputs.append(hidden_state)
                        cells.append(cell_state)
                elif kind == "lstm":
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
            if kind == "lstm" and network.recording:
                network.records[f"{path}.cell"] = cells
            return torch.stack(outputs, dim=1)

        return apply

    return build


def _affine(signal: torch.Tensor, tensors: dict, which: str) -> torch.Tensor:
    """signal Wᵀ + b of the input (``ih``) or recurrent (``hh``) weights."""
    return F.linear(signal, tensors[f"weight_{which}"], tensors.get(f"bias_{which}"))


def _rnn_cell(x, h, c, tensors, options):
    """h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) (``torch.nn.RNN``'s formula)."""
    act = torch.relu if options["nonlinearity"] == "relu" else torch.tanh
    return act(_affine(x, tensors, "ih") + _affine(h, tensors, "hh")), c


def _lstm_cell(x, h, c, tensors, options):
    """Gates i, f, g, o (in that order) = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh; c' = σ(f) c + σ(i) tanh(g),
    h' = σ(o) tanh(c') (``torch.nn.LSTMCell``'s formula)."""
    i, f, g, o = (_affine(x, tensors, "ih") + _affine(h, tensors, "hh")).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(x, h, c, tensors, options):
    """Gates r, z, n (in that order): r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r h_n) with
    x_· = x W_ihᵀ + b_ih and h_· = h W_hhᵀ + b_hh; h' = (1 − z) n + z h (``torch.nn.GRU``'s formula)."""
    x_r, x_z, x_n = _affine(x, tensors, "ih").chunk(3, dim=1)
    h_r, h_z, h_n = _affine(h, tensors, "hh").chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, c


# The recurrent cells written out, one time step each, (x_t, h, c, tensors, options) -> (h', c'): torch has
# no batching rule for its fused cells (aten::lstm_cell, rnn_tanh …), so the finite-difference oracle, which
# evaluates its perturbed copies under ``torch.func.vmap``, runs these (``Network.cell_formulas``).
# tests/test_fd_oracle_cells.py holds them to torch's modules.
_CELL_FORMULAS = {"rnn": _rnn_cell, "lstm": _lstm_cell, "gru": _gru_cell}


@torch_layer("last_step")
def _last_step(layer: Layer, network: "Network", path: str):
    return lambda signal, tensors: signal[:, -1]


@torch_layer("embedding")
def _embedding(layer: Layer, network: "Network", path: str):
    return lambda signal, tensors: F.embedding(signal, tensors["weight"])


for _kind in ("rnn", "lstm", "gru"):
    torch_layer(_kind)(_recurrent(_kind))


def attention_mask(steps: int, causal: bool, key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """True where query t may not see key s, (N or 1, 1, T, T): s > t when causal, and the keys
    ``key_padding_mask`` (N, T) marks True (``torch.nn.MultiheadAttention``'s conventions)."""
    mask = torch.ones(steps, steps, dtype=torch.bool).triu(1)[None, None] if causal else None
    if key_padding_mask is not None:
        padding = key_padding_mask[:, None, None, :]
        mask = padding if mask is None else mask | padding
    return mask


@torch_layer("multihead_attention")
def _multihead_attention(layer: Layer, network: "Network", path: str):
    """``torch.nn.functional.multi_head_attention_forward``'s computation (batch first), written out so that
    the probabilities P are a tensor of the graph — recorded, with ∂L/∂P, as ``{path}.attention`` — and so
    that the oracle can replace them (``parameters["attention"]``): the projections with ``F.linear`` on
    the rows of ``in_proj_weight`` (q, k, v in that order), q scaled by √(1/d) before Q Kᵀ as torch scales
    it, −∞ where masked before ``torch.softmax``, then P V and ``F.linear`` with ``out_proj``.
    ``tests/test_attention_reference.py`` checks it against ``multi_head_attention_forward`` itself."""
    options = layer.params
    heads, causal = options["num_heads"], options["causal"]
    padding = layer.masks.get("key_padding_mask")
    padding = None if padding is None else torch.from_numpy(np.asarray(padding, dtype=bool))

    def apply(signal, tensors):
        batch, steps, width = signal.shape
        head_width = width // heads
        queries, keys, values = (part.reshape(batch, steps, heads, head_width).transpose(1, 2) for part in
                                 F.linear(signal, tensors["in_proj_weight"], tensors.get("in_proj_bias")).chunk(3, -1))
        scores = (queries * math.sqrt(1.0 / head_width)) @ keys.transpose(-2, -1)
        mask = attention_mask(steps, causal, padding)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        probabilities = tensors.get("attention")
        if probabilities is None:
            probabilities = torch.softmax(scores, dim=-1)
        if network.recording:
            network.records[f"{path}.attention"] = probabilities
        heads_output = (probabilities @ values).transpose(1, 2).reshape(batch, steps, width)
        return F.linear(heads_output, tensors["out_proj.weight"], tensors.get("out_proj.bias"))

    return apply


@torch_layer("residual")
def _residual(layer: Layer, network: "Network", path: str):
    """x + f(x) as an addition: ``Network.apply_path`` runs f's layers and hands their output ``branch`` here."""
    return lambda signal, branch: signal + branch


@torch_layer("positional_embedding")
def _positional_embedding(layer: Layer, network: "Network", path: str):
    return lambda signal, tensors: signal + tensors["weight"][:signal.shape[1]]


# --------------------------------------------------------------------------- the network


class Network:
    """A scenario's layers and loss as torch tensors and functions, in the scenario's dtype.

    Every layer is known by its address prefix, its *path* (``layers.3``; inside a residual block
    ``layers.3.layers.1``): ``parameters_of[path]`` holds its learned tensors by name (``weight``,
    ``bias``: a private copy; a tied parameter is not among them), ``ties[path]`` its tied ones
    ({name: (owner address, transposed)}: the owner's tensor itself, ``.t()`` where the shapes differ),
    ``buffers_of[path]`` batch_norm's running statistics (updated in place by training-mode passes when
    ``track_running_stats``), ``states_of[path]`` a recurrent layer's given h0 / c0, ``functions[path]``
    the function it applies and ``children[path]`` a block's inner layers. ``parameters`` holds every
    learned tensor in layer order, weight before bias — the order torch.optim is given them. ``update``
    selects the dropout masks of the next forward pass (``scenarios.masks``). With ``requires_grad``
    the parameters require gradients. While ``recording``, the layers put the intermediate tensors the
    Trace records into ``records`` (an LSTM's cell states, the attention probabilities) and every use
    of a tied parameter into ``tied_uses``.
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
        self.parameters_of: dict[str, dict[str, torch.Tensor]] = {}
        self.ties: dict[str, dict[str, tuple[str, bool]]] = {}
        self.buffers_of: dict[str, dict[str, torch.Tensor]] = {}
        self.states_of: dict[str, dict[str, torch.Tensor]] = {}
        self.functions: dict[str, Callable] = {}
        self.children: dict[str, list[str]] = {}
        self.top = [f"layers.{i}" for i in range(len(scenario.layers))]
        self.recording = False
        self.cell_formulas = False  # recurrent layers: torch's modules, or their formulas written out (_CELL_FORMULAS)
        self.records: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        self.tied_uses: dict[str, torch.Tensor] = {}
        self.token_ids = bool(scenario.layers) and scenario.layers[0].type == "embedding"
        self.parameters: list[torch.Tensor] = []
        for path, layer in walk_layers(scenario.layers):
            self.parameters_of[path] = {name: self.tensor(value).requires_grad_(requires_grad)
                                        for name, value in layer.parameters.items()}
            self.parameters += self.parameters_of[path].values()
            self.buffers_of[path] = {name: self.tensor(value) for name, value in layer.buffers.items()}
            self.states_of[path] = {name: self.tensor(value).requires_grad_(requires_grad)
                                    for name, value in layer.states.items()}
            if layer.layers:
                self.children[path] = [f"{path}.layers.{j}" for j in range(len(layer.layers))]
            if layer.type in LAYERS:
                self.functions[path] = LAYERS[layer.type](layer, self, path)
            else:
                activation = make_activation(layer)
                self.functions[path] = lambda signal, parameters, activation=activation: activation(signal)
        for path, layer in walk_layers(scenario.layers):
            for name, owner in layer.tied.items():
                transposed = layer.is_transposed(name, self.parameter(owner))
                self.ties.setdefault(path, {})[name] = (owner, transposed)
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

    def parameter(self, address: str) -> torch.Tensor:
        """The learned tensor at ``address`` (``layers.0.weight``, ``layers.2.out_proj.weight``)."""
        path, name = split_address(address)
        return self.parameters_of[path][name]

    def tensors(self, path: str, replaced: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The tensors the layer at ``path`` is given: its parameters and states, each tied one made from its
        owner (``replaced``'s owner when the oracle perturbs it), and any of ``replaced`` at ``{path}.{name}``
        (a parameter, a state, ``attention``)."""
        ties = self.ties.get(path)
        if not (self.states_of[path] or ties or replaced):
            return self.parameters_of[path]
        own = {**self.parameters_of[path], **self.states_of[path]}
        for name, (owner, transposed) in (ties or {}).items():
            shared = replaced[owner] if replaced and owner in replaced else self.parameter(owner)
            use = shared.t() if transposed else shared.view_as(shared)  # a tensor of its own: this use's gradient
            if self.recording:
                self.tied_uses[f"{path}.{name}"] = use
            own[name] = use
        if replaced:
            prefix = f"{path}."
            for address, value in replaced.items():
                name = address[len(prefix):] if address.startswith(prefix) else ""
                if name and not name.startswith("layers.") and name != "output":
                    own[name] = value
        return own

    def apply_path(self, path: str, signal: torch.Tensor, replaced: dict[str, torch.Tensor] | None = None,
                   observe: Callable | None = None) -> torch.Tensor:
        """The layer at ``path`` on ``signal`` — a residual block runs its own layers on a view of ``signal``
        (its gradient, recorded as ``{path}.branch.grad``, is the branch's share: the skip path left out)
        and adds ``signal`` back. ``replaced``: tensors the
        oracle substitutes by address (``{path}.weight``, ``{path}.output``, ``{path}.attention`` …);
        ``observe(path, input, output)`` is called after every layer, a block's inner ones included."""
        if path in self.children:
            branch = replaced.get(f"{path}.branch") if replaced else None
            if branch is None:
                branch = signal.view_as(signal)
            if self.recording:
                self.records[f"{path}.branch"] = branch
            for child in self.children[path]:
                branch = self.apply_path(child, branch, replaced, observe)
            output = self.functions[path](signal, branch)
        else:
            output = self.functions[path](signal, self.tensors(path, replaced))
        if replaced and f"{path}.output" in replaced:
            output = replaced[f"{path}.output"]
        if observe is not None:
            observe(path, signal, output)
        return output

    def recorded_forward(self, signal: torch.Tensor, observe: Callable | None = None
                         ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor | list[torch.Tensor]]]:
        """``forward`` with ``recording`` on: the outputs, and the tensors the layers recorded (``records``,
        emptied again). Every use of a tied parameter stays in ``tied_uses`` for the caller."""
        self.recording = True
        try:
            outputs = self.forward(signal, observe=observe)
        finally:
            self.recording = False
        records = dict(self.records)
        self.records.clear()
        return outputs, records

    def forward(self, signal: torch.Tensor, start: int = 0, observe: Callable | None = None) -> list[torch.Tensor]:
        """The outputs of layers ``start``, ``start + 1``, … when ``signal`` is fed to layer ``start``."""
        outputs = []
        for path in self.top[start:]:
            signal = self.apply_path(path, signal, None, observe)
            outputs.append(signal)
        return outputs

    def output(self, signal: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The network's output when ``signal`` is fed to layer ``start`` (``signal`` itself past the last layer)."""
        for path in self.top[start:]:
            signal = self.apply_path(path, signal)
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
