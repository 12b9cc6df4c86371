"""Seeded random scenarios: architecture, data and dtype all drawn from the seed.

``random_scenario(seed)`` draws everything — architecture, weights, data — from
one generator, ``numpy.random.default_rng(seed)``, in a fixed order, so the
same seed gives the same scenario on every machine, in every process and every
pytest-xdist worker. One generator per scenario, because seeding one is a
sizeable share of building a small scenario and random scenarios are built by
the thousand.

``layer_streams=True`` draws each layer's weights from its own generator
instead, ``default_rng([seed, 2i])`` and its bias from ``default_rng([seed,
1000 + i])`` (the architecture and the data still come from the first one):
the built-in trajectories (``scenarios.trajectories``) use it, because their
networks are the ones the documented measurements were made on.
"""
from __future__ import annotations

import numpy as np

from scenarios.catalog import ACTIVATIONS, LOSSES
from scenarios.init import initialise, layer_rng
from scenarios.model import Layer, Loss, Scenario

DEFAULT_SEED = 0
# How many seeded random architectures the report and the default test run check.
DEFAULT_RANDOM_COUNT = 300


def hidden_activations() -> tuple[tuple[str, dict], ...]:
    """The pool random networks draw a hidden activation from: every catalogue
    activation's ``random_variants``, in catalogue order (softmax is an output,
    chosen by the loss)."""
    return tuple((name, dict(params)) for name, info in ACTIVATIONS.items() for params in info.random_variants)


HIDDEN_ACTIVATIONS = hidden_activations()
RANDOM_LOSSES = tuple(sorted(LOSSES))  # the losses random networks draw from: all of them


def random_scenario(seed: int, *, max_depth: int = 6, max_width: int = 32, max_batch: int = 16,
                    dtype: str | None = None, layer_streams: bool = False) -> Scenario:
    """A random dense network: 1..max_depth linear layers, each followed by an
    activation, a loss suited to the output, a batch of inputs and targets."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, max_depth + 1))
    activation, params = _pick(rng, HIDDEN_ACTIVATIONS)
    loss_type = _pick(rng, RANDOM_LOSSES)
    reduction = _pick(rng, LOSSES[loss_type].reductions)
    batch = int(rng.integers(1, max_batch + 1))
    if dtype is None:
        dtype = "float64" if rng.random() < 0.5 else "float32"
    use_bias = bool(rng.random() < 0.8)
    widths = rng.integers(1, max_width + 1, size=depth + 1).tolist()
    if loss_type in ("cross_entropy", "softmax_cross_entropy"):
        widths[-1] = max(widths[-1], 2)  # a distribution over at least two classes

    layers: list[Layer] = []
    for i in range(depth):
        n_in, n_out = widths[i], widths[i + 1]
        init = ACTIVATIONS[activation].initializer
        weight_rng, bias_rng = (layer_rng(seed, 2 * i), layer_rng(seed, 1000 + i)) if layer_streams else (rng, rng)
        weight = initialise(init, n_out, n_in, weight_rng).astype(dtype, copy=False)
        bias = bias_rng.normal(0.0, 0.1, n_out).astype(dtype, copy=False) if use_bias else None
        layers.append(Layer("linear", weight=weight, bias=bias))
        if i < depth - 1:
            layers.append(Layer(activation, params=dict(params)))
    layers.append(_output_layer(loss_type, activation, params))

    x = rng.normal(0.0, 1.0, (batch, widths[0])).astype(dtype, copy=False)
    y = _targets(rng, loss_type, batch, widths[-1]).astype(dtype, copy=False)
    name = f"random-s{seed}-depth{depth}-{_slug(activation, params)}-{loss_type}-{reduction}-{'f64' if dtype == 'float64' else 'f32'}"
    return Scenario(name=name, layers=tuple(layers), loss=Loss(loss_type, reduction), x=x, y=y,
                    dtype=dtype, seed=seed, source={"title": "seeded random architecture"})


def _pick(rng: np.random.Generator, options):
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def _output_layer(loss_type: str, activation: str, params: dict) -> Layer:
    if loss_type == "cross_entropy":
        return Layer("softmax")
    if loss_type == "bce":
        return Layer("sigmoid")
    if loss_type == "mse":
        return Layer(activation, params=dict(params))
    return Layer("identity")  # losses fused on logits


def _targets(rng: np.random.Generator, loss_type: str, batch: int, width: int) -> np.ndarray:
    if loss_type in ("cross_entropy", "softmax_cross_entropy"):
        onehot = np.zeros((batch, width))
        onehot[np.arange(batch), rng.integers(0, width, size=batch)] = 1.0
        return onehot
    if loss_type in ("bce", "bce_with_logits"):
        return rng.uniform(0.0, 1.0, (batch, width)).round(1)
    return rng.normal(0.0, 1.0, (batch, width))


def _slug(activation: str, params: dict) -> str:
    if activation == "gelu":
        return "gelu_tanh" if params.get("approximate") == "tanh" else "gelu"
    return activation


def random_scenarios(count: int, seed: int = DEFAULT_SEED) -> list[Scenario]:
    """``count`` scenarios with seeds seed, seed+1, …"""
    return [random_scenario(seed + k) for k in range(count)]
