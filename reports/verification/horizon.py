"""Training trajectories, manual against torch.optim, step by step.

``compare_trajectory(scenario)``  rows of the manual-torch comparison of every
                                  ``step{t}`` address, with the horizon
                                  applied (below); an optimizer torch.optim lacks
                                  (Ftrl) gets one ``not_judged`` row.
``horizon(scenario)``             the last update the scenario's precision determines
                                  (below): ``float32_horizon`` / ``float64_horizon``.
``step_summary(rows, step)``      the worst normwise relative discrepancy at one update.
``python -m reports.verification.horizon`` prints the worst discrepancy and the
horizon of every built-in trajectory (the numbers in docs/optimizers.md).

The horizon. The tolerance of ``reports.verification.tolerance`` grows linearly with the
number of updates: it assumes the training map does not amplify rounding
differences. Some trajectories do (a dead ReLU unit whose only gradient is L2
weight decay under NAdam is updated by ≈ ηλθ/ε, a map with gain ≫ 1; centered
RMSprop with momentum divides by √(E[g²] − E[g]²), which can approach 0):
there the arithmetic of the scenario's dtype cannot determine the trajectory
at all, and two correct engines drift apart as far as either drifts from a
run whose start differs by one rounding. Such a scenario is recognised from
the reference alone, never from the engine under test:

* float32: the horizon is the last update t at which torch-float32 and
  torch-float64 (same float32 initial values) agree within half the float32
  tolerance;
* float64: the last update t at which torch-float64 and torch-float64 started
  from every initial parameter moved by one ulp (``numpy.nextafter``) agree
  within half the float64 tolerance.

Half, so that by the triangle inequality two engines each that close agree
within the full tolerance. When a trajectory has failing steps, steps after
its horizon get the status ``not_judged`` and the note "beyond float32
horizon (step H)" / "beyond float64 horizon (step H)"; a wrong update rule shows
at its first steps, long before any horizon. The horizon of every built-in
trajectory is printed by this module (see the docs for which have one).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reference.torch_engine import has_torch_reference
from backprop_verify.reports.verification.compare import FLOOR, NOT_JUDGED, Row, compare, step_of
from backprop_verify.reports.verification.tolerance import tolerance
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trace import Trace
from backprop_verify.scenarios.trajectories import TRAJECTORY_STEPS, dead_unit_scenario, trajectory_scenarios

NO_TORCH_REFERENCE = "no torch reference"


def no_torch_reference_row(optimizer_type: str) -> Row:
    """The one row of an optimizer torch.optim lacks: its steps are not judged."""
    nan = float("nan")
    return Row("step*", nan, nan, nan, NOT_JUDGED, f"{NO_TORCH_REFERENCE} ({optimizer_type})")


def horizon(scenario: Scenario, torch_trace=None) -> int:
    """The last update that the scenario's dtype determines (see the module docstring)."""
    if scenario.dtype == "float32":
        return float32_horizon(scenario, torch_trace)
    return float64_horizon(scenario, torch_trace)


def float32_horizon(scenario: Scenario, torch_trace=None) -> int:
    """Last update at which torch-float32 tracks torch-float64 within half the float32 tolerance."""
    if scenario.dtype != "float32":
        return scenario.optimizer.steps
    single = torch_trace if torch_trace is not None else reference.run(scenario)
    return _last_step_within_half_tolerance(scenario, single, reference.run(scenario.astype("float64")))


def float64_horizon(scenario: Scenario, torch_trace=None) -> int:
    """Last update at which torch-float64 tracks itself started one ulp away, within half the float64 tolerance."""
    if scenario.dtype != "float64":
        return scenario.optimizer.steps
    double = torch_trace if torch_trace is not None else reference.run(scenario)
    return _last_step_within_half_tolerance(scenario, reference.run(_one_ulp_away(scenario)), double)


def _one_ulp_away(scenario: Scenario) -> Scenario:
    """The scenario with every initial weight and bias moved to the next float up."""
    def nudge(value):
        return None if value is None else np.nextafter(value, np.inf)

    layers = tuple(layer.with_parameters(nudge) for layer in scenario.layers)
    return dataclasses.replace(scenario, layers=layers)


def _last_step_within_half_tolerance(scenario: Scenario, run: Trace, reference_run: Trace) -> int:
    steps = scenario.optimizer.steps
    if not has_torch_reference(scenario.optimizer.type):
        return steps
    for row in compare(run, reference_run, scenario.dtype, "manual-torch"):
        t = step_of(row.address)
        if t and row.max_rel > 0.5 * tolerance(scenario.dtype, "manual-torch", t) and row.status != FLOOR:
            steps = min(steps, t - 1)
    return steps


def compare_trajectory(scenario: Scenario, manual_trace=None, torch_trace=None) -> tuple[list[Row], int]:
    """(rows for every step{t} address, horizon). Failures after the horizon are ``not_judged``."""
    spec = scenario.optimizer
    if spec is None:
        raise ValueError(f"scenario {scenario.name!r} has no optimizer: no trajectory to compare")
    if not has_torch_reference(spec.type):
        return [no_torch_reference_row(spec.type)], 0
    manual_trace = manual_trace if manual_trace is not None else manual.run(scenario)
    torch_trace = torch_trace if torch_trace is not None else reference.run(scenario)
    addresses = [a for a in torch_trace if step_of(a)]
    rows = compare(manual_trace, torch_trace, scenario.dtype, "manual-torch", addresses)
    if any(not r.passed for r in rows):
        last = horizon(scenario, torch_trace)
        rows = [r._replace(status=NOT_JUDGED, note=f"beyond {scenario.dtype} horizon (step {last})")
                if not r.passed and step_of(r.address) > last else r for r in rows]
        return rows, last
    return rows, spec.steps


def step_summary(rows: list[Row], step: int) -> float:
    """The worst normwise relative discrepancy among the addresses of update ``step``."""
    values = [r.max_rel for r in rows if step_of(r.address) == step]
    return max(values) if values else float("nan")


def main() -> int:  # pragma: no cover - prints the measured tables
    torch.set_num_threads(1)  # the report's and the tests' setting
    failures = 0
    for dtype in ("float64", "float32"):
        print(f"\n{dtype}: worst normwise relative discrepancy at step {TRAJECTORY_STEPS}, manual vs torch.optim")
        print(f"| variant | step {TRAJECTORY_STEPS} | tolerance | horizon | failures |\n|---|---|---|---|---|")
        for scenario in trajectory_scenarios(dtype) + [dead_unit_scenario(dtype)]:
            rows, _ = compare_trajectory(scenario)
            last = horizon(scenario)  # measured for every variant, not only on failure
            failed = sum(not r.passed for r in rows)
            failures += failed
            worst = step_summary(rows, TRAJECTORY_STEPS)
            shown = NO_TORCH_REFERENCE if not has_torch_reference(scenario.optimizer.type) else f"{worst:.2e}"
            print(f"| {scenario.name} | {shown} | {tolerance(dtype, 'manual-torch', TRAJECTORY_STEPS):.1e} "
                  f"| {last} | {failed} |")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
