"""check_layer and its core, ``check``: the draws, each run against torch and finite differences, the rows.

``check`` is check_layer with one more switch, ``observed``, for the suite's
own layer tests (tests/layer_harness.py): quantities beyond the output and the
gradients — running statistics, an LSTM's cells — compared against torch's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from backprop_verify.reference.fd_oracle import FD_MAX_ENTRIES
from backprop_verify.reports.layer_check.contract import (
    OUTPUTS_UNKNOWN, Signature, Subject, differentiable_of, dtypes_of, inputs_of, layer_trace, parameters_of,
    require_fresh_calls, require_parameters_read, roles_of, run_forward)
from backprop_verify.reports.layer_check.conventions import at_kinks
from backprop_verify.reports.layer_check.draws import draw_plan
from backprop_verify.reports.layer_check.finite_differences import fd_trace
from backprop_verify.reports.layer_check.table import LayerCheck, LayerRow, rows_of, with_fd_sides
from backprop_verify.reports.layer_check.torch_side import torch_trace
from backprop_verify.reports.verification.compare import FAIL, compare

DEFAULT_DRAWS = 3
DEFAULT_KINKS = 2

Names = str | Sequence[str]


def check_layer(layer, torch_fn: Callable, inputs, dtype: str | Sequence[str] = "float64",
                params: Mapping[str, np.ndarray] | None = None, seed: int = 0, draws: int = DEFAULT_DRAWS,
                kinks: int = DEFAULT_KINKS, fd: bool = True,
                sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None,
                raises: bool = True, *, buffers: Names = (), frozen: Names = (),
                reset: str | Callable | None = None, mode: str | Callable | None = None,
                differentiable: Names | None = None, strict_kinks: bool = False) -> LayerCheck:
    """Check ``layer``'s forward and backward against ``torch_fn`` and finite differences.

    layer     an object with ``forward(*arrays)``, ``backward(*grad_outs)`` and, with
              parameters, ``params`` / ``grads`` mappings (module docstring); or a
              factory (a class, or a function of no arguments) giving a fresh one per call
    torch_fn  ``torch_fn(*inputs, **params)``: the same forward in torch
    inputs    the inputs, in forward's order: a list of shapes (``[(4, 3)]``) or of
              arrays (checked as given, then on random draws of their shapes); a
              dict name → shape or array names them in the table (default names:
              ``input`` for one, ``input0``, ``input1``, … for several). An array of
              integers or booleans (indices, targets, masks) is passed as it is, on
              every draw, and gets no gradient
    dtype     ``"float64"``; ``"float32"`` checks float32 against torch in float32
              and float64 (where finite differences apply); a tuple of dtypes checks
              exactly those (finite differences only run with float64 among them)
    params    parameter values to use (name → array; default: ``layer.params``)
    seed      every random thing (inputs, upstream gradients) derives from it
    draws     number of seeded random draws of the inputs
    kinks     number of seeded draws at kinks (exact zeros, ties), judged against torch only
    fd        run finite differences (float64, non-kink draws, at most
              ``reference.fd_oracle.FD_MAX_ENTRIES`` entries), and one-sided ones where a
              kink draw fails
    sample    ``sample(rng, shape)`` draws one random input (default: standard normal)
    raises    raise ``AssertionError`` with the table when a row fails (else return the rows)
    buffers   names in ``params`` forward reads (and may update: running statistics) that are
              not differentiated: installed afresh before every call, passed to torch_fn,
              compared after forward
    frozen    names in ``params`` that are constants: passed, not differentiated
    reset     a method name (``"zero_grad"``) or ``reset(layer)``, run before every call
    mode      ``"train"`` / ``"eval"`` (the layer's ``train()`` / ``eval()``, else its
              ``training`` attribute) or ``mode(layer)``, before every call
    differentiable  the inputs that get a gradient (default: every floating-point one)
    strict_kinks  a one-sided derivative at a kink where torch takes the other side fails
              (default: it passes with the status ``convention``)
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the table, not this function's source
    return check(layer, torch_fn, inputs, dtype, params, seed, draws, kinks, fd, sample, raises, buffers=buffers,
                 frozen=frozen, reset=reset, mode=mode, differentiable=differentiable, strict_kinks=strict_kinks)


def check(layer, torch_fn: Callable, inputs, dtype: str | Sequence[str] = "float64",
          params: Mapping[str, np.ndarray] | None = None, seed: int = 0, draws: int = DEFAULT_DRAWS,
          kinks: int = DEFAULT_KINKS, fd: bool = True,
          sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None,
          raises: bool = True, observed: bool = False, require_read: bool = True, *, buffers: Names = (),
          frozen: Names = (), reset: str | Callable | None = None, mode: str | Callable | None = None,
          differentiable: Names | None = None, strict_kinks: bool = False) -> LayerCheck:
    """``check_layer`` (its docstring lists the arguments), with two options the suite's own layer
    tests (``tests/layer_harness.py``) use:

    observed  also compare, layer against torch in every dtype (not by finite differences),
              the quantities ``layer.observed()`` and ``torch_fn.observed(output, grad_out)``
              return after each run, name → array: state such as running statistics, or
              intermediates such as an LSTM's cells and their gradients (the suite's own
              layer tests, ``tests/layer_harness.py``); their names are their trace addresses
    require_read  first check that forward reads each parameter from ``layer.params`` (a
              changed entry changes the output, or the layer's gradient for it is zero); an
              adapter that builds its layer from ``params`` on every forward turns it off
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the table, not this function's source
    subject = Subject(layer, reset, mode)
    name = subject.name
    if not callable(torch_fn):
        raise TypeError(f"check_layer: torch_fn must be callable, torch_fn(*inputs, **params); got {torch_fn!r}")
    dtypes = dtypes_of(dtype)
    names, given = inputs_of(inputs)
    differentiable = differentiable_of(names, given, differentiable)
    buffers = [buffers] if isinstance(buffers, str) else list(buffers or ())
    values, subject.originals = parameters_of(subject.instance, name, params, buffers)
    parameters, frozen, buffers = roles_of(values, buffers, frozen, name)
    clash = set(names) & set(values)
    if clash:
        raise ValueError(f"check_layer: {sorted(clash)} name both an input and a parameter; give the input another "
                         "name: inputs={'x': (4, 3)}")
    for count, what in ((draws, "draws"), (kinks, "kinks")):
        if not (isinstance(count, int) and count >= 0):
            raise ValueError(f"check_layer: {what} must be an integer >= 0, got {count!r}")
    sample = sample or (lambda rng, shape: rng.standard_normal(shape))
    signature = Signature(names, differentiable, parameters, frozen, buffers, outputs=OUTPUTS_UNKNOWN)

    fixed = [key for key, spec in zip(names, given) if isinstance(spec, np.ndarray) and key not in differentiable]
    plan = draw_plan(names, given, seed, draws, kinks, sample, fixed)
    if not plan:
        raise ValueError("check_layer: nothing to check: draws=0, kinks=0 and no input arrays given")
    entries = (sum(a.size for key, a in zip(names, plan[0][1]) if key in differentiable)
               + sum(values[key].size for key in parameters))
    notes = []
    run_fd = fd and "float64" in dtypes
    if fd and "float64" not in dtypes:
        notes.append("Finite differences were not run: they are computed in float64, which the dtypes leave out.")
    elif run_fd and entries > FD_MAX_ENTRIES:
        run_fd = False
        notes.append(f"Finite differences were not run: {entries} entries to perturb, more than "
                     f"reference.fd_oracle.FD_MAX_ENTRIES = {FD_MAX_ENTRIES}; shrink the shapes to have them.")

    rows: list[LayerRow] = []
    at_kink = []  # (row index, the draw's arrays, (upstream gradients, layer trace, torch trace))
    try:
        first = require_fresh_calls(subject, signature, plan[0][1], values, seed)
        if parameters and require_read:
            without_effect = require_parameters_read(subject, signature, plan[0][1], values, first)
            if without_effect:
                notes.append(f"{', '.join(without_effect)}: changing {'it' if len(without_effect) == 1 else 'them'} "
                             "leaves forward's output unchanged (first draw) and the layer's gradient is zero: a "
                             "parameter without effect here, its rows judge that zero against torch and finite "
                             "differences.")
        for draw, arrays, kink, rng in plan:
            upstreams = None
            traces = {}
            for run_dtype in dtypes:
                where = f"draw {draw}, {run_dtype}"
                layer_now, outputs, buffers_after = run_forward(subject, signature, arrays, values, run_dtype, where)
                if upstreams is None:  # one upstream gradient per output and draw, the same in every dtype
                    upstreams = [rng.standard_normal(output.shape) for output in outputs]
                runs = _runs(subject, signature, torch_fn, arrays, values, (layer_now, outputs, buffers_after),
                             upstreams, run_dtype, where, observed)
                traces[run_dtype] = (*runs[0][2:], outputs)
                run_rows = _layer_torch_rows(draw, run_dtype, signature, runs)
                if kink and fd:  # failing gradient rows at kinks: analysed below, once every draw has run
                    by_output = {through: (alone, mine, theirs) for through, alone, mine, theirs in runs}
                    at_kink += [(len(rows) + n, arrays, by_output[row.through]) for n, row in enumerate(run_rows)
                                if row.status == FAIL and row.quantity in signature.gradient_addresses()
                                and not row.layer_dtype]
                rows += run_rows
            if run_fd and not kink:
                mine, theirs, outputs = traces["float64"]
                differences = fd_trace(subject, signature, arrays, values, outputs, upstreams)
                addresses = signature.gradient_addresses()
                rows += rows_of(draw, "float64", "layer-fd", compare(mine, differences, "float64", "manual-fd",
                                                                    addresses))
                rows += rows_of(draw, "float64", "torch-fd", compare(theirs, differences, "float64", "torch-fd",
                                                                    addresses))
        # A quantity that fails away from kinks is settled there by finite differences; one that fails only
        # at kinks is judged by one-sided differences: a convention, a wrong derivative, or no kink at all.
        kink_draws = {draw for draw, _, kink, _ in plan if kink}
        away = {row.quantity for row in rows if not row.passed and row.draw not in kink_draws and not row.layer_dtype}
        for index, arrays, (alone, mine, theirs) in at_kink:
            if rows[index].quantity not in away:
                rows[index] = at_kinks(rows[index], mine, theirs, subject, signature, arrays, values, alone,
                                       strict_kinks)
    finally:
        subject.restore()
    result = LayerCheck(with_fd_sides(rows), name, seed, dtypes, [p[0] for p in plan], notes)
    if raises and not result.passed:
        raise AssertionError(result.message())
    return result


def _layer_torch_rows(draw, dtype, signature: Signature, runs) -> list[LayerRow]:
    """The layer-torch rows of one draw and dtype: outputs, gradients, buffers and what ``observed``
    adds for the call with every upstream gradient; the gradients alone for each output's own. An
    output or gradient the layer gives in another dtype than the run's fails (``rows_of``)."""
    rows = []
    for through, _, mine, theirs in runs:
        addresses = signature.gradient_addresses()
        flagged = {}
        if not through:
            addresses = signature.output_addresses() + addresses + signature.buffers
            addresses += [address for address in theirs
                          if address not in addresses and address != signature.upstream_address()]
            flagged = {address: str(mine[address].dtype)
                       for address in signature.output_addresses() + signature.gradient_addresses()
                       if mine[address].dtype != np.dtype(dtype)}
        rows += rows_of(draw, dtype, "layer-torch", compare(mine, theirs, dtype, "manual-torch", addresses),
                        signature.quantity, through, flagged)
    return rows


def _runs(subject: Subject, signature: Signature, torch_fn, arrays, values, called, upstreams, dtype, where,
          observed) -> list[tuple[str, list[np.ndarray], object, object]]:
    """[(through, upstream gradients, the layer's trace, torch's)]: the call just made with every output's
    upstream gradient, then — for a layer with several outputs — one call per output k with g_k alone
    (the others zero), so that a wrong gradient is traced to the output whose path carries it."""
    layer, outputs, buffers = called
    shapes = [output.shape for output in outputs]
    mine = layer_trace(layer, signature, subject.name, arrays, values, outputs, upstreams, buffers, dtype, where,
                       observed)
    theirs = torch_trace(torch_fn, signature, arrays, values, shapes, upstreams, dtype, where, observed)
    runs = [("", upstreams, mine, theirs)]
    if signature.outputs is not None and signature.outputs > 1:
        for k, through in enumerate(signature.output_names()):
            alone = [g if j == k else np.zeros_like(g) for j, g in enumerate(upstreams)]
            at = f"{where}, {through}'s upstream gradient alone"
            layer, outputs, buffers = run_forward(subject, signature, arrays, values, dtype, at)
            mine = layer_trace(layer, signature, subject.name, arrays, values, outputs, alone, buffers, dtype, at)
            theirs = torch_trace(torch_fn, signature, arrays, values, shapes, alone, dtype, at)
            runs.append((through, alone, mine, theirs))
    return runs
