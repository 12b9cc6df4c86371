"""Scenarios that the finite-difference oracle can settle: float64, smooth, modest size."""
from pytest_cases import parametrize

from backprop_verify.reference.fd_oracle import fd_applicable
from tests.cases_scenarios import _COMPONENTS, _LAYERS, _RANDOM, _RANDOM_CONV, _RANDOM_RECURRENT, _WORKED, _ids

# Finite differences cost two forward passes per entry; the first this many
# applicable random nets (by seed) are checked in the default run.
RANDOM_FD_COUNT = 40
RANDOM_CONV_FD_COUNT = 20
RANDOM_RECURRENT_FD_COUNT = 20

_FD_COMPONENTS = [s for s in _COMPONENTS if fd_applicable(s)]
_FD_WORKED = [s for s in _WORKED if fd_applicable(s)]
_FD_RANDOM = [s for s in _RANDOM if fd_applicable(s)][:RANDOM_FD_COUNT]
_FD_LAYERS = [s for s in _LAYERS if fd_applicable(s)]
_FD_RANDOM_CONV = [s for s in _RANDOM_CONV if fd_applicable(s)][:RANDOM_CONV_FD_COUNT]
_FD_RANDOM_RECURRENT = [s for s in _RANDOM_RECURRENT if fd_applicable(s)][:RANDOM_RECURRENT_FD_COUNT]


@parametrize("scenario", _FD_COMPONENTS, ids=_ids(_FD_COMPONENTS))
def case_component(scenario):
    return scenario


@parametrize("scenario", _FD_WORKED, ids=_ids(_FD_WORKED))
def case_worked_example(scenario):
    return scenario


@parametrize("scenario", _FD_RANDOM, ids=_ids(_FD_RANDOM))
def case_random(scenario):
    return scenario


@parametrize("scenario", _FD_LAYERS, ids=_ids(_FD_LAYERS, "layer-"))
def case_layer(scenario):
    return scenario


@parametrize("scenario", _FD_RANDOM_CONV, ids=_ids(_FD_RANDOM_CONV, "random-conv-"))
def case_random_conv(scenario):
    return scenario


@parametrize("scenario", _FD_RANDOM_RECURRENT, ids=_ids(_FD_RANDOM_RECURRENT, "random-recurrent-"))
def case_random_recurrent(scenario):
    return scenario
