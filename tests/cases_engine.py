"""Scenarios for the engine protocol and the shrinker (tests/test_engine_protocol.py).

Tags: "driver" — one scenario of each structure the driver handles beyond a chain (dropout masks, token ids,
given states, residual blocks and tied weights, an optimizer trajectory with mini-batches and clipping),
run through ``manual.run(s, engine)``; "file" — scenarios written by ``scenario_to_toml`` and read back
(every layer's component grid in float64, the worked examples, a few of each random family and of the
trajectories).
"""
from pytest_cases import case, parametrize

from backprop_verify.scenarios.builtin import worked_examples
from backprop_verify.scenarios.generator import (random_conv_scenario, random_conv_scenarios,
                                                 random_recurrent_scenarios, random_scenarios,
                                                 random_transformer_scenario, random_transformer_scenarios)
from backprop_verify.scenarios.layer_grids import layer_scenarios
from backprop_verify.scenarios.trajectories import clipped_trajectory_scenarios, layer_trajectory_scenarios


def _first(scenarios, test):
    return next(s for s in scenarios if test(s))


def _types(scenario):
    from backprop_verify.scenarios.model import walk_layers
    return {layer.type for _path, layer in walk_layers(scenario.layers)}


DRIVER = [
    _first((random_conv_scenario(seed) for seed in range(100)), lambda s: "dropout" in _types(s)),
    _first(random_recurrent_scenarios(40), lambda s: "embedding" in _types(s) and "lstm" in _types(s)),
    _first((random_transformer_scenario(seed) for seed in range(40)), lambda s: "-tied-tied_back" in s.name),
    _first(layer_scenarios("float64"), lambda s: s.name.startswith("layer-lstm") and "h0" in s.name),
    *clipped_trajectory_scenarios("float64")[:1],
    *layer_trajectory_scenarios("float64")[:2],  # batch_norm's running statistics; mini-batches, shuffle, clipping
]

FILES = (layer_scenarios("float64") + worked_examples() + random_scenarios(4) + random_conv_scenarios(6)
         + random_recurrent_scenarios(6) + random_transformer_scenarios(6) + layer_trajectory_scenarios("float32")[:4]
         + clipped_trajectory_scenarios("float64"))


@case(tags=("driver",))
@parametrize("scenario", DRIVER, ids=[s.name for s in DRIVER])
def case_driver(scenario):
    return scenario


@case(tags=("file",))
@parametrize("scenario", FILES, ids=[s.name for s in FILES])
def case_file(scenario):
    return scenario
