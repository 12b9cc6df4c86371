"""The shape each layer gives its input, by PyTorch's rules.

``output_shape(layer, input_shape)`` is what the loader checks a scenario
against (a kernel larger than its padded input, channels not divisible by the
groups: the message names the sizes) and what the random generator builds
valid networks with. A ``ShapeError`` says what is wrong in words a scenario
author can act on; the loader prefixes the file and the field.

Window sizes (convolution and pooling), per spatial dimension, with input size
n, padding p, dilation d, kernel k, stride s::

    out = ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1

and with ``ceil_mode`` the ceiling instead of the floor, except that a last
window starting beyond the input and its left padding is dropped (PyTorch's
rule: if (out − 1)·s ≥ n + p then out − 1).
"""
from __future__ import annotations

import math

from backprop_verify.scenarios.catalog import ACTIVATIONS
from backprop_verify.scenarios.model import Layer


class ShapeError(ValueError):
    """The layer cannot take an input of this shape."""


def window_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                       ceil_mode: bool = False) -> int:
    """Output size along one spatial dimension (see the module docstring); < 1 when the window does not fit."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def output_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of ``layer`` for an input of ``shape`` (batch first)."""
    kind, params = layer.type, layer.params
    if kind in ACTIVATIONS or kind == "dropout":
        return shape
    if kind == "linear":
        if len(shape) not in (2, 3):
            raise ShapeError(f"linear takes (N, features) or sequences (N, T, features), got an input of shape "
                             f"{shape}; add a flatten layer before it")
        out_features, in_features = layer.weight.shape
        if shape[-1] != in_features:
            raise ShapeError(f"weight has shape {layer.weight.shape} (out, in) but the input has {shape[-1]} features")
        return (*shape[:-1], out_features)
    if kind == "flatten":
        return (shape[0], math.prod(shape[1:]))
    if kind == "batch_norm":
        if len(shape) not in (2, 4):
            raise ShapeError(f"batch_norm takes (N, F) or (N, C, H, W), got an input of shape {shape}")
        return shape
    if kind == "layer_norm":
        if params["dims"] > len(shape) - 1:
            raise ShapeError(f"dims = {params['dims']} but the input {shape} has {len(shape) - 1} dimensions "
                             "after the batch")
        return shape
    if kind in ("conv2d", "max_pool2d", "avg_pool2d"):
        return _windowed(layer, shape)
    if kind in ("rnn", "lstm", "gru"):
        if len(shape) != 3:
            raise ShapeError(f"{kind} takes sequences (N, T, F), got an input of shape {shape}")
        features = layer.tensors["weight_ih"].shape[1]
        if shape[2] != features:
            raise ShapeError(f"weight_ih has shape {layer.tensors['weight_ih'].shape} (gates·H, F) but the input has "
                             f"{shape[2]} features")
        return (shape[0], shape[1], params["hidden_size"])
    if kind == "last_step":
        if len(shape) != 3:
            raise ShapeError(f"last_step takes sequences (N, T, H), got an input of shape {shape}")
        return (shape[0], shape[2])
    if kind == "embedding":
        if len(shape) != 2:
            raise ShapeError(f"embedding takes token ids (N, T), got an input of shape {shape}")
        return (*shape, params["embedding_dim"])
    raise ShapeError(f"unknown layer type {kind!r}")


def _windowed(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
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
