"""The declarative catalogue of everything a scenario may name.

One entry per activation, loss, optimizer and layer, and the single source of
what is known about it (a layer's spec, ``LayerInfo``, is described with the
layers below: options, array shapes, output shape, grid, random draw, kinks,
gates, Trace records):

* its parameters (options) with their defaults — the loader validates scenario
  files against them, and both engines fill in what a scenario leaves out from
  here (``activation_params``, ``optimizer_options``), so a default is written
  once;
* for an activation: whether it has kinks (points without a derivative, where
  PyTorch's subgradient choice is the reference), the parameter variants the
  component grids check, and whether random networks draw it — with which
  parameter variants and which initialiser, or why not;
* for a loss: the reductions it accepts, the domains of its inputs and targets
  (which the random generator, the claim checker and the bench read instead
  of the loss's name), the layer a random network ends with for it, and the
  inputs its component grid feeds it.

``manual/`` and ``reference/`` each keep an implementation registry keyed by
the same names; ``tests/test_catalogue.py`` fails when an entry is missing from
either registry, from the random generator's pool (unless the entry says why it
is left out) or from the component grids. Adding a component therefore means:
one entry here, one hand-derived class in ``manual/``, one torch mirror in
``reference/`` — every generic test then covers it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from backprop_verify.scenarios.init import default_bias, fans, initialise_shape


@dataclass(frozen=True)
class ParamSpec:
    """One named, typed parameter of a component."""

    default: Any
    kind: type = float
    choices: tuple = ()
    minimum: float | None = None
    doc: str = ""
    # Optimizer options only (read by the loader's ``_optimizer``): an upper
    # bound, and which ends of [minimum, maximum] are allowed, as "[]", "[)",
    # "(]" or "()". None means unbounded on that side.
    maximum: float | None = None
    bounds: str = "[]"
    # Layer options only: the option whose value this one takes when a scenario
    # leaves it out (pooling's stride defaults to its kernel_size, as in PyTorch).
    default_from: str = ""


@dataclass(frozen=True)
class ActivationInfo:
    """One activation a = σ(z).

    ``kinked``: σ has points without a derivative (relu at 0); the component
    grids then add a grid of pre-activations at and next to the kink, and
    finite differences stay away from it.
    ``grid_variants``: the parameter sets the component grids check, each
    separately; empty means the defaults alone.
    ``random_variants``: the parameter sets a random network's hidden layers
    may use (``scenarios.generator`` draws one of all activations' variants,
    in catalogue order); empty means random networks never use this
    activation, and ``random_excluded`` must then say why.
    ``initializer``: the weight initialiser random networks use in front of it
    (``scenarios.init``): He for the relu family, Glorot (Xavier) otherwise.
    """

    name: str
    formula: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    kinked: bool = False
    grid_variants: tuple[dict[str, Any], ...] = ()
    random_variants: tuple[dict[str, Any], ...] = ({},)
    random_excluded: str = ""
    initializer: str = "xavier_normal"
    # "probability": every output lies in (0, 1), so a loss on probabilities
    # (``LossInfo.input_domain``) may follow it; "any" otherwise.
    output_range: str = "any"


@dataclass(frozen=True)
class LossGridCase:
    """One input of a loss's component grid: ``label`` names it in the scenario
    name; ``inputs`` and ``targets`` name arrays of ``scenarios.components``
    (``LOSS_INPUTS``, ``LOSS_TARGETS``); ``tags`` are the scenario's tags
    ("no-fd": inputs where finite differences cannot settle anything)."""

    label: str
    inputs: str
    targets: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LossInfo:
    name: str
    formula: str
    reductions: tuple[str, ...]
    # What the loss's input must be: "any" real numbers, or "probability" in (0, 1)
    # (the random generator ends such networks with softmax / sigmoid).
    input_domain: str = "any"
    # Whether targets must be a probability distribution per row (one-hot or soft).
    target_domain: str = "any"
    # The component grid: the loss alone, for every reduction, on each of these inputs.
    grid: tuple[LossGridCase, ...] = ()
    # The layer a random network ends with for this loss: an activation whose output
    # lies in ``input_domain`` (softmax, sigmoid), "identity" for a loss fused on
    # logits, "" to repeat the network's hidden activation.
    output_layer: str = ""


_HE = "he_normal"  # suits the relu family (variance 2 / fan_in keeps the signal's scale)

ACTIVATIONS: dict[str, ActivationInfo] = {
    a.name: a
    for a in [
        ActivationInfo("identity", "a = z"),
        ActivationInfo("sigmoid", "a = 1 / (1 + e^-z)", output_range="probability"),
        ActivationInfo("tanh", "a = tanh(z)"),
        ActivationInfo("relu", "a = max(z, 0); a'(0) = 0 as in PyTorch", kinked=True, initializer=_HE),
        ActivationInfo(
            "leaky_relu",
            "a = z if z > 0 else slope * z; a'(0) = slope as in PyTorch",
            {"slope": ParamSpec(0.01, float, doc="negative-side slope")},
            kinked=True,
            grid_variants=({"slope": 0.01}, {"slope": 0.2}),
            random_variants=({"slope": 0.1},),
            initializer=_HE,
        ),
        ActivationInfo(
            "elu",
            "a = z if z > 0 else alpha * (e^z - 1)",
            {"alpha": ParamSpec(1.0, float, doc="saturation value for z -> -inf")},
            kinked=True,
            grid_variants=({"alpha": 1.0}, {"alpha": 0.5}),
            random_variants=({"alpha": 1.0},),
            initializer=_HE,
        ),
        ActivationInfo(
            "softplus",
            "a = log(1 + e^(beta z)) / beta, and a = z where beta z > threshold (PyTorch)",
            {
                "beta": ParamSpec(1.0, float, minimum=0.0, doc="sharpness (> 0)"),
                "threshold": ParamSpec(20.0, float, doc="linear above beta*z > threshold"),
            },
            # threshold 2 and 1: the switch to a' = 1 is visible in float32 (σ(2) = 0.88), not only float64
            grid_variants=({"beta": 1.0, "threshold": 20.0}, {"beta": 2.0, "threshold": 10.0},
                           {"beta": 1.0, "threshold": 2.0}, {"beta": 0.5, "threshold": 1.0}),
            random_variants=({"beta": 1.0, "threshold": 20.0},),
        ),
        ActivationInfo("silu", "a = z * sigmoid(z)  (also called swish)"),
        ActivationInfo("swish", "a = z * sigmoid(z)  (same as silu)", random_variants=(),
                       random_excluded="the same function as silu, which random networks already use"),
        ActivationInfo("mish", "a = z * tanh(softplus(z))"),
        ActivationInfo(
            "gelu",
            "a = z * Phi(z) (erf form) or 0.5 z (1 + tanh(sqrt(2/pi)(z + 0.044715 z^3)))",
            {"approximate": ParamSpec("none", str, choices=("none", "tanh"), doc="'none' (erf) or 'tanh'")},
            grid_variants=({"approximate": "none"}, {"approximate": "tanh"}),
            random_variants=({"approximate": "none"}, {"approximate": "tanh"}),
        ),
        ActivationInfo("softmax", "a_j = e^{z_j} / sum_k e^{z_k}, over each row", output_range="probability",
                       random_variants=(),
                       random_excluded="an output layer over a row, chosen by the loss (cross_entropy), "
                                       "not an elementwise hidden activation"),
    ]
}

LOSSES: dict[str, LossInfo] = {
    l.name: l
    for l in [
        LossInfo(
            "mse",
            "elementwise (a - t)^2, reduced as the reduction says",
            ("sum", "half_sum", "mean", "half_mean", "batch_mean", "half_batch_mean"),
            grid=(LossGridCase("normal", "logits", "normal"),),
        ),
        LossInfo(
            "cross_entropy",
            "-sum_j t_j ln a_j on probabilities a",
            ("sum", "mean"),
            input_domain="probability",
            target_domain="distribution",
            output_layer="softmax",
            grid=(LossGridCase("onehot", "probabilities", "onehot"), LossGridCase("soft", "probabilities", "soft")),
        ),
        LossInfo(
            "softmax_cross_entropy",
            "-sum_j t_j ln softmax(z)_j, fused on logits z (delta = softmax(z) - t per sample)",
            ("sum", "mean"),
            target_domain="distribution",
            output_layer="identity",
            grid=(LossGridCase("onehot", "logits", "onehot"), LossGridCase("soft", "logits", "soft"),
                  LossGridCase("extreme", "extreme_logits", "onehot", ("no-fd",))),
        ),
        LossInfo(
            "bce",
            "-[t ln a + (1 - t) ln(1 - a)] on probabilities a",
            ("sum", "mean"),
            input_domain="probability",
            target_domain="unit",
            output_layer="sigmoid",
            grid=(LossGridCase("normal", "sigmoid_probabilities", "unit"),
                  LossGridCase("saturated", "saturated_probabilities", "unit", ("no-fd",)),
                  # a(1 − a) on both sides of the clamp of its derivative's denominator at 1e-12
                  LossGridCase("clamp", "clamp_probabilities", "unit", ("no-fd",))),
        ),
        LossInfo(
            "bce_with_logits",
            "-[t ln sigmoid(z) + (1 - t) ln(1 - sigmoid(z))], fused on logits z",
            ("sum", "mean"),
            target_domain="unit",
            output_layer="identity",
            grid=(LossGridCase("normal", "logits", "unit"),
                  LossGridCase("extreme", "extreme_logits", "unit", ("no-fd",))),
        ),
    ]
}

REDUCTIONS = {
    "sum": "sum over every element",
    "half_sum": "1/2 of the sum over every element",
    "mean": "mean over every element (PyTorch's reduction='mean'; for the cross-entropies: mean over samples, as PyTorch)",
    "half_mean": "1/2 of the mean over every element",
    "batch_mean": "sum over outputs, averaged over samples: (1/n) sum (the textbooks' 1/n)",
    "half_batch_mean": "sum over outputs, averaged over samples, halved: 1/(2n) sum",
}

# Optimizers: name -> parameter specs. ``learning_rate``, ``steps`` / ``epochs``,
# ``batch_size``, ``drop_last``, ``shuffle`` and the clipping options
# (``clip_grad_norm``, ``clip_grad_value``, ``clip_weights``) are common to all
# and validated by the loader; the entries list each optimizer's own options.
# Names follow torch.optim (``betas`` is split into ``beta1`` / ``beta2``);
# where a textbook writes the rule differently, an option names the form.


def _weight_decay(default: float = 0.0) -> ParamSpec:
    return ParamSpec(default, float, minimum=0.0,
                     doc="L2 penalty λ: the gradient becomes g + λθ before the update (torch's weight_decay)")


def _eps(default: float) -> ParamSpec:
    return ParamSpec(default, float, minimum=0.0, bounds="(]", doc="ε, the term that keeps the denominator away from 0")


def _beta(default: float, what: str) -> ParamSpec:
    return ParamSpec(default, float, minimum=0.0, maximum=1.0, bounds="[)", doc=what)


_DECOUPLED = ParamSpec(False, bool, doc="true: θ ← (1 − ηλ)θ before the update instead of adding λθ to g (AdamW's form)")

OPTIMIZERS: dict[str, dict[str, ParamSpec]] = {
    "sgd": {
        "momentum": ParamSpec(0.0, float, minimum=0.0, doc="β, the momentum coefficient (0: plain gradient descent)"),
        "dampening": ParamSpec(0.0, float, minimum=0.0, maximum=1.0,
                               doc="torch: v ← βv + (1 − dampening) g from the second update on"),
        "nesterov": ParamSpec(False, bool, doc="Nesterov momentum: step along g + βv instead of v"),
        "weight_decay": _weight_decay(),
        "momentum_form": ParamSpec("torch", str, choices=("torch", "textbook"),
                                   doc="torch: v ← βv + g, θ ← θ − ηv; textbook (document 003): "
                                       "v⁰ = η∇L, vᵗ = βvᵗ⁻¹ + η∇L, θ ← θ − vᵗ"),
    },
    "adagrad": {
        "lr_decay": ParamSpec(0.0, float, minimum=0.0, doc="η_t = η / (1 + (t − 1) lr_decay)"),
        "weight_decay": _weight_decay(),
        "initial_accumulator_value": ParamSpec(0.0, float, minimum=0.0, doc="n₀, the starting sum of squared gradients"),
        "eps": _eps(1e-10),
        "eps_placement": ParamSpec("outside", str, choices=("outside", "inside"),
                                   doc="outside (torch): g / (√n + ε); inside (document 003): g / √(n + ε)"),
    },
    "rmsprop": {
        "alpha": ParamSpec(0.99, float, minimum=0.0, maximum=1.0, doc="decay of the running mean of g²"),
        "eps": _eps(1e-8),
        "weight_decay": _weight_decay(),
        "momentum": ParamSpec(0.0, float, minimum=0.0, doc="momentum on the normalised step (0: none)"),
        "centered": ParamSpec(False, bool, doc="divide by the running variance √(E[g²] − E[g]²) instead of √E[g²]"),
    },
    "adadelta": {
        "rho": ParamSpec(0.9, float, minimum=0.0, maximum=1.0, doc="ρ, decay of the running means of g² and Δθ²"),
        "eps": _eps(1e-6),
        "weight_decay": _weight_decay(),
    },
    "adam": {
        "beta1": _beta(0.9, "β₁, decay of the first moment m"),
        "beta2": _beta(0.999, "β₂, decay of the second moment v"),
        "eps": _eps(1e-8),
        "weight_decay": _weight_decay(),
        "amsgrad": ParamSpec(False, bool, doc="divide by the running maximum of v (AMSGrad)"),
        "decoupled_weight_decay": _DECOUPLED,
    },
    "adamw": {
        "beta1": _beta(0.9, "β₁, decay of the first moment m"),
        "beta2": _beta(0.999, "β₂, decay of the second moment v"),
        "eps": _eps(1e-8),
        "weight_decay": ParamSpec(0.01, float, minimum=0.0, doc="λ, decoupled: θ ← (1 − ηλ)θ before the Adam step"),
        "amsgrad": ParamSpec(False, bool, doc="divide by the running maximum of v (AMSGrad)"),
    },
    "adamax": {
        "beta1": _beta(0.9, "β₁, decay of the first moment m"),
        "beta2": _beta(0.999, "β₂, decay of the infinity norm u = max(β₂u, |g| + ε)"),
        "eps": _eps(1e-8),
        "weight_decay": _weight_decay(),
    },
    "nadam": {
        "beta1": _beta(0.9, "β₁, decay of the first moment m"),
        "beta2": _beta(0.999, "β₂, decay of the second moment v"),
        "eps": _eps(1e-8),
        "weight_decay": _weight_decay(),
        "momentum_decay": ParamSpec(0.004, float, minimum=0.0,
                                    doc="ψ in torch's schedule μ_t = β₁(1 − ½·0.96^(tψ))"),
        "decoupled_weight_decay": _DECOUPLED,
    },
    "ftrl": {
        "beta": ParamSpec(1.0, float, minimum=0.0, doc="β in η_t = α / (β + √n_t) (McMahan et al. 2013); α is learning_rate"),
        "l1": ParamSpec(0.0, float, minimum=0.0, doc="λ₁: coordinates with |z| ≤ λ₁ are set to exactly 0"),
        "l2": ParamSpec(0.0, float, minimum=0.0, doc="λ₂, the L2 term added to the denominator"),
        "initial_accumulator_value": ParamSpec(0.0, float, minimum=0.0, doc="n₀, the starting sum of squared gradients"),
    },
}

INITIALIZERS = (
    "pytorch_default",
    "xavier_uniform",
    "xavier_normal",
    "he_uniform",
    "he_normal",
    "lecun_normal",
    "normal",
    "uniform",
    "zeros",
)

DTYPES = ("float64", "float32")


def _complete(kind: str, name: str, specs: dict[str, ParamSpec], given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise TypeError(f"{kind} {name!r} got unknown options {unknown}; it accepts {list(specs)}")
    complete = {key: given.get(key, given.get(spec.default_from, spec.default)) for key, spec in specs.items()}
    for key, spec in specs.items():
        if spec.choices and complete[key] not in spec.choices:
            raise ValueError(f"{kind} {name!r}: {key} {complete[key]!r}; expected one of {list(spec.choices)}")
    return complete


def activation_params(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of activation ``name``: ``given``'s values, the catalogue's
    defaults for the rest. An unknown parameter is a TypeError, a value outside
    its choices a ValueError. Both engines build their activations from this."""
    return _complete("activation", name, ACTIVATIONS[name].params, given)


def optimizer_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every option of optimizer ``name``, in catalogue order: ``given``'s values,
    the catalogue's defaults for the rest. An unknown option is a TypeError, a
    value outside its choices a ValueError. Both engines build their optimizers
    from this, so a default is written only here."""
    return _complete("optimizer", name, OPTIMIZERS[name], given)


# --------------------------------------------------------------------------- layers
#
# Every layer type a scenario may name besides the activations: one
# ``LayerInfo`` spec each, and everything the rest of the code knows about the
# layer is read from it — the loader (options, arrays and their shapes, the
# checks), ``scenarios.shapes`` (the output shape), the component grids
# (``scenarios.layer_grids``: the variants and their seeded layers), the random
# networks (``scenarios.generator``: the draw, or why the layer is never drawn),
# the trajectories and the bench (the gate count), the summation floor
# (``bias_sum``) and the finite-difference oracle (``kinked``). Options carry
# PyTorch's names and semantics; ``kind=tuple`` marks an option PyTorch takes as
# an int or a pair ``[h, w]`` (stored as a pair).
#
# The spec's functions return plain data, never a ``scenarios.model.Layer``
# (the model imports this module): ``build`` and ``draw`` return the keyword
# arguments of ``Layer(type, **fields)`` — ``weight``, ``bias``, ``params``,
# ``buffers``, ``tensors``, ``states``.

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """The layer cannot take an input of this shape (or these options). ``field``
    names the option to blame ("groups", "dims", "training"; "type" for the
    input's rank), "" for the layer as a whole: the loader reports the problem at
    ``layers[i].{field}``."""

    def __init__(self, problem: str, field: str = ""):
        super().__init__(problem)
        self.field = field


class LayerGridCase(NamedTuple):
    """One variant of a layer's component grid: ``label`` names it in the scenario
    name (``layer-{type}-{label}-f64``: a test id, never renamed), the input's
    ``shape`` (batch first), the ``options`` (PyTorch's arguments, pairs as
    tuples; ``bias``, ``h0``, ``c0``, ``sequence_loss`` and linear's ``out`` are
    grid-only switches read by ``build`` and the grid) and the scenario's
    ``tags`` ("kink": the inputs sit on a switch on purpose)."""

    label: str
    shape: Shape
    options: dict
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    """One layer type, complete: a new layer is one of these, one hand-written
    class in ``manual/`` and one torch function in ``reference/network.py``.

    ``params``: its options with their defaults (``layer_options``).
    ``parameters`` / ``buffers`` / ``data``: the arrays it learns
    (``layers.{i}.weight`` …), keeps between passes (``layers.{i}.running_mean``)
    and is given on every pass (``layers.{i}.mask``, ``h0``) — ``tensor_shapes``
    gives the shape of each for an input shape and complete options (leaving out
    the arrays the options switch off), raising ``ShapeError`` where the input
    or the options do not fit. ``fills``: the value of each array a scenario
    file may leave out (γ = 1, β = 0, running statistics 0 and 1), or the name
    of the initialiser that draws it as PyTorch does (``scenarios.init``:
    multihead_attention's ``in_proj_weight`` "xavier_uniform"), drawn from the
    layer's generator in the order of ``parameters``;
    ``switch``: the option that turns the parameters on (``affine``);
    ``nonnegative``: arrays a file must not give negative entries.
    ``output_shape(layer, input_shape)``: the output shape, checked against the
    layer's arrays (``ShapeError``). ``gates``: the gate blocks stacked in a
    recurrent layer's weight rows, in PyTorch's order (rnn 1, lstm 4, gru 3).
    ``grid`` and ``build(options, input_shape, rng)``: the component grid's
    variants and the seeded layer of each; ``grid_inputs``: "normal", or
    "token_ids" for a layer that takes integer ids. ``random``: the random
    family that uses it — "conv" (``scenarios.generator.random_conv_scenario``),
    "recurrent" (``random_recurrent_scenario``) — with ``draw(rng, input_shape)``
    (None when the drawn layer cannot take this input) for a member of the
    family's pool, or ``skeleton``: why the family places it itself instead
    (every convolutional network ends flatten → linear). ``kinked``: its output
    is only piecewise differentiable (max pooling: a tie between window
    elements), so scenarios that sit on a switch are tagged "kink", with
    ``kink`` saying where; the oracle's detector is ``reference.fd_oracle.KINK_CODES``.
    ``records``: the Trace addresses it adds beyond ``layers.{i}.output`` /
    ``.output.grad``, its parameters, their ``.grad`` and its buffers
    (dropout's ``mask``, an LSTM's ``cell`` and ``cell.grad``, ``h0.grad``).
    ``bias_sum``: how ∂L/∂bias sums the layer's output gradient — "channel"
    (over every axis but axis 1: conv2d, batch_norm, group_norm), "trailing"
    (over every axis before the bias's own: linear, layer_norm) or "" (not a
    plain sum) — read by the summation floor (``reports.verification.cancellation``).
    """

    name: str
    formula: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    parameters: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    kinked: bool = False
    random: str = "conv"
    bias_sum: str = ""
    kink: str = ""
    gates: int = 0
    switch: str = ""
    fills: dict[str, float | str] = field(default_factory=dict)
    nonnegative: tuple[str, ...] = ()
    tensor_shapes: Callable[[dict, Shape], dict[str, Shape]] | None = None
    output_shape: Callable[[Any, Shape], Shape] | None = None
    grid: tuple[LayerGridCase, ...] = ()
    build: Callable[[dict, Shape, np.random.Generator], dict] | None = None
    grid_inputs: str = "normal"
    draw: Callable[[np.random.Generator, Shape], dict | None] | None = None
    skeleton: str = ""
    random_excluded: str = ""
    records: tuple[str, ...] = ()
    # A normalisation: ``statistics(layer, x)`` -> (μ, σ², m), μ and σ² broadcast against x (NumPy, the
    # forward's statistics only) and m the size of each normalised group — read by the summation and
    # conditioning floors (``reports.verification``); None for every other layer.
    statistics: Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray, int]] | None = None
    # ``cost(layer, input_shape, output_shape)`` -> ``LayerCost``: what one forward pass costs, from the shapes
    # alone (``scenarios.budget`` refuses a file whose run would exceed the limits ``memory`` and ``work``);
    # None: an elementwise layer (``elementwise_cost``).
    cost: Callable[[Any, Shape, Shape], "LayerCost"] | None = None


# ----- cost (scenarios.budget): estimated from the shapes before anything is computed


@dataclass(frozen=True)
class LayerCost:
    """One forward pass of one layer in one engine: ``flops`` floating-point operations; ``kept`` values an
    engine holds for the backward pass beyond the output itself (caches, gates, a convolution's column
    buffer); ``calls`` array operations, each with a fixed cost whatever its size (a recurrent layer makes
    a few per time step)."""

    flops: int
    kept: int = 0
    calls: int = 8


def elementwise_cost(layer, input_shape: Shape, output_shape: Shape) -> LayerCost:
    """A few operations per output value; the pre-activation, the derivative and the temporaries of a formula
    such as GELU's (erf, exp, their products) held at once."""
    size = math.prod(output_shape)
    return LayerCost(flops=8 * size, kept=5 * size)


def layer_cost(layer, input_shape: Shape, output_shape: Shape) -> LayerCost:
    """What one forward pass of ``layer`` costs: its spec's ``cost``, ``elementwise_cost`` for an activation or
    a layer without one."""
    spec = LAYERS.get(layer.type)
    return (spec.cost if spec is not None and spec.cost is not None else elementwise_cost)(
        layer, input_shape, output_shape)


def _linear_cost(layer, input_shape: Shape, output_shape: Shape) -> LayerCost:
    """z = x Wᵀ + b: 2·in multiply-adds per output value."""
    return LayerCost(flops=2 * math.prod(output_shape) * (input_shape[-1] + 1))


def _window_cost(layer, input_shape: Shape, output_shape: Shape) -> LayerCost:
    """A convolution's 2·(C/groups)·kh·kw operations per output value, and its column buffer: every window
    laid out once (PyTorch's float64 convolution lays out the whole batch's); pooling reads each window."""
    window = math.prod(layer.params["kernel_size"])
    positions = math.prod(output_shape) // output_shape[1]  # N·Ho·Wo
    if layer.type == "conv2d":
        per_position = input_shape[1] // layer.params["groups"] * window
        return LayerCost(flops=2 * math.prod(output_shape) * per_position, kept=positions * input_shape[1] * window)
    return LayerCost(flops=math.prod(output_shape) * window, kept=math.prod(output_shape) * window)


def _recurrent_cost(gates: int):
    """Per sample and step: the G gates' 2·G·H·(F + H) multiply-adds; 4·G + 6 vectors of H kept (each gate's
    pre-activation and activation, their gradients, the cell state and its tanh, the step's output and their
    gradients); a fixed number of array operations per step (the loop over time is the engines' own)."""
    def cost(layer, input_shape: Shape, output_shape: Shape) -> LayerCost:
        samples, steps, features = input_shape
        hidden = layer.params["hidden_size"]
        return LayerCost(flops=2 * samples * steps * gates * hidden * (features + hidden + 4),
                         kept=samples * steps * (4 * gates + 6) * hidden, calls=12 * steps)
    return cost


def _normalisation_cost(layer, input_shape: Shape, output_shape: Shape) -> LayerCost:
    """Mean, variance, x̂ and the affine map: about a dozen operations per value, x̂ and 1/σ kept."""
    size = math.prod(output_shape)
    return LayerCost(flops=12 * size, kept=2 * size)


def _pair(default, minimum: int, doc: str) -> ParamSpec:
    return ParamSpec(default, tuple, minimum=minimum, doc=doc + " (an int, or a pair [h, w])")


def layer_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every option of layer ``name``: ``given``'s values, the catalogue's defaults for the rest."""
    return _complete("layer", name, LAYERS[name].params, given)


def _same_shape(layer, shape: Shape) -> Shape:
    return shape


def _no_arrays(options: dict, shape: Shape) -> dict[str, Shape]:
    return {}


def _options_only(kind: str):
    """``build`` for a layer with nothing to learn: its options, the catalogue's defaults for the rest."""
    return lambda options, shape, rng: {"params": layer_options(kind, options)}


# ----- windows (convolution and pooling)
#
# Output size per spatial dimension, with input size n, padding p, dilation d,
# kernel k, stride s:  out = ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1, and with
# ``ceil_mode`` the ceiling instead of the floor, except that a last window
# starting beyond the input and its left padding is dropped (PyTorch's rule: if
# (out − 1)·s ≥ n + p then out − 1).


def window_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                       ceil_mode: bool = False) -> int:
    """Output size along one spatial dimension (see above); < 1 when the window does not fit."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _windowed_shape(layer, shape: Shape) -> Shape:
    kind, params = layer.type, layer.params
    if len(shape) != 4:
        raise ShapeError(f"{kind} takes (N, C, H, W), got an input of shape {shape}")
    batch, channels, height, width = shape
    kernel = params["kernel_size"]
    stride, padding = params["stride"], params["padding"]
    dilation = params.get("dilation", (1, 1))
    ceil_mode = params.get("ceil_mode", False)
    if kind == "conv2d":
        groups = params["groups"]
        out_channels, per_group, kh, kw = layer.weight.shape
        if channels % groups or out_channels % groups:
            raise ShapeError(f"groups = {groups} must divide the input channels ({channels}) and out_channels "
                             f"({out_channels})")
        if per_group != channels // groups:
            raise ShapeError(f"weight has shape {layer.weight.shape}; expected (out_channels, in_channels / groups "
                             f"= {channels // groups}, kh, kw) for {channels} input channels")
        kernel = (kh, kw)
    else:
        out_channels = channels
        for axis in (0, 1):
            if padding[axis] > kernel[axis] // 2:
                raise ShapeError(f"padding {list(padding)} must be at most half of kernel_size {list(kernel)} "
                                 "(PyTorch's rule)")
    sizes = [window_output_size(n, k, s, p, d, ceil_mode)
             for n, k, s, p, d in zip((height, width), kernel, stride, padding, dilation)]
    if min(sizes) < 1:
        raise ShapeError(f"the {list(kernel)} kernel (dilation {list(dilation)}) does not fit the input of "
                         f"{height}×{width} with padding {list(padding)}: the output would be "
                         f"{sizes[0]}×{sizes[1]}")
    return (batch, out_channels, sizes[0], sizes[1])


def _needs_images(kind: str, shape: Shape) -> None:
    if len(shape) != 4:
        raise ShapeError(f"{kind} takes (N, C, H, W), but its input has shape {shape}", "type")


# ----- linear


def _linear_shape(layer, shape: Shape) -> Shape:
    if len(shape) not in (2, 3):
        raise ShapeError(f"linear takes (N, features) or sequences (N, T, features), got an input of shape "
                         f"{shape}; add a flatten layer before it")
    out_features, in_features = layer.weight.shape
    if shape[-1] != in_features:
        raise ShapeError(f"weight has shape {layer.weight.shape} (out, in) but the input has {shape[-1]} features")
    return (*shape[:-1], out_features)


def _linear_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    """``options["out"]``: the output units (a grid switch; a file gives ``out`` or the weight itself)."""
    return {"weight": (options["out"], shape[-1]), "bias": (options["out"],)}


def _linear_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    weight_shape = _linear_tensors(options, shape)["weight"]
    return {"weight": initialise_shape("pytorch_default", weight_shape, rng),
            "bias": default_bias((weight_shape[0],), weight_shape[1], rng)}


# ----- conv2d


def _conv2d_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    _needs_images("conv2d", shape)
    channels, groups, out_channels = shape[1], options["groups"], options["out_channels"]
    if channels % groups or out_channels % groups:
        raise ShapeError(f"expected a divisor of the input channels ({channels}) and of out_channels "
                         f"({out_channels}), got {groups}", "groups")
    return {"weight": (out_channels, channels // groups, *options["kernel_size"]), "bias": (out_channels,)}


def _conv2d_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    options = dict(options)
    with_bias = options.pop("bias", True)
    params = layer_options("conv2d", options)
    weight_shape = (params["out_channels"], shape[1] // params["groups"], *params["kernel_size"])
    weight = initialise_shape("pytorch_default", weight_shape, rng)
    bias = default_bias((weight_shape[0],), fans(weight_shape)[0], rng) if with_bias else None
    return {"weight": weight, "bias": bias, "params": params}


# ----- pooling


def _pool_draw(kind: str):
    """A 2×2 window with stride 2, where the input is at least 2×2."""

    def draw(rng: np.random.Generator, shape: Shape) -> dict | None:
        if min(shape[2], shape[3]) < 2:
            return None
        return {"params": layer_options(kind, {"kernel_size": (2, 2), "stride": (2, 2)})}

    return draw


# ----- flatten


def _flatten_shape(layer, shape: Shape) -> Shape:
    return (shape[0], math.prod(shape[1:]))


# ----- normalisation (batch_norm, layer_norm, group_norm)


def _batch_norm_shape(layer, shape: Shape) -> Shape:
    if len(shape) not in (2, 4):
        raise ShapeError(f"batch_norm takes (N, F) or (N, C, H, W), got an input of shape {shape}")
    return shape


def _batch_norm_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    if len(shape) not in (2, 4):
        raise ShapeError(f"batch_norm takes (N, F) or (N, C, H, W), but its input has shape {shape}", "type")
    per_channel = shape[0] * math.prod(shape[2:])
    if options["training"] and per_channel < 2:
        raise ShapeError(f"batch statistics need more than one value per channel, got {per_channel} (input shape "
                         f"{shape}); expected training = false, or a larger batch", "training")
    channels = (shape[1],)
    affine = {"weight": channels, "bias": channels} if options["affine"] else {}
    return {**affine, "running_mean": channels, "running_var": channels}


def _batch_norm_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    """Non-trivial γ, β and running statistics."""
    params = layer_options("batch_norm", {key: value for key, value in options.items() if key != "bias"})
    channels, affine = shape[1], params["affine"]
    buffers = {"running_mean": rng.normal(0.0, 0.5, channels), "running_var": rng.uniform(0.5, 2.0, channels)}
    return {"weight": rng.uniform(0.5, 1.5, channels) if affine else None,
            "bias": rng.normal(0.0, 0.3, channels) if affine else None, "params": params, "buffers": buffers}


def _batch_norm_draw(rng: np.random.Generator, shape: Shape) -> dict:
    """Training mode (batch statistics) four times in five, where a channel holds more than one value."""
    batch, channels, height, width = shape
    training = bool(rng.random() < 0.8) and batch * height * width > 1
    return {"weight": rng.uniform(0.5, 1.5, channels), "bias": rng.normal(0.0, 0.1, channels),
            "params": layer_options("batch_norm", {"training": training}),
            "buffers": {"running_mean": rng.normal(0.0, 0.1, channels),
                        "running_var": rng.uniform(0.5, 1.5, channels)}}


def _layer_norm_shape(layer, shape: Shape) -> Shape:
    params = layer.params
    if params["dims"] > len(shape) - 1:
        raise ShapeError(f"dims = {params['dims']} but the input {shape} has {len(shape) - 1} dimensions "
                         "after the batch")
    return shape


def _layer_norm_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    if options["dims"] > len(shape) - 1:
        raise ShapeError(f"expected at most {len(shape) - 1} (the dimensions after the batch of the input "
                         f"{shape}), got {options['dims']}", "dims")
    normalized = tuple(shape[-options["dims"]:])
    return {"weight": normalized, "bias": normalized} if options["elementwise_affine"] else {}


def _layer_norm_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    params = layer_options("layer_norm", {key: value for key, value in options.items() if key != "bias"})
    normalized = tuple(shape[-params["dims"]:])
    affine = params["elementwise_affine"]
    return {"weight": rng.uniform(0.5, 1.5, normalized) if affine else None,
            "bias": rng.normal(0.0, 0.3, normalized) if affine else None, "params": params}


def _layer_norm_draw(rng: np.random.Generator, shape: Shape) -> dict:
    """Over the last 1, 2 or 3 dimensions of an image."""
    dims = int(rng.integers(1, 4))
    normalized = shape[-dims:]
    return {"weight": rng.uniform(0.5, 1.5, normalized), "bias": rng.normal(0.0, 0.1, normalized),
            "params": layer_options("layer_norm", {"dims": dims})}


def _group_norm_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    """γ and β (C,), one per channel, when affine; the channels split into num_groups groups."""
    if len(shape) < 2:
        raise ShapeError(f"group_norm takes (N, C, …), but its input has shape {shape}", "type")
    channels, groups = shape[1], options["num_groups"]
    if channels % groups:
        raise ShapeError(f"expected a divisor of the input channels ({channels}), got {groups}", "num_groups")
    return {"weight": (channels,), "bias": (channels,)} if options["affine"] else {}


# The ε every normalisation adds to its variance (batch_norm, layer_norm, group_norm), PyTorch's default.
_NORM_EPS = ParamSpec(1e-5, float, minimum=0.0, doc="ε added to the variance")


def _batch_norm_statistics(layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per channel over (N, H, W) in training mode; the running statistics in evaluation mode."""
    channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if layer.params.get("training", True):
        axes = tuple(k for k in range(x.ndim) if k != 1)
        return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True), x.size // x.shape[1]
    return (np.asarray(layer.buffers["running_mean"], np.float64).reshape(channel),
            np.asarray(layer.buffers["running_var"], np.float64).reshape(channel), 1)


def _layer_norm_statistics(layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per sample over the trailing ``dims`` dimensions."""
    axes = tuple(range(x.ndim - int(layer.params["dims"]), x.ndim))
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True), int(np.prod([x.shape[k] for k in axes]))


def _group_norm_statistics(layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per sample and group of C/G channels with their positions."""
    groups = int(layer.params["num_groups"])
    grouped = x.reshape(x.shape[0], groups, -1)
    mean, variance = grouped.mean(axis=2, keepdims=True), grouped.var(axis=2, keepdims=True)
    spread = lambda v: np.broadcast_to(v, grouped.shape).reshape(x.shape)  # noqa: E731
    return spread(mean), spread(variance), grouped.shape[2]


def _group_norm_shape(layer, shape: Shape) -> Shape:
    if len(shape) < 2:
        raise ShapeError(f"group_norm takes (N, C, …), got an input of shape {shape}")
    if shape[1] % layer.params["num_groups"]:
        raise ShapeError(f"num_groups = {layer.params['num_groups']} must divide the input channels ({shape[1]})")
    return shape


def _group_norm_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    """Non-trivial γ and β, as batch_norm's grid draws them."""
    params = layer_options("group_norm", options)
    channels, affine = shape[1], params["affine"]
    return {"weight": rng.uniform(0.5, 1.5, channels) if affine else None,
            "bias": rng.normal(0.0, 0.3, channels) if affine else None, "params": params}


def _group_norm_draw(rng: np.random.Generator, shape: Shape) -> dict:
    """num_groups one of the divisors of the channels (1: one group per sample, C: one per channel)."""
    channels = shape[1]
    groups = int(_pick(rng, [g for g in range(1, channels + 1) if channels % g == 0]))
    return {"weight": rng.uniform(0.5, 1.5, channels), "bias": rng.normal(0.0, 0.1, channels),
            "params": layer_options("group_norm", {"num_groups": groups})}


# ----- recurrent layers (rnn, lstm, gru) and their companions


def _recurrent_options(**extra: ParamSpec) -> dict[str, ParamSpec]:
    """The options rnn, lstm and gru share, ``extra`` after hidden_size."""
    return {
        "hidden_size": ParamSpec(None, int, minimum=1, doc="H, the hidden state's size"),
        **extra,
        "bias": ParamSpec(True, bool, doc="b_ih and b_hh"),
        "bptt_chunk": ParamSpec(0, int, minimum=0, doc="0: full backpropagation through time; k: the state cut "
                                                       "from the gradient every k steps (detach)"),
    }


def _recurrent_shape(layer, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ShapeError(f"{layer.type} takes sequences (N, T, F), got an input of shape {shape}")
    features = layer.tensors["weight_ih"].shape[1]
    if shape[2] != features:
        raise ShapeError(f"weight_ih has shape {layer.tensors['weight_ih'].shape} (gates·H, F) but the input has "
                         f"{shape[2]} features")
    return (shape[0], shape[1], layer.params["hidden_size"])


def _recurrent_tensors(kind: str, gates: int):
    """``weight_ih`` (G·H, F), ``weight_hh`` (G·H, H), ``bias_ih`` / ``bias_hh`` (G·H,) — in this order,
    the order PyTorch draws them — then the initial states (N, H) the layer may be given."""

    def tensor_shapes(options: dict, shape: Shape) -> dict[str, Shape]:
        if len(shape) != 3:
            raise ShapeError(f"{kind} takes sequences (N, T, F), but its input has shape {shape}", "type")
        batch, _steps, features = shape
        hidden = options["hidden_size"]
        rows = gates * hidden
        shapes = {"weight_ih": (rows, features), "weight_hh": (rows, hidden)}
        if options["bias"]:
            shapes.update(bias_ih=(rows,), bias_hh=(rows,))
        return {**shapes, **{name: (batch, hidden) for name in LAYERS[kind].data}}

    return tensor_shapes


def recurrent_parameters(kind: str, options: dict, shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The learned tensors of a recurrent layer, drawn as PyTorch draws them: U(−1/√H, 1/√H), in order."""
    bound = 1.0 / math.sqrt(options["hidden_size"])
    shapes = LAYERS[kind].tensor_shapes(options, shape)
    return {name: rng.uniform(-bound, bound, wanted) for name, wanted in shapes.items()
            if name in LAYERS[kind].parameters}


def _recurrent_build(kind: str):
    """PyTorch's draw of the weights; the initial states the options ask for (``h0``, ``c0``: true), N(0, 0.5²)."""

    def build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
        options = dict(options)
        given = {name: options.pop(name, False) for name in ("h0", "c0")}
        options.pop("sequence_loss", None)
        params = layer_options(kind, options)
        tensors = recurrent_parameters(kind, params, shape, rng)
        states = {name: rng.normal(0.0, 0.5, (shape[0], params["hidden_size"]))
                  for name, wanted in given.items() if wanted}
        return {"params": params, "tensors": tensors, "states": states}

    return build


def _recurrent_draw(kind: str):
    """hidden_size 1–5, a bias four times in five, full or truncated backpropagation through time
    (chunks of 1 or 3), rnn's nonlinearity tanh twice as often as relu."""

    def draw(rng: np.random.Generator, shape: Shape) -> dict:
        hidden = int(rng.integers(1, 6))
        options = {"hidden_size": hidden, "bias": bool(rng.random() < 0.8),
                   "bptt_chunk": int(_pick(rng, (0, 0, 1, 3)))}
        if "nonlinearity" in LAYERS[kind].params:
            options["nonlinearity"] = _pick(rng, ("tanh", "tanh", "relu"))
        params = layer_options(kind, options)
        return {"params": params, "tensors": recurrent_parameters(kind, params, shape, rng)}

    return draw


def _recurrent_spec(name: str, formula: str, gates: int, options: dict[str, ParamSpec], data: tuple[str, ...],
                    records: tuple[str, ...], grid: tuple, kink: str = "") -> "LayerInfo":
    """The spec of one recurrent cell (rnn, lstm, gru): what the three share, its name and gate count once."""
    return LayerInfo(name, formula, options, parameters=("weight_ih", "weight_hh", "bias_ih", "bias_hh"), data=data,
                     random="recurrent", kink=kink, gates=gates, tensor_shapes=_recurrent_tensors(name, gates),
                     output_shape=_recurrent_shape, build=_recurrent_build(name), draw=_recurrent_draw(name),
                     cost=_recurrent_cost(gates),
                     records=records, grid=grid)


def _pick(rng: np.random.Generator, options):
    """One of ``options``, uniformly (``scenarios.generator`` draws the same way)."""
    return options[int(rng.integers(len(options)))]


def _last_step_shape(layer, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ShapeError(f"last_step takes sequences (N, T, H), got an input of shape {shape}")
    return (shape[0], shape[2])


def _embedding_shape(layer, shape: Shape) -> Shape:
    if len(shape) != 2:
        raise ShapeError(f"embedding takes token ids (N, T), got an input of shape {shape}")
    return (*shape, layer.params["embedding_dim"])


def _embedding_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    return {"weight": (options["num_embeddings"], options["embedding_dim"])}


def _embedding_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    params = layer_options("embedding", options)
    return {"weight": rng.normal(0.0, 1.0, _embedding_tensors(params, shape)["weight"]), "params": params}


# ----- dropout


def _dropout_draw(rng: np.random.Generator, shape: Shape) -> dict:
    return {"params": layer_options("dropout", {"p": float(_pick(rng, (0.2, 0.5)))})}


# ----- beyond chains: attention, residual blocks, positional embeddings


def _inner_output_shape(layer, shape: Shape) -> Shape:
    """The output shape of one layer of a block (an activation keeps its input's shape)."""
    return LAYERS[layer.type].output_shape(layer, shape) if layer.type in LAYERS else shape


def _attention_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    """PyTorch's names and shapes (``torch.nn.MultiheadAttention``, batch first): ``in_proj_weight`` (3E, E) —
    the rows of W_q, W_k, W_v stacked in this order —, ``in_proj_bias`` (3E,), ``out_proj.weight`` (E, E),
    ``out_proj.bias`` (E,); then the ``key_padding_mask`` (N, T) the layer may be given."""
    if len(shape) != 3:
        raise ShapeError(f"multihead_attention takes sequences (N, T, E), but its input has shape {shape}", "type")
    batch, steps, features = shape
    width, heads = options["embed_dim"], options["num_heads"]
    if features != width:
        raise ShapeError(f"expected the input's features, {features}, got {width}", "embed_dim")
    if width % heads:
        raise ShapeError(f"expected a divisor of embed_dim ({width}), got {heads}", "num_heads")
    shapes = {"in_proj_weight": (3 * width, width)}
    if options["bias"]:
        shapes["in_proj_bias"] = (3 * width,)
    shapes["out_proj.weight"] = (width, width)
    if options["bias"]:
        shapes["out_proj.bias"] = (width,)
    return {**shapes, "key_padding_mask": (batch, steps)}


def _attention_shape(layer, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ShapeError(f"multihead_attention takes sequences (N, T, E), got an input of shape {shape}")
    width = layer.tensors["in_proj_weight"].shape[1]
    if shape[2] != width:
        raise ShapeError(f"in_proj_weight has shape {layer.tensors['in_proj_weight'].shape} (3·E, E) but the input "
                         f"has {shape[2]} features")
    if width % layer.params["num_heads"]:
        raise ShapeError(f"num_heads = {layer.params['num_heads']} must divide embed_dim ({width})")
    mask = layer.masks.get("key_padding_mask")
    if mask is not None and mask.shape != shape[:2]:
        raise ShapeError(f"key_padding_mask has shape {mask.shape}; expected (N, T) = {shape[:2]}")
    return shape


def key_padding_mask(rng: np.random.Generator, batch: int, steps: int) -> np.ndarray:
    """A key_padding_mask (True: the key is ignored) that leaves every query a key: about a third of the keys
    masked, never the first (with ``causal`` the first query sees the first key alone)."""
    mask = rng.random((batch, steps)) < 1 / 3
    mask[:, 0] = False
    return mask


def attention_parameters(options: dict, shape: Shape, rng: np.random.Generator,
                         bias_scale: float = 0.0) -> dict[str, np.ndarray]:
    """The parameters as ``torch.nn.MultiheadAttention`` draws them — ``in_proj_weight`` Xavier-uniform,
    ``out_proj.weight`` U(±1/√E) (``torch.nn.Linear``'s), the biases 0 — in that order; with ``bias_scale``,
    biases N(0, bias_scale²) instead (the grids: a bias of 0 would not show in the forward pass)."""
    shapes = _attention_tensors(options, shape)
    drawn = {"in_proj_weight": initialise_shape("xavier_uniform", shapes["in_proj_weight"], rng),
             "out_proj.weight": initialise_shape("pytorch_default", shapes["out_proj.weight"], rng)}
    for name in ("in_proj_bias", "out_proj.bias"):
        if name in shapes:
            drawn[name] = rng.normal(0.0, bias_scale, shapes[name]) if bias_scale else np.zeros(shapes[name])
    return {name: drawn[name] for name in shapes if name in drawn}


def _attention_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    """PyTorch's draw with small non-zero biases; ``key_padding_mask`` (a grid switch): true draws one."""
    options = dict(options)
    masked = options.pop("key_padding_mask", False)
    params = layer_options("multihead_attention", options)
    masks = {"key_padding_mask": key_padding_mask(rng, shape[0], shape[1])} if masked else {}
    return {"params": params, "tensors": attention_parameters(params, shape, rng, bias_scale=0.1), "masks": masks}


def _attention_cost(layer, input_shape: Shape, output_shape: Shape) -> "LayerCost":
    """The projections (2·E·3E and 2·E·E per position), Q Kᵀ and P V (2·T·E each per position), the softmax;
    kept: Q, K, V, the heads' output and their gradients; the scores, P, dP and dS, and P and its gradient
    recorded in the Trace."""
    batch, steps, width = input_shape
    positions, scores = batch * steps, batch * layer.params["num_heads"] * steps * steps
    return LayerCost(flops=8 * positions * width * width + 4 * positions * steps * width + 5 * scores,
                     kept=8 * positions * width + 6 * scores, calls=30)


def held_values(output_shape: Shape, kept: int, parameters: int) -> int:
    """The values a layer holds while a scenario is checked (``scenarios.budget``): its output, the output's
    gradient and a temporary of the backward pass; what its backward pass keeps (``LayerCost.kept``); each
    parameter with its gradient and an optimizer's state."""
    return 3 * math.prod(output_shape) + kept + 3 * parameters


def _residual_cost(layer, input_shape: Shape, output_shape: Shape) -> "LayerCost":
    """The block's layers' costs added up, with what a top-level layer's is counted for beside its cost
    (``scenarios.budget``: its output, gradient and a temporary, each parameter with its gradient and an
    optimizer's state) kept by the block."""
    flops, kept, calls, shape = math.prod(output_shape), 0, 1, input_shape
    for inner in layer.layers:
        inner_output = _inner_output_shape(inner, shape)
        cost = layer_cost(inner, shape, inner_output)
        parameters = sum(np.size(value) for value in inner.parameters.values())
        flops, calls = flops + cost.flops, calls + cost.calls
        kept += held_values(inner_output, cost.kept, parameters)
        shape = inner_output
    return LayerCost(flops=flops, kept=kept, calls=calls)


def _residual_shape(layer, shape: Shape) -> Shape:
    """x + f(x): f (the block's layers) must give back the shape it was given."""
    if not layer.layers:
        raise ShapeError("a residual block needs at least one layer of its own ([[layers.layers]])")
    inner = shape
    for each in layer.layers:
        inner = _inner_output_shape(each, inner)
    if inner != shape:
        raise ShapeError(f"the block's layers turn {shape} into {inner}; x + f(x) needs f(x) of the input's shape")
    return shape


def _residual_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    """The block's layers (plain data, ``{"type": …, **fields}``), by the grid switch ``branch``: "mlp" (linear →
    tanh → linear back to the input's width), "attention" (layer_norm → causal multihead_attention, a GPT
    block's first half), "nested" (linear → a residual block of its own → gelu)."""
    width = shape[-1]

    def layer(kind: str, layer_shape: Shape, **options) -> dict:
        return {"type": kind, **LAYERS[kind].build(options, layer_shape, rng)}

    branch = options.get("branch", "mlp")
    if branch == "mlp":
        hidden = shape[:-1] + (width + 1,)
        layers = [layer("linear", shape, out=width + 1), {"type": "tanh"}, layer("linear", hidden, out=width)]
    elif branch == "attention":
        layers = [layer("layer_norm", shape),
                  layer("multihead_attention", shape, embed_dim=width, num_heads=2, causal=True)]
    else:
        inner = layer("residual", shape, branch="mlp")
        layers = [layer("linear", shape, out=width), inner, {"type": "gelu"}]
    return {"layers": layers}


def _positional_tensors(options: dict, shape: Shape) -> dict[str, Shape]:
    """``weight`` (T_max, E) = (num_embeddings, embedding_dim); the input (N, T, E), T ≤ T_max."""
    if len(shape) != 3:
        raise ShapeError(f"positional_embedding takes sequences (N, T, E), but its input has shape {shape}", "type")
    if shape[2] != options["embedding_dim"]:
        raise ShapeError(f"expected the input's features, {shape[2]}, got {options['embedding_dim']}",
                         "embedding_dim")
    if shape[1] > options["num_embeddings"]:
        raise ShapeError(f"expected at least the input's {shape[1]} time steps (one learned row per position), "
                         f"got {options['num_embeddings']}", "num_embeddings")
    return {"weight": (options["num_embeddings"], options["embedding_dim"])}


def _positional_shape(layer, shape: Shape) -> Shape:
    positions, width = layer.weight.shape
    if len(shape) != 3 or shape[2] != width or shape[1] > positions:
        raise ShapeError(f"weight has shape {layer.weight.shape} (T_max, E): it takes sequences (N, T ≤ {positions}, "
                         f"{width}), got an input of shape {shape}")
    return shape


def _positional_build(options: dict, shape: Shape, rng: np.random.Generator) -> dict:
    params = layer_options("positional_embedding", options)
    return {"weight": rng.normal(0.0, 1.0, _positional_tensors(params, shape)["weight"]), "params": params}


_TRANSFORMER_SKELETON = ("placed by the transformer networks' structure (``scenarios.generator."
                         "random_transformer_scenario``: embedding → positional_embedding → blocks of "
                         "residual [layer_norm → multihead_attention] and residual [layer_norm → linear → gelu "
                         "→ linear] → layer_norm → linear)")

_CONV_SKELETON = "the skeleton of every convolutional network (conv2d → activation …, flatten → linear)"
_RECURRENT_SKELETON = "placed by the recurrent networks' structure (optional embedding first, optional last_step)"

_BATCH_NORM_GRID = (
    LayerGridCase("features", (4, 3), {}),
    LayerGridCase("images", (3, 2, 3, 3), {}),
    LayerGridCase("batch2", (2, 3), {}),
    LayerGridCase("no-affine", (3, 2, 2, 2), {"affine": False}),
    LayerGridCase("momentum0.5-eps0.01", (4, 3), {"momentum": 0.5, "eps": 0.01}),
    LayerGridCase("eval-batch1", (1, 2, 3, 3), {"training": False}),
    LayerGridCase("eval-features", (3, 4), {"training": False}),
)

LAYERS: dict[str, LayerInfo] = {
    layer.name: layer
    for layer in [
        LayerInfo(
            "linear", "z = x Wᵀ + b; W (out, in)", parameters=("weight", "bias"), bias_sum="trailing",
            tensor_shapes=_linear_tensors, output_shape=_linear_shape, cost=_linear_cost,
            grid=(LayerGridCase("plain", (3, 4), {"out": 3}),), build=_linear_build, skeleton=_CONV_SKELETON,
        ),
        LayerInfo(
            "conv2d",
            "z[n, o] = b[o] + Σ_c Σ_(p,q) W[o, c, p, q] · x[n, c, s·i + d·p − pad, s·j + d·q − pad] (cross-correlation)",
            {
                "out_channels": ParamSpec(None, int, minimum=1, doc="output channels"),
                "kernel_size": _pair(None, 1, "kernel height and width"),
                "stride": _pair((1, 1), 1, "step between windows"),
                "padding": _pair((0, 0), 0, "zeros added on each side"),
                "dilation": _pair((1, 1), 1, "spacing between kernel elements"),
                "groups": ParamSpec(1, int, minimum=1, doc="channel groups; in and out channels divisible by it"),
            },
            parameters=("weight", "bias"),
            bias_sum="channel",
            tensor_shapes=_conv2d_tensors, output_shape=_windowed_shape, build=_conv2d_build, cost=_window_cost,
            skeleton=_CONV_SKELETON,
            grid=(
                LayerGridCase("k3", (2, 2, 6, 6), {"out_channels": 3, "kernel_size": (3, 3)}),
                LayerGridCase("stride2-pad1", (2, 2, 7, 7), {"out_channels": 2, "kernel_size": (3, 3),
                                                             "stride": (2, 2), "padding": (1, 1)}),
                LayerGridCase("stride3-k2", (1, 2, 8, 8), {"out_channels": 2, "kernel_size": (2, 2), "stride": (3, 3)}),
                LayerGridCase("pad-k-minus-1", (2, 1, 4, 4), {"out_channels": 2, "kernel_size": (3, 3),
                                                              "padding": (2, 2)}),
                LayerGridCase("dilation2", (2, 2, 7, 7), {"out_channels": 2, "kernel_size": (3, 3), "dilation": (2, 2)}),
                LayerGridCase("depthwise", (2, 3, 5, 5), {"out_channels": 3, "kernel_size": (3, 3), "groups": 3}),
                LayerGridCase("groups2", (2, 4, 5, 5), {"out_channels": 2, "kernel_size": (2, 2), "groups": 2}),
                LayerGridCase("no-bias", (2, 2, 5, 5), {"out_channels": 2, "kernel_size": (3, 3), "bias": False}),
                LayerGridCase("rect", (2, 2, 5, 7), {"out_channels": 2, "kernel_size": (2, 3), "stride": (1, 2),
                                                     "padding": (1, 0)}),
                # Every path of the input gradient (``manual.conv.full_convolution``) with a rectangular kernel and
                # per-axis options (H×W), both ways round: a slip that reads one axis's option for the other shows
                # only here. Stride 1, padding ≤ the kernel's reach d·(k − 1), out·H·W ≤ C·Ho·Wo: the correlation
                # with the turned kernel (``correlate_with_turned_kernel``) —
                LayerGridCase("k2x3-pad1x0-dilation1x2", (2, 3, 5, 9), {"out_channels": 2, "kernel_size": (2, 3),
                                                                        "padding": (1, 0), "dilation": (1, 2)}),
                LayerGridCase("k3x2-pad0x1-dilation2x1", (2, 3, 9, 5), {"out_channels": 2, "kernel_size": (3, 2),
                                                                        "padding": (0, 1), "dilation": (2, 1)}),
                LayerGridCase("groups2-k2x3-pad1x0-dilation1x2", (2, 4, 4, 7),
                              {"out_channels": 2, "kernel_size": (2, 3), "padding": (1, 0), "dilation": (1, 2),
                               "groups": 2}),
                # — and the spread of the weighted δ (``spread_weighted_delta``): stride > 1 on one axis,
                LayerGridCase("k2x3-stride2x1-pad0x1-dilation1x2", (2, 2, 7, 8),
                              {"out_channels": 2, "kernel_size": (2, 3), "stride": (2, 1), "padding": (0, 1),
                               "dilation": (1, 2)}),
                LayerGridCase("k3x2-stride1x2-pad1x0-dilation2x1", (2, 2, 7, 8),
                              {"out_channels": 2, "kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0),
                               "dilation": (2, 1)}),
                LayerGridCase("groups2-k3x2-stride2x1-pad0x1-dilation1x2", (2, 4, 7, 6),
                              {"out_channels": 4, "kernel_size": (3, 2), "stride": (2, 1), "padding": (0, 1),
                               "dilation": (1, 2), "groups": 2}),
                # stride 1 with the width's padding beyond the kernel's reach (2 > 1·(2 − 1)),
                LayerGridCase("k3x2-pad0x2-dilation2x1", (2, 2, 9, 5), {"out_channels": 2, "kernel_size": (3, 2),
                                                                        "padding": (0, 2), "dilation": (2, 1)}),
                # stride 1 within the reach, but the correlation would lay out more numbers (out·H·W > C·Ho·Wo).
                LayerGridCase("k2x3-pad1x0-dilation1x2-out4", (2, 2, 5, 9),
                              {"out_channels": 4, "kernel_size": (2, 3), "padding": (1, 0), "dilation": (1, 2)}),
            ),
        ),
        LayerInfo(
            "max_pool2d",
            "a = max over each window; padding counts as −∞",
            {
                "kernel_size": _pair(None, 1, "window height and width"),
                "stride": ParamSpec(None, tuple, minimum=1, default_from="kernel_size",
                                    doc="step between windows (default: kernel_size) (an int, or a pair [h, w])"),
                "padding": _pair((0, 0), 0, "−∞ added on each side, at most half the kernel"),
                "dilation": _pair((1, 1), 1, "spacing between window elements"),
                "ceil_mode": ParamSpec(False, bool, doc="round the output size up (a last, partial window)"),
            },
            kinked=True,
            kink="a tie between the maxima of a window: PyTorch passes δ to the first in row-major order",
            tensor_shapes=_no_arrays, output_shape=_windowed_shape, cost=_window_cost,
            build=_options_only("max_pool2d"), draw=_pool_draw("max_pool2d"),
            grid=(
                LayerGridCase("k2", (2, 2, 6, 6), {"kernel_size": (2, 2)}),
                LayerGridCase("k3-s2-pad1", (2, 2, 7, 7), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
                LayerGridCase("ceil", (2, 1, 7, 7), {"kernel_size": (2, 2), "ceil_mode": True}),
                LayerGridCase("dilation2", (2, 1, 7, 7), {"kernel_size": (2, 2), "stride": (1, 1), "dilation": (2, 2)}),
                LayerGridCase("overlap", (1, 2, 6, 6), {"kernel_size": (3, 3), "stride": (1, 1)}),
                LayerGridCase("ties", (2, 2, 6, 6), {"kernel_size": (2, 2)}, ("kink",)),
                LayerGridCase("ties-overlap", (1, 1, 5, 5), {"kernel_size": (3, 3), "stride": (1, 1),
                                                             "padding": (1, 1)}, ("kink",)),
                # Rectangular windows with per-axis options (H×W), both ways round: unpadded (x̃ is x itself),
                LayerGridCase("k2x3-s2x1-dilation1x2", (2, 2, 7, 8), {"kernel_size": (2, 3), "stride": (2, 1),
                                                                      "dilation": (1, 2)}),
                # padded (the in-bounds mask, the crop), overlapping along the height,
                LayerGridCase("k3x2-s1x2-pad1x0-dilation2x1", (2, 2, 7, 8),
                              {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0), "dilation": (2, 1)}),
                # ceil_mode: along the height the last ceil window would start in the padding and is dropped, along
                # the width a last window hangs over the end of x (extra −∞ padding on the right),
                LayerGridCase("k2x3-s2x3-pad1x0-dilation1x2-ceil", (2, 2, 5, 6),
                              {"kernel_size": (2, 3), "stride": (2, 3), "padding": (1, 0), "dilation": (1, 2),
                               "ceil_mode": True}),
                # ties in rectangular windows: PyTorch's first maximum in row-major (u, then v) order.
                LayerGridCase("ties-k2x3-s1x2-pad1x0", (2, 2, 5, 7),
                              {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)}, ("kink",)),
                LayerGridCase("ties-k3x2-s2x1-pad0x1-dilation2x1", (1, 2, 7, 6),
                              {"kernel_size": (3, 2), "stride": (2, 1), "padding": (0, 1), "dilation": (2, 1)},
                              ("kink",)),
            ),
        ),
        LayerInfo(
            "avg_pool2d",
            "a = mean over each window",
            {
                "kernel_size": _pair(None, 1, "window height and width"),
                "stride": ParamSpec(None, tuple, minimum=1, default_from="kernel_size",
                                    doc="step between windows (default: kernel_size) (an int, or a pair [h, w])"),
                "padding": _pair((0, 0), 0, "zeros added on each side, at most half the kernel"),
                "ceil_mode": ParamSpec(False, bool, doc="round the output size up (a last, partial window)"),
                "count_include_pad": ParamSpec(True, bool, doc="the padding counts in the divisor"),
            },
            tensor_shapes=_no_arrays, output_shape=_windowed_shape, cost=_window_cost,
            build=_options_only("avg_pool2d"), draw=_pool_draw("avg_pool2d"),
            grid=(
                LayerGridCase("k2", (2, 2, 6, 6), {"kernel_size": (2, 2)}),
                LayerGridCase("k3-s2-pad1", (2, 1, 7, 7), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
                LayerGridCase("k3-s2-pad1-exclude-pad", (2, 1, 7, 7), {"kernel_size": (3, 3), "stride": (2, 2),
                                                                       "padding": (1, 1), "count_include_pad": False}),
                LayerGridCase("ceil", (2, 1, 7, 7), {"kernel_size": (2, 2), "ceil_mode": True}),
                LayerGridCase("ceil-pad1", (1, 2, 6, 6), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1),
                                                          "ceil_mode": True}),
                # Rectangular windows with per-axis options (H×W), both ways round (average pooling has no dilation);
                # with and without the padding in the divisor,
                LayerGridCase("k2x3-s2x1-pad0x1", (2, 1, 7, 8), {"kernel_size": (2, 3), "stride": (2, 1),
                                                                 "padding": (0, 1)}),
                LayerGridCase("k3x2-s1x2-pad1x0-exclude-pad", (2, 1, 7, 8),
                              {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0), "count_include_pad": False}),
                # and ceil_mode: a last window hanging over the end of x along one axis (its divisor clipped to the
                # padded input), a last ceil window dropped along the other.
                LayerGridCase("k3x2-s2x3-pad1x0-ceil", (2, 1, 6, 6),
                              {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 0), "ceil_mode": True}),
                LayerGridCase("k2x3-s3x2-pad0x1-ceil-exclude-pad", (2, 1, 6, 8),
                              {"kernel_size": (2, 3), "stride": (3, 2), "padding": (0, 1), "ceil_mode": True,
                               "count_include_pad": False}),
            ),
        ),
        LayerInfo("flatten", "(N, …) → (N, features)", tensor_shapes=_no_arrays, output_shape=_flatten_shape,
                  grid=(LayerGridCase("image", (2, 2, 3, 3), {}),), build=_options_only("flatten"),
                  skeleton=_CONV_SKELETON),
        LayerInfo(
            "batch_norm",
            "x̂ = (x − μ_B) / √(σ²_B + ε); y = γ x̂ + β, per feature (N, F) or channel (N, C, H, W)",
            {
                "eps": _NORM_EPS,
                "momentum": ParamSpec(0.1, float, minimum=0.0, maximum=1.0,
                                      doc="running ← (1 − momentum)·running + momentum·batch statistic"),
                "affine": ParamSpec(True, bool, doc="learn γ (weight) and β (bias)"),
                "training": ParamSpec(True, bool, doc="batch statistics (true) or the running ones (false)"),
            },
            parameters=("weight", "bias"),
            buffers=("running_mean", "running_var"),
            bias_sum="channel",
            switch="affine",
            fills={"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0},
            nonnegative=("running_var",),
            tensor_shapes=_batch_norm_tensors, output_shape=_batch_norm_shape,
            statistics=_batch_norm_statistics, cost=_normalisation_cost,
            grid=_BATCH_NORM_GRID, build=_batch_norm_build, draw=_batch_norm_draw,
        ),
        LayerInfo(
            "layer_norm",
            "x̂ = (x − μ) / √(σ² + ε) over the trailing dims dimensions of each sample; y = γ x̂ + β",
            {
                "dims": ParamSpec(1, int, minimum=1, doc="how many trailing dimensions are normalised"),
                "eps": _NORM_EPS,
                "elementwise_affine": ParamSpec(True, bool, doc="learn γ (weight) and β (bias)"),
            },
            parameters=("weight", "bias"),
            bias_sum="trailing",
            switch="elementwise_affine",
            fills={"weight": 1.0, "bias": 0.0},
            tensor_shapes=_layer_norm_tensors, output_shape=_layer_norm_shape,
            statistics=_layer_norm_statistics, cost=_normalisation_cost,
            build=_layer_norm_build, draw=_layer_norm_draw,
            grid=(
                LayerGridCase("features", (3, 4), {}),
                LayerGridCase("images-dims1", (2, 2, 3, 3), {"dims": 1}),
                LayerGridCase("images-dims2", (2, 2, 3, 3), {"dims": 2}),
                LayerGridCase("images-dims3", (2, 2, 3, 3), {"dims": 3}),
                LayerGridCase("no-affine", (3, 4), {"elementwise_affine": False}),
                LayerGridCase("eps0.1", (3, 4), {"eps": 0.1}),
            ),
        ),
        _recurrent_spec(
            "rnn",
            "h_t = f(x_t W_ihᵀ + b_ih + h_(t−1) W_hhᵀ + b_hh), f = tanh or relu; output every h_t (N, T, H)",
            gates=1,
            options=_recurrent_options(nonlinearity=ParamSpec("tanh", str, choices=("tanh", "relu"), doc="f")),
            data=("h0",),
            kink="with nonlinearity = relu, a pre-activation at 0 (h_t = 0 there; PyTorch's f'(0) = 0)",
            records=("h0.grad",),
            grid=(
                LayerGridCase("tanh-t12", (2, 12, 3), {"hidden_size": 4}),
                LayerGridCase("relu-t12", (2, 12, 3), {"hidden_size": 4, "nonlinearity": "relu"}),
                LayerGridCase("t1", (3, 1, 3), {"hidden_size": 4}),
                LayerGridCase("no-bias-h0", (2, 5, 3), {"hidden_size": 3, "bias": False, "h0": True}),
                LayerGridCase("chunk1", (2, 6, 3), {"hidden_size": 3, "bptt_chunk": 1}),
                LayerGridCase("chunk4-of-10-h0", (2, 10, 2), {"hidden_size": 3, "bptt_chunk": 4, "h0": True}),
                LayerGridCase("sequence-loss", (2, 5, 3), {"hidden_size": 3, "sequence_loss": True}),
            ),
        ),
        _recurrent_spec(
            "lstm",
            "gates (i, f, g, o); c_t = f ⊙ c_(t−1) + i ⊙ g; h_t = o ⊙ tanh(c_t); output every h_t (N, T, H)",
            gates=4,
            options=_recurrent_options(),
            data=("h0", "c0"),
            records=("cell", "cell.grad", "h0.grad", "c0.grad"),
            grid=(
                LayerGridCase("t12", (2, 12, 3), {"hidden_size": 4}),
                LayerGridCase("t1", (3, 1, 3), {"hidden_size": 3}),
                LayerGridCase("no-bias-h0-c0", (2, 5, 3), {"hidden_size": 3, "bias": False, "h0": True, "c0": True}),
                LayerGridCase("chunk3-of-8", (2, 8, 2), {"hidden_size": 3, "bptt_chunk": 3}),
                LayerGridCase("chunk1-h0-c0", (2, 4, 2), {"hidden_size": 2, "bptt_chunk": 1, "h0": True, "c0": True}),
            ),
        ),
        _recurrent_spec(
            "gru",
            "gates (r, z, n); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)); h_t = (1 − z) ⊙ n + z ⊙ h_(t−1)",
            gates=3,
            options=_recurrent_options(),
            data=("h0",),
            records=("h0.grad",),
            grid=(
                LayerGridCase("t12", (2, 12, 3), {"hidden_size": 4}),
                LayerGridCase("t1", (3, 1, 3), {"hidden_size": 3}),
                LayerGridCase("no-bias-h0", (2, 5, 3), {"hidden_size": 3, "bias": False, "h0": True}),
                LayerGridCase("chunk2-of-7", (2, 7, 2), {"hidden_size": 3, "bptt_chunk": 2}),
            ),
        ),
        LayerInfo("last_step", "(N, T, H) → (N, H): the last time step", random="recurrent",
                  tensor_shapes=_no_arrays, output_shape=_last_step_shape,
                  grid=(LayerGridCase("sequence", (3, 4, 2), {}),), build=_options_only("last_step"),
                  skeleton=_RECURRENT_SKELETON),
        LayerInfo(
            "embedding",
            "a[n, t] = W[ids[n, t]]: integer token ids (N, T) → (N, T, embedding_dim)",
            {
                "num_embeddings": ParamSpec(None, int, minimum=1, doc="the number of token ids"),
                "embedding_dim": ParamSpec(None, int, minimum=1, doc="the size of each embedding"),
            },
            parameters=("weight",),
            random="recurrent",
            tensor_shapes=_embedding_tensors, output_shape=_embedding_shape, build=_embedding_build,
            grid_inputs="token_ids", skeleton=_RECURRENT_SKELETON,
            grid=(
                LayerGridCase("repeated-ids", (3, 5), {"num_embeddings": 4, "embedding_dim": 3}),
                LayerGridCase("one-id", (2, 3), {"num_embeddings": 1, "embedding_dim": 2}),
            ),
        ),
        LayerInfo(
            "dropout",
            "a = x · m / (1 − p), m ∈ {0, 1} the scenario's mask (inverted dropout)",
            {"p": ParamSpec(0.5, float, minimum=0.0, maximum=1.0, doc="probability of dropping a unit")},
            data=("mask",),
            tensor_shapes=_no_arrays, output_shape=_same_shape, build=_options_only("dropout"), draw=_dropout_draw,
            records=("mask",),
            grid=(
                LayerGridCase("p0.5", (3, 4), {"p": 0.5}),
                LayerGridCase("p0", (3, 4), {"p": 0.0}),
                LayerGridCase("p1", (3, 4), {"p": 1.0}),
                LayerGridCase("images-p0.3", (2, 2, 3, 3), {"p": 0.3}),
            ),
        ),
        # Last: a grid scenario's data are seeded by its place in the grids (``layer_grids.GRID_SEED``), so a
        # new layer goes at the end and leaves every existing scenario's numbers as they were.
        LayerInfo(
            "group_norm",
            "x̂ = (x − μ_g) / √(σ²_g + ε) over each sample's group g of C/G channels and their positions; "
            "y = γ_c x̂ + β_c per channel c",
            {
                "num_groups": ParamSpec(None, int, minimum=1, doc="G, the channel groups (a divisor of the channels)"),
                "eps": _NORM_EPS,
                "affine": ParamSpec(True, bool, doc="learn γ (weight) and β (bias), one per channel"),
            },
            parameters=("weight", "bias"),
            bias_sum="channel",
            switch="affine",
            fills={"weight": 1.0, "bias": 0.0},
            tensor_shapes=_group_norm_tensors, output_shape=_group_norm_shape, statistics=_group_norm_statistics,
            cost=_normalisation_cost,
            build=_group_norm_build, draw=_group_norm_draw,
            random="",
            random_excluded="not yet in the random convolutional networks: joining the pool redraws every random "
                            "convolutional architecture of every seed, so it waits for a sweep of the new draws "
                            "(``draw`` is ready: set random=\"conv\")",
            grid=(
                LayerGridCase("images-g2", (2, 4, 3, 3), {"num_groups": 2}),
                LayerGridCase("one-group", (2, 3, 2, 2), {"num_groups": 1}),
                LayerGridCase("group-per-channel", (2, 3, 3, 3), {"num_groups": 3}),
                LayerGridCase("features-g2", (3, 4), {"num_groups": 2}),
                LayerGridCase("batch1-rect-g3", (1, 6, 2, 5), {"num_groups": 3}),
                LayerGridCase("no-affine", (2, 4, 2, 2), {"num_groups": 2, "affine": False}),
                LayerGridCase("eps0.1", (2, 4, 3, 3), {"num_groups": 2, "eps": 0.1}),
            ),
        ),
        LayerInfo(
            "multihead_attention",
            "per head h: Q = x W_qᵀ + b_q, K, V likewise (rows of in_proj); S = Q Kᵀ/√d, −∞ where masked "
            "(causal: key after query; key_padding_mask: True); P = softmax(S) over the keys; O_h = P V; "
            "a = concat_h(O_h) W_outᵀ + b_out",
            {
                "embed_dim": ParamSpec(None, int, minimum=1, doc="E, the input's and output's features"),
                "num_heads": ParamSpec(None, int, minimum=1, doc="heads, a divisor of embed_dim (d = E / heads each)"),
                "bias": ParamSpec(True, bool, doc="in_proj_bias and out_proj.bias"),
                "causal": ParamSpec(False, bool, doc="query t attends to keys s ≤ t only"),
            },
            parameters=("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"),
            data=("key_padding_mask",),
            switch="bias",
            fills={"in_proj_weight": "xavier_uniform", "in_proj_bias": 0.0, "out_proj.weight": "pytorch_default",
                   "out_proj.bias": 0.0},
            records=("attention", "attention.grad"),
            random="transformer", skeleton=_TRANSFORMER_SKELETON,
            tensor_shapes=_attention_tensors, output_shape=_attention_shape, build=_attention_build,
            cost=_attention_cost,
            grid=(
                LayerGridCase("e4-h2", (2, 3, 4), {"embed_dim": 4, "num_heads": 2}),
                LayerGridCase("e4-h2-causal", (2, 4, 4), {"embed_dim": 4, "num_heads": 2, "causal": True}),
                LayerGridCase("e3-h1-no-bias", (2, 3, 3), {"embed_dim": 3, "num_heads": 1, "bias": False}),
                LayerGridCase("e4-h4-d1", (1, 3, 4), {"embed_dim": 4, "num_heads": 4}),
                LayerGridCase("e4-h2-padding", (3, 4, 4), {"embed_dim": 4, "num_heads": 2,
                                                           "key_padding_mask": True}),
                LayerGridCase("e6-h3-causal-padding", (2, 5, 6), {"embed_dim": 6, "num_heads": 3, "causal": True,
                                                                  "key_padding_mask": True}),
                LayerGridCase("t1", (3, 1, 4), {"embed_dim": 4, "num_heads": 2, "causal": True}),
            ),
        ),
        LayerInfo(
            "residual",
            "a = x + f(x), f the block's own layers in order (layers.{i}.layers.{j}); "
            "δ_x = δ_a + (∂f/∂x)ᵀ δ_a",
            random="transformer", skeleton=_TRANSFORMER_SKELETON,
            records=("branch.grad",),
            tensor_shapes=_no_arrays, output_shape=_residual_shape, build=_residual_build, cost=_residual_cost,
            grid=(
                LayerGridCase("mlp", (3, 4), {"branch": "mlp"}),
                LayerGridCase("mlp-sequence", (2, 3, 4), {"branch": "mlp"}),
                LayerGridCase("attention", (2, 3, 4), {"branch": "attention"}),
                LayerGridCase("nested", (3, 3), {"branch": "nested"}),
            ),
        ),
        LayerInfo(
            "positional_embedding",
            "a[n, t] = x[n, t] + W[t]: a learned row per position, W (T_max, E), T ≤ T_max",
            {
                "num_embeddings": ParamSpec(None, int, minimum=1, doc="T_max, the positions that have a row"),
                "embedding_dim": ParamSpec(None, int, minimum=1, doc="E, the input's features"),
            },
            parameters=("weight",),
            fills={"weight": "standard_normal"},
            random="transformer", skeleton=_TRANSFORMER_SKELETON,
            tensor_shapes=_positional_tensors, output_shape=_positional_shape, build=_positional_build,
            grid=(
                LayerGridCase("t3-of-5", (2, 3, 4), {"num_embeddings": 5, "embedding_dim": 4}),
                LayerGridCase("t4-of-4", (3, 4, 2), {"num_embeddings": 4, "embedding_dim": 2}),
            ),
        ),
    ]
}
