"""The declarative catalogue of everything a scenario may name.

One entry per activation, loss and optimizer, and the single source of what is
known about it:

* its parameters (options) with their defaults — the loader validates scenario
  files against them, and both engines fill in what a scenario leaves out from
  here (``activation_params``, ``optimizer_options``), so a default is written
  once;
* for an activation: whether it has kinks (points without a derivative, where
  PyTorch's subgradient choice is the reference), the parameter variants the
  component grids check, and whether random networks draw it — with which
  parameter variants and which initialiser, or why not;
* for a loss: the reductions it accepts, the domains of its inputs and targets,
  and the inputs its component grid feeds it.

``manual/`` and ``reference/`` each keep an implementation registry keyed by
the same names; ``tests/test_catalogue.py`` fails when an entry is missing from
either registry, from the random generator's pool (unless the entry says why it
is left out) or from the component grids. Adding a component therefore means:
one entry here, one hand-derived class in ``manual/``, one torch mirror in
``reference/`` — every generic test then covers it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
            grid=(LossGridCase("onehot", "probabilities", "onehot"), LossGridCase("soft", "probabilities", "soft")),
        ),
        LossInfo(
            "softmax_cross_entropy",
            "-sum_j t_j ln softmax(z)_j, fused on logits z (delta = softmax(z) - t per sample)",
            ("sum", "mean"),
            target_domain="distribution",
            grid=(LossGridCase("onehot", "logits", "onehot"), LossGridCase("soft", "logits", "soft"),
                  LossGridCase("extreme", "extreme_logits", "onehot", ("no-fd",))),
        ),
        LossInfo(
            "bce",
            "-[t ln a + (1 - t) ln(1 - a)] on probabilities a",
            ("sum", "mean"),
            input_domain="probability",
            target_domain="unit",
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
    complete = {key: given.get(key, spec.default) for key, spec in specs.items()}
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
# Every layer type a scenario may name besides the activations. Options carry
# PyTorch's names and semantics; ``kind=tuple`` marks an option PyTorch takes
# as an int or a pair ``[h, w]`` (stored as a pair). ``parameters`` names the
# arrays the layer learns (``layers.{i}.weight`` / ``.bias``), ``buffers`` the
# arrays it keeps between passes (``layers.{i}.running_mean``), ``data`` the
# arrays the scenario supplies on every pass (``layers.{i}.mask``).


@dataclass(frozen=True)
class LayerInfo:
    """One layer type. ``kinked``: its output is only piecewise differentiable
    (max pooling: a tie between window elements), so scenarios that sit on a
    switch are tagged "kink". ``random``: the random networks that draw it —
    "conv" (``scenarios.generator.random_conv_scenario``), "recurrent"
    (``random_recurrent_scenario``). ``bias_sum``: how ∂L/∂bias sums the
    layer's output gradient — "channel" (over every axis but axis 1: conv2d,
    batch_norm), "trailing" (over every axis before the bias's own: linear,
    layer_norm) or "" (not a plain sum) — read by the summation floor
    (``reports.verification.cancellation``)."""

    name: str
    formula: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    parameters: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    kinked: bool = False
    random: str = "conv"
    bias_sum: str = ""


def _pair(default, minimum: int, doc: str) -> ParamSpec:
    return ParamSpec(default, tuple, minimum=minimum, doc=doc + " (an int, or a pair [h, w])")


def _recurrent_options(**extra: ParamSpec) -> dict[str, ParamSpec]:
    """The options rnn, lstm and gru share, ``extra`` after hidden_size."""
    return {
        "hidden_size": ParamSpec(None, int, minimum=1, doc="H, the hidden state's size"),
        **extra,
        "bias": ParamSpec(True, bool, doc="b_ih and b_hh"),
        "bptt_chunk": ParamSpec(0, int, minimum=0, doc="0: full backpropagation through time; k: the state cut "
                                                       "from the gradient every k steps (detach)"),
    }


LAYERS: dict[str, LayerInfo] = {
    layer.name: layer
    for layer in [
        LayerInfo("linear", "z = x Wᵀ + b; W (out, in)", parameters=("weight", "bias"), bias_sum="trailing"),
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
        ),
        LayerInfo(
            "max_pool2d",
            "a = max over each window; padding counts as −∞",
            {
                "kernel_size": _pair(None, 1, "window height and width"),
                "stride": _pair(None, 1, "step between windows (default: kernel_size)"),
                "padding": _pair((0, 0), 0, "−∞ added on each side, at most half the kernel"),
                "dilation": _pair((1, 1), 1, "spacing between window elements"),
                "ceil_mode": ParamSpec(False, bool, doc="round the output size up (a last, partial window)"),
            },
            kinked=True,
        ),
        LayerInfo(
            "avg_pool2d",
            "a = mean over each window",
            {
                "kernel_size": _pair(None, 1, "window height and width"),
                "stride": _pair(None, 1, "step between windows (default: kernel_size)"),
                "padding": _pair((0, 0), 0, "zeros added on each side, at most half the kernel"),
                "ceil_mode": ParamSpec(False, bool, doc="round the output size up (a last, partial window)"),
                "count_include_pad": ParamSpec(True, bool, doc="the padding counts in the divisor"),
            },
        ),
        LayerInfo("flatten", "(N, …) → (N, features)"),
        LayerInfo(
            "batch_norm",
            "x̂ = (x − μ_B) / √(σ²_B + ε); y = γ x̂ + β, per feature (N, F) or channel (N, C, H, W)",
            {
                "eps": ParamSpec(1e-5, float, minimum=0.0, doc="ε added to the variance"),
                "momentum": ParamSpec(0.1, float, minimum=0.0, maximum=1.0,
                                      doc="running ← (1 − momentum)·running + momentum·batch statistic"),
                "affine": ParamSpec(True, bool, doc="learn γ (weight) and β (bias)"),
                "training": ParamSpec(True, bool, doc="batch statistics (true) or the running ones (false)"),
            },
            parameters=("weight", "bias"),
            buffers=("running_mean", "running_var"),
            bias_sum="channel",
        ),
        LayerInfo(
            "layer_norm",
            "x̂ = (x − μ) / √(σ² + ε) over the trailing dims dimensions of each sample; y = γ x̂ + β",
            {
                "dims": ParamSpec(1, int, minimum=1, doc="how many trailing dimensions are normalised"),
                "eps": ParamSpec(1e-5, float, minimum=0.0, doc="ε added to the variance"),
                "elementwise_affine": ParamSpec(True, bool, doc="learn γ (weight) and β (bias)"),
            },
            parameters=("weight", "bias"),
            bias_sum="trailing",
        ),
        LayerInfo(
            "rnn",
            "h_t = f(x_t W_ihᵀ + b_ih + h_(t−1) W_hhᵀ + b_hh), f = tanh or relu; output every h_t (N, T, H)",
            _recurrent_options(nonlinearity=ParamSpec("tanh", str, choices=("tanh", "relu"), doc="f")),
            parameters=("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
            data=("h0",),
            random="recurrent",
        ),
        LayerInfo(
            "lstm",
            "gates (i, f, g, o); c_t = f ⊙ c_(t−1) + i ⊙ g; h_t = o ⊙ tanh(c_t); output every h_t (N, T, H)",
            _recurrent_options(),
            parameters=("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
            data=("h0", "c0"),
            random="recurrent",
        ),
        LayerInfo(
            "gru",
            "gates (r, z, n); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)); h_t = (1 − z) ⊙ n + z ⊙ h_(t−1)",
            _recurrent_options(),
            parameters=("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
            data=("h0",),
            random="recurrent",
        ),
        LayerInfo("last_step", "(N, T, H) → (N, H): the last time step", random="recurrent"),
        LayerInfo(
            "embedding",
            "a[n, t] = W[ids[n, t]]: integer token ids (N, T) → (N, T, embedding_dim)",
            {
                "num_embeddings": ParamSpec(None, int, minimum=1, doc="the number of token ids"),
                "embedding_dim": ParamSpec(None, int, minimum=1, doc="the size of each embedding"),
            },
            parameters=("weight",),
            random="recurrent",
        ),
        LayerInfo(
            "dropout",
            "a = x · m / (1 − p), m ∈ {0, 1} the scenario's mask (inverted dropout)",
            {"p": ParamSpec(0.5, float, minimum=0.0, maximum=1.0, doc="probability of dropping a unit")},
            data=("mask",),
        ),
    ]
}


def layer_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every option of layer ``name``: ``given``'s values, the catalogue's defaults for the rest."""
    return _complete("layer", name, LAYERS[name].params, given)
