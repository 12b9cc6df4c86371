"""Run a scenario through every engine and compare: the rows of a report.

``verify(scenario)`` runs each engine once and gives a ``Verification``: the
traces (manual, torch and, where it applies, finite differences) and the manual-torch rows (dicts with ``compare.COLUMNS``;
failing rows re-judged by the summation floor, ``cancellation``, the conditioning
floor, ``conditioning``, and the summation floor again, now trusting the terms
the conditioning floor passed) and, where the finite-difference
oracle applies (``reference.fd_oracle.fd_applicable``), the manual-fd and
torch-fd rows. ``report_verification(scenario)`` adds the trajectory judgement
(``horizon``, on the same traces); ``report_rows(scenario)`` is its rows. Every
report row — in one process, in pytest-xdist workers and under ``pytest
--report-dir`` — comes from it, and everything downstream (the difference maps
of report.html's sections) reuses its traces: no engine runs twice on a scenario.
The deliberate extra runs are of *other* scenarios: the conditioning floor's
rounding twin, the Richardson-refined oracle (steps h/2) and the precision
horizon's perturbed references.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reference.fd_oracle import fd_applicable, fd_oracle, fd_refined
from backprop_verify.reference.torch_engine import has_torch_reference
from backprop_verify.reports.verification import cancellation, conditioning
from backprop_verify.reports.verification.compare import (ALL_APART, BELOW_FD, FAIL, FLOOR, MANUAL_ALONE, ORACLE, PASS,
                                          TORCH_ALONE, UNSETTLED, Row, compare, step_of)
from backprop_verify.reports.verification.tolerance import PAIRS
from backprop_verify.reports.verification.horizon import compare_trajectory, no_torch_reference_row
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trace import Trace


@dataclass(frozen=True)
class Verification:
    """One scenario verified: its rows (dicts with ``compare.COLUMNS``) and the traces they were computed
    from — each engine run once. ``fd`` is None where the finite-difference oracle does not apply (or was
    not asked for)."""
    scenario: Scenario
    rows: list[dict]
    manual: Trace
    torch: Trace
    fd: Trace | None = None

    def trace(self, engine: str) -> Trace | None:
        """The trace of ``engine``: ``manual``, ``torch`` or ``fd`` (the sides of a pair such as ``manual-fd``)."""
        return {"manual": self.manual, "torch": self.torch, "fd": self.fd}[engine]


def verify(scenario: Scenario, with_fd: bool = True) -> Verification:
    """Rows for manual-torch and, where applicable, the fd pairs, with the traces behind them."""
    manual_trace = manual.run(scenario)
    torch_trace = reference.run(scenario)
    compared = compare(manual_trace, torch_trace, scenario.dtype, "manual-torch")
    if any(row.status == FAIL for row in compared):
        floors = cancellation.term_floors(scenario, manual_trace, torch_trace)
        compared = cancellation.rejudge(compared, manual_trace, torch_trace, floors)
        compared = conditioning.rejudge(scenario, compared, torch_trace)
        # once more: a sum whose terms the conditioning floor has just passed may now trust them
        compared = cancellation.rejudge(compared, manual_trace, torch_trace, floors)
    rows = _rows(scenario, "manual-torch", compared)
    if scenario.optimizer is not None and not has_torch_reference(scenario.optimizer.type):
        rows += _rows(scenario, "manual-torch", [no_torch_reference_row(scenario.optimizer.type)])
    fd_trace = None
    if with_fd and fd_applicable(scenario):
        fd_trace = fd_oracle(scenario)
        refined = functools.cache(lambda: fd_refined(scenario, fd_trace))
        for pair, trace in (("manual-fd", manual_trace), ("torch-fd", torch_trace)):
            rows += _rows(scenario, pair, _against_fd(scenario, trace, fd_trace, refined, pair))
    return Verification(scenario, triage(rows), manual_trace, torch_trace, fd_trace)


_RANK = {PASS: 0, FLOOR: 1, FAIL: 2}


def _against_fd(scenario: Scenario, trace, fd_trace, refined, pair: str) -> list[Row]:
    """``trace`` against finite differences; gradients that fail or pass only on the floor are judged
    again against the Richardson-refined oracle (``refined()``: ``reference.fd_oracle.fd_refined``,
    computed at most once per scenario), and take that verdict where it is better."""
    compared = compare(trace, fd_trace, scenario.dtype, pair)
    doubtful = [row.address for row in compared if row.status in (FAIL, FLOOR) and row.address.endswith(".grad")]
    if not doubtful:
        return compared
    again = {row.address: row for row in compare(trace, refined(), scenario.dtype, pair, doubtful)}
    note = "fd refined by Richardson extrapolation (steps h and h/2)"
    judged = []
    for row in compared:
        better = again.get(row.address)
        if better is not None and _RANK.get(better.status, 2) < _RANK[row.status]:
            row = better._replace(note=f"{note}; {better.note}" if better.note else note)
        judged.append(row)
    return judged


def triage(rows: list[dict]) -> list[dict]:
    """``rows`` of one scenario with ``triage`` set on every failing row: which side is the
    odd one out at that address (``compare.TRIAGES``), read from the three pairs' statuses."""
    failing = {(r["pair"], r["address"]): r["status"] == FAIL for r in rows}
    for row in rows:
        row["triage"] = _odd_one_out(failing, row["address"]) if row["status"] == FAIL else ""
    return rows


def _odd_one_out(failing: dict, address: str) -> str:
    manual_torch, manual_fd, torch_fd = (failing.get((pair, address)) for pair in PAIRS)
    if manual_fd is None or torch_fd is None:
        return UNSETTLED
    # (manual-torch, manual-fd, torch-fd) failing -> the odd one out; manual-torch may pass on its finer
    # tolerance while one engine still misses finite differences: that engine is the odd one out.
    return {(True, True, False): MANUAL_ALONE, (False, True, False): MANUAL_ALONE,
            (True, False, True): TORCH_ALONE, (False, False, True): TORCH_ALONE, (False, True, True): ORACLE,
            (True, True, True): ALL_APART, (True, False, False): BELOW_FD}.get(
        (bool(manual_torch), manual_fd, torch_fd), ALL_APART)


def _rows(scenario: Scenario, pair: str, compared: list[Row]) -> list[dict]:
    return [{"scenario": scenario.name, "pair": pair, "dtype": scenario.dtype, "address": row.address,
             "max_abs": row.max_abs, "max_rel": row.max_rel, "tolerance": row.tolerance, "passed": row.passed,
             "note": row.note, "status": row.status, "worst_index": row.worst_index, "value": row.value,
             "reference_value": row.reference_value, "triage": ""} for row in compared]


def report_verification(scenario: Scenario) -> Verification:
    """``verify(scenario)``, with the trajectory judgement of ``step{t}`` addresses.

    When a manual-torch ``step{t}`` row fails, those rows are replaced by
    ``horizon.compare_trajectory``'s, judged on the traces ``verify`` already
    holds: steps after the precision horizon are ``not_judged``, with a note.
    """
    verified = verify(scenario)
    rows = verified.rows
    stepped = [r for r in rows if r["pair"] == "manual-torch" and step_of(r["address"])]
    if scenario.optimizer is None or all(r["passed"] for r in stepped):
        return verified
    judged, _horizon = compare_trajectory(scenario, verified.manual, verified.torch)
    kept = [r for r in rows if not (r["pair"] == "manual-torch" and step_of(r["address"]))]
    rows = triage(kept + _rows(scenario, "manual-torch", [row for row in judged if step_of(row.address)]))
    return dataclasses.replace(verified, rows=rows)


def report_rows(scenario: Scenario) -> list[dict]:
    """The rows of ``report_verification(scenario)``: the report's rows of one scenario."""
    return report_verification(scenario).rows
