"""Component scenarios for the layers beyond linear: every option at least once.

Each scenario feeds a small seeded batch through the layer under test, then
(where the layer's output is not already (N, F)) a flatten and a linear layer
to a ``half_sum`` MSE, so ∂L/∂(layer output) is a dense, generic δ and every
gradient of the layer is exercised: its input, its weight and bias, its
running statistics. Float64 and float32; the float64 ones are small enough for
the finite-difference oracle unless tagged "kink" (max pooling over windows
with ties, where PyTorch's choice of the maximum is the reference and finite
differences average the two sides).

The windowed layers (conv2d, max_pool2d, avg_pool2d) also reach every path
of their backward with a rectangular kernel and stride, padding and dilation
that differ between the axes (labels ``k2x3-…``, pairs written height×width):
a slip that reads one axis's option for the other shows nowhere else
(``tests/test_bug_injection.py`` injects such slips and names the variants
that catch them).

``LAYER_GRIDS[type]`` lists the variants of each layer type as
(label, input shape, options, tags); ``tests/test_catalogue.py`` checks that
every catalogue layer has one.
"""
from __future__ import annotations

import math

import numpy as np

from backprop_verify.scenarios.catalog import LAYERS, layer_options
from backprop_verify.scenarios.init import default_bias, fans, initialise_shape
from backprop_verify.scenarios.model import Layer, Loss, Scenario
from backprop_verify.scenarios.shapes import output_shape

GRID_SEED = 13

# (label, input shape, options, tags). Options name PyTorch's arguments; pairs as tuples.
LAYER_GRIDS: dict[str, tuple[tuple[str, tuple[int, ...], dict, tuple[str, ...]], ...]] = {
    "linear": (("plain", (3, 4), {"out": 3}, ()),),
    "conv2d": (
        ("k3", (2, 2, 6, 6), {"out_channels": 3, "kernel_size": (3, 3)}, ()),
        ("stride2-pad1", (2, 2, 7, 7), {"out_channels": 2, "kernel_size": (3, 3), "stride": (2, 2),
                                        "padding": (1, 1)}, ()),
        ("stride3-k2", (1, 2, 8, 8), {"out_channels": 2, "kernel_size": (2, 2), "stride": (3, 3)}, ()),
        ("pad-k-minus-1", (2, 1, 4, 4), {"out_channels": 2, "kernel_size": (3, 3), "padding": (2, 2)}, ()),
        ("dilation2", (2, 2, 7, 7), {"out_channels": 2, "kernel_size": (3, 3), "dilation": (2, 2)}, ()),
        ("depthwise", (2, 3, 5, 5), {"out_channels": 3, "kernel_size": (3, 3), "groups": 3}, ()),
        ("groups2", (2, 4, 5, 5), {"out_channels": 2, "kernel_size": (2, 2), "groups": 2}, ()),
        ("no-bias", (2, 2, 5, 5), {"out_channels": 2, "kernel_size": (3, 3), "bias": False}, ()),
        ("rect", (2, 2, 5, 7), {"out_channels": 2, "kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)}, ()),
        # Every path of the input gradient (``manual.conv.full_convolution``) with a rectangular kernel and
        # per-axis options (H×W), both ways round: a slip that reads one axis's option for the other shows
        # only here. Stride 1, padding ≤ the kernel's reach d·(k − 1), out·H·W ≤ C·Ho·Wo: the correlation
        # with the turned kernel (``correlate_with_turned_kernel``) —
        ("k2x3-pad1x0-dilation1x2", (2, 3, 5, 9), {"out_channels": 2, "kernel_size": (2, 3), "padding": (1, 0),
                                                   "dilation": (1, 2)}, ()),
        ("k3x2-pad0x1-dilation2x1", (2, 3, 9, 5), {"out_channels": 2, "kernel_size": (3, 2), "padding": (0, 1),
                                                   "dilation": (2, 1)}, ()),
        ("groups2-k2x3-pad1x0-dilation1x2", (2, 4, 4, 7), {"out_channels": 2, "kernel_size": (2, 3),
                                                           "padding": (1, 0), "dilation": (1, 2), "groups": 2}, ()),
        # — and the spread of the weighted δ (``spread_weighted_delta``): stride > 1 on one axis,
        ("k2x3-stride2x1-pad0x1-dilation1x2", (2, 2, 7, 8), {"out_channels": 2, "kernel_size": (2, 3),
                                                             "stride": (2, 1), "padding": (0, 1),
                                                             "dilation": (1, 2)}, ()),
        ("k3x2-stride1x2-pad1x0-dilation2x1", (2, 2, 7, 8), {"out_channels": 2, "kernel_size": (3, 2),
                                                             "stride": (1, 2), "padding": (1, 0),
                                                             "dilation": (2, 1)}, ()),
        ("groups2-k3x2-stride2x1-pad0x1-dilation1x2", (2, 4, 7, 6), {"out_channels": 4, "kernel_size": (3, 2),
                                                                     "stride": (2, 1), "padding": (0, 1),
                                                                     "dilation": (1, 2), "groups": 2}, ()),
        # stride 1 with the width's padding beyond the kernel's reach (2 > 1·(2 − 1)),
        ("k3x2-pad0x2-dilation2x1", (2, 2, 9, 5), {"out_channels": 2, "kernel_size": (3, 2), "padding": (0, 2),
                                                   "dilation": (2, 1)}, ()),
        # stride 1 within the reach, but the correlation would lay out more numbers (out·H·W > C·Ho·Wo).
        ("k2x3-pad1x0-dilation1x2-out4", (2, 2, 5, 9), {"out_channels": 4, "kernel_size": (2, 3),
                                                        "padding": (1, 0), "dilation": (1, 2)}, ()),
    ),
    "max_pool2d": (
        ("k2", (2, 2, 6, 6), {"kernel_size": (2, 2)}, ()),
        ("k3-s2-pad1", (2, 2, 7, 7), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}, ()),
        ("ceil", (2, 1, 7, 7), {"kernel_size": (2, 2), "ceil_mode": True}, ()),
        ("dilation2", (2, 1, 7, 7), {"kernel_size": (2, 2), "stride": (1, 1), "dilation": (2, 2)}, ()),
        ("overlap", (1, 2, 6, 6), {"kernel_size": (3, 3), "stride": (1, 1)}, ()),
        ("ties", (2, 2, 6, 6), {"kernel_size": (2, 2)}, ("kink",)),
        ("ties-overlap", (1, 1, 5, 5), {"kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1)}, ("kink",)),
        # Rectangular windows with per-axis options (H×W), both ways round: unpadded (x̃ is x itself),
        ("k2x3-s2x1-dilation1x2", (2, 2, 7, 8), {"kernel_size": (2, 3), "stride": (2, 1), "dilation": (1, 2)}, ()),
        # padded (the in-bounds mask, the crop), overlapping along the height,
        ("k3x2-s1x2-pad1x0-dilation2x1", (2, 2, 7, 8), {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0),
                                                        "dilation": (2, 1)}, ()),
        # ceil_mode: along the height the last ceil window would start in the padding and is dropped, along
        # the width a last window hangs over the end of x (extra −∞ padding on the right),
        ("k2x3-s2x3-pad1x0-dilation1x2-ceil", (2, 2, 5, 6), {"kernel_size": (2, 3), "stride": (2, 3),
                                                             "padding": (1, 0), "dilation": (1, 2),
                                                             "ceil_mode": True}, ()),
        # ties in rectangular windows: PyTorch's first maximum in row-major (u, then v) order.
        ("ties-k2x3-s1x2-pad1x0", (2, 2, 5, 7), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)},
         ("kink",)),
        ("ties-k3x2-s2x1-pad0x1-dilation2x1", (1, 2, 7, 6), {"kernel_size": (3, 2), "stride": (2, 1),
                                                             "padding": (0, 1), "dilation": (2, 1)}, ("kink",)),
    ),
    "avg_pool2d": (
        ("k2", (2, 2, 6, 6), {"kernel_size": (2, 2)}, ()),
        ("k3-s2-pad1", (2, 1, 7, 7), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}, ()),
        ("k3-s2-pad1-exclude-pad", (2, 1, 7, 7), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1),
                                                  "count_include_pad": False}, ()),
        ("ceil", (2, 1, 7, 7), {"kernel_size": (2, 2), "ceil_mode": True}, ()),
        ("ceil-pad1", (1, 2, 6, 6), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1),
                                     "ceil_mode": True}, ()),
        # Rectangular windows with per-axis options (H×W), both ways round (average pooling has no dilation);
        # with and without the padding in the divisor,
        ("k2x3-s2x1-pad0x1", (2, 1, 7, 8), {"kernel_size": (2, 3), "stride": (2, 1), "padding": (0, 1)}, ()),
        ("k3x2-s1x2-pad1x0-exclude-pad", (2, 1, 7, 8), {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0),
                                                        "count_include_pad": False}, ()),
        # and ceil_mode: a last window hanging over the end of x along one axis (its divisor clipped to the
        # padded input), a last ceil window dropped along the other.
        ("k3x2-s2x3-pad1x0-ceil", (2, 1, 6, 6), {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 0),
                                                 "ceil_mode": True}, ()),
        ("k2x3-s3x2-pad0x1-ceil-exclude-pad", (2, 1, 6, 8), {"kernel_size": (2, 3), "stride": (3, 2),
                                                             "padding": (0, 1), "ceil_mode": True,
                                                             "count_include_pad": False}, ()),
    ),
    "flatten": (("image", (2, 2, 3, 3), {}, ()),),
    "batch_norm": (
        ("features", (4, 3), {}, ()),
        ("images", (3, 2, 3, 3), {}, ()),
        ("batch2", (2, 3), {}, ()),
        ("no-affine", (3, 2, 2, 2), {"affine": False}, ()),
        ("momentum0.5-eps0.01", (4, 3), {"momentum": 0.5, "eps": 0.01}, ()),
        ("eval-batch1", (1, 2, 3, 3), {"training": False}, ()),
        ("eval-features", (3, 4), {"training": False}, ()),
    ),
    "layer_norm": (
        ("features", (3, 4), {}, ()),
        ("images-dims1", (2, 2, 3, 3), {"dims": 1}, ()),
        ("images-dims2", (2, 2, 3, 3), {"dims": 2}, ()),
        ("images-dims3", (2, 2, 3, 3), {"dims": 3}, ()),
        ("no-affine", (3, 4), {"elementwise_affine": False}, ()),
        ("eps0.1", (3, 4), {"eps": 0.1}, ()),
    ),
    "rnn": (
        ("tanh-t12", (2, 12, 3), {"hidden_size": 4}, ()),
        ("relu-t12", (2, 12, 3), {"hidden_size": 4, "nonlinearity": "relu"}, ()),
        ("t1", (3, 1, 3), {"hidden_size": 4}, ()),
        ("no-bias-h0", (2, 5, 3), {"hidden_size": 3, "bias": False, "h0": True}, ()),
        ("chunk1", (2, 6, 3), {"hidden_size": 3, "bptt_chunk": 1}, ()),
        ("chunk4-of-10-h0", (2, 10, 2), {"hidden_size": 3, "bptt_chunk": 4, "h0": True}, ()),
        ("sequence-loss", (2, 5, 3), {"hidden_size": 3, "sequence_loss": True}, ()),
    ),
    "lstm": (
        ("t12", (2, 12, 3), {"hidden_size": 4}, ()),
        ("t1", (3, 1, 3), {"hidden_size": 3}, ()),
        ("no-bias-h0-c0", (2, 5, 3), {"hidden_size": 3, "bias": False, "h0": True, "c0": True}, ()),
        ("chunk3-of-8", (2, 8, 2), {"hidden_size": 3, "bptt_chunk": 3}, ()),
        ("chunk1-h0-c0", (2, 4, 2), {"hidden_size": 2, "bptt_chunk": 1, "h0": True, "c0": True}, ()),
    ),
    "gru": (
        ("t12", (2, 12, 3), {"hidden_size": 4}, ()),
        ("t1", (3, 1, 3), {"hidden_size": 3}, ()),
        ("no-bias-h0", (2, 5, 3), {"hidden_size": 3, "bias": False, "h0": True}, ()),
        ("chunk2-of-7", (2, 7, 2), {"hidden_size": 3, "bptt_chunk": 2}, ()),
    ),
    "last_step": (("sequence", (3, 4, 2), {}, ()),),
    "embedding": (
        ("repeated-ids", (3, 5), {"num_embeddings": 4, "embedding_dim": 3}, ()),
        ("one-id", (2, 3), {"num_embeddings": 1, "embedding_dim": 2}, ()),
    ),
    "dropout": (
        ("p0.5", (3, 4), {"p": 0.5}, ()),
        ("p0", (3, 4), {"p": 0.0}, ()),
        ("p1", (3, 4), {"p": 1.0}, ()),
        ("images-p0.3", (2, 2, 3, 3), {"p": 0.3}, ()),
    ),
}


def grid_layer(kind: str, options: dict, input_shape: tuple[int, ...], rng: np.random.Generator) -> Layer:
    """The layer ``kind`` with ``options`` for an input of ``input_shape``: seeded
    weights (PyTorch's default draw), non-trivial γ, β and running statistics."""
    options = dict(options)
    if kind == "linear":
        shape = (options["out"], input_shape[1])
        return Layer("linear", weight=initialise_shape("pytorch_default", shape, rng),
                     bias=default_bias((shape[0],), shape[1], rng))
    if kind in ("rnn", "lstm", "gru"):
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
        given = {name: options.pop(name, False) for name in ("h0", "c0")}
        options.pop("sequence_loss", None)
        params = layer_options(kind, options)
        hidden, bound = params["hidden_size"], 1.0 / math.sqrt(params["hidden_size"])
        shapes = {"weight_ih": (gates * hidden, input_shape[2]), "weight_hh": (gates * hidden, hidden)}
        if params["bias"]:
            shapes.update(bias_ih=(gates * hidden,), bias_hh=(gates * hidden,))
        tensors = {name: rng.uniform(-bound, bound, shape) for name, shape in shapes.items()}
        states = {name: rng.normal(0.0, 0.5, (input_shape[0], hidden)) for name, wanted in given.items() if wanted}
        return Layer(kind, params=params, tensors=tensors, states=states)
    if kind == "embedding":
        params = layer_options(kind, options)
        return Layer(kind, weight=rng.normal(0.0, 1.0, (params["num_embeddings"], params["embedding_dim"])),
                     params=params)
    with_bias = options.pop("bias", True)
    if kind in ("max_pool2d", "avg_pool2d"):
        options.setdefault("stride", options["kernel_size"])
    params = layer_options(kind, options)
    channels = input_shape[1]
    if kind == "conv2d":
        shape = (params["out_channels"], channels // params["groups"], *params["kernel_size"])
        weight = initialise_shape("pytorch_default", shape, rng)
        bias = default_bias((shape[0],), fans(shape)[0], rng) if with_bias else None
        return Layer(kind, weight=weight, bias=bias, params=params)
    if kind == "batch_norm":
        affine = params["affine"]
        buffers = {"running_mean": rng.normal(0.0, 0.5, channels), "running_var": rng.uniform(0.5, 2.0, channels)}
        return Layer(kind, weight=rng.uniform(0.5, 1.5, channels) if affine else None,
                     bias=rng.normal(0.0, 0.3, channels) if affine else None, params=params, buffers=buffers)
    if kind == "layer_norm":
        normalized = tuple(input_shape[-params["dims"]:])
        affine = params["elementwise_affine"]
        return Layer(kind, weight=rng.uniform(0.5, 1.5, normalized) if affine else None,
                     bias=rng.normal(0.0, 0.3, normalized) if affine else None, params=params)
    return Layer(kind, params=params)


def _inputs(kind: str, options: dict, shape: tuple[int, ...], tags: tuple[str, ...],
            rng: np.random.Generator) -> np.ndarray:
    """Normal inputs; with ties (tag "kink"), small integers, so windows hold repeated maxima;
    token ids for an embedding (with repeats: their gradients add)."""
    if kind == "embedding":
        return rng.integers(0, options["num_embeddings"], shape).astype(np.float64)
    if "kink" in tags:
        return rng.integers(0, 3, shape).astype(np.float64)
    return rng.normal(0.0, 1.0, shape)


def layer_scenarios(dtype: str = "float64") -> list[Scenario]:
    out = []
    for kind in LAYERS:
        for label, shape, options, tags in LAYER_GRIDS[kind]:
            rng = np.random.default_rng([GRID_SEED, len(out)])
            layer = grid_layer(kind, options, shape, rng)
            layers = [layer]
            out_shape = output_shape(layer, shape)
            if options.get("sequence_loss"):  # the loss on (N, T, H): every leading axis a sample
                y_shape = out_shape
            else:
                if len(out_shape) != 2:
                    layers.append(Layer("flatten"))
                    out_shape = (out_shape[0], math.prod(out_shape[1:]))
                layers.append(grid_layer("linear", {"out": 2}, out_shape, rng))
                y_shape = (shape[0], 2)
            x = _inputs(kind, options, shape, tags, rng)
            y = rng.normal(0.0, 1.0, y_shape)
            out.append(Scenario(
                name=f"layer-{kind}-{label}-{'f64' if dtype == 'float64' else 'f32'}",
                layers=tuple(layers), loss=Loss("mse", "half_sum"), x=x, y=y, dtype="float64", seed=GRID_SEED,
                source={"title": f"{kind} ({label}) on a {'×'.join(map(str, shape))} input"}, tags=tags,
            ).astype(dtype))
    return out


def all_layer_scenarios() -> list[Scenario]:
    return [s for dtype in ("float64", "float32") for s in layer_scenarios(dtype)]
