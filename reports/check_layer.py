"""check_layer: a NumPy layer of your own against PyTorch autograd and finite differences.

For the student who wrote ``conv_backward_naive`` and wants to know whether it
is right — and, if not, which element is wrong and by how much::

    from backprop_verify.reports.check_layer import check_layer

    def test_my_conv():
        check_layer(Conv1dNaive(3, 4, 3), torch.nn.functional.conv1d, inputs=[(2, 3, 8)])

The layer
---------
``layer.forward(*arrays)`` returns one array; ``layer.backward(grad_out)``
returns the gradient of each input (one array for one input, a tuple in the
order of forward's arguments for several). A layer with parameters has a
mapping ``layer.params`` (name → array) that forward and backward read at call
time (``self.params["weight"]``), and after backward a mapping ``layer.grads``
(name → ∂L/∂param). check_layer puts its own copies of the parameters into
``layer.params`` (in each dtype it checks, and perturbed for finite
differences) and puts the originals back when it returns.

The reference
-------------
``torch_fn(*inputs, **params)``: the same forward in torch, called with the
inputs as tensors (in forward's order) and every parameter as a keyword
tensor of the same name — ``torch.nn.functional.conv1d(x, weight=…, bias=…)``
is one when the parameters are called ``weight`` and ``bias``. Every tensor
requires grad; autograd gives the reference gradients.

What runs
---------
For each draw — the given arrays (if ``inputs`` holds arrays), ``draws``
seeded random draws (standard normal, or ``sample(rng, shape)``) and
``kinks`` seeded draws at non-differentiable points (integer-valued inputs in
−2…2: exact zeros and ties; then inputs with a third exact zeros and a third
repeated values) — with a seeded random upstream gradient g (the loss is
L = Σ forward(x)·g):

``layer-torch``  forward output, every input gradient and every parameter
                 gradient against torch_fn under autograd, in float64 and in
                 each other dtype asked for;
``layer-fd``     the gradients against central finite differences of the
                 layer's own forward (float64, ``reference.fd_oracle.fd_gradient``);
``torch-fd``     torch's gradients against the same finite differences.

Finite differences settle disputes: where the layer and torch disagree on a
gradient, the row says which side they take — ``torch`` (the backward is
wrong), ``layer`` (the backward matches the layer's forward: the forward, or
torch_fn, is what differs). At kinks the derivative does not exist and finite
differences mean nothing there: kink draws are judged against torch only
(PyTorch's conventions at every edge: relu'(0) = 0, ties of max go to the
first element, …).

Every comparison is ``reports.verification.compare.compare`` on two
``scenarios.trace.Trace`` objects — the judgement, tolerance policy
(``reports.verification.tolerance``: normwise, keyed by dtype and pair, with
the absolute floor scaled by max|g| for gradients and max|output| for the
output) and worst element of the rest of the suite.

The answer
----------
A ``LayerCheck`` (a list of ``LayerRow``) when every row passes; otherwise an
``AssertionError`` whose message is the table of failing rows — per draw,
dtype, pair and quantity: max_abs, max_rel (normwise), the tolerance, the
worst element's index (``[i,j]``) and both values there. A layer that breaks
its contract (a gradient of the wrong shape, a missing ``grads`` entry, an
output of another shape than torch_fn's) also fails with an
``AssertionError`` saying so; a call that cannot start (no ``backward``, bad
``inputs``) raises ``TypeError`` / ``ValueError``; an exception raised inside
forward, backward or torch_fn propagates with a note saying where and on what.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from backprop_verify.reference.fd_oracle import FD_MAX_ENTRIES, fd_gradient
from backprop_verify.reports.verification.compare import FAIL, Row, compare
from backprop_verify.reports.verification.tolerance import RTOL
from backprop_verify.scenarios.trace import Trace

__all__ = ["check_layer", "LayerCheck", "LayerRow", "DEFAULT_DRAWS", "DEFAULT_KINKS"]

DEFAULT_DRAWS = 3
DEFAULT_KINKS = 2

# The policy's pair names: the layer under test plays the hand-written engine.
_POLICY_PAIR = {"layer-torch": "manual-torch", "layer-fd": "manual-fd", "torch-fd": "torch-fd"}

_OUTPUT = "layers.0.output"          # the trace address of forward's output (its floor scales with max|output|)
_UPSTREAM = "layers.0.output.grad"   # g = ∂L/∂output (every gradient's floor scales with max|g|)
_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
_MAX_TABLE_ROWS = 40


class LayerRow(NamedTuple):
    """One quantity compared on one draw: ``compare.Row``'s judgement with where it was made.

    ``quantity`` is ``output``, ``{input}.grad`` or ``{param}.grad``; ``value`` is
    the first side of ``pair`` at ``worst_index``, ``reference_value`` the second.
    ``fd_sides`` (layer-torch gradient rows that fail, where finite differences
    ran): ``torch``, ``layer``, ``both`` or ``neither``.
    """

    draw: str
    dtype: str
    pair: str
    quantity: str
    status: str
    max_abs: float
    max_rel: float
    tolerance: float
    worst_index: str
    value: float
    reference_value: float
    note: str = ""
    fd_sides: str = ""

    @property
    def passed(self) -> bool:
        return self.status != FAIL


class LayerCheck(list):
    """Every ``LayerRow`` of one ``check_layer`` call, with what was run."""

    def __init__(self, rows, layer: str, seed: int, dtypes: tuple[str, ...], draws: list[str], notes: list[str]):
        super().__init__(rows)
        self.layer, self.seed, self.dtypes, self.draws, self.notes = layer, seed, dtypes, draws, notes

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self)

    @property
    def failures(self) -> list[LayerRow]:
        return [row for row in self if not row.passed]

    def table(self, rows: Sequence[LayerRow] | None = None) -> str:
        """A plain-text table of ``rows`` (default: every row)."""
        return _table(list(self) if rows is None else list(rows))

    def message(self) -> str:
        """The header, the failing rows and what finite differences say: the AssertionError's text."""
        failures = self._grouped(self.failures)
        failed_draws = sorted({row.draw for row in failures}, key=self.draws.index)
        lines = [f"check_layer: {self.layer} fails {len(failures)} of {len(self)} comparisons "
                 f"on {len(failed_draws)} of {len(self.draws)} draws (seed {self.seed}; "
                 f"dtypes {', '.join(self.dtypes)}; draws {', '.join(self.draws)})", ""]
        shown = failures[:_MAX_TABLE_ROWS]
        lines.append(_table(shown))
        if len(failures) > len(shown):
            lines.append(f"… and {len(failures) - len(shown)} more failing rows (the returned rows: raises=False)")
        lines += [""] + _verdicts(failures) + self.notes
        lines.append("max_rel is normwise, max|a − b| / max|b|; value is the first side of the pair at the worst "
                     "element, reference the second (tolerance policy: reports/verification/tolerance.py).")
        return "\n".join(lines)

    def _grouped(self, rows: list[LayerRow]) -> list[LayerRow]:
        """By quantity (forward's output, the inputs, the parameters), then draw, pair and dtype."""
        quantities = list(dict.fromkeys(row.quantity for row in self))
        pairs = list(_POLICY_PAIR)
        return sorted(rows, key=lambda row: (quantities.index(row.quantity), self.draws.index(row.draw),
                                             pairs.index(row.pair), self.dtypes.index(row.dtype)))

    def __str__(self) -> str:
        if not self.passed:
            return self.message()
        return (f"check_layer: {self.layer} passes {len(self)} comparisons (seed {self.seed}; "
                f"dtypes {', '.join(self.dtypes)}; draws {', '.join(self.draws)})")


def check_layer(layer, torch_fn: Callable, inputs, dtype: str | Sequence[str] = "float64",
                params: Mapping[str, np.ndarray] | None = None, seed: int = 0, draws: int = DEFAULT_DRAWS,
                kinks: int = DEFAULT_KINKS, fd: bool = True,
                sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None,
                raises: bool = True) -> LayerCheck:
    """Check ``layer``'s forward and backward against ``torch_fn`` and finite differences.

    layer     an object with ``forward(*arrays)``, ``backward(grad_out)`` and, with
              parameters, ``params`` / ``grads`` mappings (module docstring)
    torch_fn  ``torch_fn(*inputs, **params)``: the same forward in torch
    inputs    the inputs, in forward's order: a list of shapes (``[(4, 3)]``) or of
              arrays (checked as given, then on random draws of their shapes); a
              dict name → shape or array names them in the table (default names:
              ``input`` for one, ``input0``, ``input1``, … for several)
    dtype     ``"float64"``; ``"float32"`` checks float32 against torch in float32
              and float64 (where finite differences apply); a tuple of dtypes checks
              exactly those (finite differences only run with float64 among them)
    params    parameter values to use (name → array; default: ``layer.params``)
    seed      every random thing (inputs, upstream gradients) derives from it
    draws     number of seeded random draws of the inputs
    kinks     number of seeded draws at kinks (exact zeros, ties), judged against torch only
    fd        run finite differences (float64, non-kink draws, at most
              ``reference.fd_oracle.FD_MAX_ENTRIES`` entries)
    sample    ``sample(rng, shape)`` draws one random input (default: standard normal)
    raises    raise ``AssertionError`` with the table when a row fails (else return the rows)
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the table, not this function's source
    name = type(layer).__name__
    _require_methods(layer, name)
    if not callable(torch_fn):
        raise TypeError(f"check_layer: torch_fn must be callable, torch_fn(*inputs, **params); got {torch_fn!r}")
    dtypes = _dtypes(dtype)
    names, given = _inputs(inputs)
    values, originals = _parameters_of(layer, name, params)
    parameter_names = list(values)
    clash = set(names) & set(parameter_names)
    if clash:
        raise ValueError(f"check_layer: {sorted(clash)} name both an input and a parameter; give the input another "
                         "name: inputs={'x': (4, 3)}")
    for count, what in ((draws, "draws"), (kinks, "kinks")):
        if not (isinstance(count, int) and count >= 0):
            raise ValueError(f"check_layer: {what} must be an integer >= 0, got {count!r}")
    sample = sample or (lambda rng, shape: rng.standard_normal(shape))

    plan = _draw_plan(names, given, seed, draws, kinks, sample)
    if not plan:
        raise ValueError("check_layer: nothing to check: draws=0, kinks=0 and no input arrays given")
    entries = sum(a.size for a in plan[0][1]) + sum(v.size for v in values.values())
    notes = []
    run_fd = fd and "float64" in dtypes
    if fd and "float64" not in dtypes:
        notes.append("Finite differences were not run: they are computed in float64, which the dtypes leave out.")
    elif run_fd and entries > FD_MAX_ENTRIES:
        run_fd = False
        notes.append(f"Finite differences were not run: {entries} entries to perturb, more than "
                     f"reference.fd_oracle.FD_MAX_ENTRIES = {FD_MAX_ENTRIES}; shrink the shapes to have them.")

    rows: list[LayerRow] = []
    try:
        if values:
            _require_parameters_read(layer, name, values, plan[0][1])
        for draw, arrays, kink, rng in plan:
            upstream = None
            traces = {}
            for run_dtype in dtypes:
                where = f"draw {draw}, {run_dtype}"
                output = _forward(layer, name, arrays, values, run_dtype, where)
                if upstream is None:  # one upstream gradient per draw, the same in every dtype
                    upstream = rng.standard_normal(output.shape)
                mine = _layer_trace(layer, name, names, arrays, values, output, upstream, run_dtype, where)
                theirs = _torch_trace(torch_fn, names, arrays, values, output.shape, upstream, run_dtype, where)
                traces[run_dtype] = (mine, theirs)
                addresses = [_OUTPUT] + _gradient_addresses(names, parameter_names)
                rows += _rows(draw, run_dtype, "layer-torch", compare(mine, theirs, run_dtype,
                                                                       "manual-torch", addresses))
            if run_fd and not kink:
                mine, theirs = traces["float64"]
                differences = _fd_trace(layer, names, arrays, values, upstream)
                addresses = _gradient_addresses(names, parameter_names)
                rows += _rows(draw, "float64", "layer-fd", compare(mine, differences, "float64", "manual-fd",
                                                                    addresses))
                rows += _rows(draw, "float64", "torch-fd", compare(theirs, differences, "float64", "torch-fd",
                                                                    addresses))
    finally:
        _restore(layer, originals)
    result = LayerCheck(_with_fd_sides(rows), name, seed, dtypes, [p[0] for p in plan], notes)
    if raises and not result.passed:
        raise AssertionError(result.message())
    return result


# --- the call's arguments --------------------------------------------------------------------------------------

def _require_methods(layer, name: str) -> None:
    for method, signature in (("forward", "forward(*arrays) returning the output"),
                              ("backward", "backward(grad_out) returning the input gradients")):
        if not callable(getattr(layer, method, None)):
            raise TypeError(f"check_layer: {name} has no {method} method; a layer needs {signature} "
                            "(and, with parameters, params / grads mappings)")


def _dtypes(dtype) -> tuple[str, ...]:
    if isinstance(dtype, str):
        dtypes = ("float64",) if dtype == "float64" else ("float64", dtype)
    else:
        dtypes = tuple(dtype)
    for one in dtypes:
        if one not in RTOL:
            raise ValueError(f"check_layer: unknown dtype {one!r}; expected one of {tuple(RTOL)}")
    if not dtypes:
        raise ValueError("check_layer: no dtype to check in")
    return tuple(dict.fromkeys(dtypes))


def _inputs(inputs) -> tuple[list[str], list[np.ndarray | tuple[int, ...]]]:
    """(names, shape or float64 array for each input)."""
    if isinstance(inputs, Mapping):
        names, specs = list(inputs), list(inputs.values())
        bad = [key for key in names if not (isinstance(key, str) and key.isidentifier())]
        if bad:
            raise ValueError(f"check_layer: input names must be identifiers, got {bad}")
    elif isinstance(inputs, (list, tuple)):
        specs = list(inputs)
        if specs and all(isinstance(s, (int, np.integer)) for s in specs):
            raise TypeError(f"check_layer: inputs is a list of shapes, one per input of forward: "
                            f"inputs=[{tuple(specs)}], not inputs={inputs!r}")
        names = ["input"] if len(specs) == 1 else [f"input{k}" for k in range(len(specs))]
    else:
        raise TypeError(f"check_layer: inputs must be a list of shapes or arrays (or a dict name → shape), "
                        f"got {type(inputs).__name__}")
    if not specs:
        raise ValueError("check_layer: forward needs at least one input: inputs=[(4, 3)]")
    given = []
    for key, spec in zip(names, specs):
        if isinstance(spec, tuple) and all(isinstance(n, (int, np.integer)) and n >= 0 for n in spec):
            given.append(tuple(int(n) for n in spec))
        elif isinstance(spec, (np.ndarray, torch.Tensor, list)):
            array = np.array(spec.detach() if isinstance(spec, torch.Tensor) else spec, dtype=np.float64)
            given.append(array)
        else:
            raise TypeError(f"check_layer: input {key!r}: expected a shape (a tuple of non-negative integers) or an "
                            f"array, got {spec!r}")
    return names, given


def _parameters_of(layer, name: str, params) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """(the float64 values to check, the layer's original ``params`` entries to put back)."""
    own = getattr(layer, "params", None)
    if own is None:
        if params:
            raise TypeError(f"check_layer: params given, but {name} has no params mapping for forward to read "
                            "them from")
        return {}, {}
    if not isinstance(own, MutableMapping):
        raise TypeError(f"check_layer: {name}.params must be a dict name → array (forward reads its parameters "
                        f"from it), got {type(own).__name__}")
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"check_layer: params must be a mapping name → array, got {type(params).__name__}")
    chosen = dict(own if params is None else params)
    bad = [key for key in chosen if not (isinstance(key, str) and key.isidentifier())]
    if bad:
        raise ValueError(f"check_layer: parameter names must be identifiers (torch_fn receives them as keywords), "
                         f"got {bad}")
    values = {}
    for key, value in chosen.items():
        try:
            values[key] = np.array(value, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as error:
            raise TypeError(f"check_layer: parameter {key!r} is not an array of numbers: {error}") from None
    originals = {key: own.get(key, _MISSING) for key in values}
    return values, originals


_MISSING = object()


def _restore(layer, originals: dict[str, object]) -> None:
    for key, value in originals.items():
        if value is _MISSING:
            layer.params.pop(key, None)
        else:
            layer.params[key] = value


# --- the draws ---------------------------------------------------------------------------------------------------

def _draw_plan(names, given, seed, draws, kinks, sample):
    """[(draw name, float64 arrays, at kinks?, the draw's generator for its upstream gradient)]."""
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"check_layer: seed must be an integer >= 0, got {seed!r}")
    shapes = [spec.shape if isinstance(spec, np.ndarray) else spec for spec in given]

    def drawn(rng, shape, key):
        value = np.array(sample(rng, shape), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"check_layer: sample(rng, {shape}) returned shape {value.shape} for input {key!r}")
        return value

    plan = []
    if any(isinstance(spec, np.ndarray) for spec in given):
        rng = np.random.default_rng([int(seed), 0, 0])
        arrays = [spec if isinstance(spec, np.ndarray) else drawn(rng, spec, key) for key, spec in zip(names, given)]
        plan.append(("given", arrays, False, rng))
    for index in range(draws):
        rng = np.random.default_rng([int(seed), 1, index])
        plan.append((f"random-{index}", [drawn(rng, shape, key) for key, shape in zip(names, shapes)], False, rng))
    for index in range(kinks):
        rng = np.random.default_rng([int(seed), 2, index])
        plan.append((f"kink-{index}", [_kinked(rng, shape, index) for shape in shapes], True, rng))
    return plan


def _kinked(rng: np.random.Generator, shape: tuple[int, ...], index: int) -> np.ndarray:
    """Inputs at non-differentiable points: integers in −2…2 (even draws), or a third exact
    zeros among values drawn from a pool of three (odd draws): exact zeros and ties."""
    if index % 2 == 0:
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    values = rng.choice(rng.standard_normal(3), size=shape)
    values[rng.random(shape) < 1 / 3] = 0.0
    return values


# --- running the layer -------------------------------------------------------------------------------------------

def _install(layer, values: dict[str, np.ndarray], dtype: str) -> None:
    """Fresh copies of the parameters, in ``dtype``, into ``layer.params``."""
    for key, value in values.items():
        layer.params[key] = value.astype(dtype)


def _shapes(arrays) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


def _call_forward(layer, name, arrays, dtype, where):
    copies = [a.astype(dtype) for a in arrays]
    try:
        output = layer.forward(*copies)
    except Exception as error:
        error.add_note(f"check_layer: raised by {name}.forward on {where} (inputs of shapes {_shapes(arrays)})")
        raise
    if isinstance(output, (tuple, list)):
        raise TypeError(f"check_layer: {name}.forward returned a {type(output).__name__}; it must return one array")
    output = np.asarray(output)
    if not np.issubdtype(output.dtype, np.number):
        raise AssertionError(f"check_layer: {name}.forward returned an array of {output.dtype} on {where}, "
                             "not numbers")
    return output


def _forward(layer, name, arrays, values, dtype, where) -> np.ndarray:
    _install(layer, values, dtype)
    return _call_forward(layer, name, arrays, dtype, where)


def _require_parameters_read(layer, name, values, arrays) -> None:
    """forward must read ``self.params`` at call time: changing an entry must change the output."""
    where = "the check that forward reads self.params"
    _install(layer, values, "float64")
    before = _call_forward(layer, name, arrays, "float64", where)
    rng = np.random.default_rng(0)
    for key, value in values.items():
        if not value.size:
            continue
        layer.params[key] = value + rng.uniform(0.5, 1.5, value.shape)
        after = _call_forward(layer, name, arrays, "float64", where)
        layer.params[key] = value.copy()
        if after.shape == before.shape and np.array_equal(after, before):
            raise TypeError(f"check_layer: changing {name}.params[{key!r}] does not change forward's output: "
                            f"forward must read its parameters from self.params at call time "
                            f"(self.params[{key!r}], not an attribute bound in __init__) — check_layer puts the "
                            "values it checks there")


def _gradient_addresses(names, parameter_names) -> list[str]:
    return [f"{key}.grad" for key in names] + [f"{key}.grad" for key in parameter_names]


def _layer_trace(layer, name, names, arrays, values, output, upstream, dtype, where) -> Trace:
    """Backward of the forward just run: output, g, every input and parameter gradient."""
    try:
        returned = layer.backward(upstream.astype(dtype))
    except Exception as error:
        error.add_note(f"check_layer: raised by {name}.backward on {where} (grad_out of shape {upstream.shape})")
        raise
    gradients = tuple(returned) if isinstance(returned, (tuple, list)) else (returned,)
    if len(gradients) != len(names):
        expected = "one array" if len(names) == 1 else f"a tuple of {len(names)} arrays in forward's order"
        raise AssertionError(f"check_layer: {name}.backward returned {len(gradients)} gradient"
                             f"{'' if len(gradients) == 1 else 's'} for {len(names)} input"
                             f"{'' if len(names) == 1 else 's'}; it must return {expected}")
    trace = Trace("layer")
    trace.put(_OUTPUT, output)
    trace.put(_UPSTREAM, upstream)
    for key, gradient, array in zip(names, gradients, arrays):
        trace.put(f"{key}.grad", _gradient(name, f"the gradient of input {key!r}", gradient, array.shape, where))
    if values:
        grads = getattr(layer, "grads", None)
        if not isinstance(grads, Mapping):
            raise AssertionError(f"check_layer: {name} has parameters ({', '.join(values)}) but no grads mapping "
                                 "after backward; backward must set self.grads[name] = ∂L/∂param")
        for key, value in values.items():
            if key not in grads:
                raise AssertionError(f"check_layer: after backward, {name}.grads has no {key!r} (it has: "
                                     f"{', '.join(map(str, grads)) or 'nothing'}); backward must set grads[name] "
                                     "for every name in params")
            trace.put(f"{key}.grad", _gradient(name, f"grads[{key!r}]", grads[key], value.shape, where))
    return trace


def _gradient(name, what, gradient, shape, where) -> np.ndarray:
    if gradient is None:
        raise AssertionError(f"check_layer: {name}.backward gave None for {what} on {where}")
    value = np.array(gradient, copy=True)
    if value.shape != tuple(shape):
        raise AssertionError(f"check_layer: {name}.backward gave {what} of shape {value.shape} on {where}; "
                             f"it must have the shape {tuple(shape)}")
    return value


def _torch_trace(torch_fn, names, arrays, values, output_shape, upstream, dtype, where) -> Trace:
    """torch_fn(*inputs, **params) under autograd, with the same upstream gradient."""
    tensor_dtype = _TORCH_DTYPES[dtype]
    with torch.enable_grad():
        inputs = [torch.tensor(a, dtype=tensor_dtype, requires_grad=True) for a in arrays]
        params = {key: torch.tensor(v, dtype=tensor_dtype, requires_grad=True) for key, v in values.items()}
        call = (f"torch_fn({', '.join(names + [f'{key}=' for key in params])}) with tensors of shapes "
                f"{_shapes(arrays + list(values.values()))} — the convention is torch_fn(*inputs, **params)")
        try:
            output = torch_fn(*inputs, **params)
        except Exception as error:
            error.add_note(f"check_layer: raised by {call}, on {where}")
            raise
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"check_layer: torch_fn returned {type(output).__name__}, not a torch.Tensor ({call})")
        if tuple(output.shape) != tuple(output_shape):
            raise AssertionError(f"check_layer: the layer's forward gives shape {tuple(output_shape)}, torch_fn gives "
                                 f"{tuple(output.shape)} on {where}")
        if not output.requires_grad:
            raise TypeError("check_layer: torch_fn's output does not depend on its inputs through autograd (did it "
                            "leave torch, with .numpy(), .item() or torch.no_grad()?)")
        leaves = [*inputs, *params.values()]
        try:
            gradients = torch.autograd.grad(output, leaves, torch.as_tensor(upstream, dtype=tensor_dtype),
                                            allow_unused=True, materialize_grads=True)
        except Exception as error:
            error.add_note(f"check_layer: raised by autograd's backward through {call}, on {where}")
            raise
    trace = Trace("torch")
    trace.put(_OUTPUT, output.detach().numpy())
    trace.put(_UPSTREAM, upstream)
    for address, gradient in zip(_gradient_addresses(names, list(values)), gradients):
        trace.put(address, gradient.numpy())
    return trace


def _fd_trace(layer, names, arrays, values, upstream) -> Trace:
    """Central differences of L = Σ forward(x)·g, the layer's own forward in float64."""
    name = type(layer).__name__
    where = "finite differences (float64)"
    _install(layer, values, "float64")

    def loss(current) -> float:
        return float(np.sum(_call_forward(layer, name, current, "float64", where) * upstream))

    trace = Trace("fd")
    trace.put(_UPSTREAM, upstream)
    for k, key in enumerate(names):
        trace.put(f"{key}.grad", fd_gradient(lambda theta, k=k: loss([*arrays[:k], theta, *arrays[k + 1:]]),
                                             arrays[k]))
    for key, value in values.items():
        def with_parameter(theta, key=key) -> float:
            layer.params[key] = theta
            return loss(arrays)

        trace.put(f"{key}.grad", fd_gradient(with_parameter, value))
        layer.params[key] = value.copy()
    return trace


# --- rows, verdicts, the table -----------------------------------------------------------------------------------

def _quantity(address: str) -> str:
    return "output" if address == _OUTPUT else address


def _rows(draw: str, dtype: str, pair: str, compared: list[Row]) -> list[LayerRow]:
    return [LayerRow(draw, dtype, pair, _quantity(row.address), row.status, row.max_abs, row.max_rel, row.tolerance,
                     row.worst_index, row.value, row.reference_value, row.note) for row in compared]


def _with_fd_sides(rows: list[LayerRow]) -> list[LayerRow]:
    """Fill ``fd_sides`` on every failing float64 layer-torch gradient row whose draw ran finite differences."""
    fd_passed = {(row.draw, row.pair, row.quantity): row.passed for row in rows if row.pair != "layer-torch"}
    sided = []
    for row in rows:
        key = (row.draw, "layer-fd", row.quantity)
        if row.pair == "layer-torch" and row.dtype == "float64" and not row.passed and key in fd_passed:
            layer_ok, torch_ok = fd_passed[key], fd_passed[(row.draw, "torch-fd", row.quantity)]
            sides = {(False, True): "torch", (True, False): "layer", (True, True): "both"}.get(
                (layer_ok, torch_ok), "neither")
            row = row._replace(fd_sides=sides)
        sided.append(row)
    return sided


_SIDES = {
    "torch": "finite differences side with torch: the layer's backward is wrong there",
    "layer": ("finite differences of the layer's forward agree with its backward: the backward matches the forward, "
              "so the forward (or torch_fn) is what differs — see the output rows"),
    "both": ("finite differences agree with both sides within their own tolerance: the disagreement is below what "
             "they resolve"),
    "neither": "finite differences agree with neither side",
}


def _verdicts(failures: list[LayerRow]) -> list[str]:
    """One sentence per failing quantity: what finite differences say, or where it fails."""
    lines = []
    for quantity in dict.fromkeys(row.quantity for row in failures):
        mine = [row for row in failures if row.quantity == quantity]
        draws = ", ".join(dict.fromkeys(row.draw for row in mine))
        sided = [row for row in mine if row.fd_sides]
        if quantity == "output":
            lines.append(f"output: the layer's forward differs from torch_fn (draws {draws}).")
        elif sided:
            sides = [row.fd_sides for row in sided]
            side = max(dict.fromkeys(sides), key=sides.count)
            line = f"{quantity}: {_SIDES[side]} (draws {', '.join(dict.fromkeys(r.draw for r in sided))})"
            kinked = list(dict.fromkeys(row.draw for row in mine if row.draw.startswith("kink-")))
            if kinked:
                line += f"; it also fails at kinks ({', '.join(kinked)}: judged against torch only)"
            lines.append(line + ".")
        elif all(row.draw.startswith("kink-") for row in mine):
            lines.append(f"{quantity}: fails only at kinks (exact zeros and ties, draws {draws}), where the "
                         "derivative does not exist: the layer's convention there differs from torch's "
                         "(relu'(0) = 0, ties of max go to the first element, …).")
        elif all(row.dtype != "float64" for row in mine):
            lines.append(f"{quantity}: fails only in {', '.join(dict.fromkeys(r.dtype for r in mine))} "
                         f"(draws {draws}): the computation loses more precision than the tolerance policy allows.")
        else:
            lines.append(f"{quantity}: fails on draws {draws}.")
    return lines


def _number(value: float, spec: str) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)


_COLUMNS = ("draw", "dtype", "pair", "quantity", "max_abs", "max_rel", "tolerance", "worst", "value", "reference",
            "fd sides with", "note")


def _table(rows: list[LayerRow]) -> str:
    cells = [[row.draw, row.dtype, row.pair, row.quantity, _number(row.max_abs, ".3e"), _number(row.max_rel, ".3e"),
              _number(row.tolerance, ".1e"), row.worst_index or "-", _number(row.value, ".10g"),
              _number(row.reference_value, ".10g"), row.fd_sides, row.note] for row in rows]
    keep = [k for k, column in enumerate(_COLUMNS)
            if column not in ("fd sides with", "note") or any(cell[k] for cell in cells)]
    table = [[_COLUMNS[k] for k in keep]] + [[cell[k] for k in keep] for cell in cells]
    widths = [max(len(line[k]) for line in table) for k in range(len(keep))]
    numeric = {"max_abs", "max_rel", "tolerance", "value", "reference"}
    return "\n".join(
        "  ".join(text.rjust(width) if table[0][k] in numeric else text.ljust(width)
                  for k, (text, width) in enumerate(zip(line, widths))).rstrip()
        for line in table)
