"""What a scenario's run will cost, estimated from its shapes before anything is computed.

Each of the loader's limits bounds one quantity (a tensor's entries, the
parameters, the steps), but a run's cost is their product: forty tanh layers on
a 2²⁴-entry input keep 40 outputs and 40 gradients in each engine's Trace; an
LSTM over 10⁶ steps makes a few array operations per step; twelve claims with a
hundred draws each run both engines a hundred times. ``estimate`` adds up, from
the layers' shapes and the catalogue's ``LayerInfo.cost``:

``memory``  bytes held at the peak: both engines' Traces (every layer's output
            and its gradient, the parameters and their gradients, the values
            each layer keeps for its backward pass — a convolution's column
            buffer, a recurrent layer's gates), the trajectory's recorded
            parameters, and the Traces of every claim draw (kept for all claims);
``work``    operations: every layer's floating-point operations (forward, and
            twice that backward) in both engines, for every optimizer step and
            every claim draw, plus finite differences where they may apply; each
            array operation counts at least ``CALL_COST`` (its fixed cost: a
            recurrent layer's per-step operations cost that much whatever their
            size).

The estimates are deliberately simple upper bounds (float64 throughout, the
full batch at every step): ``check_budget`` compares them with the limits
``memory`` and ``work`` (``scenarios.loader.Limits``; ``--limit`` raises them,
up to ``machine_memory()`` for memory) and refuses a file above either with
the quantity, its estimate, its largest part and the limit.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from backprop_verify.scenarios.catalog import held_values, layer_cost
from backprop_verify.scenarios.model import walk_layers

BYTES = 8          # float64: ``check`` and every claim draw compute in float64
ENGINES = 2        # manual and torch, each with its own Trace
BACKWARD = 2       # a backward pass costs about twice its forward pass
CALL_COST = 10_000  # operations one array operation costs whatever its size (~5 µs of a 2 GFLOP/s core)
FD_ENTRIES = 2_000  # finite differences perturb at most this many entries (reference.fd_oracle.FD_MAX_ENTRIES)
FD_EVALUATIONS = 4  # two evaluations per entry, twice again when refined (Richardson)


@dataclass(frozen=True)
class Estimate:
    """The run's ``memory`` (bytes) and ``work`` (operations), each with its largest part (field, what)."""

    memory: int
    work: int
    memory_part: tuple[str, str, int]
    work_part: tuple[str, str, int]


def machine_memory() -> int:
    """This machine's physical memory in bytes (the most ``--limit memory`` may ask for)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no bound beyond the default's
        return 2**40


def estimate(layers, shapes, input_shape, optimizer=None, claim_draws: int | None = None) -> Estimate:
    """The cost of checking a scenario: its layers with their output ``shapes``, its input shape, its
    optimizer (``steps`` updates) and, if it has claims, the largest number of draws they ask for."""
    held_by_layer, done_by_layer = [], []
    parameters, perturbed = 0, math.prod(input_shape)
    shape = tuple(input_shape)
    for layer, output_shape in zip(layers, shapes):
        cost = layer_cost(layer, shape, output_shape)
        own = sum(value.size for value in layer.parameters.values())
        # A block's cost holds its inner layers' share (catalog.held_values for each).
        held_by_layer.append(ENGINES * BYTES * held_values(output_shape, cost.kept, own))
        done_by_layer.append(ENGINES * (1 + BACKWARD) * (cost.flops + CALL_COST * cost.calls))
        count = sum(value.size for _, each in walk_layers([layer]) for value in each.parameters.values())
        parameters += count
        if count:  # finite differences perturb the parameters, the input and these layers' outputs
            perturbed += count + math.prod(output_shape)
        shape = tuple(output_shape)
    # The input and its gradient; the loss's own values on the network's output (a softmax's, its gradient).
    run_memory = ENGINES * BYTES * (2 * math.prod(input_shape) + 3 * math.prod(shape)) + sum(held_by_layer)
    run_work = sum(done_by_layer)
    memory_parts = [_layers_part(held_by_layer, layers, run_memory, "outputs, gradients and backward caches")]
    work_parts = [_layers_part(done_by_layer, layers, run_work, "forward and backward passes")]

    steps = optimizer.steps if optimizer is not None else 0
    if steps:
        trajectory = ENGINES * BYTES * steps * 2 * parameters  # the parameters recorded after every step
        memory_parts.append(("optimizer.steps", f"{steps:,} steps' recorded parameters", trajectory))
        work_parts.append(("optimizer.steps", f"{steps:,} steps of both engines", steps * run_work))
    if perturbed <= FD_ENTRIES:  # two forward passes per entry, in one engine, twice when refined
        work_parts.append(("layers", "finite differences", FD_EVALUATIONS * perturbed * run_work // (
            ENGINES * (1 + BACKWARD))))
    if claim_draws is not None:
        draws = claim_draws + 1  # each draw's data set, the file's own (draw 0) included
        memory_parts.append(("claim", f"the Traces of {draws:,} claim draws (kept for every claim)",
                             draws * run_memory))
        work_parts.append(("claim", f"{draws:,} claim draws of both engines", draws * run_work))
    return Estimate(sum(part[2] for part in memory_parts), sum(part[2] for part in work_parts),
                    max(memory_parts, key=lambda part: part[2]), max(work_parts, key=lambda part: part[2]))


def _layers_part(amounts: list[int], layers, total: int, what: str) -> tuple[str, str, int]:
    """The layers' share of a quantity as (field, what, amount): named after one layer when it holds
    most of it, after all of them otherwise."""
    largest = max(range(len(amounts)), key=amounts.__getitem__)
    if amounts[largest] * 2 > total:
        return f"layers[{largest}]", f"{layers[largest].type}'s {what}", total
    return "layers", (f"the {len(layers)} layers' {what} (the largest, layers[{largest}] {layers[largest].type}: "
                      f"{size_text(amounts[largest])})"), total


def size_text(count: float, unit: str = "B") -> str:
    """1.5 GB, 41 MB, 3.2e12 operations: the estimate as a reader takes it in."""
    if unit != "B":
        return f"{count:.2g} {unit}" if count >= 1e6 else f"{int(count):,} {unit}"
    for scale, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= scale:
            return f"{count / scale:.1f} {name}"
    return f"{int(count)} B"


def over_budget(cost: Estimate, memory_limit: int, work_limit: int) -> tuple[str, str] | None:
    """None if ``cost`` is within both limits; otherwise (the field of its largest part, the problem)."""
    if cost.memory > memory_limit:
        field, what, part = cost.memory_part
        return field, (f"the run needs about {size_text(cost.memory)} of memory (estimated from the shapes; the "
                       f"largest part: {what}, {size_text(part)}); expected at most {size_text(memory_limit)} "
                       f"(limit memory; raise it with --limit memory=N bytes, at most this machine's "
                       f"{size_text(machine_memory())})")
    if cost.work > work_limit:
        field, what, part = cost.work_part
        return field, (f"the run needs about {size_text(cost.work, 'operations')} (estimated from the shapes; "
                       f"the largest part: {what}, {size_text(part, 'operations')}); expected at most "
                       f"{size_text(work_limit, 'operations')} (limit work; raise it with --limit work=N)")
    return None
