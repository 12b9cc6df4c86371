"""Run a scenario through every engine and compare: the rows of a report."""
from __future__ import annotations

from dataclasses import asdict

import manual
import reference
from reference.fd_oracle import fd_oracle
from reference.torch_engine import has_torch_reference
from reports.compare import compare
from scenarios.model import Scenario

# Finite differences cost two forward passes per parameter and per input; above
# this many perturbed entries the oracle is skipped (manual-torch still runs).
FD_MAX_ENTRIES = 2000

COLUMNS = ("scenario", "pair", "dtype", "address", "max_abs", "max_rel", "tolerance", "passed", "note")


def fd_applicable(scenario: Scenario) -> bool:
    """Finite differences settle disputes on smooth float64 scenarios of modest size."""
    if scenario.dtype != "float64" or "kink" in scenario.tags or "no-fd" in scenario.tags:
        return False
    entries = scenario.parameter_count + scenario.x.size + sum(
        scenario.x.shape[0] * (l.weight.shape[0] if l.is_linear else 0) for l in scenario.layers)
    return entries <= FD_MAX_ENTRIES


def verify(scenario: Scenario, with_fd: bool = True) -> list[dict]:
    """Rows (dicts with COLUMNS) for manual-torch and, where applicable, the fd pairs."""
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
    return [{"scenario": scenario.name, "pair": pair, "dtype": scenario.dtype, **asdict(row)} for row in compared]
