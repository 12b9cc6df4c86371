"""Derivation claims (``[[claim]]``): a formula a book derives, checked against autograd.

```toml
[[claim]]
statement = "∂L/∂W² = δ³ (a²)ᵀ"      # free text, as the book writes it
at = "layers.2.weight.grad"          # the Trace address it claims to equal
formula = "delta[2].T @ a[1]"        # an expression over the scenario's quantities
draws = 12                           # also on 12 seeded random data sets (0: the file's data only)
```

The formula is parsed and checked by ``scenarios.formula`` when the file is
loaded, and evaluated here by ``simpleeval`` restricted to that language: the
quantities of ``quantities`` and the functions of ``FUNCTIONS``, every number a
float64, ``.T`` the only attribute, subscripts by literal integers only — and
with the guards that need values: no intermediate array of more than
``limits.elements`` entries (its shape is worked out before anything is
allocated), at most ``MAX_WORK`` entry-operations per evaluation, ``|p| ≤
MAX_EXPONENT`` in ``u ** p``.

Each claim is evaluated on the file's data (draw 0) and on ``draws`` random
data sets of the same shapes (draw d from ``default_rng([seed, 0xC1A1, d])``,
``seed`` the file's; see ``draw_data``), the network's parameters always the
file's. The claims of one file share their draws: draw d is the same data set
for every claim that asks for d draws or more, so the engines run once per data
set, not once per claim and data set. For every data set both engines run (float64, no optimizer), the formula
is evaluated on each engine's quantities, and each value compared with torch
autograd's value at ``at`` under the tolerance policy
(``reports.verification.tolerance``: normwise, max|v − g| ≤ rtol·max|g| plus the
absolute floor of the address's family, float64 manual-torch). ``holds`` when
every comparison passes; ``wrong`` otherwise, with the first draw that breaks
it. A formula whose value has another shape than ``at`` is ``wrong`` (the note
gives both shapes); one that cannot be evaluated is an invalid file
(``ScenarioError``, field ``claim[k].formula``).
"""
from __future__ import annotations

import ast
import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.array_utils import normalize_axis_tuple
from simpleeval import SimpleEval

from backprop_verify import manual
from backprop_verify.reports.textbook.escape import spreadsheet_cell, terminal_text
from backprop_verify.reports.verification.compare import family_scales
from backprop_verify.reports.verification.tolerance import absolute_floor, tolerance
from backprop_verify.scenarios import budget
from backprop_verify.scenarios.catalog import LOSSES
from backprop_verify.scenarios.formula import FAMILIES, FUNCTIONS, MAX_EXPONENT, FormulaError, family_index, parse_formula
from backprop_verify.scenarios.loader import DEFAULT_LIMITS, Limits, ScenarioError
from backprop_verify.scenarios.model import Claim, Scenario
from backprop_verify.scenarios.shapes import output_shape
from backprop_verify.scenarios.trace import Trace, parse_element

HOLDS, WRONG = "holds", "wrong"
COLUMNS = ("example", "statement", "at", "verdict", "worst_rel", "draws")
CLAIM_STREAM = 0xC1A1
MAX_WORK = 2**27  # entry-operations in one evaluation (the sum of every intermediate's size; × inner size for @)


# --------------------------------------------------------------------------- the evaluator

class _Evaluator(SimpleEval):
    """simpleeval with only the claim language: the nodes ``scenarios.formula`` accepts, NumPy float64
    arithmetic whose result shapes are checked before any array is allocated."""

    def __init__(self, names: dict, families: dict, element_limit: int, work_limit: int = MAX_WORK,
                 dry: bool = False):
        self.element_limit, self.work_limit, self.work = element_limit, work_limit, 0
        # dry: every guard runs and every shape is worked out, but each result is zeros of its shape that
        # allocate nothing — what ``validate_claims`` needs, at no cost beyond the formula's length.
        self.dry = dry
        operators = {
            ast.Add: self._binary(np.add, "+"), ast.Sub: self._binary(np.subtract, "-"),
            ast.Mult: self._binary(np.multiply, "*"), ast.Div: self._binary(np.true_divide, "/"),
            ast.Pow: self._power, ast.MatMult: self._matmul,
            ast.USub: self._unary(np.negative), ast.UAdd: self._unary(np.positive),
            **{op: self._comparison(fn, symbol) for op, fn, symbol in (
                (ast.Gt, np.greater, ">"), (ast.GtE, np.greater_equal, ">="), (ast.Lt, np.less, "<"),
                (ast.LtE, np.less_equal, "<="), (ast.Eq, np.equal, "=="), (ast.NotEq, np.not_equal, "!="))},
        }
        functions = {
            "exp": self._unary(np.exp), "log": self._unary(np.log), "tanh": self._unary(np.tanh),
            "sigmoid": self._unary(lambda u: 1.0 / (1.0 + np.exp(-u))), "sqrt": self._unary(np.sqrt),
            "abs": self._unary(np.abs), "sign": self._unary(np.sign), "softmax": self._softmax,
            "T": self._transpose, "outer": self._outer, "maximum": self._binary(np.maximum, "maximum"),
            "minimum": self._binary(np.minimum, "minimum"), "where": self._where, "sum": self._reduce(np.sum),
            "mean": self._reduce(np.mean),
        }
        assert set(functions) == set(FUNCTIONS)
        super().__init__(operators=operators, functions=functions, names=dict(names))
        self.families = families
        # Only the nodes of the claim language; everything else raises FeatureNotAvailable.
        self.nodes = {ast.Name: self._eval_name, ast.UnaryOp: self._eval_unaryop, ast.BinOp: self._eval_binop,
                      ast.Compare: self._eval_compare, ast.Call: self._eval_call,
                      ast.Subscript: self._eval_subscript, ast.Attribute: self._eval_attribute,
                      ast.Constant: self._eval_constant}

    # -- nodes
    @staticmethod
    def _eval_constant(node):
        if type(node.value) not in (int, float):
            raise FormulaError(f"{node.value!r} is not a number")
        return np.float64(node.value)

    def _eval_name(self, node):
        if node.id not in self.names:
            raise FormulaError(f"unknown name {node.id!r}")
        return self.names[node.id]

    def _eval_attribute(self, node):
        if node.attr != "T":
            raise FormulaError(f"attribute access (.{node.attr}) is not allowed; expected only .T")
        return self._transpose(self._eval(node.value))

    def _eval_subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in FAMILIES:
            members = self.families[node.value.id]
            layer = family_index(node.slice)
            if layer is None or not -len(members) <= layer < len(members) or members[layer] is None:
                raise FormulaError(f"{node.value.id}[{ast.unparse(node.slice)}] does not exist in this scenario")
            return members[layer]
        container = self._eval(node.value)
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        key = tuple(slice(*(None if b is None else family_index(b) for b in (p.lower, p.upper, p.step)))
                    if isinstance(p, ast.Slice) else family_index(p) for p in parts)
        if any(k is None for k in key):
            raise FormulaError("a subscript takes literal integers and slices")
        try:
            return np.asarray(container)[key]  # integers and slices only: a view, nothing allocated
        except (IndexError, ValueError) as err:
            raise FormulaError(f"{ast.unparse(node)}: {err} (the value has shape {np.shape(container)})") from None

    def _eval_call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in self.functions:
            raise FormulaError("only the listed functions can be called")
        keywords = {}
        for keyword in node.keywords:
            parts = keyword.value.elts if isinstance(keyword.value, ast.Tuple) else [keyword.value]
            axis = tuple(family_index(p) for p in parts)
            if keyword.arg != "axis" or any(a is None for a in axis):
                raise FormulaError(f"{node.func.id}: only axis=<literal integer(s)> is allowed")
            keywords["axis"] = axis if isinstance(keyword.value, ast.Tuple) else axis[0]
        return self.functions[node.func.id](*(self._eval(arg) for arg in node.args), **keywords)

    # -- guards
    def _produce(self, shape: tuple[int, ...], what: str, work: int | None = None) -> None:
        """Refuse a result of ``shape`` above the element limit, or past the work budget, before it exists."""
        size = math.prod(shape)
        if size > self.element_limit:
            raise FormulaError(f"{what} would have shape {shape}: {size:,} entries; expected at most "
                               f"{self.element_limit:,} (limit elements)")
        self.work += size if work is None else work
        if self.work > self.work_limit:
            raise FormulaError(f"needs more than {self.work_limit:,} operations on array entries; expected a "
                               "smaller computation")

    def _broadcast(self, what: str, *values) -> tuple[int, ...]:
        shapes = [np.shape(v) for v in values]
        try:
            shape = np.broadcast_shapes(*shapes)
        except ValueError:
            raise FormulaError(f"{what}: cannot combine shapes {' and '.join(map(str, shapes))} (NumPy broadcasting)") \
                from None
        self._produce(shape, what)
        return shape

    @staticmethod
    def _zeros(shape: tuple[int, ...]) -> np.ndarray:
        """A dry evaluation's result of an array shape: zeros that allocate nothing (zero strides). Numbers
        (0-d) are computed even when dry: exponents and their guard depend on them, and they cost nothing."""
        return np.broadcast_to(np.float64(0.0), shape)

    def _binary(self, function, symbol: str):
        def apply(u, v):
            shape = self._broadcast(symbol, u, v)
            if self.dry and shape:
                return self._zeros(shape)
            with np.errstate(all="ignore"):
                return function(u, v)
        return apply

    def _comparison(self, function, symbol: str):
        def apply(u, v):
            shape = self._broadcast(symbol, u, v)
            if self.dry and shape:
                return self._zeros(shape)
            return np.asarray(function(u, v), dtype=np.float64)  # 1.0 / 0.0
        return apply

    def _unary(self, function):
        def apply(u):
            self._produce(np.shape(u), "the result")
            if self.dry and np.shape(u):
                return self._zeros(np.shape(u))
            with np.errstate(all="ignore"):
                return np.asarray(function(np.asarray(u, dtype=np.float64)), dtype=np.float64)
        return apply

    def _power(self, base, exponent):
        exponent_array = np.asarray(exponent, dtype=np.float64)
        largest = float(np.max(np.abs(exponent_array))) if exponent_array.size else 0.0
        if not largest <= MAX_EXPONENT:
            raise FormulaError(f"** with an exponent of magnitude {largest:g}; expected |p| <= {MAX_EXPONENT}")
        return self._binary(np.power, "**")(np.asarray(base, dtype=np.float64), exponent_array)

    def _matmul(self, u, v):
        su, sv = np.shape(u), np.shape(v)
        if not su or not sv:
            raise FormulaError(f"@ needs arrays on both sides, got shapes {su} and {sv}; use * with a number")
        left = (1,) + su if len(su) == 1 else su
        right = sv + (1,) if len(sv) == 1 else sv
        if left[-1] != right[-2]:
            raise FormulaError(f"@: shapes {su} and {sv} do not match ({left[-1]} ≠ {right[-2]}); "
                               "expected (…, m, k) @ (…, k, p)")
        try:
            batch = np.broadcast_shapes(left[:-2], right[:-2])
        except ValueError:
            raise FormulaError(f"@: the leading dimensions of {su} and {sv} cannot be combined") from None
        shape = batch + left[-2:-1] * (len(su) > 1) + right[-1:] * (len(sv) > 1)
        self._produce(shape, "@", work=math.prod(shape) * left[-1])
        if self.dry and shape:
            return self._zeros(shape)
        return np.matmul(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))

    def _outer(self, u, v):
        shape = (int(np.size(u)), int(np.size(v)))
        self._produce(shape, "outer")
        return self._zeros(shape) if self.dry else np.outer(u, v)  # never 0-d

    def _where(self, condition, u, v):
        shape = self._broadcast("where", condition, u, v)
        if self.dry and shape:
            return self._zeros(shape)
        return np.where(np.asarray(condition) != 0, u, v)

    def _transpose(self, u):
        return np.transpose(np.asarray(u))  # a view

    def _softmax(self, u):
        u = np.asarray(u, dtype=np.float64)
        if u.ndim == 0:
            raise FormulaError("softmax needs an array (it normalises over the last axis)")
        self._produce(u.shape, "softmax", work=3 * u.size)
        if self.dry:
            return self._zeros(u.shape)
        with np.errstate(all="ignore"):
            e = np.exp(u - np.max(u, axis=-1, keepdims=True))
            return e / np.sum(e, axis=-1, keepdims=True)

    def _reduce(self, function):
        def apply(u, axis=None):
            self._produce((), function.__name__, work=int(np.size(u)))
            try:
                if self.dry:  # the reduced shape alone: the axes checked and dropped
                    shape = np.shape(u)
                    dropped = normalize_axis_tuple(range(len(shape)) if axis is None else axis, len(shape))
                    return self._zeros(tuple(n for k, n in enumerate(shape) if k not in dropped))
                return np.asarray(function(np.asarray(u, dtype=np.float64), axis=axis))
            except (ValueError, IndexError) as err:  # numpy's AxisError is both
                raise FormulaError(f"{function.__name__}(…, axis={axis}): {err} (shape {np.shape(u)})") from None
        return apply


def evaluate(formula: str, names: dict, families: dict, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """The formula's value over ``names`` (x, y, t, n) and ``families`` (W, b, z, a, delta: lists by layer,
    None where a layer has none). Raises ``FormulaError`` when it cannot be evaluated."""
    return evaluate_with_work(formula, names, families, limits)[0]


def evaluate_with_work(formula: str, names: dict, families: dict, limits: Limits = DEFAULT_LIMITS,
                       dry: bool = False) -> tuple[np.ndarray, int]:
    """``evaluate``'s value, and the entry-operations it takes (``MAX_WORK`` bounds them). ``dry``: every
    shape and guard checked, the arithmetic left out (the value is zeros of the right shape)."""
    tree = parse_formula(formula, len(families["z"]))
    evaluator = _Evaluator(names, families, limits.elements, dry=dry)
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(evaluator.eval(formula, previously_parsed=tree.body), dtype=np.float64)
            return value, evaluator.work
    except FormulaError:
        raise
    except RecursionError:
        raise FormulaError("is nested too deeply to evaluate") from None
    except MemoryError:
        raise FormulaError("needs more memory than is available") from None
    except Exception as err:  # simpleeval's own refusals, NumPy's errors: the formula cannot be evaluated here
        raise FormulaError(f"cannot be evaluated: {type(err).__name__}: {err}") from None
    finally:
        # The tables hold closures over the evaluator: break the cycle so that it is freed now, not by a
        # garbage collection pass over everything torch allocated.
        evaluator.operators = evaluator.functions = evaluator.nodes = evaluator.names = evaluator.families = None


def quantities(scenario: Scenario, trace: Trace) -> tuple[dict, dict]:
    """(names, families) of the claim language, read from one engine's Trace of ``scenario``."""
    count = len(scenario.layers)
    get = lambda address: trace.get(address)  # noqa: E731
    outputs = [get(f"layers.{i}.output") for i in range(count)]
    families = {
        "W": [get(f"layers.{i}.weight") for i in range(count)],
        "b": [get(f"layers.{i}.bias") for i in range(count)],
        "z": outputs, "a": outputs,
        "delta": [get(f"layers.{i}.output.grad") for i in range(count)],
    }
    x, y = np.asarray(scenario.x, np.float64), np.asarray(scenario.y, np.float64)
    return {"x": x, "y": y, "t": y, "n": np.float64(x.shape[0])}, families


def _proxies(scenario: Scenario) -> tuple[dict, dict]:
    """Quantities of the right shapes, all zeros, that allocate nothing (zero strides): for checking a
    formula against the scenario's shapes without running an engine."""
    zeros = lambda shape: np.broadcast_to(np.float64(0.0), shape)  # noqa: E731
    shapes, shape = [], scenario.x.shape
    for layer in scenario.layers:
        shape = output_shape(layer, shape)
        shapes.append(shape)
    outputs = [zeros(s) for s in shapes]
    families = {
        "W": [None if l.weight is None else zeros(l.weight.shape) for l in scenario.layers],
        "b": [None if l.bias is None else zeros(l.bias.shape) for l in scenario.layers],
        "z": outputs, "a": outputs, "delta": outputs,
    }
    y = zeros(scenario.y.shape)
    return {"x": zeros(scenario.x.shape), "y": y, "t": y, "n": np.float64(scenario.x.shape[0])}, families


def _file(scenario: Scenario) -> str:
    return os.path.basename(scenario.path) if scenario.path else scenario.name


def validate_claims(scenario: Scenario, limits: Limits = DEFAULT_LIMITS) -> None:
    """Evaluate every claim's formula on zero arrays of the scenario's shapes (no engine runs): a formula
    that cannot be evaluated here — shapes that do not combine, an intermediate above the limit, an
    exponent out of bounds — is a ``ScenarioError`` naming the file and ``claim[k].formula``."""
    if not scenario.claims:
        return
    names, families = _proxies(scenario)
    formula_work = 0
    for k, claim in enumerate(scenario.claims):
        try:
            work = evaluate_with_work(claim.formula, names, families, limits, dry=True)[1]
        except FormulaError as err:
            raise ScenarioError(_file(scenario), f"claim[{k}].formula", str(err)) from None
        formula_work += 2 * (claim.draws + 1) * work  # on both engines' quantities, at every draw
    # The whole run within the limit ``work``: the loader's estimate (engines, steps, draws) and the formulas.
    shapes = [z.shape for z in families["z"]]
    cost = budget.estimate(scenario.layers, shapes, scenario.x.shape, scenario.optimizer,
                           max(claim.draws for claim in scenario.claims))
    cost = dataclasses.replace(cost, work=cost.work + formula_work,
                               work_part=max(cost.work_part, ("claim", "evaluating the claims' formulas at every draw",
                                                              formula_work), key=lambda part: part[2]))
    refusal = budget.over_budget(cost, limits.memory, limits.work)
    if refusal is not None:
        raise ScenarioError(_file(scenario), *refusal)


# --------------------------------------------------------------------------- draws

def _in_unit_interval(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.all((values >= 0) & (values <= 1)))


def draw_data(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random (x, y) of the file's shapes, drawn like the file's data:

    x: token ids uniform over the vocabulary for an embedding; U[0, 1) when every entry of the file's x is
    in [0, 1] (pixels, probabilities); N(0, 1) otherwise.
    y, by the loss's ``target_domain`` (``scenarios.catalog.LOSSES``): for a "distribution"
    (cross_entropy, softmax_cross_entropy), one-hot rows when the file's rows are one-hot, random
    distributions (rows summing to 1) when its rows sum to 1, U[0, 1) otherwise; for "unit" (bce,
    bce_with_logits), 0/1 targets when the file's are 0/1, U[0, 1) otherwise; for "any" (mse) U[0, 1)
    when every target is in [0, 1], N(0, 1) otherwise.
    """
    x0, y0 = np.asarray(scenario.x, np.float64), np.asarray(scenario.y, np.float64)
    first = scenario.layers[0]
    if first.type == "embedding":
        x = rng.integers(0, first.params["num_embeddings"], size=x0.shape).astype(np.float64)
    elif _in_unit_interval(x0):
        x = rng.random(x0.shape)
    else:
        x = rng.standard_normal(x0.shape)
    domain = LOSSES[scenario.loss.type].target_domain
    binary = bool(np.all((y0 == 0) | (y0 == 1)))
    if domain == "distribution":
        if binary and np.all(y0.sum(axis=-1) == 1):
            classes = rng.integers(0, y0.shape[-1], size=y0.shape[:-1])
            y = (np.arange(y0.shape[-1]) == classes[..., None]).astype(np.float64)
        elif np.all(y0 >= 0) and np.allclose(y0.sum(axis=-1), 1.0):
            y = rng.random(y0.shape) + 1e-3
            y /= y.sum(axis=-1, keepdims=True)
        else:
            y = rng.random(y0.shape)
    elif domain == "unit":
        y = rng.integers(0, 2, size=y0.shape).astype(np.float64) if binary else rng.random(y0.shape)
    else:
        y = rng.random(y0.shape) if _in_unit_interval(y0) else rng.standard_normal(y0.shape)
    return x, y


def data_set(scenario: Scenario, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``draw``'s (x, y): the file's data for 0, else ``draw_data`` from ``default_rng([seed, 0xC1A1, draw])``."""
    if draw == 0:
        return scenario.x, scenario.y
    return draw_data(scenario, np.random.default_rng([scenario.seed, CLAIM_STREAM, draw]))


# --------------------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class ClaimResult:
    example: str
    statement: str
    at: str
    formula: str
    verdict: str
    worst_rel: float        # the worst max|formula − autograd| / max|autograd| over every draw and both engines
    draws: int              # random data sets besides the file's
    broken_at: int | None = None  # the first draw where it does not hold (0: the file's data)
    note: str = ""

    def row(self) -> dict:
        return {"example": self.example, "statement": self.statement, "at": self.at, "verdict": self.verdict,
                "worst_rel": self.worst_rel, "draws": self.draws}


def _judge(value: np.ndarray, truth: np.ndarray, address: str, scales: tuple[float, float]) -> tuple[bool, float, str]:
    """(holds, max|v − g| / max|g|, note) under the float64 manual-torch tolerance and the floor of the
    address's family (as ``reports.verification.compare`` judges an address)."""
    truth = np.asarray(truth, np.float64)
    if value.shape != truth.shape:
        return False, math.inf, f"the formula gives shape {value.shape}, {address} has shape {truth.shape}"
    if not np.all(np.isfinite(value)):
        return False, math.inf, "the formula gives non-finite values"
    if not truth.size:
        return True, 0.0, ""
    grad_scale, output_scale = scales
    scale = grad_scale if address.endswith(".grad") else output_scale if address.endswith(".output") else 0.0
    difference = float(np.max(np.abs(value - truth)))
    largest = float(np.max(np.abs(truth)))
    rtol = tolerance("float64", "manual-torch")
    bound = rtol * largest + absolute_floor("float64", "manual-torch") * scale
    relative = difference / largest if largest else (0.0 if difference == 0 else math.inf)
    return difference <= bound, relative, ""


def check_claims(scenario: Scenario, limits: Limits = DEFAULT_LIMITS,
                 first: tuple[Trace, Trace] | None = None, each: bool = False) -> list:
    """Every claim of ``scenario`` judged (see the module docstring): ``ClaimResult``s. Raises
    ``ScenarioError`` for a formula that cannot be evaluated — with ``each``, a formula refused on the
    data (an evaluation guard the load-time check's zero arrays do not trip) is that claim's result
    instead, and the others are judged on the same engine runs; a claim refused before any run
    (``validate_claims``) still raises.

    ``first``: the (manual, torch) float64 traces of ``scenario`` itself, already computed (``check``'s
    ``errata.check_example``): draw 0 reuses them when they are the same computation — a float64
    scenario without an optimizer — instead of running both engines on it again."""
    if not scenario.claims:
        return []
    validate_claims(scenario, limits)
    base = scenario if scenario.dtype == "float64" else scenario.astype("float64")
    base = dataclasses.replace(base, optimizer=None, expects=(), claims=())
    cache: dict[int, tuple[Scenario, Trace, Trace]] = {}
    if first is not None and scenario.dtype == "float64" and scenario.optimizer is None:
        cache[0] = (base, *first)

    def traces(draw: int):
        if draw not in cache:
            x, y = data_set(scenario, draw)
            data = dataclasses.replace(base, x=np.asarray(x, np.float64), y=np.asarray(y, np.float64))
            from backprop_verify import reference  # torch: only when a claim is judged, not when validated

            cache[draw] = (data, manual.run(data), reference.run(data))
        return cache[draw]

    judged = []
    for k, claim in enumerate(scenario.claims):
        try:
            judged.append(_check_claim(scenario, k, claim, traces, limits))
        except ScenarioError as refused:
            if not each:
                raise
            judged.append(refused)
    return judged


def _check_claim(scenario: Scenario, k: int, claim: Claim, traces, limits: Limits) -> ClaimResult:
    address, index = parse_element(claim.at)
    worst, broken_at, note = 0.0, None, ""
    for draw in range(claim.draws + 1):
        data, manual_trace, reference_trace = traces(draw)
        truth = reference_trace[address] if index is None else reference_trace[address][index]
        scales = family_scales(reference_trace)
        for side, trace in (("torch", reference_trace), ("NumPy", manual_trace)):
            names, families = quantities(data, trace)
            try:
                value = evaluate(claim.formula, names, families, limits)
            except FormulaError as err:
                raise ScenarioError(_file(scenario), f"claim[{k}].formula",
                                    f"{err} (on {'the file' if draw == 0 else f'draw {draw}'}'s data)") from None
            holds, relative, why = _judge(value, truth, claim.at, scales)
            worst = max(worst, relative)
            if not holds and broken_at is None:
                broken_at = draw
                note = why or (f"max|formula − autograd| / max|autograd| = {relative:.3g}"
                               + (" (on the NumPy engine's quantities only)" if side == "NumPy" else ""))
            if why:  # a shape or non-finite value: no later draw says more
                break
        if broken_at is not None and note.startswith("the formula gives"):
            break
    return ClaimResult(example=scenario.name, statement=claim.statement, at=claim.at, formula=claim.formula,
                       verdict=HOLDS if broken_at is None else WRONG, worst_rel=worst, draws=claim.draws,
                       broken_at=broken_at, note=note)


# --------------------------------------------------------------------------- output

def csv_text(results: list[ClaimResult]) -> str:
    """claims.csv: one row per claim, columns ``example,statement,at,verdict,worst_rel,draws``."""
    frame = pd.DataFrame([r.row() for r in results], columns=list(COLUMNS))
    for column in ("example", "statement", "at"):  # text from the file: one line, never a spreadsheet formula
        frame[column] = [spreadsheet_cell(terminal_text(str(text))) for text in frame[column]]
    return frame.to_csv(index=False, float_format="%.3e", lineterminator="\n")


WORST_HEADER = "worst_rel (all draws)"


def first_breaking_draw(result: ClaimResult) -> str:
    """``first breaking draw k (…): why`` — the draw the verdict ``wrong`` comes from, with that
    draw's own discrepancy (``worst_rel`` is the worst over all draws, which can be another)."""
    where = " (the file's data)" if result.broken_at == 0 else ""
    return f"first breaking draw {result.broken_at}{where}: {result.note}"


def claims_text(results: list[ClaimResult]) -> str:
    """The claims of one example as an indented table (statement, at, verdict, worst_rel over all
    draws), and the first breaking draw under each wrong one."""
    headers = ("statement", "at", "verdict", WORST_HEADER)
    cells = [(terminal_text(r.statement), terminal_text(r.at), r.verdict, f"{r.worst_rel:.2e}") for r in results]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    line = lambda values: "  " + "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    lines = [line(headers), line(["-" * w for w in widths])]
    for r, c in zip(results, cells):
        lines.append(line(c))
        if r.verdict == WRONG:
            lines.append(f"      {first_breaking_draw(r)}; formula {terminal_text(r.formula)}")
    return "\n".join(lines)

