"""Component scenarios: every activation and every loss × reduction, alone.

An activation scenario feeds a grid of hand-picked pre-activations straight
into the activation (the scenario has that one layer) under a ``half_sum`` MSE
loss, so ``input.grad`` = a'(z) ⊙ (a − t) checks the hand-derived derivative
point by point: exact zeros (relu-like kinks, where PyTorch's subgradient
choice is the reference), saturation (|z| = 30, 800) and ordinary values.
Which parameter variants an activation is checked with, and whether it gets
the kink grid, are its catalogue entry's ``grid_variants`` and ``kinked``.
An activation whose computation switches formula at some z — in torch or in
``manual`` — also gets a *switch* grid straddling every switch
(``switch_grid``): a wrong branch is visible only near its switch.
A loss scenario feeds inputs straight into the loss (one identity layer): each
of its catalogue entry's ``grid`` cases, under every reduction it accepts.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.scenarios.catalog import ACTIVATIONS, LOSSES
from backprop_verify.scenarios.model import Layer, Loss, Scenario

# Pre-activations for the activation grids. Rows are samples.
SMOOTH_GRID = np.array([[-5.0, -1.3, -0.5, -0.01, 0.02, 0.7, 1.9, 4.0]])
# ±1e-300 sit next to the kink in float64 only (float32 flushes them to 0); ±1e-30 in both dtypes.
KINK_GRID = np.array([[-2.0, -0.0, 0.0, 1e-300, -1e-300, 1e-30, -1e-30, 3.0]])
SATURATION_GRID = np.array([[-800.0, -30.0, -19.0, 19.0, 30.0, 800.0]])

# u = βz relative to softplus's threshold: below, at (still the smooth branch:
# PyTorch's test is βz > threshold), and the band above it where e^(−u) is
# still visible. Dyadic offsets: u = βz is exact in float32 for β a power of 2.
SOFTPLUS_THRESHOLD_OFFSETS = (-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 2.0, 3.0)
# Both sides of z = 0, where the shared σ helper switches from e^z/(1+e^z) to
# 1/(1+e^−z) (``manual.activations.sigmoid``) and softplus_stable from
# log1p(e^u) to u + log1p(e^−u).
SIGN_SWITCH = (-0.5, -1e-8, -1e-300, -0.0, 0.0, 1e-300, 1e-8, 0.5)
# Activations computed through σ(z) or softplus_stable, or whose formula is odd around 0.
_SIGN_SWITCHED = ("sigmoid", "silu", "swish", "mish", "softplus", "gelu", "elu")


def switch_grid(name: str, params: dict) -> np.ndarray | None:
    """Pre-activations straddling every point where ``name``'s computation switches formula, or None.

    * sigmoid, silu, swish, mish, softplus (σ(βz) and log(1 + e^βz)), elu (e^z − 1
      below 0, z above; also in the kink grid), gelu (both forms: one formula for
      every z in torch's CPU kernel and in ``manual``, checked across 0 all the
      same): both signs of z around 0 (``SIGN_SWITCH``);
    * softplus: βz = threshold + each of ``SOFTPLUS_THRESHOLD_OFFSETS`` — in the
      band threshold < βz ≤ threshold + 3 PyTorch's derivative is exactly 1 where
      σ(βz) differs from 1 by e^(−βz) ≥ 5e-2·e^(−threshold): float64 sees it for
      the default threshold 20, float32 for the variants with threshold ≤ 2;
    * mish: z around 20, PyTorch's softplus threshold inside mish (the manual
      engine has none; tanh(softplus(z)) = 1 to double precision either way).

    relu and leaky_relu switch at 0 only: the kink grid. bce's clamp of
    a(1 − a) at 1e-12 is the loss grid case ``clamp`` (``loss_arrays``).
    """
    points = list(SIGN_SWITCH) if name in _SIGN_SWITCHED else []
    if name == "softplus":
        beta, threshold = float(params["beta"]), float(params["threshold"])
        points += [(threshold + offset) / beta for offset in SOFTPLUS_THRESHOLD_OFFSETS]
    if name == "mish":
        points += [20.0 + offset for offset in SOFTPLUS_THRESHOLD_OFFSETS]
    return np.array([points]) if points else None


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
            switch = switch_grid(name, {**defaults, **params})
            if switch is not None:
                # ("kink": finite differences stay away; across ±1e-300 they cannot resolve anything)
                grids.append(("switch", switch, ("kink",)))
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
    ``saturated_probabilities`` (1e-50 and 1 − 1e-16 next to 0.5),
    ``clamp_probabilities`` (a with a(1 − a) on both sides of bce's clamp at
    float32(1e-12) ≈ 9.99999996e-13, near 0 and near 1). Targets:
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
        "clamp_probabilities": np.array([[1e-11, 2e-12, 1e-12], [9.999999e-13, 5e-13, 1e-13],
                                         [1.0 - 1e-11, 1.0 - 2e-12, 1.0 - 1e-12], [1.0 - 5e-13, 1.0 - 1e-13, 0.5]]),
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
