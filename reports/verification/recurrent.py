"""Exploding and vanishing gradients in time (documents 001 and 003), measured by both engines.

A tanh RNN whose recurrent matrix W_hh has spectral radius ρ = 0.5, 1.0 and
1.5, and an LSTM, over 20 steps with the loss on the last step only:
‖∂L/∂h_t‖ against t shows the gradient that flows back through the hidden
state shrinking (ρ < 1), holding (ρ ≈ 1) or, while tanh stays unsaturated,
growing (ρ > 1) — and an LSTM whose forget gate starts open (its bias 3,
f ≈ 0.95) carrying it along the cell state, ∂L/∂c_(t−1) ∋ f_t ⊙ ∂L/∂c_t.

∂L/∂h_t is the total gradient, through every later step. Both engines give it
the same way, from their own backward pass: the sequence is run again from
step t + 1 with h_t (and the LSTM's c_t) as the given initial state, whose
gradient (``layers.0.h0.grad``) is ∂L/∂h_t.

The networks are ``scenarios.trajectories.recurrent_scenario``;
``scenarios.trajectories.clipped_trajectory_scenarios`` trains the ρ = 1.5
one with SGD, with and without ``clip_grad_norm``, and the report compares
both against torch.optim.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trajectories import GRADIENT_IN_TIME_NETWORKS as NETWORKS, recurrent_scenario

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
