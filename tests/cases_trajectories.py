"""Trajectory cases: one case per optimizer variant and dtype, tagged with what it is.

A case's id is the one the default run reports (the scenario's name; in
float32 ``trajectory_float32-…``), and its tags are the dtype ("float64" or
"float32") plus the variant's tags (``scenarios.trajectories.variant_tags``):
"defaults" (the optimizer with its defaults alone), "subsumed" (everything it
changes recurs in a variant that runs), "also_float32" (checked in float32 too).

``DEFAULT_RUN`` is the pytest-cases filter of what the default test run checks,
by those tags: in float64 every variant that is not subsumed, in float32 each
optimizer with its defaults and the variants tagged "also_float32". Use it as
``parametrize_with_cases("scenario", cases=TRAJECTORY_CASES, filter=DEFAULT_RUN)``.
The report checks every variant in both dtypes.
"""
from pytest_cases import case
from pytest_cases import filters as ft

from backprop_verify.scenarios.catalog import DTYPES
from backprop_verify.scenarios.trajectories import VARIANTS, trajectory_scenarios, variant_tags

DEFAULT_FLOAT64 = ft.has_tag("float64") & ~ft.has_tag("subsumed")
DEFAULT_FLOAT32 = ft.has_tag("float32") & (ft.has_tag("defaults") | ft.has_tag("also_float32"))
DEFAULT_RUN = DEFAULT_FLOAT64 | DEFAULT_FLOAT32


def _case_id(scenario) -> str:
    if scenario.dtype == "float64":
        return scenario.name
    return "trajectory_float32-" + scenario.name.removeprefix("trajectory-")


def _trajectory_case(scenario, tags):
    @case(id=_case_id(scenario), tags=tags)
    def case_trajectory():
        return scenario

    return case_trajectory


TRAJECTORY_CASES = [
    _trajectory_case(scenario, (dtype, *variant_tags(variant)))
    for dtype in DTYPES
    for variant, scenario in zip(VARIANTS, trajectory_scenarios(dtype), strict=True)
]
