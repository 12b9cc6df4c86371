"""check_layer and its core, ``check``: the draws, each run against torch and finite differences, the rows.

``check`` is check_layer with one more switch, ``observed``, for the suite's
own layer tests (tests/layer_harness.py): quantities beyond the output and the
gradients — running statistics, an LSTM's cells — compared against torch's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from backprop_verify.reference.fd_oracle import FD_MAX_ENTRIES
from backprop_verify.reports.layer_check.contract import (OUTPUT, UPSTREAM, dtypes_of, forward, gradient_addresses,
                                                          inputs_of, layer_trace, parameters_of,
                                                          require_methods, require_parameters_read, restore)
from backprop_verify.reports.layer_check.draws import draw_plan
from backprop_verify.reports.layer_check.finite_differences import fd_trace
from backprop_verify.reports.layer_check.table import LayerCheck, LayerRow, rows_of, with_fd_sides
from backprop_verify.reports.layer_check.torch_side import torch_trace
from backprop_verify.reports.verification.compare import compare

DEFAULT_DRAWS = 3
DEFAULT_KINKS = 2


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
    return check(layer, torch_fn, inputs, dtype, params, seed, draws, kinks, fd, sample, raises)


def check(layer, torch_fn: Callable, inputs, dtype: str | Sequence[str] = "float64",
          params: Mapping[str, np.ndarray] | None = None, seed: int = 0, draws: int = DEFAULT_DRAWS,
          kinks: int = DEFAULT_KINKS, fd: bool = True,
          sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None,
          raises: bool = True, observed: bool = False, require_read: bool = True) -> LayerCheck:
    """``check_layer`` (its docstring lists the arguments), with two options the suite's own layer
    tests (``tests/layer_harness.py``) use:

    observed  also compare, layer against torch in every dtype (not by finite differences),
              the quantities ``layer.observed()`` and ``torch_fn.observed(output, grad_out)``
              return after each run, name → array: state such as running statistics, or
              intermediates such as an LSTM's cells and their gradients (the suite's own
              layer tests, ``tests/layer_harness.py``); their names are their trace addresses
    require_read  first check that forward reads each parameter from ``layer.params`` (a
              changed entry changes the output); an adapter that builds its layer from
              ``params`` on every forward turns it off, as a parameter may legitimately not
              reach the output (an RNN's W_hh over one step from h0 = 0)
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the table, not this function's source
    name = type(layer).__name__
    require_methods(layer, name)
    if not callable(torch_fn):
        raise TypeError(f"check_layer: torch_fn must be callable, torch_fn(*inputs, **params); got {torch_fn!r}")
    dtypes = dtypes_of(dtype)
    names, given = inputs_of(inputs)
    values, originals = parameters_of(layer, name, params)
    parameter_names = list(values)
    clash = set(names) & set(parameter_names)
    if clash:
        raise ValueError(f"check_layer: {sorted(clash)} name both an input and a parameter; give the input another "
                         "name: inputs={'x': (4, 3)}")
    for count, what in ((draws, "draws"), (kinks, "kinks")):
        if not (isinstance(count, int) and count >= 0):
            raise ValueError(f"check_layer: {what} must be an integer >= 0, got {count!r}")
    sample = sample or (lambda rng, shape: rng.standard_normal(shape))

    plan = draw_plan(names, given, seed, draws, kinks, sample)
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
        if values and require_read:
            require_parameters_read(layer, name, values, plan[0][1])
        for draw, arrays, kink, rng in plan:
            upstream = None
            traces = {}
            for run_dtype in dtypes:
                where = f"draw {draw}, {run_dtype}"
                output = forward(layer, name, arrays, values, run_dtype, where)
                if upstream is None:  # one upstream gradient per draw, the same in every dtype
                    upstream = rng.standard_normal(output.shape)
                mine = layer_trace(layer, name, names, arrays, values, output, upstream, run_dtype, where, observed)
                theirs = torch_trace(torch_fn, names, arrays, values, output.shape, upstream, run_dtype, where,
                                     observed)
                traces[run_dtype] = (mine, theirs)
                addresses = [OUTPUT] + gradient_addresses(names, parameter_names)
                addresses += [address for address in theirs if address not in addresses and address != UPSTREAM]
                rows += rows_of(draw, run_dtype, "layer-torch", compare(mine, theirs, run_dtype,
                                                                       "manual-torch", addresses))
            if run_fd and not kink:
                mine, theirs = traces["float64"]
                differences = fd_trace(layer, names, arrays, values, upstream)
                addresses = gradient_addresses(names, parameter_names)
                rows += rows_of(draw, "float64", "layer-fd", compare(mine, differences, "float64", "manual-fd",
                                                                    addresses))
                rows += rows_of(draw, "float64", "torch-fd", compare(theirs, differences, "float64", "torch-fd",
                                                                    addresses))
    finally:
        restore(layer, originals)
    result = LayerCheck(with_fd_sides(rows), name, seed, dtypes, [p[0] for p in plan], notes)
    if raises and not result.passed:
        raise AssertionError(result.message())
    return result
