"""The PyTorch mirror: a scenario's network built from plain tensors, run through autograd.

Every quantity comes from PyTorch itself — ``torch.nn.functional`` for the
activations and losses, autograd for every gradient, ``torch.optim`` for the
updates — so it is an implementation independent of ``manual/``'s hand-written
derivatives. The network is built from the Scenario alone (never from
``manual/``'s objects), in the scenario's dtype, with linear layers written as
PyTorch writes them: z = x Wᵀ + b, W of shape (out, in).

Three registries, keyed by the catalogue's names (``scenarios.catalog``):

``ACTIVATIONS[name](params) -> callable(z) -> a``
``LOSSES[name](a, t, reduction) -> scalar tensor``
``OPTIMIZERS[name](parameters, learning_rate, **options) -> torch.optim.Optimizer``

Adding a component means adding one entry to the matching registry.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from scenarios.catalog import ACTIVATIONS as ACTIVATION_CATALOG
from scenarios.model import Layer, Loss, Scenario
from scenarios.trace import Trace

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "TORCH_DTYPES",
    "make_activation",
    "loss_function",
    "run",
    "set_threads",
]

TORCH_DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


def set_threads(n: int) -> None:
    """Limit PyTorch's intra-op threads (tiny networks run fastest on one)."""
    torch.set_num_threads(int(n))


# --------------------------------------------------------------------------- activations


def _option(params: dict[str, Any], activation: str, key: str) -> Any:
    """``params[key]``, or the catalogue's default when the scenario left it out."""
    if key in params:
        return params[key]
    return ACTIVATION_CATALOG[activation].params[key].default


def _identity(pre_activation: torch.Tensor) -> torch.Tensor:
    return pre_activation


def _softmax(pre_activation: torch.Tensor) -> torch.Tensor:
    return F.softmax(pre_activation, dim=-1)


def _leaky_relu(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    slope = float(_option(params, "leaky_relu", "slope"))
    return lambda pre_activation: F.leaky_relu(pre_activation, negative_slope=slope)


def _elu(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha = float(_option(params, "elu", "alpha"))
    return lambda pre_activation: F.elu(pre_activation, alpha=alpha)


def _softplus(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    beta = float(_option(params, "softplus", "beta"))
    threshold = float(_option(params, "softplus", "threshold"))
    return lambda pre_activation: F.softplus(pre_activation, beta=beta, threshold=threshold)


def _gelu(params: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    approximate = str(_option(params, "gelu", "approximate"))
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
    """The torch function for an activation layer of the scenario."""
    try:
        make = ACTIVATIONS[layer.type]
    except KeyError:
        raise ValueError(
            f"reference: unknown layer type {layer.type!r}; expected 'linear' or one of {sorted(ACTIVATIONS)}"
        ) from None
    return make(dict(layer.params))


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


# --------------------------------------------------------------------------- optimizers

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, **options: torch.optim.SGD(params, lr=lr),
}


# --------------------------------------------------------------------------- the run


def to_tensor(array: np.ndarray, np_dtype: np.dtype) -> torch.Tensor:
    """A torch tensor holding a private copy of ``array`` (the scenario is never shared)."""
    return torch.from_numpy(np.array(array, dtype=np_dtype, order="C", copy=True))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy()


def run(scenario: Scenario) -> Trace:
    """Forward and backward by autograd, then the optimizer's updates by torch.optim.

    Records ``loss``, ``layers.{i}.output`` / ``.output.grad``, the initial
    ``layers.{i}.weight`` / ``.bias`` and their ``.grad``, ``input.grad``; and,
    when the scenario has an optimizer, ``step{t}.loss`` and
    ``step{t}.layers.{i}.weight`` / ``.bias`` for t = 1..steps.
    """
    if scenario.dtype not in TORCH_DTYPES:
        raise ValueError(f"reference: dtype {scenario.dtype!r}; expected one of {list(TORCH_DTYPES)}")
    np_dtype = np.dtype(scenario.dtype)
    trace = Trace("torch")

    # The network as plain tensors: per layer either (weight, bias) or an activation.
    weights: dict[int, torch.Tensor] = {}
    biases: dict[int, torch.Tensor | None] = {}
    activations: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
    parameters: list[torch.Tensor] = []
    for i, layer in enumerate(scenario.layers):
        if layer.is_linear:
            weight = to_tensor(layer.weight, np_dtype).requires_grad_()
            weights[i] = weight
            parameters.append(weight)
            if layer.bias is None:
                biases[i] = None
            else:
                bias = to_tensor(layer.bias, np_dtype).requires_grad_()
                biases[i] = bias
                parameters.append(bias)
        else:
            activations[i] = make_activation(layer)
    loss_of = loss_function(scenario.loss)
    n_layers = len(scenario.layers)

    def forward(signal: torch.Tensor, keep: list[torch.Tensor] | None) -> torch.Tensor:
        for i in range(n_layers):
            if i in weights:
                signal = F.linear(signal, weights[i], biases[i])
            else:
                signal = activations[i](signal)
            if keep is not None:
                if signal.requires_grad:
                    signal.retain_grad()
                keep.append(signal)
        return signal

    x = to_tensor(scenario.x, np_dtype).requires_grad_()
    targets = to_tensor(scenario.y, np_dtype)

    outputs: list[torch.Tensor] = []
    loss = loss_of(forward(x, outputs), targets)
    loss.backward()

    trace.put("loss", _numpy(loss))
    for i, output in enumerate(outputs):
        trace.put(f"layers.{i}.output", _numpy(output))
        # An identity first layer returns x itself (a leaf); its grad is x's.
        grad = output.grad
        trace.put(f"layers.{i}.output.grad", _numpy(grad) if grad is not None else np.zeros_like(_numpy(output)))
        if i in weights:
            trace.put(f"layers.{i}.weight", _numpy(weights[i]))
            trace.put(f"layers.{i}.weight.grad", _numpy(weights[i].grad))
            if biases[i] is not None:
                trace.put(f"layers.{i}.bias", _numpy(biases[i]))
                trace.put(f"layers.{i}.bias.grad", _numpy(biases[i].grad))
    trace.put("input.grad", _numpy(x.grad))

    optimizer_spec = scenario.optimizer
    if optimizer_spec is None:
        return trace
    try:
        make_optimizer = OPTIMIZERS[optimizer_spec.type]
    except KeyError:
        raise ValueError(
            f"reference: unknown optimizer {optimizer_spec.type!r}; expected one of {sorted(OPTIMIZERS)}"
        ) from None
    optimizer = (
        make_optimizer(parameters, optimizer_spec.learning_rate, **dict(optimizer_spec.options))
        if parameters
        else None
    )
    inputs = x.detach()  # later updates need no dL/dx
    for t in range(1, optimizer_spec.steps + 1):
        if t > 1:  # update 1 reuses the initial forward / backward
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            loss = loss_of(forward(inputs, None), targets)
            if loss.requires_grad:
                loss.backward()
        trace.put(f"step{t}.loss", _numpy(loss))
        for i, weight in weights.items():
            trace.put(f"step{t}.layers.{i}.weight.grad", _numpy(weight.grad))
            if biases[i] is not None:
                trace.put(f"step{t}.layers.{i}.bias.grad", _numpy(biases[i].grad))
        if optimizer is not None:
            optimizer.step()
        for i, weight in weights.items():
            trace.put(f"step{t}.layers.{i}.weight", _numpy(weight))
            if biases[i] is not None:
                trace.put(f"step{t}.layers.{i}.bias", _numpy(biases[i]))
    return trace
