"""The layer's side of check_layer: the call's arguments, the layer's contract, its forward and backward.

A layer is ``forward(*arrays)`` returning one array, ``backward(grad_out)``
returning each input's gradient and, with parameters, the mappings ``params``
(read by forward at call time) and ``grads`` (set by backward). Everything here
checks that contract and runs the layer on check_layer's own copies of its
parameters; a broken contract stops with a message saying what to write instead.
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
import torch

from backprop_verify.reports.verification.tolerance import RTOL
from backprop_verify.scenarios.trace import Trace

OUTPUT = "layers.0.output"          # the trace address of forward's output (its floor scales with max|output|)
UPSTREAM = "layers.0.output.grad"   # g = ∂L/∂output (every gradient's floor scales with max|g|)


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


def inputs_of(inputs) -> tuple[list[str], list[np.ndarray | tuple[int, ...]]]:
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


def parameters_of(layer, name: str, params) -> tuple[dict[str, np.ndarray], dict[str, object]]:
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


def restore(layer, originals: dict[str, object]) -> None:
    for key, value in originals.items():
        if value is _MISSING:
            layer.params.pop(key, None)
        else:
            layer.params[key] = value


# --- running the layer -------------------------------------------------------------------------------------------

def install(layer, values: dict[str, np.ndarray], dtype: str) -> None:
    """Fresh copies of the parameters, in ``dtype``, into ``layer.params``."""
    for key, value in values.items():
        layer.params[key] = value.astype(dtype)


def shapes_text(arrays) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


def call_forward(layer, name, arrays, dtype, where):
    copies = [a.astype(dtype) for a in arrays]
    try:
        output = layer.forward(*copies)
    except Exception as error:
        error.add_note(f"check_layer: raised by {name}.forward on {where} (inputs of shapes {shapes_text(arrays)})")
        raise
    if isinstance(output, (tuple, list)):
        raise TypeError(f"check_layer: {name}.forward returned a {type(output).__name__}; it must return one array")
    output = np.asarray(output)
    if not np.issubdtype(output.dtype, np.number):
        raise AssertionError(f"check_layer: {name}.forward returned an array of {output.dtype} on {where}, "
                             "not numbers")
    return output


def forward(layer, name, arrays, values, dtype, where) -> np.ndarray:
    install(layer, values, dtype)
    return call_forward(layer, name, arrays, dtype, where)


def require_parameters_read(layer, name, values, arrays) -> None:
    """forward must read ``self.params`` at call time: changing an entry must change the output."""
    where = "the check that forward reads self.params"
    install(layer, values, "float64")
    before = call_forward(layer, name, arrays, "float64", where)
    rng = np.random.default_rng(0)
    for key, value in values.items():
        if not value.size:
            continue
        layer.params[key] = value + rng.uniform(0.5, 1.5, value.shape)
        after = call_forward(layer, name, arrays, "float64", where)
        layer.params[key] = value.copy()
        if after.shape == before.shape and np.array_equal(after, before):
            raise TypeError(f"check_layer: changing {name}.params[{key!r}] does not change forward's output: "
                            f"forward must read its parameters from self.params at call time "
                            f"(self.params[{key!r}], not an attribute bound in __init__) — check_layer puts the "
                            "values it checks there")


def gradient_addresses(names, parameter_names) -> list[str]:
    return [f"{key}.grad" for key in names] + [f"{key}.grad" for key in parameter_names]


def layer_trace(layer, name, names, arrays, values, output, upstream, dtype, where,
                observed: bool = False) -> Trace:
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
    trace.put(OUTPUT, output)
    trace.put(UPSTREAM, upstream)
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
    if observed:  # further quantities the layer reports (running statistics, an LSTM's cells): core.check
        for address, value in layer.observed().items():
            trace.put(address, np.array(value, copy=True))
    return trace


def _gradient(name, what, gradient, shape, where) -> np.ndarray:
    if gradient is None:
        raise AssertionError(f"check_layer: {name}.backward gave None for {what} on {where}")
    value = np.array(gradient, copy=True)
    if value.shape != tuple(shape):
        raise AssertionError(f"check_layer: {name}.backward gave {what} of shape {value.shape} on {where}; "
                             f"it must have the shape {tuple(shape)}")
    return value
