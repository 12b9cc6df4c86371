"""Scenarios that the finite-difference oracle can settle: float64, smooth, modest size.

Not a copy: each case function here is the one of the same name in
``tests/cases_scenarios.py``, its scenarios filtered by
``reference.fd_oracle.fd_applicable`` (their ids kept), the random families cut
to their first applicable seeds.
"""
import inspect

from pytest_cases import parametrize

from backprop_verify.reference.fd_oracle import fd_applicable
from tests import cases_scenarios

# Finite differences cost two forward passes per entry; the first this many
# applicable random nets (by seed) are checked in the default run.
RANDOM_FD_COUNT = 40
RANDOM_CONV_FD_COUNT = 20
RANDOM_RECURRENT_FD_COUNT = 20
LIMITS = {"case_random": RANDOM_FD_COUNT, "case_random_conv": RANDOM_CONV_FD_COUNT,
          "case_random_recurrent": RANDOM_RECURRENT_FD_COUNT}


def _parametrization(case) -> tuple[list, list[str]]:
    """(scenarios, ids) of a case function of tests/cases_scenarios.py."""
    (mark,) = [mark for mark in case.pytestmark if mark.name == "parametrize"]
    return list(mark.args[1]), list(mark.kwargs["ids"])


def _filtered(name: str, case):
    """The case function ``name`` over the scenarios of ``case`` that finite differences can settle."""
    kept = [(s, case_id) for s, case_id in zip(*_parametrization(case)) if fd_applicable(s)][:LIMITS.get(name)]
    scenarios = [s for s, _ in kept]

    def fd_case(scenario):
        return scenario

    fd_case.__name__ = fd_case.__qualname__ = name
    fd_case.__module__, fd_case.__doc__ = __name__, case.__doc__
    # pytest-cases orders case functions by their line, and wants one line each: the original's.
    fd_case.__code__ = fd_case.__code__.replace(co_firstlineno=case.__code__.co_firstlineno, co_name=name)
    return parametrize("scenario", scenarios, ids=[case_id for _, case_id in kept])(fd_case), scenarios


_FD = {}
for _name, _case in inspect.getmembers(cases_scenarios, inspect.isfunction):
    if _name.startswith("case_") and _case.__module__ == cases_scenarios.__name__:
        globals()[_name], _FD[_name] = _filtered(_name, _case)

_FD_RANDOM = _FD["case_random"]
_FD_RANDOM_CONV = _FD["case_random_conv"]
_FD_RANDOM_RECURRENT = _FD["case_random_recurrent"]
