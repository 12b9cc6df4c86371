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

``recurrent_gradient()`` returns a ``RecurrentGradient``: the measured norms,
the step × (network, engine) table the report shows and each network's
‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ ratio, so that rendering only formats.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trajectories import GRADIENT_IN_TIME_NETWORKS as NETWORKS, recurrent_scenario

CURVE_COLUMNS = ["network", "engine", "step", "grad_norm"]


@dataclass(frozen=True)
class RecurrentGradient:
    """The experiment and its numbers; ``networks`` in the experiment's order."""
    curves: pd.DataFrame        # CURVE_COLUMNS: ‖∂L/∂h_t‖ (Frobenius over the batch), step 1 = the first
    table: pd.DataFrame         # step; per network: manual, torch
    networks: tuple[str, ...]
    steps: int                  # the last step (the loss is on it)
    ratios: dict[str, float]    # network -> ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ by the manual engine

    def copy(self) -> RecurrentGradient:
        return dataclasses.replace(self, curves=self.curves.copy(), table=self.table.copy(), ratios=dict(self.ratios))


def _from_step(scenario: Scenario, trace, t: int) -> Scenario:
    """The scenario run from step t + 1, with the state after step t (from ``trace``) as given."""
    recurrent = scenario.layers[0]
    states = {"h0": trace["layers.0.output"][:, t]}
    if recurrent.type == "lstm":
        states["c0"] = trace["layers.0.cell"][:, t]
    layers = (dataclasses.replace(recurrent, states=states),) + scenario.layers[1:]
    return dataclasses.replace(scenario, layers=layers, x=scenario.x[:, t + 1:])


def recurrent_gradient(networks=NETWORKS) -> RecurrentGradient:
    """‖∂L/∂h_t‖ of every network by both engines, with the numbers derived from them.
    Deterministic, so computed once per process; each caller gets a copy."""
    return _recurrent_gradient(tuple(networks)).copy()


@functools.lru_cache(maxsize=2)
def _recurrent_gradient(networks: tuple[str, ...]) -> RecurrentGradient:
    curves = _curves(networks)
    manual_curves = curves[curves["engine"] == "manual"]
    ratios = {}
    for network, group in manual_curves.groupby("network", sort=False):
        ordered = group.sort_values("step")["grad_norm"].to_numpy()
        ratios[network] = ordered[0] / ordered[-1]
    return RecurrentGradient(curves=curves, table=recurrent_table(curves), networks=tuple(dict.fromkeys(curves["network"])),
                             steps=int(curves["step"].max()), ratios=ratios)


def recurrent_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Step × (network, engine) ‖∂L/∂h_t‖, every network's manual and torch columns side by side."""
    wide = curves.pivot_table(index="step", columns=["network", "engine"], values="grad_norm", aggfunc="first")
    table = pd.DataFrame({"step": wide.index.astype(int)})
    for network in dict.fromkeys(curves["network"]):
        for engine in ("manual", "torch"):
            table[f"{network} {engine}"] = wide[(network, engine)].to_numpy()
    return table


def _curves(networks: tuple[str, ...]) -> pd.DataFrame:
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
    return pd.DataFrame(records, columns=CURVE_COLUMNS)
