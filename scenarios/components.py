"""Component scenarios: every activation and every loss × reduction, alone.

An activation scenario feeds a grid of hand-picked pre-activations straight
into the activation (the scenario has that one layer) under a ``half_sum`` MSE
loss, so ``input.grad`` = a'(z) ⊙ (a − t) checks the hand-derived derivative
point by point: exact zeros (relu-like kinks, where PyTorch's subgradient
choice is the reference), saturation (|z| = 30, 800) and ordinary values.
Which parameter variants an activation is checked with, and whether it gets
the kink grid, are its catalogue entry's ``grid_variants`` and ``kinked``.
A loss scenario feeds inputs straight into the loss (one identity layer): each
of its catalogue entry's ``grid`` cases, under every reduction it accepts.
"""
from __future__ import annotations

import numpy as np

from scenarios.catalog import ACTIVATIONS, LOSSES
from scenarios.model import Layer, Loss, Scenario

# Pre-activations for the activation grids. Rows are samples.
SMOOTH_GRID = np.array([[-5.0, -1.3, -0.5, -0.01, 0.02, 0.7, 1.9, 4.0]])
KINK_GRID = np.array([[-2.0, -0.0, 0.0, 1e-300, -1e-300, 3.0]])
SATURATION_GRID = np.array([[-800.0, -30.0, -19.0, 19.0, 30.0, 800.0]])


def _variant_slug(name: str, params: dict) -> str:
    if not params or params == {k: s.default for k, s in ACTIVATIONS[name].params.items()}:
        return name
    return name + "-" + "-".join(f"{k}{v}" for k, v in params.items())


def activation_scenarios(dtype: str = "float64") -> list[Scenario]:
    out = []
    rng = np.random.default_rng(7)
    for name, info in ACTIVATIONS.items():
        defaults = {k: s.default for k, s in info.params.items()}
        for params in info.grid_variants or (defaults,):
            grids = [("smooth", SMOOTH_GRID, ()), ("saturation", SATURATION_GRID, ())]
            if info.kinked:
                grids.append(("kink", KINK_GRID, ("kink",)))
            for label, grid, tags in grids:
                target = rng.normal(0.0, 1.0, grid.shape)
                out.append(Scenario(
                    name=f"activation-{_variant_slug(name, params)}-{label}-{_short(dtype)}",
                    layers=(Layer(name, params=dict(params)),),
                    loss=Loss("mse", "half_sum"),
                    x=grid.astype(dtype), y=target.astype(dtype), dtype=dtype, seed=7,
                    source={"title": f"{name} alone on a {label} grid"}, tags=tags,
                ))
    return out


def loss_arrays(batch: int = 4, width: int = 3) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The named inputs and targets a loss's grid cases (catalogue ``LossInfo.grid``) refer to.

    Inputs: ``logits`` (normal, σ = 2), ``extreme_logits`` (±1000, ±800, ties at
    ±40: softmax and sigmoid saturate), ``probabilities`` (softmax of the
    logits), ``sigmoid_probabilities`` (sigmoid of the logits),
    ``saturated_probabilities`` (1e-50 and 1 − 1e-16 next to 0.5). Targets:
    ``normal``, ``onehot``, ``soft`` (rows summing to 1, with zeros), ``unit``
    (in [0, 1], one decimal). Drawn from one generator seeded 11, always in the
    same order.
    """
    rng = np.random.default_rng(11)
    logits = rng.normal(0.0, 2.0, (batch, width))
    extreme = np.array([[1000.0, -1000.0, 0.0], [-800.0, 800.0, 5.0], [40.0, 40.0, -40.0], [0.0, 0.0, 0.0]])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = np.eye(width)[[0, 2, 1, 1]]
    soft = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    unit = rng.uniform(0.0, 1.0, (batch, width)).round(1)
    normal = rng.normal(0.0, 1.0, (batch, width))
    inputs = {
        "logits": logits,
        "extreme_logits": extreme,
        "probabilities": probs,
        "sigmoid_probabilities": 1.0 / (1.0 + np.exp(-logits)),
        "saturated_probabilities": np.array([[1e-50, 1.0 - 1e-16, 0.5]] * batch),
    }
    targets = {"normal": normal, "onehot": onehot, "soft": soft, "unit": unit}
    return inputs, targets


def loss_scenarios(dtype: str = "float64") -> list[Scenario]:
    """Every loss × reduction × grid case of its catalogue entry, the loss alone
    (behind one identity layer)."""
    inputs, targets = loss_arrays()
    out = []
    for name, info in LOSSES.items():
        for reduction in info.reductions:
            for case in info.grid:
                x, y = inputs[case.inputs], targets[case.targets]
                out.append(Scenario(
                    name=f"loss-{name}-{reduction}-{case.label}-{_short(dtype)}",
                    layers=(Layer("identity"),),
                    loss=Loss(name, reduction),
                    x=x.astype(dtype), y=y.astype(dtype), dtype=dtype, seed=11,
                    source={"title": f"{name} ({reduction}) on {case.label} inputs"}, tags=case.tags,
                ))
    return out


def component_scenarios() -> list[Scenario]:
    return [s for dtype in ("float64", "float32") for s in activation_scenarios(dtype) + loss_scenarios(dtype)]


def _short(dtype: str) -> str:
    return "f64" if dtype == "float64" else "f32"
