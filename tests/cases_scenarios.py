"""Scenario cases: each case is one Scenario, its id is the scenario's name."""
from pytest_cases import parametrize

from backprop_verify.scenarios import component_scenarios, random_scenarios
from backprop_verify.scenarios.builtin import worked_examples
from backprop_verify.scenarios.generator import (DEFAULT_RANDOM_CONV_COUNT, DEFAULT_RANDOM_COUNT, DEFAULT_RANDOM_RECURRENT_COUNT,
                                 DEFAULT_SEED, random_conv_scenarios, random_recurrent_scenarios)
from backprop_verify.scenarios.layer_grids import all_layer_scenarios

# The default run checks as many seeded random architectures as the report.
RANDOM_COUNT = DEFAULT_RANDOM_COUNT

_COMPONENTS = component_scenarios()
_WORKED = worked_examples()
_RANDOM = random_scenarios(RANDOM_COUNT, DEFAULT_SEED)
_LAYERS = all_layer_scenarios()
_RANDOM_CONV = random_conv_scenarios(DEFAULT_RANDOM_CONV_COUNT, DEFAULT_SEED)
_RANDOM_RECURRENT = random_recurrent_scenarios(DEFAULT_RANDOM_RECURRENT_COUNT, DEFAULT_SEED)


def _ids(scenarios, prefix="random-"):
    """Case ids read like the scenario: the case function's name already says ``prefix``."""
    return [s.name.removeprefix(prefix) for s in scenarios]


@parametrize("scenario", _COMPONENTS, ids=_ids(_COMPONENTS))
def case_component(scenario):
    return scenario


@parametrize("scenario", _WORKED, ids=_ids(_WORKED))
def case_worked_example(scenario):
    return scenario


@parametrize("scenario", _RANDOM, ids=_ids(_RANDOM))
def case_random(scenario):
    return scenario


@parametrize("scenario", _LAYERS, ids=_ids(_LAYERS, "layer-"))
def case_layer(scenario):
    return scenario


@parametrize("scenario", _RANDOM_CONV, ids=_ids(_RANDOM_CONV, "random-conv-"))
def case_random_conv(scenario):
    return scenario


@parametrize("scenario", _RANDOM_RECURRENT, ids=_ids(_RANDOM_RECURRENT, "random-recurrent-"))
def case_random_recurrent(scenario):
    return scenario
