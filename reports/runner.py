"""Run a scenario through every engine and compare: the rows of a report."""
from __future__ import annotations

import functools

import manual
import reference
from reference.fd_oracle import fd_oracle
from reference.torch_engine import has_torch_reference
from reports.compare import compare
from scenarios.model import Scenario

# Finite differences cost two forward passes per parameter and per input; above
# this many perturbed entries the oracle is skipped (manual-torch still runs).
FD_MAX_ENTRIES = 2000


def fd_applicable(scenario: Scenario) -> bool:
    """Finite differences settle disputes on smooth float64 scenarios of modest size."""
    if scenario.dtype != "float64" or "kink" in scenario.tags or "no-fd" in scenario.tags:
        return False
    entries = scenario.parameter_count + scenario.x.size + sum(
        scenario.x.shape[0] * (l.weight.shape[0] if l.is_linear else 0) for l in scenario.layers)
    return entries <= FD_MAX_ENTRIES


def verify(scenario: Scenario, with_fd: bool = True) -> list[dict]:
    """Rows (dicts with ``reports.table.COLUMNS``) for manual-torch and, where applicable, the fd pairs."""
    manual_trace = manual.run(scenario)
    torch_trace = reference.run(scenario)
    rows = _rows(scenario, "manual-torch", compare(manual_trace, torch_trace, scenario.dtype, "manual-torch"))
    if scenario.optimizer is not None and not has_torch_reference(scenario.optimizer.type):
        # Steps of an optimizer torch.optim lacks (Ftrl): marked, not compared.
        rows.append({"scenario": scenario.name, "pair": "manual-torch", "dtype": scenario.dtype, "address": "step*",
                     "max_abs": float("nan"), "max_rel": float("nan"), "tolerance": float("nan"), "passed": True,
                     "note": f"no torch reference ({scenario.optimizer.type})"})
    if with_fd and fd_applicable(scenario):
        fd_trace = fd_oracle(scenario)
        rows += _rows(scenario, "manual-fd", compare(manual_trace, fd_trace, scenario.dtype, "manual-fd"))
        rows += _rows(scenario, "torch-fd", compare(torch_trace, fd_trace, scenario.dtype, "torch-fd"))
    return rows


def _rows(scenario: Scenario, pair: str, compared) -> list[dict]:
    return [{"scenario": scenario.name, "pair": pair, "dtype": scenario.dtype, **row._asdict()} for row in compared]


def report_rows(scenario: Scenario) -> list[dict]:
    """``verify(scenario)``, with the trajectory module judging ``step{t}`` addresses.

    When a manual-torch ``step{t}`` row fails, those rows are replaced by
    ``reports.adapters.trajectory_rows(scenario)`` (the precision horizon: steps
    after it are reported with a note, not judged). Every report row, in one
    process, in pytest-xdist workers and under ``pytest --report-dir``, comes
    from here.
    """
    from reports import adapters
    from reports.compare import step_of

    rows = verify(scenario)
    stepped = [r for r in rows if r["pair"] == "manual-torch" and step_of(r["address"])]
    if not any(not r["passed"] for r in stepped):
        return rows
    judged = adapters.trajectory_rows(scenario)
    if judged is None:
        return rows
    kept = [r for r in rows if not (r["pair"] == "manual-torch" and step_of(r["address"]))]
    return kept + _rows(scenario, "manual-torch", [row for row in judged if step_of(row.address)])


# --------------------------------------------------------------------------
# Document 003's vanishing gradient, measured by both engines
# --------------------------------------------------------------------------


VANISHING_DEPTH = 10  # linear layers
VANISHING_WIDTH = 32
VANISHING_BATCH = 64
VANISHING_SEED = 3


def vanishing_gradient_scenario(activation: str, depth: int = VANISHING_DEPTH, width: int = VANISHING_WIDTH,
                                batch: int = VANISHING_BATCH, seed: int = VANISHING_SEED) -> Scenario:
    """A deep ``activation`` network; sigmoid and ReLU get *the same* weights and data.

    ``depth`` linear layers of ``width`` units (He-normal weights, zero bias),
    each followed by ``activation``, then a ½·mean-over-samples MSE — document
    003's ∂L/∂w¹₁₁ = (1/n)(ŷ − y) · wσ'(z) · wσ'(z) ⋯ x₁ with σ' ≤ 0.25.
    """
    import numpy as np

    from scenarios.init import initialise, layer_rng
    from scenarios.model import Layer, Loss

    layers = []
    for i in range(depth):
        weight = initialise("he_normal", width, width, layer_rng(seed, i))
        layers.append(Layer("linear", weight=weight, bias=np.zeros(width)))
        layers.append(Layer(activation))
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (batch, width))
    y = rng.uniform(0.0, 1.0, (batch, width))
    return Scenario(name=f"vanishing-{activation}-depth{depth}", layers=tuple(layers),
                    loss=Loss("mse", "half_batch_mean"), x=x, y=y, dtype="float64", seed=seed,
                    source={"title": "document 003: vanishing gradient"})


def vanishing_gradient(activations=("sigmoid", "relu"), **kwargs):
    """A copy of ``_vanishing_gradient``'s (cached: deterministic) table."""
    return _vanishing_gradient(tuple(activations), tuple(sorted(kwargs.items()))).copy()


@functools.lru_cache(maxsize=4)
def _vanishing_gradient(activations, options):
    """Per-layer ‖∂L/∂W⁽ˡ⁾‖_F for each activation, by manual and by torch.

    A DataFrame with columns activation, engine, layer (1 = next to the input),
    grad_norm.
    """
    import numpy as np
    import pandas as pd

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
