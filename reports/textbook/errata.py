"""Textbook verdicts: is the number a document printed the number backpropagation gives?

Every ``[[expect]]`` of a worked example (``at``, ``printed``) and every named
check below becomes one row::

    example, at, printed, decimals, manual, reference, verdict

``manual`` and ``reference`` are the value computed by the NumPy engine and by
PyTorch autograd, always in float64 (a float32 file is checked in float64: the
question is what the mathematics gives, not what float32 gives).

Verdicts
--------
The two engines must first agree under the one tolerance policy
(``reports.verification.tolerance``, pair manual-torch, normwise over the address). If they
do not, the verdict is ``disagree``: no printed number is judged against a
value the engines do not agree on, and nothing is averaged. Otherwise, with v
the reference value and p the printed number with d decimals:

``match``      v rounded to d decimals (half away from zero) equals p
``rounding``   |v − p| ≤ one unit of the last printed digit (10⁻ᵈ): the
               drift a document gets by computing from rounded intermediates
``erratum``    anything else

Beyond float64's resolution (``resolution``): a printed number whose last digit
is finer than what the engines' float64 values resolve — 10⁻ᵈ < R, with R the
larger of one ulp of v (``math.ulp``: the spacing of float64 there) and the
distance between the two engines' values — is judged at R instead of 10⁻ᵈ
(its further digits say nothing float64 could confirm or refute: the float64
value printed with 18 decimals, 0.564952702088217900 for 0.56495270208821791,
is that value):

``match``      p, read as a float64 (rounded to nearest), is an engine's value
               or lies between the two: every digit float64 has agrees
``rounding``   p is within R of the engines' values (a neighbouring float: the
               rounding of another order of float64 operations)
``erratum``    anything else — a wrong digit that float64 resolves

Why one ulp, and not the 17 significant digits every float64 round-trips
through: 17 digits identify a float, but the 17th is not resolved (the ulp spans
1.1 to 22 units of it, so 0.56495270208821790 and …791 are the same float64);
and why not a fixed "few ulps": the two correct engines already differ by up to
10 ulps on the worked examples (``example-rnn_two_steps``'s loss), while a
wrong 16th digit near 1 is only 4.5 ulps away. The engines' own spread is the
measure of what their float64 arithmetic resolves, and one ulp its least. A
row judged so says it in its note. Counts (``exact``) are never judged so: they
are exact integers, equality or an erratum.

How printed strings are read (``scenarios.loader.printed_number``):

* ``≈`` (or ``~``) before the number is accepted and kept in the ``printed``
  column, and does not change the verdict: every printed number is taken to
  stand for its value rounded to the digits shown, whether or not the text
  wrote ≈ (a document writing "= 0.27" and one writing "≈ 0.27" are held to
  the same two decimals).
* An integer such as ``"25"`` or ``"-10"`` has 0 decimals: it matches when v
  rounds to it, is a rounding within ±1, an erratum beyond.
* Counts are exact: ``parameter_count`` and ``updates_per_epoch`` have no
  rounded intermediates, so anything but equality is an ``erratum`` (13,001
  printed for a network with 13,002 parameters is an off-by-one, not a
  rounding). A named check may be marked exact the same way.
* Thousands separators (``"13,001"``) and the minus sign ``−`` are accepted.

Named checks
------------
Some printed numbers are not at any Trace address: a product inside a sum
(0.7 · 0.567 = 0.397), e^{z} inside the softmax, σ' = a(1 − a), the maximum
of σ'. ``NAMED_CHECKS`` holds them: each has the example it belongs to, the
printed string, the formula (as text) and two functions computing it, one for
each engine's side — from that engine's Trace where the quantity comes from
the network, or independently (NumPy vs torch autograd) where it is pure
mathematics. They go through the same agreement test and the same verdicts,
and are reported with their example (``at = "check.<name>"``) whenever that
example is checked.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from decimal import (MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, DivisionByZero, InvalidOperation,
                     Overflow, localcontext)
from typing import Callable

import numpy as np
import pandas as pd
import torch

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reference.fd_oracle import fd_applicable, fd_oracle
from backprop_verify.reference.torch_engine import optimizer_step, without_compiler
from backprop_verify.reports.verification.compare import compare
from backprop_verify.reports.verification.tolerance import tolerance
from backprop_verify.scenarios.builtin import worked_examples
from backprop_verify.scenarios.loader import printed_number
from backprop_verify.scenarios.model import Expectation, Scenario
from backprop_verify.scenarios.trace import Trace, parse_element

MATCH, ROUNDING, ERRATUM, DISAGREE = "match", "rounding", "erratum", "disagree"
PASSING = (MATCH, ROUNDING)
COLUMNS = ("example", "at", "printed", "decimals", "manual", "reference", "verdict")

# Quantities that are counts: no rounding, equality or erratum.
EXACT_QUANTITIES = ("parameter_count", "updates_per_epoch")

def verdict(value: float, printed: str, exact: bool = False, other: float | None = None) -> str:
    """``match``, ``rounding`` or ``erratum`` for ``value`` (torch's) against the ``printed`` string.

    ``other`` is the other engine's value (NumPy's), when there is one: a
    printed number finer than float64 resolves is judged against both
    (``resolution``). The arithmetic is exact whatever the magnitudes and the
    number of printed decimals (``_exact_context``): a float's binary value,
    the printed decimal and their difference are compared digit for digit,
    never rounded to the 28 digits of Python's default decimal context.
    """
    number, decimals = _parsed(printed)
    if not math.isfinite(value):
        return ERRATUM
    if not exact:
        finest = resolution(value, printed, other)
        if finest is not None:
            return _verdict_at_resolution(value, number, finest, other)
    exact_value = Decimal(value)  # the float's exact binary value
    with localcontext(_exact_context(exact_value, number, decimals=decimals)):
        unit = Decimal(1).scaleb(-decimals)
        if exact_value.quantize(unit, rounding=ROUND_HALF_UP) == number:
            return MATCH
        if exact:
            return ERRATUM
        return ROUNDING if abs(exact_value - number) <= unit else ERRATUM


def resolution(value: float, printed: str, other: float | None = None) -> float | None:
    """The float64 resolution R the ``printed`` number is judged at, or None when float64 resolves
    every printed digit (then it is judged at its own last digit, 10⁻ᵈ).

    R is the larger of one ulp of ``value`` (and of ``other``) — the spacing of float64 there,
    the finest difference a float64 result can show — and |value − other|, what the two engines'
    float64 arithmetic leaves undetermined; the printed number is beyond it when 10⁻ᵈ < R.
    """
    _, decimals = _parsed(printed)
    values = [v for v in (value, other) if v is not None and math.isfinite(v)]
    if not values:
        return None
    finest = max([math.ulp(v) for v in values] + [max(values) - min(values)])
    return finest if Decimal(1).scaleb(-decimals) < Decimal(finest) else None


def _verdict_at_resolution(value: float, number: Decimal, finest: float, other: float | None) -> str:
    """The verdict of a printed number finer than float64 resolves (``resolution``): ``match`` when
    it reads as a float64 (rounded to nearest) between the engines' values, both included;
    ``rounding`` within ``finest`` of them; ``erratum`` beyond."""
    values = [value] + ([other] if other is not None and math.isfinite(other) else [])
    low, high = min(values), max(values)
    if low <= float(number) <= high:  # float(Decimal) rounds correctly, to nearest
        return MATCH
    low_exact, high_exact, reach = Decimal(low), Decimal(high), Decimal(finest)
    with localcontext(_exact_context(low_exact, high_exact, reach, number)):
        return ROUNDING if low_exact - reach <= number <= high_exact + reach else ERRATUM


def _parsed(printed: str) -> tuple[Decimal, int]:
    parsed = printed_number(printed)
    if parsed is None:
        raise ValueError(f"not a printed number: {printed!r}")
    return parsed[0], parsed[1]


def _exact_context(*numbers: Decimal, decimals: int = 0) -> Context:
    """A decimal context in which quantizing any of ``numbers`` to ``decimals`` places and adding or
    subtracting them are exact: enough digits for the highest digit of any (plus carries) down to
    the lowest of any or of the unit 10⁻ᵈ, and exponents without practical bound. (A float has at
    most 1,074 decimals and 309 integer digits, so at most ~1,400 digits plus the printed ones:
    microseconds.)"""
    top = max([n.adjusted() for n in numbers if n] + [0]) + 2
    bottom = min([n.as_tuple().exponent for n in numbers] + [-decimals, 0])
    return Context(prec=top - bottom + 2, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN,
                   traps=[InvalidOperation, DivisionByZero, Overflow])


def decimals_of(printed: str) -> int:
    return _parsed(printed)[1]


def values_agree(manual_value: float, reference_value: float, steps: int = 0) -> bool:
    """Two scalars agree under the float64 manual-torch tolerance (relative to the larger)."""
    if not (math.isfinite(manual_value) and math.isfinite(reference_value)):
        return manual_value == reference_value
    scale = max(abs(manual_value), abs(reference_value))
    return abs(manual_value - reference_value) <= tolerance("float64", "manual-torch", steps) * scale


# --------------------------------------------------------------------------- named checks


@dataclass(frozen=True)
class NamedCheck:
    """A printed number that is no Trace address, with the formula that gives it.

    ``manual(trace, scenario)`` is evaluated on the manual engine's Trace,
    ``reference(trace, scenario)`` (default: the same function) on torch's.
    """

    name: str
    example: str
    printed: str
    formula: str
    manual: Callable[[Trace, Scenario], float]
    reference: Callable[[Trace, Scenario], float] | None = None
    note: str = ""
    exact: bool = False

    @property
    def at(self) -> str:
        return f"check.{self.name}"


def _sigmoid_derivative_max_numpy(trace: Trace, scenario: Scenario) -> float:
    z = np.linspace(-10.0, 10.0, 20001)
    a = 1.0 / (1.0 + np.exp(-z))
    return float(np.max(a * (1.0 - a)))


def _sigmoid_derivative_max_torch(trace: Trace, scenario: Scenario) -> float:
    z = torch.linspace(-10.0, 10.0, 20001, dtype=torch.float64, requires_grad=True)
    torch.sigmoid(z).sum().backward()  # each z_i only affects σ(z_i): the grad is σ'(z_i)
    return float(z.grad.max())


def _quadratic_minimiser_numpy(trace: Trace, scenario: Scenario) -> float:
    # f(w) = w² + 2w + 1; f'(w) = 2w + 2 = 0
    return float(np.roots(np.polyder([1.0, 2.0, 1.0]))[0])


def _quadratic_minimiser_torch(trace: Trace, scenario: Scenario) -> float:
    w = torch.tensor(-6.0, dtype=torch.float64, requires_grad=True)
    with without_compiler():  # torch.optim without importing TorchDynamo (2.5 s of a report's start-up)
        optimizer = torch.optim.SGD([w], lr=0.1)
        for _ in range(200):  # contraction 0.8 per step: 5·0.8²⁰⁰ ≈ 2e-19, far below one ulp of 1
            optimizer.zero_grad()
            (w**2 + 2 * w + 1).backward()
            optimizer_step(optimizer)
    return float(w.detach())


_S004 = "seed004-two_layer_sigmoid_softmax"
_S003_LEARN = "seed003-learning_guesses"
_S003_GD = "seed003-gradient_descent_quadratic"
_S003_VANISH = "seed003-vanishing_gradient_sigmoid"


def _x(r: int, c: int) -> Callable[[Trace, Scenario], float]:
    return lambda trace, scenario: float(scenario.x[r, c])


def _product(weight: str, index: tuple[int, int], other: Callable[[Trace, Scenario], float]):
    return lambda trace, scenario: float(trace[weight][index]) * other(trace, scenario)


def _trace(address: str) -> Callable[[Trace, Scenario], float]:
    return lambda trace, scenario: trace.element(address)


def _y_minus_output(unit: int, absolute: bool = False):
    def value(trace: Trace, scenario: Scenario) -> float:
        difference = float(scenario.y[0, unit]) - trace.element(f"layers.0.output[0,{unit}]")
        return abs(difference) if absolute else difference

    return value


NAMED_CHECKS: tuple[NamedCheck, ...] = (
    # document 004: the products inside each sum, e^z, the σ' factors, the two terms of ∂L/∂a²₁
    NamedCheck("w1_11_x1", _S004, "0.05", "w¹₁₁·x₁", _product("layers.0.weight", (0, 0), _x(0, 0)),
               note="0.1 · 0.5 in z²₁"),
    NamedCheck("w1_12_x2", _S004, "0.12", "w¹₁₂·x₂", _product("layers.0.weight", (0, 1), _x(0, 1)),
               note="0.2 · 0.6 in z²₁"),
    NamedCheck("w1_21_x1", _S004, "0.15", "w¹₂₁·x₁", _product("layers.0.weight", (1, 0), _x(0, 0)),
               note="0.3 · 0.5 in z²₂"),
    NamedCheck("w1_22_x2", _S004, "0.24", "w¹₂₂·x₂", _product("layers.0.weight", (1, 1), _x(0, 1)),
               note="0.4 · 0.6 in z²₂"),
    NamedCheck("w2_11_a2_1", _S004, "0.397", "w²₁₁·a²₁", _product("layers.2.weight", (0, 0), _trace("layers.1.output[0,0]")),
               note="0.7 · 0.567 in z³₁"),
    NamedCheck("w2_12_a2_2", _S004, "0.515", "w²₁₂·a²₂", _product("layers.2.weight", (0, 1), _trace("layers.1.output[0,1]")),
               note="0.8 · 0.644 in z³₁"),
    NamedCheck("w2_21_a2_1", _S004, "0.51", "w²₂₁·a²₁", _product("layers.2.weight", (1, 0), _trace("layers.1.output[0,0]")),
               note="0.9 · 0.567 in z³₂"),
    NamedCheck("w2_22_a2_2", _S004, "0.644", "w²₂₂·a²₂", _product("layers.2.weight", (1, 1), _trace("layers.1.output[0,1]")),
               note="1 · 0.644 in z³₂: the document carries a²₂ ≈ 0.644, but σ(0.59) = 0.6434"),
    NamedCheck("exp_z3_1", _S004, "2.75", "e^{z³₁}", lambda t, s: math.exp(t.element("layers.2.output[0,0]")),
               note="e^{1.012} in the softmax"),
    NamedCheck("exp_z3_2", _S004, "3.87", "e^{z³₂}", lambda t, s: math.exp(t.element("layers.2.output[0,1]")),
               note="e^{1.354} in the softmax"),
    NamedCheck("delta3_1_w2_11", _S004, "-0.41", "(a³₁ − t₁)·w²₁₁",
               _product("layers.2.weight", (0, 0), _trace("layers.2.output.grad[0,0]")),
               note="first term of ∂L/∂a²₁: (0.415 − 1) · 0.7"),
    NamedCheck("delta3_2_w2_21", _S004, "0.526", "(a³₂ − t₂)·w²₂₁",
               _product("layers.2.weight", (1, 0), _trace("layers.2.output.grad[0,1]")),
               note="second term of ∂L/∂a²₁: (0.585 − 0) · 0.9"),
    NamedCheck("sigmoid_prime_z2_1", _S004, "0.246", "∂a²₁/∂z²₁ = a²₁(1 − a²₁)",
               lambda t, s: (lambda a: a * (1 - a))(t.element("layers.1.output[0,0]")),
               note="0.567 · (1 − 0.567) = 0.245511 rounds to 0.246, but from the unrounded a²₁ σ'(0.27) = 0.245499 rounds to 0.245"),
    NamedCheck("sigmoid_prime_z2_2", _S004, "0.229", "∂a²₂/∂z²₂ = a²₂(1 − a²₂)",
               lambda t, s: (lambda a: a * (1 - a))(t.element("layers.1.output[0,1]")),
               note="the σ' factor of ∂L/∂w¹₂₁ and ∂L/∂w¹₂₂"),
    # document 003, "何為「學習」": the distance y − ŷ and the loss |y − ŷ| for W = 0.5, 3, 2
    NamedCheck("y_minus_yhat_W0.5", _S003_LEARN, "3.5", "y − ŷ (W = 0.5)", _y_minus_output(0), note="5 − 1.5"),
    NamedCheck("y_minus_yhat_W3", _S003_LEARN, "-1.5", "y − ŷ (W = 3)", _y_minus_output(1), note="5 − 6.5"),
    NamedCheck("y_minus_yhat_W2", _S003_LEARN, "0.5", "y − ŷ (W = 2)", _y_minus_output(2), note="5 − 4.5"),
    NamedCheck("abs_loss_W0.5", _S003_LEARN, "3.5", "|y − ŷ| (W = 0.5)", _y_minus_output(0, True),
               note="the loss |y − ŷ| between ŷ = 1.5 and y = 5"),
    NamedCheck("abs_loss_W3", _S003_LEARN, "1.5", "|y − ŷ| (W = 3)", _y_minus_output(1, True),
               note="the loss |y − ŷ| between ŷ = 6.5 and y = 5"),
    NamedCheck("abs_loss_W2", _S003_LEARN, "0.5", "|y − ŷ| (W = 2)", _y_minus_output(2, True),
               note="the loss |y − ŷ| between ŷ = 4.5 and y = 5"),
    # document 003, gradient: the minimiser of f(w) = w² + 2w + 1
    NamedCheck("quadratic_minimiser", _S003_GD, "-1", "argmin_w w² + 2w + 1",
               _quadratic_minimiser_numpy, _quadratic_minimiser_torch,
               note="f'(w) = 2(w + 1) = 0; NumPy solves it, torch.optim.SGD converges to it"),
    # document 003, vanishing gradient: the maximum of σ'
    NamedCheck("sigmoid_derivative_max", _S003_VANISH, "0.25", "max_z σ'(z), z ∈ [−10, 10]",
               _sigmoid_derivative_max_numpy, _sigmoid_derivative_max_torch,
               note="the 0.25 marked on the plot of σ': σ(z)(1 − σ(z)) in NumPy, autograd in torch"),
)


def named_checks_for(example: str) -> tuple[NamedCheck, ...]:
    return tuple(c for c in NAMED_CHECKS if c.example == example)


# --------------------------------------------------------------------------- rows


def _scenario_quantity(name: str, trace: Trace, scenario: Scenario) -> float:
    """A scenario quantity as seen by one engine's Trace."""
    if name == "parameter_count":
        # every parameter array the engine recorded at the initial parameters
        return float(sum(np.asarray(v).size for k, v in trace.items()
                         if re.fullmatch(r"layers\.[0-9]+\.(weight|bias)", k)))
    if name == "updates_per_epoch":
        optimizer = scenario.optimizer
        if optimizer is None or optimizer.epochs is None:
            return float(scenario.updates_per_epoch)
        updates = sum(1 for k in trace if re.fullmatch(r"step[0-9]+\.loss", k))
        return updates / optimizer.epochs
    raise KeyError(name)


def _row(example: str, at: str, printed: str, manual_value: float, reference_value: float,
         agreed: bool, exact: bool, note: str) -> dict:
    """One verdict. Besides the CSV's ``COLUMNS``: ``note``; ``resolution``, the float64 resolution
    the printed number was judged at (``resolution``; the note then says why), None when it was
    judged at its own last digit; ``exact``, whether it is a count judged by equality."""
    finest = resolution(reference_value, printed, manual_value) if agreed and not exact else None
    if finest is not None:
        note = _joined(note, resolution_note(printed, reference_value, manual_value, finest))
    return {
        "example": example, "at": at, "printed": printed, "decimals": decimals_of(printed),
        "manual": manual_value, "reference": reference_value,
        "verdict": verdict(reference_value, printed, exact, manual_value) if agreed else DISAGREE,
        "note": note, "resolution": finest, "exact": exact,
    }


def resolution_note(printed: str, reference_value: float, manual_value: float, finest: float) -> str:
    """Why a printed number was judged at float64's resolution, for the row's note."""
    decimals = decimals_of(printed)
    ulp = math.ulp(reference_value)
    spread = abs(reference_value - manual_value)
    if spread > ulp:
        measure = f"the engines' values differ by {spread:.2g} = {spread / ulp:.3g} ulps"
        reads = "a float64 between the engines' values"
    else:
        measure, reads = f"1 ulp = {finest:.2g}", "the engines' float64 value"
    return (f"[{decimals} decimals printed, finer than float64 resolves here ({measure}): judged at "
            f"±{finest:.2g} — match if the printed number reads as {reads}]")


def _joined(note: str, addition: str) -> str:
    return f"{note} {addition}" if note else addition


def expectation_row(example: str, expect: Expectation, scenario: Scenario,
                    manual_trace: Trace, reference_trace: Trace) -> dict:
    address, _ = parse_element(expect.at)
    if address in EXACT_QUANTITIES:
        m = _scenario_quantity(address, manual_trace, scenario)
        r = _scenario_quantity(address, reference_trace, scenario)
        return _row(example, expect.at, expect.printed, m, r, m == r, True, expect.note)
    (compared,) = compare(manual_trace, reference_trace, "float64", "manual-torch", addresses=[address])
    try:
        m = manual_trace.element(expect.at)
        r = reference_trace.element(expect.at)
    except KeyError as err:
        return _row(example, expect.at, expect.printed, math.nan, math.nan, False, False, f"{expect.note} ({err})")
    return _row(example, expect.at, expect.printed, m, r, compared.passed, False, expect.note)


def check_row(check: NamedCheck, scenario: Scenario, manual_trace: Trace, reference_trace: Trace) -> dict:
    m = float(check.manual(manual_trace, scenario))
    r = float((check.reference or check.manual)(reference_trace, scenario))
    return _row(check.example, check.at, check.printed, m, r, values_agree(m, r), check.exact,
                f"{check.formula}: {check.note}" if check.note else check.formula)


@dataclass(frozen=True)
class ExampleCheck:
    """A worked example judged: its rows and the float64 traces they were judged on (each engine run once)."""
    scenario: Scenario           # in float64
    rows: list[dict]
    manual: Trace
    reference: Trace


def check_example(scenario: Scenario) -> ExampleCheck:
    """One row per expectation of ``scenario`` and per named check of its example, in file order, with
    the traces: whoever reports on the example afterwards (``check``'s failure lines) reuses them."""
    if scenario.dtype != "float64":
        scenario = scenario.astype("float64")
    manual_trace = manual.run(scenario)
    reference_trace = reference.run(scenario)
    rows = [expectation_row(scenario.name, e, scenario, manual_trace, reference_trace) for e in scenario.expects]
    rows += [check_row(c, scenario, manual_trace, reference_trace) for c in named_checks_for(scenario.name)]
    _referee(scenario, rows, manual_trace, reference_trace)
    return ExampleCheck(scenario, rows, manual_trace, reference_trace)


def check_scenario(scenario: Scenario) -> list[dict]:
    """The rows of ``check_example(scenario)``."""
    return check_example(scenario).rows


def _referee(scenario: Scenario, rows: list[dict], manual_trace: Trace, reference_trace: Trace) -> None:
    """Where the engines disagree, say which side finite differences take (in the row's note)."""
    disputed = [r for r in rows if r["verdict"] == DISAGREE and not r["at"].startswith("check.")]
    if not disputed or not fd_applicable(scenario):
        return
    fd_trace = fd_oracle(scenario)
    for row in disputed:
        address, _ = parse_element(row["at"])
        if address not in fd_trace:
            continue
        sides = [name for name, trace in (("manual", manual_trace), ("torch", reference_trace))
                 if compare(trace, fd_trace, "float64", f"{name}-fd",
                            addresses=[address])[0].passed]
        verdict_of_fd = f"finite differences side with {' and '.join(sides)}" if sides else \
            "finite differences agree with neither engine"
        row["note"] = _joined(row["note"], f"[{verdict_of_fd}]")


def errata_table() -> pd.DataFrame:
    """Every printed number of the built-in worked examples with its verdict.
    Deterministic, so computed once per process; each caller gets a copy."""
    return _errata_table().copy()


@functools.lru_cache(maxsize=1)
def _errata_table() -> pd.DataFrame:
    rows = [row for scenario in worked_examples() for row in check_scenario(scenario)]
    return pd.DataFrame(rows, columns=list(COLUMNS))
