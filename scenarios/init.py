"""Seeded weight initialisers (NumPy), resolved when a scenario is built.

Scenario files (``scenarios.loader``) and the fixed networks draw each layer
from its own generator ``layer_rng(seed, layer_index)`` = ``default_rng([seed,
layer_index])``, so a layer's weights do not change when another layer is added
or resized; ``scenarios.generator.random_scenario`` draws a whole random
architecture from one generator instead.
Formulas follow ``torch.nn.init`` (gain 1): for a weight of shape (out, in, …)
fan_in = in · (kernel size) and fan_out = out · (kernel size), the kernel size
being the product of the trailing dimensions (1 for a linear layer).
``pytorch_default`` is what ``torch.nn.Linear`` and ``torch.nn.Conv2d`` draw
when built: U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with a = √5), for the
weight and, with ``default_bias``, for the bias.
"""
from __future__ import annotations

import math

import numpy as np


def initialise(name: str, out_features: int, in_features: int, rng: np.random.Generator,
               scale: float | None = None) -> np.ndarray:
    """A (out, in) float64 weight drawn by initialiser ``name``."""
    return initialise_shape(name, (out_features, in_features), rng, scale)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape`` (out, in, …), as ``torch.nn.init`` counts them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def default_bias(shape: tuple[int, ...], fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's default bias of a linear or convolution layer: U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


def initialise_shape(name: str, shape: tuple[int, ...], rng: np.random.Generator,
                     scale: float | None = None) -> np.ndarray:
    """A float64 weight of ``shape`` (out, in, …) drawn by initialiser ``name``."""
    fan_in, fan_out = fans(shape)
    if name == "pytorch_default":
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape)
    if name == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape)
    if name == "xavier_normal":
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
    if name == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
        return rng.uniform(-bound, bound, shape)
    if name == "he_normal":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    if name == "lecun_normal":
        return rng.normal(0.0, math.sqrt(1.0 / fan_in), shape)
    if name == "normal":
        return rng.normal(0.0, 0.01 if scale is None else scale, shape)
    if name == "uniform":
        bound = 0.1 if scale is None else scale
        return rng.uniform(-bound, bound, shape)
    if name == "zeros":
        return np.zeros(shape)
    if name == "standard_normal":  # torch.nn.Embedding's N(0, 1); a spec's fill, not a file's ``init``
        return rng.standard_normal(shape)
    raise ValueError(f"unknown initialiser {name!r}")


# Separates the indices of a layer inside a block in a generator's entropy: ``[seed, i, 0x5EB, j]`` for
# layer j of block i. Without it, [seed, i, 0] would be [seed, i] (``SeedSequence`` pads with zeros).
_NESTED_STREAM = 0x5EB


def layer_rng(seed: int, layer_index: int | tuple[int, ...]) -> np.random.Generator:
    """Layer ``layer_index``'s generator, ``default_rng([seed, i])``; for a layer inside a block, its path
    of indices (i, j, …): ``default_rng([seed, i, 0x5EB, j, …])``."""
    if isinstance(layer_index, tuple):
        first, *inner = layer_index
        return np.random.default_rng([seed, first, *(word for j in inner for word in (_NESTED_STREAM, j))])
    return np.random.default_rng([seed, layer_index])


def shifted(layer_index: int | tuple[int, ...], offset: int) -> int | tuple[int, ...]:
    """A second stream of the same layer (its bias: offset 1000): the first index moved by ``offset``."""
    if isinstance(layer_index, tuple):
        return (layer_index[0] + offset, *layer_index[1:])
    return layer_index + offset
