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
``OPTIMIZERS[name](parameters, learning_rate, **options) -> torch.optim.Optimizer`` (None: no torch reference)

Adding a component means adding one entry to the matching registry.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from scenarios.catalog import ACTIVATIONS as ACTIVATION_CATALOG
from scenarios.model import Layer, Loss, Scenario
from scenarios.schedule import batch_schedule, is_full_batch_in_order
from scenarios.trace import Trace

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "TORCH_DTYPES",
    "has_torch_reference",
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
#
# ``OPTIMIZERS[name](parameters, lr, **options)`` builds the torch.optim optimizer
# for a catalogue entry; options keep the catalogue's names. Two textbook forms
# map onto torch.optim through an exact identity rather than new code:
#
# * SGD, momentum_form = "textbook" (v⁰ = η∇L, vᵗ = βvᵗ⁻¹ + η∇L, θ ← θ − vᵗ):
#   torch.optim.SGD's v = βv + g, θ ← θ − ηv is the same rule at a constant
#   learning rate (v_textbook = η v_torch), so the reference is torch's form —
#   a manual-torch comparison of this option is the equivalence check.
# * AdaGrad, eps_placement = "inside" (θ ← θ − η g / √(n + ε)): torch's
#   accumulator starts at initial_accumulator_value, so starting it at n₀ + ε
#   with torch's ε = 0 gives √(n₀ + ε + Σg²) = √(n + ε) exactly.
#
# ``None`` marks an optimizer torch.optim does not have (Ftrl): ``run`` then
# records no ``step{t}`` addresses and reports say "no torch reference".


def _sgd(params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, momentum_form="torch"):
    if momentum_form == "textbook" and dampening != 0.0:
        raise ValueError("reference: the textbook momentum form has no dampening")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                           weight_decay=weight_decay)


def _adagrad(params, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
             eps_placement="outside"):
    if eps_placement == "inside":
        initial_accumulator_value, eps = initial_accumulator_value + eps, 0.0
    return torch.optim.Adagrad(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                               initial_accumulator_value=initial_accumulator_value, eps=eps)


def _adam_family(cls, **fixed):
    def make(params, lr, beta1=0.9, beta2=0.999, **options):
        return cls(params, lr=lr, betas=(beta1, beta2), **options, **fixed)

    return make


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer] | None] = {
    "sgd": _sgd,
    "adagrad": _adagrad,
    "rmsprop": lambda params, lr, **options: torch.optim.RMSprop(params, lr=lr, **options),
    "adadelta": lambda params, lr, **options: torch.optim.Adadelta(params, lr=lr, **options),
    "adam": _adam_family(torch.optim.Adam),
    "adamw": _adam_family(torch.optim.AdamW),
    "adamax": _adam_family(torch.optim.Adamax),
    "nadam": _adam_family(torch.optim.NAdam),
    "ftrl": None,  # no torch.optim counterpart
}


def has_torch_reference(optimizer_type: str) -> bool:
    """Whether ``reference.run`` traces this optimizer's steps (False: "no torch reference")."""
    return OPTIMIZERS.get(optimizer_type) is not None


class _ScalarDtype:
    """torch.optim keeps some state scalars (NAdam's μ-product, step counts) in
    torch's default dtype; for a float64 run they must be float64 too."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


def _clip_gradients(parameters: list[torch.Tensor], spec) -> None:
    if spec.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, spec.clip_grad_norm)
    if spec.clip_grad_value is not None:
        torch.nn.utils.clip_grad_value_(parameters, spec.clip_grad_value)


# --------------------------------------------------------------------------- the run


def to_tensor(array: np.ndarray, np_dtype: np.dtype) -> torch.Tensor:
    """A torch tensor holding a private copy of ``array`` (the scenario is never shared)."""
    return torch.from_numpy(np.array(array, dtype=np_dtype, order="C", copy=True))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view of ``tensor``'s values (``Trace.put`` copies it)."""
    return tensor.numpy(force=True)


def run(scenario: Scenario) -> Trace:
    """Forward and backward by autograd, then the optimizer's updates by torch.optim.

    Records ``loss``, ``layers.{i}.output`` / ``.output.grad``, the initial
    ``layers.{i}.weight`` / ``.bias`` and their ``.grad``, ``input.grad``; and,
    when the scenario has an optimizer, for t = 1..steps on the mini-batches of
    ``scenarios.schedule.batch_schedule``: ``step{t}.loss``, the gradient the
    update used (after ``clip_grad_norm_`` / ``clip_grad_value_``) and
    ``step{t}.layers.{i}.weight`` / ``.bias`` after ``optimizer.step()`` and the
    weight clamp. An optimizer without a torch counterpart (``OPTIMIZERS[name]
    is None``) gets no ``step{t}`` addresses.
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

    def forward(signal: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output, in order; the last is the network's output."""
        outputs = []
        for i in range(n_layers):
            signal = F.linear(signal, weights[i], biases[i]) if i in weights else activations[i](signal)
            outputs.append(signal)
        return outputs

    x = to_tensor(scenario.x, np_dtype).requires_grad_()
    targets = to_tensor(scenario.y, np_dtype)

    outputs = forward(x)
    loss = loss_of(outputs[-1], targets)
    # Every tensor whose gradient is recorded, by address, in the trace's order.
    # One reverse pass (autograd.grad) gives all of them. An identity first
    # layer returns x itself, whose gradient is then dL/dx.
    recorded: dict[str, torch.Tensor] = {}
    for i, output in enumerate(outputs):
        recorded[f"layers.{i}.output"] = output
        if i in weights:
            recorded[f"layers.{i}.weight"] = weights[i]
            if biases[i] is not None:
                recorded[f"layers.{i}.bias"] = biases[i]
    recorded["input"] = x
    grads = torch.autograd.grad(loss, list(recorded.values()), materialize_grads=True)

    trace.put("loss", _numpy(loss))
    for (address, value), grad in zip(recorded.items(), grads):
        if address != "input":
            trace.put(address, _numpy(value))
        trace.put(f"{address}.grad", _numpy(grad))

    optimizer_spec = scenario.optimizer
    if optimizer_spec is None:
        return trace
    if optimizer_spec.type not in OPTIMIZERS:
        raise ValueError(
            f"reference: unknown optimizer {optimizer_spec.type!r}; expected one of {sorted(OPTIMIZERS)}"
        )
    make_optimizer = OPTIMIZERS[optimizer_spec.type]
    if make_optimizer is None:
        return trace  # no torch reference: no step{t} addresses
    torch_dtype = TORCH_DTYPES[scenario.dtype]
    with _ScalarDtype(torch_dtype):
        optimizer = (
            make_optimizer(parameters, optimizer_spec.learning_rate, **dict(optimizer_spec.options))
            if parameters
            else None
        )
    inputs = x.detach()  # later updates need no dL/dx
    samples = inputs.shape[0]
    for t, indices in enumerate(batch_schedule(scenario), start=1):
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        if is_full_batch_in_order(indices, samples):
            batch_inputs, batch_targets = inputs, targets
        else:
            rows = torch.from_numpy(np.asarray(indices, dtype=np.int64))
            batch_inputs, batch_targets = inputs[rows], targets[rows]
        loss = loss_of(forward(batch_inputs)[-1], batch_targets)
        if loss.requires_grad:
            loss.backward()
        if parameters:
            _clip_gradients(parameters, optimizer_spec)
        trace.put(f"step{t}.loss", _numpy(loss))
        for i, weight in weights.items():
            trace.put(f"step{t}.layers.{i}.weight.grad", _numpy(weight.grad))
            if biases[i] is not None:
                trace.put(f"step{t}.layers.{i}.bias.grad", _numpy(biases[i].grad))
        if optimizer is not None:
            with _ScalarDtype(torch_dtype):
                optimizer.step()
        if optimizer_spec.clip_weights is not None:
            low, high = optimizer_spec.clip_weights
            with torch.no_grad():
                for parameter in parameters:
                    parameter.clamp_(low, high)
        for i, weight in weights.items():
            trace.put(f"step{t}.layers.{i}.weight", _numpy(weight))
            if biases[i] is not None:
                trace.put(f"step{t}.layers.{i}.bias", _numpy(biases[i]))
    return trace
