"""Document 003's vanishing gradient, measured by both engines.

A deep network with the same weights and data, once with sigmoid, once with
ReLU and once with sigmoid after a BatchNorm behind every linear layer (the
remedy documents 001 and 003 name): ‖∂L/∂W⁽ˡ⁾‖ per layer shows the sigmoid
network's gradient shrinking towards the input (σ' ≤ 0.25 per layer), the ReLU
network's not, and how much BatchNorm — which keeps each layer's
pre-activations near 0, where σ' is largest — changes that.

``vanishing_gradient()`` returns a ``VanishingGradient``: the measured norms
and every number the report shows about them (the side-by-side table with the
manual/torch relative difference, each network's layer-1-over-last ratio, the
factor BatchNorm changes the sigmoid ratio by, the σ' ≤ 0.25 bound), each with
its own label, so that rendering only formats.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

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
# (the remedied network, the one it remedies, the remedy's name in prose)
REMEDY = ("sigmoid+batch_norm", "sigmoid", "BatchNorm")
# σ'(z) ≤ 0.25: a sigmoid network's gradient at most 0.25^(depth − l) times the last layer's
BOUND = ("sigmoid", 0.25, "0.25^(depth−l): σ' ≤ 0.25 per layer")
CURVE_COLUMNS = ["activation", "engine", "layer", "grad_norm"]


@dataclass(frozen=True)
class VanishingGradient:
    """The experiment and its numbers; ``labels`` is the order of the networks (``ACTIVATIONS``)."""
    curves: pd.DataFrame            # CURVE_COLUMNS: ‖∂L/∂W⁽ˡ⁾‖_F, layer 1 = next to the input
    table: pd.DataFrame             # layer; per network (reverse name order): manual, torch, rel. diff
    labels: tuple[str, ...]
    depth: int
    ratios: dict[str, float]        # network -> layer 1's norm over the last layer's (manual engine)
    remedy: str | None              # the remedy's name in prose ("BatchNorm"), if both its networks ran
    remedy_factor: float | None     # the remedied network's ratio over the one it remedies
    bound: pd.DataFrame             # layer, grad_norm: the σ' ≤ 0.25 bound from the last layer (may be empty)
    bound_of: str | None            # the network the bound is drawn from
    bound_label: str

    def copy(self) -> VanishingGradient:
        return dataclasses.replace(self, curves=self.curves.copy(), table=self.table.copy(),
                                   ratios=dict(self.ratios), bound=self.bound.copy())


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


def vanishing_gradient(activations=ACTIVATIONS, **kwargs) -> VanishingGradient:
    """Per-layer ‖∂L/∂W⁽ˡ⁾‖_F for each activation, by manual and by torch, with the numbers derived
    from them. Deterministic, so computed once per process; each caller gets a copy."""
    return _vanishing_gradient(tuple(activations), tuple(sorted(kwargs.items()))).copy()


@functools.lru_cache(maxsize=4)
def _vanishing_gradient(activations: tuple[str, ...], options: tuple) -> VanishingGradient:
    curves = _curves(activations, options)
    table = vanishing_table(curves)
    depth = int(table["layer"].max())
    ratios = {name: table.iloc[0][f"{name} manual"] / table.iloc[-1][f"{name} manual"]
              for name in activations if f"{name} manual" in table.columns}
    remedied, remedied_from, remedy = REMEDY
    both = {remedied, remedied_from} <= set(ratios)
    bound_of, factor, bound_label = BOUND
    top = curves[(curves["activation"] == bound_of) & (curves["engine"] == "manual") & (curves["layer"] == depth)]
    layers = np.arange(1, depth + 1)
    bound = pd.DataFrame({"layer": layers, "grad_norm": float(top["grad_norm"].iloc[0]) * factor ** (depth - layers)}
                         if not top.empty else {"layer": [], "grad_norm": []})
    return VanishingGradient(curves=curves, table=table, labels=tuple(activations), depth=depth, ratios=ratios,
                             remedy=remedy if both else None,
                             remedy_factor=ratios[remedied] / ratios[remedied_from] if both else None,
                             bound=bound, bound_of=bound_of if not top.empty else None, bound_label=bound_label)


def vanishing_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Layer × (activation, engine) gradient norms, plus the manual/torch relative difference."""
    wide = curves.pivot_table(index="layer", columns=["activation", "engine"], values="grad_norm", aggfunc="first")
    table = pd.DataFrame({"layer": wide.index.astype(int)})
    for activation in sorted({a for a, _ in wide.columns}, reverse=True):
        manual_norm = wide[(activation, "manual")].to_numpy()
        torch_norm = wide[(activation, "torch")].to_numpy()
        table[f"{activation} manual"] = manual_norm
        table[f"{activation} torch"] = torch_norm
        table[f"{activation} rel. diff"] = abs(manual_norm - torch_norm) / abs(torch_norm)
    return table


def _curves(activations: tuple[str, ...], options: tuple) -> pd.DataFrame:
    records = []
    for activation in activations:
        scenario = vanishing_gradient_scenario(activation, **dict(options))
        linear = [i for i, layer in enumerate(scenario.layers) if layer.is_linear]
        for engine, trace in (("manual", manual.run(scenario)), ("torch", reference.run(scenario))):
            for depth_index, i in enumerate(linear, start=1):
                norm = float(np.linalg.norm(np.asarray(trace[f"layers.{i}.weight.grad"], dtype=np.float64)))
                records.append({"activation": activation, "engine": engine, "layer": depth_index,
                                "grad_norm": norm})
    return pd.DataFrame(records, columns=CURVE_COLUMNS)
