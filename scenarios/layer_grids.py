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

The variants of each layer type live in its catalogue spec
(``scenarios.catalog.LAYERS[type].grid``: label, input shape, options, tags)
and so does the seeded layer of each (``LayerInfo.build``): this module only
loops over the specs. ``tests/test_catalogue.py`` checks that every layer has a
grid that sets each of its options at least once.
"""
from __future__ import annotations

import math

import numpy as np

from backprop_verify.scenarios.catalog import LAYERS, LayerGridCase
from backprop_verify.scenarios.model import Layer, Loss, Scenario
from backprop_verify.scenarios.shapes import output_shape

GRID_SEED = 13


def layer_grids() -> dict[str, tuple[LayerGridCase, ...]]:
    """Every layer type's grid variants, read from its catalogue spec (``LayerInfo.grid``)."""
    return {kind: info.grid for kind, info in LAYERS.items()}


# (label, input shape, options, tags) per layer type: a view of the catalogue, kept for its readers.
LAYER_GRIDS = layer_grids()


def grid_layer(kind: str, options: dict, input_shape: tuple[int, ...], rng: np.random.Generator) -> Layer:
    """The layer ``kind`` with ``options`` for an input of ``input_shape``: the spec's ``build``
    (seeded weights by PyTorch's default draw, non-trivial γ, β and running statistics)."""
    return Layer(kind, **LAYERS[kind].build(dict(options), input_shape, rng))


def _inputs(kind: str, options: dict, shape: tuple[int, ...], tags: tuple[str, ...],
            rng: np.random.Generator) -> np.ndarray:
    """Normal inputs; with ties (tag "kink"), small integers, so windows hold repeated maxima;
    token ids for a layer that takes them (``grid_inputs``: embedding; with repeats: their gradients add)."""
    if LAYERS[kind].grid_inputs == "token_ids":
        return rng.integers(0, options["num_embeddings"], shape).astype(np.float64)
    if "kink" in tags:
        return rng.integers(0, 3, shape).astype(np.float64)
    return rng.normal(0.0, 1.0, shape)


def layer_scenarios(dtype: str = "float64") -> list[Scenario]:
    out = []
    for kind in LAYERS:
        for label, shape, options, tags in LAYERS[kind].grid:
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
