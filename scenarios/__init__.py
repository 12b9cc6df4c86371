"""Scenarios: the plain data both engines are driven by — the model (``Scenario``, ``Layer``), the
catalogue of every component (``catalog``: one spec per activation, loss, optimizer and layer), the
TOML loader, the shapes, the component grids and the seeded random generators, all loops over the
catalogue's specs."""
from backprop_verify.scenarios.catalog import (ACTIVATIONS, DTYPES, INITIALIZERS, LOSSES, OPTIMIZERS, REDUCTIONS, activation_params,
                               optimizer_options)
from backprop_verify.scenarios.model import Expectation, Layer, Loss, Optimizer, Scenario
from backprop_verify.scenarios.trace import Trace, is_trace_address, parse_element
from backprop_verify.scenarios.loader import ScenarioError, load_scenario, scenario_from_dict
from backprop_verify.scenarios.generator import DEFAULT_RANDOM_COUNT, DEFAULT_SEED, random_scenario, random_scenarios
from backprop_verify.scenarios.components import component_scenarios

__all__ = [
    "ACTIVATIONS", "DTYPES", "INITIALIZERS", "LOSSES", "OPTIMIZERS", "REDUCTIONS",
    "activation_params", "optimizer_options",
    "Expectation", "Layer", "Loss", "Optimizer", "Scenario",
    "Trace", "is_trace_address", "parse_element",
    "ScenarioError", "load_scenario", "scenario_from_dict",
    "DEFAULT_RANDOM_COUNT", "DEFAULT_SEED", "random_scenario", "random_scenarios", "component_scenarios",
]
