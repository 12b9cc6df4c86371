"""The layer's side of check_layer: the call's arguments, the layer's contract, its forward and backward.

A layer is ``forward(*arrays)`` returning one array (or a tuple of arrays),
``backward(*grad_outs)`` returning the gradient of each input that gets one and,
with parameters, the mappings ``params`` (read by forward at call time) and
``grads`` (set by backward). Everything here checks that contract and runs the
layer on check_layer's own copies of its parameters; a broken contract stops
with a message saying what to write instead.
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

import numpy as np
import torch

from backprop_verify.reports.verification.compare import compare
from backprop_verify.reports.verification.tolerance import RTOL
from backprop_verify.scenarios.trace import Trace

OUTPUT = "layers.0.output"          # the trace address of forward's output (its floor scales with max|output|)
UPSTREAM = "layers.0.output.grad"   # g = ∂L/∂output (every gradient's floor scales with max|g|)
STATE_SEED = 3                      # the upstream gradient of the checks before the draws: default_rng([seed, 3])
OUTPUTS_UNKNOWN = -1                # Signature.outputs before forward's first call


@dataclass
class Signature:
    """What check_layer knows of the call: the inputs (in forward's order) and which of them get a
    gradient; the parameters, split into the differentiated ones, ``frozen`` ones and ``buffers``;
    forward's outputs (``None``: one array; ``k``: a tuple of k arrays — learnt from the first call)."""

    inputs: list[str]
    differentiable: list[str]
    parameters: list[str]
    frozen: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    outputs: int | None = None

    def output_addresses(self) -> list[str]:
        """One array: ``layers.0.output``. A tuple: ``layers.{k}.output`` for output k — so that the
        output floor (``compare.family_scales``) scales with the largest of them, as it does for the
        outputs of a network's layers."""
        return [OUTPUT] if self.outputs is None else [f"layers.{k}.output" for k in range(self.outputs)]

    def upstream_address(self) -> str:
        """Where g sits in a trace: the gradient floor scales with max|∂L/∂(last output)|. With several
        outputs every gradient sums the paths of all of them, so the upstream gradients, raveled
        and concatenated, stand there: the scale is the largest of them."""
        return UPSTREAM if self.outputs is None else f"layers.{self.outputs - 1}.output.grad"

    def gradient_addresses(self) -> list[str]:
        return [f"{key}.grad" for key in self.differentiable] + [f"{key}.grad" for key in self.parameters]

    def output_names(self) -> list[str]:
        """The outputs' names in the table: ``output``, or ``output.0``, ``output.1``, … for a tuple
        (dots, as in every trace address: ``output[1]`` would read as element 1 of the output)."""
        return ["output"] if self.outputs is None else [f"output.{k}" for k in range(self.outputs)]

    def quantity(self, address: str) -> str:
        """The table's name of a trace address: ``output`` / ``output.{k}``, else the address itself."""
        names = dict(zip(self.output_addresses(), self.output_names()))
        return names.get(address, address)


# --- the call's arguments --------------------------------------------------------------------------------------

def require_methods(layer, name: str) -> None:
    for method, signature in (("forward", "forward(*arrays) returning the output"),
                              ("backward", "backward(grad_out) returning the input gradients")):
        if not callable(getattr(layer, method, None)):
            raise TypeError(f"check_layer: {name} has no {method} method; a layer needs {signature} "
                            "(and, with parameters, params / grads mappings)")


def dtypes_of(dtype) -> tuple[str, ...]:
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


def is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def inputs_of(inputs) -> tuple[list[str], list[np.ndarray | tuple[int, ...]]]:
    """(names, shape or array for each input): float arrays become float64; a NumPy array (or tensor)
    of integers or booleans — indices, class targets, masks — keeps its dtype."""
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
        elif isinstance(spec, (np.ndarray, torch.Tensor)):
            array = np.array(spec.detach() if isinstance(spec, torch.Tensor) else spec, copy=True)
            if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
                given.append(array)
            elif np.issubdtype(array.dtype, np.floating):
                given.append(array.astype(np.float64))
            else:
                raise TypeError(f"check_layer: input {key!r} is an array of {array.dtype}; expected floating-point "
                                "numbers, or integers / booleans (indices, targets, masks: not differentiated)")
        elif isinstance(spec, list):
            given.append(np.array(spec, dtype=np.float64))
        else:
            raise TypeError(f"check_layer: input {key!r}: expected a shape (a tuple of non-negative integers) or an "
                            f"array, got {spec!r}")
    return names, given


def differentiable_of(names, given, differentiable) -> list[str]:
    """The inputs that get a gradient: every floating-point one (default), or exactly those named."""
    integer = [key for key, spec in zip(names, given) if isinstance(spec, np.ndarray) and not is_float(spec)]
    if differentiable is None:
        return [key for key in names if key not in integer]
    chosen = [differentiable] if isinstance(differentiable, str) else list(differentiable)
    unknown = [key for key in chosen if key not in names]
    if unknown:
        raise ValueError(f"check_layer: differentiable names {unknown}, which are not inputs (the inputs: "
                         f"{', '.join(names)})")
    refused = [key for key in chosen if key in integer]
    if refused:
        dtypes = {key: str(spec.dtype) for key, spec in zip(names, given) if key in refused}
        raise ValueError(f"check_layer: differentiable names {refused}, arrays of "
                         f"{', '.join(f'{key}: {dtype}' for key, dtype in dtypes.items())}: integer and boolean "
                         "inputs (indices, class targets, masks) have no gradient; leave them out of "
                         "differentiable=, or give a float array")
    return [key for key in names if key in chosen]


def parameters_of(layer, name: str, params, buffers=()) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """(the values to check — float64, or a buffer's own integer dtype —, the layer's original
    ``params`` entries to put back)."""
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
            array = np.array(value, copy=True)
            if not (key in buffers and (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_)):
                array = array.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"check_layer: parameter {key!r} is not an array of numbers: {error}") from None
        values[key] = array
    originals = {key: own.get(key, _MISSING) for key in values}
    return values, originals


def roles_of(values, buffers, frozen, name: str) -> tuple[list[str], list[str], list[str]]:
    """(differentiated parameters, frozen, buffers), each in ``params``' order."""
    declared = {}
    for what, names in (("buffers", buffers), ("frozen", frozen)):
        names = [names] if isinstance(names, str) else list(names or ())
        unknown = [key for key in names if key not in values]
        if unknown:
            raise ValueError(f"check_layer: {what}= names {unknown}, not in {name}.params (it has: "
                             f"{', '.join(values) or 'nothing'}); {what} are entries of params that forward reads")
        declared[what] = names
    both = sorted(set(declared["buffers"]) & set(declared["frozen"]))
    if both:
        raise ValueError(f"check_layer: {both} named both in buffers= and in frozen=; a buffer is state forward "
                         "may update, a frozen parameter a constant: name each once")
    fixed = set(declared["buffers"]) | set(declared["frozen"])
    return ([key for key in values if key not in fixed], [key for key in values if key in declared["frozen"]],
            [key for key in values if key in declared["buffers"]])


_MISSING = object()


# --- the layer as check_layer calls it ---------------------------------------------------------------------------

def is_factory(layer) -> bool:
    """A class, or a callable without ``forward``: it makes the layer (a fresh one per call)."""
    return isinstance(layer, type) or (callable(layer) and not callable(getattr(layer, "forward", None)))


class Subject:
    """The layer under test, ready for each call.

    Finite differences call forward hundreds of times, and every call must start
    from the same state. A layer instance serves every call, after ``reset`` (a
    method name or ``reset(layer)``) if given; a factory (a class or a function
    of no arguments) gives a fresh layer per call. Then check_layer's copies of
    the parameters, in the run's dtype, go into ``layer.params`` — buffers too,
    so a forward that updates running statistics starts from the same ones each
    time — and ``mode`` switches the layer to train or eval.
    """

    def __init__(self, layer, reset=None, mode=None):
        self.factory = layer if is_factory(layer) else None
        self.instance = self._make() if self.factory else layer
        self.name = type(self.instance).__name__
        require_methods(self.instance, self.name)
        self.reset = _reset_hook(reset, self.instance, self.name)
        self.switch = _mode_hook(mode, self.instance, self.name)
        self.training = getattr(self.instance, "training", _MISSING)
        self.originals: dict[str, object] = {}

    def _make(self):
        try:
            layer = self.factory()
        except TypeError as error:
            error.add_note(f"check_layer: calling the factory {self.factory!r} with no arguments; pass "
                           "lambda: MyLayer(…) or functools.partial(MyLayer, …)")
            raise
        if not callable(getattr(layer, "forward", None)):
            raise TypeError(f"check_layer: the factory {self.factory!r} returned a {type(layer).__name__}, which has "
                            "no forward method; a factory returns a fresh layer")
        return layer

    def ready(self, values: dict[str, np.ndarray], dtype: str):
        """The layer for one call: fresh (factory) or reset, with the parameters installed, in its mode."""
        layer = self._make() if self.factory else self.instance
        if self.reset:
            self.reset(layer)
        install(layer, values, dtype)
        if self.switch:
            self.switch(layer)
        return layer

    def restore(self) -> None:
        """The instance's own ``params`` entries, and its ``training`` flag, back as they were."""
        if self.factory:
            return
        for key, value in self.originals.items():
            if value is _MISSING:
                self.instance.params.pop(key, None)
            else:
                self.instance.params[key] = value
        if self.switch and self.training is not _MISSING:
            self.instance.training = self.training


def _reset_hook(reset, layer, name):
    if reset is None:
        return None
    if isinstance(reset, str):
        if not callable(getattr(layer, reset, None)):
            raise TypeError(f"check_layer: reset={reset!r}, but {name} has no method {reset}(); give a method name "
                            "or a function reset(layer)")
        return lambda layer: getattr(layer, reset)()
    if callable(reset):
        return reset
    raise TypeError(f"check_layer: reset must be a method name or a function reset(layer), got {reset!r}")


def _mode_hook(mode, layer, name):
    """``"train"`` / ``"eval"``: the layer's ``train()`` / ``eval()`` methods if it has them, else its
    ``training`` attribute; a callable: ``mode(layer)``."""
    if mode is None:
        return None
    if callable(mode):
        return mode
    if mode not in ("train", "eval"):
        raise ValueError(f"check_layer: mode must be 'train', 'eval' or a function mode(layer), got {mode!r}")
    method = mode
    if callable(getattr(layer, method, None)):
        return lambda layer: getattr(layer, method)()
    if hasattr(layer, "training"):
        training = mode == "train"

        def switch(layer):
            layer.training = training
        return switch
    article = "an" if method == "eval" else "a"
    raise TypeError(f"check_layer: mode={mode!r}, but {name} has neither {article} {method}() method nor a training "
                    "attribute; give mode=lambda layer: … to switch it")


def install(layer, values: dict[str, np.ndarray], dtype: str) -> None:
    """Fresh copies of the parameters (and buffers), floating-point ones in ``dtype``, into ``layer.params``."""
    for key, value in values.items():
        layer.params[key] = value.astype(dtype) if is_float(value) else value.copy()


def shapes_text(arrays) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


def cast(arrays, dtype) -> list[np.ndarray]:
    """Copies of the inputs for one call: floating-point ones in ``dtype``, integer ones as they are."""
    return [a.astype(dtype) if is_float(a) else a.copy() for a in arrays]


def call_forward(layer, name, arrays, dtype, where, signature: Signature) -> list[np.ndarray]:
    """forward's outputs as a list. The first call tells whether forward returns one array or a tuple
    (``signature.outputs``); every later call must return the same."""
    try:
        returned = layer.forward(*cast(arrays, dtype))
    except Exception as error:
        error.add_note(f"check_layer: raised by {name}.forward on {where} (inputs of shapes {shapes_text(arrays)})")
        raise
    count = len(returned) if isinstance(returned, (tuple, list)) else None
    if signature.outputs == OUTPUTS_UNKNOWN:
        if count == 0:
            raise TypeError(f"check_layer: {name}.forward returned an empty {type(returned).__name__}")
        signature.outputs = count
    elif count != signature.outputs:
        def said(n):
            return "one array" if n is None else f"a tuple of {n} arrays"
        raise AssertionError(f"check_layer: {name}.forward returned {said(count)} on {where}, "
                             f"{said(signature.outputs)} before; it must return the same every time")
    outputs = [np.asarray(one) for one in (returned if count is not None else (returned,))]
    for k, output in enumerate(outputs):
        if not np.issubdtype(output.dtype, np.number):
            what = "an array" if count is None else f"output {k} as an array"
            raise AssertionError(f"check_layer: {name}.forward returned {what} of {output.dtype} on {where}, "
                                 "not numbers")
    return outputs


def run_forward(subject: Subject, signature: Signature, arrays, values, dtype, where):
    """(the layer, its outputs, its buffers as forward left them) for one call."""
    layer = subject.ready(values, dtype)
    outputs = call_forward(layer, subject.name, arrays, dtype, where, signature)
    buffers = {key: np.array(layer.params[key], copy=True) for key in signature.buffers}
    return layer, outputs, buffers


def upstream_value(upstreams) -> np.ndarray:
    """g as it stands in a trace: the one upstream gradient, or all of them raveled and concatenated."""
    return upstreams[0] if len(upstreams) == 1 else np.concatenate([g.ravel() for g in upstreams])


def layer_trace(layer, signature: Signature, name, arrays, values, outputs, upstreams, buffers, dtype, where,
                observed: bool = False) -> Trace:
    """Backward of the forward just run: the outputs, g, every input and parameter gradient, the buffers."""
    try:
        returned = layer.backward(*[g.astype(dtype) for g in upstreams])
    except Exception as error:
        shapes = shapes_text(upstreams)
        error.add_note(f"check_layer: raised by {name}.backward on {where} (grad_out of shape"
                       f"{'s' if len(upstreams) > 1 else ''} {shapes})")
        raise
    trace = Trace("layer")
    for address, output in zip(signature.output_addresses(), outputs):
        trace.put(address, output)
    trace.put(signature.upstream_address(), upstream_value(upstreams))
    gradients = _input_gradients(name, signature, returned)
    for key, gradient in zip(signature.differentiable, gradients):
        shape = arrays[signature.inputs.index(key)].shape
        trace.put(f"{key}.grad", _gradient(name, f"the gradient of input {key!r}", gradient, shape, where))
    if signature.parameters:
        grads = getattr(layer, "grads", None)
        if not isinstance(grads, Mapping):
            raise AssertionError(f"check_layer: {name} has parameters ({', '.join(signature.parameters)}) but no "
                                 "grads mapping after backward; backward must set self.grads[name] = ∂L/∂param")
        for key in signature.parameters:
            if key not in grads:
                raise AssertionError(f"check_layer: after backward, {name}.grads has no {key!r} (it has: "
                                     f"{', '.join(map(str, grads)) or 'nothing'}); backward must set grads[name] "
                                     "for every name in params (buffers= and frozen= name those it need not)")
            trace.put(f"{key}.grad", _gradient(name, f"grads[{key!r}]", grads[key], values[key].shape, where))
    for key, value in buffers.items():
        trace.put(key, value)
    if observed:  # further quantities the layer reports (running statistics, an LSTM's cells): core.check
        for address, value in layer.observed().items():
            trace.put(address, np.array(value, copy=True))
    return trace


def _input_gradients(name, signature: Signature, returned) -> tuple:
    """The gradients of the differentiable inputs from what backward returned: one per differentiable
    input (one array for one), or one per input of forward with anything (``None``) at the others."""
    wanted, count = len(signature.differentiable), len(signature.inputs)
    if returned is None:
        gradients = ()
    elif isinstance(returned, (tuple, list)):
        gradients = tuple(returned)
    else:
        gradients = (returned,)
    if len(gradients) == count and count != wanted:
        return tuple(g for key, g in zip(signature.inputs, gradients) if key in signature.differentiable)
    if len(gradients) == wanted:
        return gradients
    expected = ("nothing (None)" if wanted == 0 else "one array" if wanted == 1
                else f"a tuple of {wanted} arrays in forward's order")
    skipped = [key for key in signature.inputs if key not in signature.differentiable]
    also = (f" (or a tuple of {count}, one per input, with None for {', '.join(skipped)}, which get no gradient)"
            if skipped else "")
    raise AssertionError(f"check_layer: {name}.backward returned {len(gradients)} gradient"
                         f"{'' if len(gradients) == 1 else 's'} for {wanted} input"
                         f"{'' if wanted == 1 else 's'}; it must return {expected}{also}")


def _gradient(name, what, gradient, shape, where) -> np.ndarray:
    if gradient is None:
        raise AssertionError(f"check_layer: {name}.backward gave None for {what} on {where}")
    value = np.array(gradient, copy=True)
    if value.shape != tuple(shape):
        raise AssertionError(f"check_layer: {name}.backward gave {what} of shape {value.shape} on {where}; "
                             f"it must have the shape {tuple(shape)}")
    return value


# --- the checks before the draws -----------------------------------------------------------------------------------

def require_fresh_calls(subject: Subject, signature: Signature, arrays, values, seed) -> Trace:
    """Two identical calls — forward, then backward with the same upstream gradient — must give the
    same outputs, gradients and buffers: finite differences rely on it. Gradients accumulated with
    ``+=``, inputs appended to a list, a random mask: each makes the second call differ, and the
    message says how to start every call afresh. Returns the first call's trace (float64)."""
    where = "the check that calls are independent (two identical calls, float64)"
    layer, outputs, buffers = run_forward(subject, signature, arrays, values, "float64", where)
    rng = np.random.default_rng([int(seed), STATE_SEED])
    upstreams = [rng.standard_normal(output.shape) for output in outputs]
    first = layer_trace(layer, signature, subject.name, arrays, values, outputs, upstreams, buffers, "float64", where)
    layer, outputs, buffers = run_forward(subject, signature, arrays, values, "float64", where)
    second = layer_trace(layer, signature, subject.name, arrays, values, outputs, upstreams, buffers, "float64",
                         where)
    addresses = signature.output_addresses() + signature.gradient_addresses() + signature.buffers
    for row in compare(second, first, "float64", "manual-torch", addresses):
        if row.passed:
            continue
        quantity = signature.quantity(row.address)
        at = (f"at {row.worst_index}: {row.reference_value:.10g} on the first call, {row.value:.10g} on the second"
              if row.worst_index else row.note)
        cause = ("forward itself gives another value (state it keeps, or randomness such as a dropout mask: fix "
                 "the mask, or check with mode=\"eval\")" if quantity in signature.output_names()
                 else "state kept from one call to the next (gradients accumulated with +=, inputs appended to a "
                      "list, …)")
        raise AssertionError(
            f"check_layer: {subject.name} keeps state between calls: a second forward and backward on the same "
            f"inputs, parameters and upstream gradient gives another {quantity} ({at}) — {cause}. Finite "
            "differences call forward hundreds of times, and every call must start from the same state: clear "
            "that state at the start of forward, name a method that clears it (reset=\"zero_grad\") or give "
            f"reset=lambda layer: …, or pass a factory for a fresh layer per call (check_layer(lambda: "
            f"{subject.name}(…), …)).")
    return first


def unread_parameters(subject: Subject, signature: Signature, arrays, values) -> list[str]:
    """The differentiated parameters whose change leaves forward's output unchanged (on the first draw)."""
    where = "the check that forward reads self.params"
    before = run_forward(subject, signature, arrays, values, "float64", where)[1]
    rng = np.random.default_rng(0)
    unread = []
    for key in signature.parameters:
        value = values[key]
        if not value.size:
            continue
        changed = {**values, key: value + rng.uniform(0.5, 1.5, value.shape)}
        after = run_forward(subject, signature, arrays, changed, "float64", where)[1]
        if all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(after, before)):
            unread.append(key)
    return unread


def require_parameters_read(subject: Subject, signature: Signature, arrays, values, first: Trace) -> list[str]:
    """forward must read ``self.params`` at call time: a parameter whose change leaves the output
    unchanged is either one without effect here (a forget gate's weights over one step from c0 = 0) —
    then the layer's own gradient for it is zero, and its rows judge that zero against torch and finite
    differences — or one forward does not read (an attribute bound in ``__init__``): then backward
    still gives it a gradient, and the call stops. Returns the parameters without effect."""
    without_effect = []
    for key in unread_parameters(subject, signature, arrays, values):
        gradient = first[f"{key}.grad"]
        if np.any(gradient != 0):
            raise TypeError(f"check_layer: changing {subject.name}.params[{key!r}] does not change forward's output: "
                            f"forward must read its parameters from self.params at call time "
                            f"(self.params[{key!r}], not an attribute bound in __init__) — check_layer puts the "
                            f"values it checks there. (Yet backward gives it a non-zero gradient, max "
                            f"|grads[{key!r}]| = {float(np.abs(gradient).max()):.3e}: a parameter without effect "
                            "would have a zero one.)")
        without_effect.append(key)
    return without_effect
