"""Exploding and vanishing gradients in time (documents 001 and 003), measured by both engines.

A tanh RNN whose recurrent matrix W_hh has spectral radius ρ = 0.5, 1.0 and
1.5, and an LSTM, over ``STEPS`` steps with the loss on the last step only:
‖∂L/∂h_t‖ against t shows the gradient that flows back through the hidden
state shrinking (ρ < 1), holding (ρ ≈ 1) or, while tanh stays unsaturated,
growing (ρ > 1) — and an LSTM whose forget gate starts open (its bias 3,
f ≈ 0.95) carrying it along the cell state, ∂L/∂c_(t−1) ∋ f_t ⊙ ∂L/∂c_t.

∂L/∂h_t is the total gradient, through every later step. Both engines give it
the same way, from their own backward pass: the sequence is run again from
step t + 1 with h_t (and the LSTM's c_t) as the given initial state, whose
gradient (``layers.0.h0.grad``) is ∂L/∂h_t.

``clipped_trajectory_scenario`` is the ρ = 1.5 network trained with SGD, with
and without ``clip_grad_norm``: the report compares both against torch.optim.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pandas as pd

import manual
import reference
from scenarios.catalog import layer_options
from scenarios.model import Layer, Loss, Scenario
from scenarios.trajectories import make_optimizer

STEPS = 20
HIDDEN = 8
FEATURES = 3
BATCH = 4
SEED = 14
NETWORKS = ("tanh ρ=0.5", "tanh ρ=1.0", "tanh ρ=1.5", "lstm")
FORGET_BIAS = 3.0  # f = σ(3) ≈ 0.95: the cell state is carried from step to step


def recurrent_scenario(network: str, steps: int = STEPS, seed: int = SEED) -> Scenario:
    """``network`` ("tanh ρ=R" or "lstm") over ``steps`` steps, loss ½Σ(ŷ − t)² on the last step."""
    rng = np.random.default_rng(seed)
    kind = "lstm" if network == "lstm" else "rnn"
    gates = 4 if kind == "lstm" else 1
    bound = 1.0 / math.sqrt(HIDDEN)
    weight_hh = rng.uniform(-bound, bound, (gates * HIDDEN, HIDDEN))
    if kind == "rnn":
        radius = float(network.split("=")[1])
        weight_hh *= radius / max(abs(np.linalg.eigvals(weight_hh)))
    bias_ih = np.zeros(gates * HIDDEN)
    if kind == "lstm":
        bias_ih[HIDDEN:2 * HIDDEN] = FORGET_BIAS  # gates (i, f, g, o): the forget gate starts open
    tensors = {"weight_ih": rng.uniform(-bound, bound, (gates * HIDDEN, FEATURES)), "weight_hh": weight_hh,
               "bias_ih": bias_ih, "bias_hh": np.zeros(gates * HIDDEN)}
    layers = (Layer(kind, params=layer_options(kind, {"hidden_size": HIDDEN}), tensors=tensors),
              Layer("last_step"),
              Layer("linear", weight=rng.normal(0.0, 1.0 / math.sqrt(HIDDEN), (1, HIDDEN)), bias=np.zeros(1)),
              Layer("identity"))
    x = rng.normal(0.0, 0.1, (BATCH, steps, FEATURES))  # small inputs: tanh stays near its linear range
    y = rng.normal(0.0, 1.0, (BATCH, 1))
    return Scenario(name=f"recurrent-{network.replace(' ', '-').replace('ρ=', 'rho')}-t{steps}", layers=layers,
                    loss=Loss("mse", "half_sum"), x=x, y=y, seed=seed,
                    source={"title": "documents 001 and 003: gradients in time"})


def _from_step(scenario: Scenario, trace, t: int) -> Scenario:
    """The scenario run from step t + 1, with the state after step t (from ``trace``) as given."""
    recurrent = scenario.layers[0]
    states = {"h0": trace["layers.0.output"][:, t]}
    if recurrent.type == "lstm":
        states["c0"] = trace["layers.0.cell"][:, t]
    layers = (dataclasses.replace(recurrent, states=states),) + scenario.layers[1:]
    return dataclasses.replace(scenario, layers=layers, x=scenario.x[:, t + 1:])


def recurrent_gradient(networks=NETWORKS) -> pd.DataFrame:
    """Columns network, engine, step (1 = the first), grad_norm = ‖∂L/∂h_t‖ (Frobenius over
    the batch). Deterministic, so computed once per process; each caller gets a copy."""
    return _recurrent_gradient(tuple(networks)).copy()


@functools.lru_cache(maxsize=2)
def _recurrent_gradient(networks: tuple[str, ...]) -> pd.DataFrame:
    records = []
    for network in networks:
        scenario = recurrent_scenario(network)
        for engine, run in (("manual", manual.run), ("torch", reference.run)):
            trace = run(scenario)
            steps = scenario.x.shape[1]
            for t in range(steps):
                if t == steps - 1:
                    grad = trace["layers.0.output.grad"][:, t]
                else:
                    grad = run(_from_step(scenario, trace, t))["layers.0.h0.grad"]
                records.append({"network": network, "engine": engine, "step": t + 1,
                                "grad_norm": float(np.linalg.norm(np.asarray(grad, np.float64)))})
    return pd.DataFrame(records, columns=["network", "engine", "step", "grad_norm"])


def clipped_trajectory_scenarios(dtype: str = "float64", steps: int = 15) -> list[Scenario]:
    """The ρ = 1.5 RNN trained by SGD (η = 0.1) without and with clip_grad_norm = 1:
    both engines against torch.optim, update by update. Unclipped, the gradient
    explodes and the loss grows to ~10² by update 15 (the steps float64 cannot
    determine are judged by the precision horizon); clipped, the loss stays
    below 1.5. The report runs them in float64: the clipped run is chaotic
    enough that float32 rounding, amplified, reaches its tolerance by update 15."""
    base = recurrent_scenario("tanh ρ=1.5").astype(dtype)
    out = []
    for clip in (None, 1.0):
        optimizer = make_optimizer("sgd", 0.1, {}, {} if clip is None else {"clip_grad_norm": clip}, steps)
        out.append(dataclasses.replace(base, optimizer=optimizer,
                                       name=f"trajectory-{optimizer.label()}-rnn-rho1.5-t{STEPS}-"
                                            f"{'f64' if dtype == 'float64' else 'f32'}"))
    return out

