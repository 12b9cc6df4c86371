"""Document 003's vanishing gradient, measured by both engines.

A deep network with the same weights and data, once with sigmoid, once with
ReLU and once with sigmoid after a BatchNorm behind every linear layer (the
remedy documents 001 and 003 name): ‖∂L/∂W⁽ˡ⁾‖ per layer shows the sigmoid
network's gradient shrinking towards the input (σ' ≤ 0.25 per layer), the ReLU
network's not, and how much BatchNorm — which keeps each layer's
pre-activations near 0, where σ' is largest — changes that.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.scenarios.catalog import layer_options
from backprop_verify.scenarios.init import initialise, layer_rng
from backprop_verify.scenarios.model import Layer, Loss, Scenario

VANISHING_DEPTH = 10  # linear layers
VANISHING_WIDTH = 32
VANISHING_BATCH = 64
VANISHING_SEED = 3
# The third network: "sigmoid+batch_norm" puts a training-mode BatchNorm
# (γ = 1, β = 0) between every linear layer and its sigmoid.
ACTIVATIONS = ("sigmoid", "relu", "sigmoid+batch_norm")


def vanishing_gradient_scenario(activation: str, depth: int = VANISHING_DEPTH, width: int = VANISHING_WIDTH,
                                batch: int = VANISHING_BATCH, seed: int = VANISHING_SEED) -> Scenario:
    """A deep ``activation`` network; sigmoid and ReLU get *the same* weights and data.

    ``depth`` linear layers of ``width`` units (He-normal weights, zero bias),
    each followed by ``activation``, then a ½·mean-over-samples MSE — document
    003's ∂L/∂w¹₁₁ = (1/n)(ŷ − y) · wσ'(z) · wσ'(z) ⋯ x₁ with σ' ≤ 0.25.
    """
    activation, _, norm = activation.partition("+")
    layers = []
    for i in range(depth):
        weight = initialise("he_normal", width, width, layer_rng(seed, i))
        layers.append(Layer("linear", weight=weight, bias=np.zeros(width)))
        if norm:
            layers.append(Layer(norm, weight=np.ones(width), bias=np.zeros(width), params=layer_options(norm, {}),
                                buffers={"running_mean": np.zeros(width), "running_var": np.ones(width)}))
        layers.append(Layer(activation))
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (batch, width))
    y = rng.uniform(0.0, 1.0, (batch, width))
    name = activation + (f"-{norm}" if norm else "")
    return Scenario(name=f"vanishing-{name}-depth{depth}", layers=tuple(layers),
                    loss=Loss("mse", "half_batch_mean"), x=x, y=y, dtype="float64", seed=seed,
                    source={"title": "document 003: vanishing gradient"})


def vanishing_gradient(activations=ACTIVATIONS, **kwargs) -> pd.DataFrame:
    """Per-layer ‖∂L/∂W⁽ˡ⁾‖_F for each activation, by manual and by torch.

    Columns activation, engine, layer (1 = next to the input), grad_norm.
    Deterministic, so computed once per process; each caller gets a copy.
    """
    return _vanishing_gradient(tuple(activations), tuple(sorted(kwargs.items()))).copy()


@functools.lru_cache(maxsize=4)
def _vanishing_gradient(activations: tuple[str, ...], options: tuple) -> pd.DataFrame:
    records = []
    for activation in activations:
        scenario = vanishing_gradient_scenario(activation, **dict(options))
        linear = [i for i, layer in enumerate(scenario.layers) if layer.is_linear]
        for engine, trace in (("manual", manual.run(scenario)), ("torch", reference.run(scenario))):
            for depth_index, i in enumerate(linear, start=1):
                norm = float(np.linalg.norm(np.asarray(trace[f"layers.{i}.weight.grad"], dtype=np.float64)))
                records.append({"activation": activation, "engine": engine, "layer": depth_index,
                                "grad_norm": norm})
    return pd.DataFrame(records, columns=["activation", "engine", "layer", "grad_norm"])
