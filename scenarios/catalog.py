"""The declarative catalogue of everything a scenario may name.

One entry per activation, loss and optimizer: its parameters with their
defaults, and (for losses) the reductions it accepts. The loader validates
scenario files against this catalogue; ``manual/`` and ``reference/`` each keep
an implementation registry keyed by the same names, and a generic test checks
that both registries cover the catalogue exactly. Adding a component therefore
means: one entry here, one hand-derived class in ``manual/``, one torch mirror
in ``reference/`` — every generic test then covers it.
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


@dataclass(frozen=True)
class ActivationInfo:
    name: str
    formula: str
    params: dict[str, ParamSpec] = field(default_factory=dict)


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


ACTIVATIONS: dict[str, ActivationInfo] = {
    a.name: a
    for a in [
        ActivationInfo("identity", "a = z"),
        ActivationInfo("sigmoid", "a = 1 / (1 + e^-z)"),
        ActivationInfo("tanh", "a = tanh(z)"),
        ActivationInfo("relu", "a = max(z, 0); a'(0) = 0 as in PyTorch"),
        ActivationInfo(
            "leaky_relu",
            "a = z if z > 0 else slope * z; a'(0) = slope as in PyTorch",
            {"slope": ParamSpec(0.01, float, doc="negative-side slope")},
        ),
        ActivationInfo(
            "elu",
            "a = z if z > 0 else alpha * (e^z - 1)",
            {"alpha": ParamSpec(1.0, float, doc="saturation value for z -> -inf")},
        ),
        ActivationInfo(
            "softplus",
            "a = log(1 + e^(beta z)) / beta, and a = z where beta z > threshold (PyTorch)",
            {
                "beta": ParamSpec(1.0, float, minimum=0.0, doc="sharpness (> 0)"),
                "threshold": ParamSpec(20.0, float, doc="linear above beta*z > threshold"),
            },
        ),
        ActivationInfo("silu", "a = z * sigmoid(z)  (also called swish)"),
        ActivationInfo("swish", "a = z * sigmoid(z)  (same as silu)"),
        ActivationInfo("mish", "a = z * tanh(softplus(z))"),
        ActivationInfo(
            "gelu",
            "a = z * Phi(z) (erf form) or 0.5 z (1 + tanh(sqrt(2/pi)(z + 0.044715 z^3)))",
            {"approximate": ParamSpec("none", str, choices=("none", "tanh"), doc="'none' (erf) or 'tanh'")},
        ),
        ActivationInfo("softmax", "a_j = e^{z_j} / sum_k e^{z_k}, over each row"),
    ]
}

LOSSES: dict[str, LossInfo] = {
    l.name: l
    for l in [
        LossInfo(
            "mse",
            "elementwise (a - t)^2, reduced as the reduction says",
            ("sum", "half_sum", "mean", "half_mean", "batch_mean", "half_batch_mean"),
        ),
        LossInfo(
            "cross_entropy",
            "-sum_j t_j ln a_j on probabilities a",
            ("sum", "mean"),
            input_domain="probability",
            target_domain="distribution",
        ),
        LossInfo(
            "softmax_cross_entropy",
            "-sum_j t_j ln softmax(z)_j, fused on logits z (delta = softmax(z) - t per sample)",
            ("sum", "mean"),
            target_domain="distribution",
        ),
        LossInfo(
            "bce",
            "-[t ln a + (1 - t) ln(1 - a)] on probabilities a",
            ("sum", "mean"),
            input_domain="probability",
            target_domain="unit",
        ),
        LossInfo(
            "bce_with_logits",
            "-[t ln sigmoid(z) + (1 - t) ln(1 - sigmoid(z))], fused on logits z",
            ("sum", "mean"),
            target_domain="unit",
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

# Optimizers: name -> parameter specs. ``learning_rate`` and ``steps`` are common
# to all and validated by the loader; the entries list the extra options.
OPTIMIZERS: dict[str, dict[str, ParamSpec]] = {
    "sgd": {},
}

INITIALIZERS = (
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
