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

``verify(scenario, engine=engine)`` verifies a user's engine (``manual.protocol``)
in manual's place: the rows are the same in structure, their pairs
``engine-torch`` and ``engine-fd`` (and ``torch-fd``), judged by the tolerances
of the hand-written engine it stands in for; the Verification names the
engine. ``conformance(engine, scenarios)`` runs a scenario set through an
engine and names the scenario families that fail.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field

import numpy as np

from backprop_verify import manual
from backprop_verify import reference

from backprop_verify.reference.fd_oracle import fd_applicable, fd_oracle, fd_refined
from backprop_verify.reference.torch_engine import has_torch_reference
from backprop_verify.reports.verification import cancellation, conditioning
from backprop_verify.reports.verification.compare import (ALL_APART, BELOW_FD, FAIL, FLOOR, MANUAL_ALONE, NOT_JUDGED,
                                                          ORACLE, PASS, TORCH_ALONE, UNSETTLED, Row, compare, step_of)
from backprop_verify.reports.verification.tolerance import PAIRS
from backprop_verify.reports.verification.horizon import compare_trajectory, no_torch_reference_row
from backprop_verify.scenarios import builtin
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.trace import Trace

# The pairs of a user's engine: its side is ``engine``, whatever the engine's name.
ENGINE_PAIRS = ("engine-torch", "engine-fd", "torch-fd")
# The engine under test stands in for the hand-written one: its rows are judged by manual's tolerances
# (``tolerance.PAIRS``), which depend on the dtype and the step only.
_TOLERANCE_PAIR = {"engine-torch": "manual-torch", "engine-fd": "manual-fd", "torch-fd": "torch-fd"}


@dataclass(frozen=True)
class Verification:
    """One scenario verified: its rows (dicts with ``compare.COLUMNS``) and the traces they were computed
    from — each engine run once. ``manual`` is the trace of the engine under test — the hand-written one,
    or the user's engine named by ``engine`` (its rows' pairs are then ``engine-torch`` / ``engine-fd``).
    ``fd`` is None where the finite-difference oracle does not apply (or was not asked for)."""
    scenario: Scenario
    rows: list[dict]
    manual: Trace
    torch: Trace
    fd: Trace | None = None
    engine: str = "manual"
    pairs: tuple[str, str, str] = PAIRS  # ``ENGINE_PAIRS`` for a user's engine

    def trace(self, engine: str) -> Trace | None:
        """The trace of ``engine``: ``manual`` (or ``engine``: the engine under test), ``torch`` or ``fd`` (the
        sides of a pair such as ``manual-fd``, ``engine-torch``)."""
        return {"manual": self.manual, "engine": self.manual, "torch": self.torch, "fd": self.fd}[engine]

    def failures(self, with_fd: bool = True) -> list[dict]:
        """The failing rows of the engine under test: against torch, and against finite differences with
        ``with_fd`` (``torch-fd`` rows judge the oracle, not the engine)."""
        tested = self.pairs[:2] if with_fd else self.pairs[:1]
        return [row for row in self.rows if row["pair"] in tested and row["status"] == FAIL]


def is_manual(engine) -> bool:
    """Whether ``engine`` is the hand-written engine (None: the default)."""
    return engine is None or engine is manual.MANUAL


def verify(scenario: Scenario, with_fd: bool = True, engine=None) -> Verification:
    """Rows for manual-torch and, where applicable, the fd pairs, with the traces behind them. With
    ``engine`` (a ``manual.protocol.Engine`` other than ``manual.MANUAL``), the engine under test is that
    one and the pairs are ``engine-torch`` / ``engine-fd``."""
    pairs = PAIRS if is_manual(engine) else ENGINE_PAIRS
    tested, with_fd_pair, _torch_fd = pairs
    manual_trace = manual.run(scenario) if is_manual(engine) else manual.run(scenario, engine)
    torch_trace = reference.run(scenario)
    compared = compare(manual_trace, torch_trace, scenario.dtype, _TOLERANCE_PAIR.get(tested, tested))
    if any(row.status == FAIL for row in compared):
        floors = cancellation.term_floors(scenario, manual_trace, torch_trace)
        compared = cancellation.rejudge(compared, manual_trace, torch_trace, floors)
        compared = conditioning.rejudge(scenario, compared, torch_trace)
        # once more: a sum whose terms the conditioning floor has just passed may now trust them
        compared = cancellation.rejudge(compared, manual_trace, torch_trace, floors)
    rows = _rows(scenario, tested, compared)
    if scenario.optimizer is not None and not has_torch_reference(scenario.optimizer.type):
        rows += _rows(scenario, tested, [no_torch_reference_row(scenario.optimizer.type)])
    fd_trace = None
    if with_fd and fd_applicable(scenario):
        fd_trace = fd_oracle(scenario)
        refined = functools.cache(lambda: fd_refined(scenario, fd_trace))
        for pair, trace in ((with_fd_pair, manual_trace), ("torch-fd", torch_trace)):
            rows += _rows(scenario, pair, _against_fd(scenario, trace, fd_trace, refined,
                                                      _TOLERANCE_PAIR.get(pair, pair)))
    name = "manual" if is_manual(engine) else engine.name
    return Verification(scenario, triage(rows, pairs), manual_trace, torch_trace, fd_trace, name, pairs)


_RANK = {PASS: 0, FLOOR: 1, FAIL: 2}


def _against_fd(scenario: Scenario, trace, fd_trace, refined, pair: str) -> list[Row]:
    """``trace`` against finite differences; gradients that fail or pass only on the floor are judged
    again against the Richardson-refined oracle (``refined()``: ``reference.fd_oracle.fd_refined``,
    computed at most once per scenario), and take that verdict where it is better."""
    compared = compare(trace, fd_trace, scenario.dtype, pair)
    doubtful = [row.address for row in compared if row.status in (FAIL, FLOOR) and row.address.endswith(".grad")]
    if not doubtful:
        return compared
    finer = refined()
    again = {row.address: row for row in compare(trace, finer, scenario.dtype, pair, doubtful)}
    note = "fd refined by Richardson extrapolation (steps h and h/2)"
    judged = []
    for row in compared:
        better = again.get(row.address)
        if better is not None and _RANK.get(better.status, 2) < _RANK[row.status]:
            row = better._replace(note=f"{note}; {better.note}" if better.note else note)
        if row.status == FAIL and better is not None and better.status == FAIL:
            row = _beyond_resolution(row, better, fd_trace, finer)
        judged.append(row)
    return judged


def _beyond_resolution(row: Row, refined_row: Row, fd_trace, finer) -> Row:
    """A gradient that fails against both estimates of the oracle, by less than those two estimates differ
    from each other: finite differences cannot tell it apart (their round-off, ε·|terms of L|/h, grows where
    the loss cancels large terms, as a softmax of large logits does). The row is ``not_judged``, saying by how
    much; the manual-torch row still judges the engines at their own tolerance. A disagreement wider than
    the oracle's own spread still fails."""
    coarse, fine = fd_trace.get(row.address), finer.get(row.address)
    if coarse is None or fine is None or coarse.shape != fine.shape or not coarse.size:
        return row
    spread = float(np.nanmax(np.abs(np.asarray(coarse, np.float64) - np.asarray(fine, np.float64))))
    closer = min((row, refined_row), key=lambda each: each.max_abs)  # against the estimate nearer to it
    if not closer.max_abs <= spread:
        return row
    return closer._replace(status=NOT_JUDGED, note=(
        f"below the oracle's resolution: max|a − fd| = {closer.max_abs:.2e} within the {spread:.2e} by "
        "which its two estimates (step h, refined with h/2) differ"))


def triage(rows: list[dict], pairs: tuple[str, str, str] = PAIRS) -> list[dict]:
    """``rows`` of one scenario with ``triage`` set on every failing row: which side is the
    odd one out at that address (``compare.TRIAGES``), read from the three pairs' statuses
    (``pairs``: ``PAIRS``, or ``ENGINE_PAIRS`` — a user's engine is then the triage's "manual")."""
    failing = {(r["pair"], r["address"]): r["status"] == FAIL for r in rows}
    for row in rows:
        row["triage"] = _odd_one_out(failing, row["address"], pairs) if row["status"] == FAIL else ""
    return rows


def _odd_one_out(failing: dict, address: str, pairs: tuple[str, str, str] = PAIRS) -> str:
    manual_torch, manual_fd, torch_fd = (failing.get((pair, address)) for pair in pairs)
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


def report_verification(scenario: Scenario, engine=None) -> Verification:
    """``verify(scenario, engine=engine)``, with the trajectory judgement of ``step{t}`` addresses.

    When a manual-torch (``engine-torch``) ``step{t}`` row fails, those rows are replaced by
    ``horizon.compare_trajectory``'s, judged on the traces ``verify`` already
    holds: steps after the precision horizon are ``not_judged``, with a note.
    """
    verified = verify(scenario, engine=engine)
    rows = verified.rows
    tested = verified.pairs[0]
    stepped = [r for r in rows if r["pair"] == tested and step_of(r["address"])]
    if scenario.optimizer is None or all(r["passed"] for r in stepped):
        return verified
    judged, _horizon = compare_trajectory(scenario, verified.manual, verified.torch)
    kept = [r for r in rows if not (r["pair"] == tested and step_of(r["address"]))]
    rows = triage(kept + _rows(scenario, tested, [row for row in judged if step_of(row.address)]), verified.pairs)
    return dataclasses.replace(verified, rows=rows)


def report_rows(scenario: Scenario, engine=None) -> list[dict]:
    """The rows of ``report_verification(scenario, engine)``: the report's rows of one scenario."""
    return report_verification(scenario, engine).rows


# --------------------------------------------------------------------------- a user's engine, whole

def engine_scenarios(engine, random_count: int | None = None, seed: int | None = None,
                     conv_count: int | None = None, recurrent_count: int | None = None,
                     transformer_count: int | None = None, only: str | None = None
                     ) -> tuple[list[Scenario], list[tuple[str, str]]]:
    """The report's scenario set for ``engine`` (``scenarios.builtin.report_scenarios``, the default
    counts where None), split by ``manual.applicable``: (the scenarios to run, (name, reason) of every
    scenario the engine does not support). The random families draw only from the components the engine
    supports (``scenarios.generator``'s ``allowed``); a family whose skeleton the engine lacks is drawn as
    usual and listed not applicable, scenario by scenario, never dropped."""
    given = {"random_count": random_count, "seed": seed, "conv_count": conv_count, "recurrent_count": recurrent_count,
             "transformer_count": transformer_count}  # None: report_scenarios' defaults
    scenarios = builtin.report_scenarios(only=only, allowed=engine.supported_names(),
                                         **{key: value for key, value in given.items() if value is not None})
    return manual.applicable(scenarios, engine)


# A scenario's family: the name up to what varies within it (``layer-conv2d-stride2-pad1-f64`` → ``layer-conv2d``,
# ``random-conv-s17-…`` → ``random-conv``, ``trajectory-adam-…`` → ``trajectory-adam``).
_FAMILY = re.compile(r"^(?:(random-(?:conv|recurrent|transformer))-s[0-9]+|(random)-s[0-9]+"
                     r"|((?:layer|activation|loss|trajectory)-[a-z0-9_]+))")


def scenario_family(name: str) -> str:
    """The family of scenario ``name`` (``_FAMILY``); any other name without its dtype suffix."""
    m = _FAMILY.match(name)
    if m:
        return next(group for group in m.groups() if group)
    return re.sub(r"-f(?:32|64)$", "", name)


@dataclass(frozen=True)
class Conformance:
    """A scenario set run through an engine: ``verified`` scenarios, ``failed`` {scenario: its failing
    addresses (the engine's pairs), or what the engine raised on it}, ``not_applicable`` (name, reason)."""
    engine: str
    verified: int
    failed: dict[str, list[str]] = field(default_factory=dict)
    not_applicable: list[tuple[str, str]] = field(default_factory=list)

    def families(self) -> dict[str, list[str]]:
        """{family: its failing scenarios}, families in the order they first fail."""
        grouped: dict[str, list[str]] = {}
        for name in self.failed:
            grouped.setdefault(scenario_family(name), []).append(name)
        return grouped

    def summary(self) -> str:
        """A few lines: how many scenarios failed, by family (each with its first failing scenario and address),
        and how many were not applicable."""
        lines = [f"engine {self.engine!r}: {len(self.failed)} of {self.verified} scenarios fail"
                 f"{', ' + str(len(self.not_applicable)) + ' not applicable' if self.not_applicable else ''}"]
        for family, names in self.families().items():
            first = self.failed[names[0]][0]
            where = f", which {first}" if first.startswith("raised ") else f" at {first}"
            lines.append(f"  {family}: {len(names)} failing, e.g. {names[0]}{where}")
        return "\n".join(lines)


def conformance(engine, scenarios, with_fd: bool = False) -> Conformance:
    """Every scenario ``engine`` supports verified (``verify(s, with_fd, engine)``); the rest listed as not
    applicable with the reason. An engine that raises on a scenario fails it, the exception named in place
    of an address: one crash does not hide the other scenarios' verdicts."""
    run, not_applicable = manual.applicable(scenarios, engine)
    failed = {}
    for scenario in run:
        try:
            verified = verify(scenario, with_fd=with_fd, engine=engine)
        except Exception as err:  # noqa: BLE001 — the user's engine crashed on this scenario: its verdict
            failed[scenario.name] = [f"raised {type(err).__name__}: {err}"]
            continue
        addresses = [row["address"] for row in verified.failures()]
        if addresses:
            failed[scenario.name] = addresses
    return Conformance(engine.name, len(run), failed, not_applicable)
