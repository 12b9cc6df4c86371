"""The shape each layer gives its input, by PyTorch's rules.

``output_shape(layer, input_shape)`` is what the loader checks a scenario
against (a kernel larger than its padded input, channels not divisible by the
groups: the message names the sizes) and what the random generator builds
valid networks with. It loops over nothing but the catalogue: an activation
keeps its input's shape, a layer's spec (``scenarios.catalog.LayerInfo``)
holds its rule, ``output_shape``. A ``ShapeError`` says what is wrong in words
a scenario author can act on; the loader prefixes the file and the field.

Window sizes (convolution and pooling) follow ``catalog.window_output_size``
(re-exported here).
"""
from __future__ import annotations

from backprop_verify.scenarios.catalog import ACTIVATIONS, LAYERS, ShapeError, window_output_size
from backprop_verify.scenarios.model import Layer

__all__ = ["ShapeError", "output_shape", "window_output_size"]


def output_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of ``layer`` for an input of ``shape`` (batch first)."""
    if layer.type in ACTIVATIONS:
        return shape
    if layer.type not in LAYERS:
        raise ShapeError(f"unknown layer type {layer.type!r}")
    return LAYERS[layer.type].output_shape(layer, shape)
