"""The smallest failing network, and the scenario file that reruns it.

``shrink(scenario, failing)`` takes a scenario on which ``failing(scenario)`` is
true and looks for a smaller one on which it still is, greedily, over the
scenario's own structure: without the optimizer or with fewer steps, without a
layer (the layers after it refitted to their new input), a narrower layer
(linear's outputs, conv2d's ``out_channels``, a recurrent layer's
``hidden_size``, an embedding's width or vocabulary), a narrower input (its
features, channels, height, width), a smaller batch, a shorter sequence. The
first candidate that still fails is taken and the search starts again from it;
it ends when no candidate fails — a local minimum, as Hypothesis's shrinker
finds — or after ``max_candidates`` tries.

Refitting keeps the numbers: an array that must change shape keeps the
entries it had where the new shape overlaps the old, and repeats them
cyclically where it grows (``_wrapped``). Every candidate goes through
``scenario_to_toml`` and the loader before it is tried, so an invalid one
(a kernel that no longer fits, channels the groups do not divide) is never
run, and the result is a file ``load_scenario`` reads back as it is.

"The same way" is the caller's predicate; ``failing_like(kind, engine)`` is
the usual one: the engine under test fails at an address of the same *kind* —
the layer type and what follows, ``conv2d.weight.grad``, ``step.linear.weight``
(``address_kind``) — so a network does not shrink towards another bug.
``failure_kind(scenario, rows)`` picks the kind from a verification's failing
rows: where the error enters (the first failing output of the forward pass;
else the failing gradient closest to the loss, a parameter's first).
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from typing import Callable

import numpy as np

from backprop_verify.reports.verification.compare import FAIL
from backprop_verify.scenarios.catalog import ACTIVATIONS, LAYERS
from backprop_verify.scenarios.loader import MAX_NAME_LENGTH, ScenarioError, scenario_from_dict, tied_as_used
from backprop_verify.scenarios.model import Layer, Scenario, walk_layers
from backprop_verify.scenarios.shapes import output_shape
from backprop_verify.scenarios.trace import _PARAMETER, split_address

__all__ = ["address_kind", "failing_like", "failure_kind", "scenario_to_toml", "shrink"]

MAX_CANDIDATES = 400


# --------------------------------------------------------------------------- the scenario file

def scenario_to_toml(scenario: Scenario) -> str:
    """``scenario`` as a scenario file (``docs/scenario-format.md``) that ``load_scenario`` reads back to an
    equal scenario: every array written out (numbers in ``repr``'s shortest round-trip form, float32
    values exactly as float64 holds them), every option given, tied weights as ``tied_to``."""
    lines = [f"name = {_string(scenario.name)}", f"dtype = {_string(scenario.dtype)}", f"seed = {scenario.seed}"]
    if scenario.tags:
        lines.append(f"tags = {_value(list(scenario.tags))}")
    if scenario.source:
        lines += ["", "[source]"] + [f"{_key(key)} = {_value(value)}" for key, value in scenario.source.items()]
    for layer in scenario.layers:
        _layer_table(layer, "layers", lines)
    lines += ["", "[loss]", f"type = {_string(scenario.loss.type)}", f"reduction = {_string(scenario.loss.reduction)}"]
    lines += ["", "[data]", f"x = {_array(scenario.x)}", f"y = {_array(scenario.y)}"]
    if scenario.optimizer is not None:
        lines += ["", "[optimizer]"] + _optimizer_lines(scenario)
    for expect in scenario.expects:
        lines += ["", "[[expect]]", f"at = {_string(expect.at)}", f"printed = {_string(expect.printed)}"]
        lines += [f"note = {_string(expect.note)}"] if expect.note else []
    for claim in scenario.claims:
        lines += ["", "[[claim]]", f"statement = {_string(claim.statement)}", f"at = {_string(claim.at)}",
                  f"formula = {_string(claim.formula)}", f"draws = {claim.draws}"]
        lines += [f"note = {_string(claim.note)}"] if claim.note else []
    return "\n".join(lines) + "\n"


def _layer_table(layer: Layer, header: str, lines: list[str]) -> None:
    """One ``[[layers]]`` table (``[[layers.layers]]`` inside a block): the type, the options, the arrays."""
    lines += ["", f"[[{header}]]", f"type = {_string(layer.type)}"]
    if layer.type == "residual":
        for inner in layer.layers:
            _layer_table(inner, f"{header}.layers", lines)
        return
    lines += [f"{_key(name)} = {_value(value)}" for name, value in layer.params.items()]
    if set(layer.tied) - {"weight"}:
        raise ValueError(f"layer {layer.type}: only a weight can be tied in a file (tied_to), got {sorted(layer.tied)}")
    if "weight" in layer.tied:
        lines.append(f"tied_to = {_string(layer.tied['weight'])}")
    elif layer.weight is not None:
        lines.append(f"weight = {_array(layer.weight)}")
    if layer.bias is not None:
        lines.append(f"bias = {_array(layer.bias)}")
    elif layer.type == "conv2d":
        lines.append("bias = false")  # a conv2d without ``bias`` draws PyTorch's default one
    arrays = {**layer.tensors, **layer.buffers, **layer.states, **layer.masks}
    lines += [f"{'.'.join(_key(part) for part in name.split('.'))} = {_array(value)}" for name, value in arrays.items()]


def _optimizer_lines(scenario: Scenario) -> list[str]:
    spec = scenario.optimizer
    lines = [f"type = {_string(spec.type)}", f"learning_rate = {_value(spec.learning_rate)}"]
    if spec.epochs is not None and spec.steps == spec.epochs * spec.updates_per_epoch(scenario.x.shape[0]):
        lines.append(f"epochs = {spec.epochs}")
    else:
        lines.append(f"steps = {spec.steps}")
    if spec.batch_size:
        lines.append(f"batch_size = {spec.batch_size}")
    lines += [f"{flag} = true" for flag in ("drop_last", "shuffle") if getattr(spec, flag)]
    lines += [f"{_key(name)} = {_value(value)}" for name, value in spec.options.items()]
    clipping = ("clip_grad_norm", "clip_grad_value", "clip_weights")
    lines += [f"{name} = {_value(getattr(spec, name))}" for name in clipping if getattr(spec, name) is not None]
    return lines


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _string(name)


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = []
    for character in text:
        code = ord(character)
        if character in '"\\':
            escaped.append("\\" + character)
        elif code < 0x20 or code == 0x7F:
            escaped.append(f"\\u{code:04X}")
        else:
            escaped.append(character)
    return '"' + "".join(escaped) + '"'


def _value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _number(float(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(entry) for entry in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to a scenario file")


def _number(number: float) -> str:
    """The shortest text that reads back as exactly ``number`` (TOML's inf and nan included)."""
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return repr(number)


def _array(array) -> str:
    """A nested list: 1-D inline, higher ranks one top-level entry per line."""
    array = np.asarray(array)
    entries = array.tolist()  # Python floats hold float32 values exactly
    if array.ndim <= 1:
        return _value(entries)
    return "[\n" + "".join(f"  {_value(entry)},\n" for entry in entries) + "]"


def read_back(text: str, file: str = "<shrunk scenario>") -> Scenario:
    """The scenario a file of ``text`` holds, checked as ``load_scenario`` checks a file (``ScenarioError``)."""
    return scenario_from_dict(tomllib.loads(text), file)


# --------------------------------------------------------------------------- kinds of address

_STEP = re.compile(r"^step[0-9]+\.")
_PARAMETER_GRAD = re.compile(rf"\.{_PARAMETER}\.grad$")  # a learned array's gradient


def address_kind(scenario: Scenario, address: str) -> str:
    """What an address is, without where: ``layers.3.weight.grad`` of a conv2d → ``conv2d.weight.grad``;
    ``step4.layers.0.bias`` → ``step.linear.bias``; ``loss``, ``input.grad``, ``step.loss`` as they are."""
    step = _STEP.match(address)
    rest = address[step.end():] if step else address
    prefix = "step." if step else ""
    if not rest.startswith("layers."):
        return prefix + rest
    path, what = split_address(rest)
    layer = dict(walk_layers(scenario.layers)).get(path)
    return f"{prefix}{layer.type if layer is not None else '?'}.{what}"


def failure_kind(scenario: Scenario, rows: list[dict], pairs=("engine-torch", "manual-torch")) -> str | None:
    """The kind (``address_kind``) of the failing row where the error enters, among ``rows`` of ``pairs``:
    a forward error travels towards the loss, so the first failing layer output (or the loss); else a
    backward error travels towards the input, so the failing gradient closest to the loss, a parameter's
    before an intermediate's; trajectory rows only when nothing at the initial parameters fails. None when
    no row fails."""
    failing = [row["address"] for row in rows if row["status"] == FAIL and row["pair"] in pairs]
    order = {path: position for position, (path, _layer) in enumerate(walk_layers(scenario.layers))}

    def position(address: str) -> int:
        rest = address[_STEP.match(address).end():] if _STEP.match(address) else address
        return order.get(split_address(rest)[0], -1) if rest.startswith("layers.") else -1

    for stepped in (False, True):
        group = [a for a in failing if bool(_STEP.match(a)) == stepped]
        forward = [a for a in group if not a.endswith(".grad")]
        if forward:
            return address_kind(scenario, min(forward, key=lambda a: (a.endswith("loss"), position(a))))
        if group:
            return address_kind(scenario, max(group, key=lambda a: (position(a), bool(_PARAMETER_GRAD.search(a)))))
    return None


def failing_like(kind: str, engine=None, with_fd: bool = False) -> Callable[[Scenario], bool]:
    """The predicate "the engine under test fails at an address of this ``kind``" (``address_kind``), judged
    by ``runner.verify(candidate, with_fd, engine)`` — the engine's rows against torch (and finite
    differences with ``with_fd``). An engine that raises on a candidate fails it another way: False."""
    # The runner imports torch (the reference engine); writing a scenario file needs none of it.
    from backprop_verify.reports.verification import runner

    def failing(candidate: Scenario) -> bool:
        try:
            verified = runner.verify(candidate, with_fd=with_fd, engine=engine)
        except Exception:  # noqa: BLE001 — a crash is not the failure being shrunk
            return False
        return any(address_kind(candidate, row["address"]) == kind for row in verified.failures(with_fd))

    return failing


# --------------------------------------------------------------------------- shrinking

def shrink(scenario: Scenario, failing: Callable[[Scenario], bool], max_candidates: int = MAX_CANDIDATES) -> Scenario:
    """The smallest scenario found on which ``failing`` is still true (see the module docstring), named
    ``{name}-shrunk``, without the original's printed numbers and claims (their addresses need not exist
    any more), ``source.shrunk_from`` naming the original. ``scenario_to_toml`` writes it."""
    if not failing(scenario):
        raise ValueError(f"scenario {scenario.name!r}: the predicate is false on it; expected a failing scenario")
    name = scenario.name[:MAX_NAME_LENGTH - len("-shrunk")] + "-shrunk"
    current = _checked(dataclasses.replace(scenario, name=name, expects=(), claims=(), path=None,
                                           source={**scenario.source, "shrunk_from": scenario.name}))
    if current is None:
        raise ValueError(f"scenario {scenario.name!r} cannot be written as a scenario file "
                         f"({_refusal(scenario)}); expected one the loader reads back")
    if not failing(current):
        raise ValueError(f"scenario {scenario.name!r}: its scenario file does not fail the same way; expected the "
                         "file form to fail as the scenario does")
    tried = 0
    improved = True
    while improved and tried < max_candidates:
        improved = False
        for candidate in _candidates(current):
            checked = _checked(candidate)
            if checked is None or not _smaller(checked, current):
                continue
            tried += 1
            if failing(checked):
                current, improved = checked, True
                break
            if tried >= max_candidates:
                break
    return current


def size(scenario: Scenario) -> tuple[int, int, int]:
    """What shrinking makes smaller, most important first: the layers (a block's inner ones included), the
    numbers (parameters, buffers, given states, inputs and targets), the optimizer's updates."""
    layers = list(walk_layers(scenario.layers))
    numbers = sum(np.size(value) for _path, layer in layers
                  for value in (*layer.parameters.values(), *layer.buffers.values(), *layer.states.values()))
    steps = scenario.optimizer.steps if scenario.optimizer else 0
    return len(layers), numbers + scenario.x.size + scenario.y.size, steps


def _smaller(candidate: Scenario, current: Scenario) -> bool:
    return size(candidate) < size(current)


def _checked(candidate: Scenario | None) -> Scenario | None:
    """The candidate as its scenario file reads back, or None where the loader refuses it."""
    if candidate is None:
        return None
    try:
        return read_back(scenario_to_toml(candidate))
    except (ScenarioError, ValueError, TypeError):
        return None


def _refusal(scenario: Scenario) -> str:
    """Why ``scenario``'s file does not read back (the loader's message)."""
    try:
        read_back(scenario_to_toml(scenario))
    except (ScenarioError, ValueError, TypeError) as err:
        return str(err)
    return "it reads back"


def _candidates(scenario: Scenario):
    """Smaller variants of ``scenario``, the largest cuts first; each refitted (``_refit``), possibly invalid
    (None, or refused by the loader later)."""
    spec = scenario.optimizer
    if spec is not None:
        yield dataclasses.replace(scenario, optimizer=None)
        for steps in _fewer(spec.steps):
            yield dataclasses.replace(scenario, optimizer=dataclasses.replace(spec, steps=steps, epochs=None))
    paths = [path for path, _layer in walk_layers(scenario.layers)]
    for path in reversed(paths):
        yield _refit(scenario, _without(scenario.layers, path))
    for path, layer in walk_layers(scenario.layers):
        for narrower in _narrower(layer, scenario):
            yield _refit(scenario, _replaced(scenario.layers, path, narrower))
    batch = scenario.x.shape[0]
    for rows in _fewer(batch):
        yield _refit(_cut(scenario, 0, rows), scenario.layers)
    if _is_sequence(scenario):
        for steps in _fewer(scenario.x.shape[1]):
            yield _refit(_cut(scenario, 1, steps), scenario.layers)
    if not _takes_token_ids(scenario):
        for axis in range(1, scenario.x.ndim):
            if axis == 1 and _is_sequence(scenario):
                continue  # the time axis: above
            for width in _fewer(scenario.x.shape[axis]):
                index = [slice(None)] * scenario.x.ndim
                index[axis] = slice(0, width)
                yield _refit(dataclasses.replace(scenario, x=scenario.x[tuple(index)]), scenario.layers)


def _fewer(count: int) -> list[int]:
    """Smaller counts to try, the smallest first: 1, half, one fewer."""
    return sorted({value for value in (1, count // 2, count - 1) if 1 <= value < count})


def _is_sequence(scenario: Scenario) -> bool:
    """Inputs with a time axis 1: sequences (N, T, F), or token ids (N, T) in front of an embedding."""
    return scenario.x.ndim == 3 or _takes_token_ids(scenario)


def _takes_token_ids(scenario: Scenario) -> bool:
    first = scenario.layers[0].type
    return first in LAYERS and LAYERS[first].grid_inputs == "token_ids"


def _cut(scenario: Scenario, axis: int, count: int) -> Scenario:
    """The first ``count`` samples (axis 0) or time steps (axis 1) of the data and of every array that holds
    one entry per sample or step: given states, key padding masks, the targets of a sequence loss."""
    def head(array: np.ndarray, along: int) -> np.ndarray:
        index = [slice(None)] * array.ndim
        index[along] = slice(0, count)
        return array[tuple(index)]

    def cut_layer(layer: Layer) -> Layer:
        states = {name: head(value, 0) for name, value in layer.states.items()} if axis == 0 else layer.states
        masks = {name: head(value, axis) for name, value in layer.masks.items()}
        return dataclasses.replace(layer, states=states, masks=masks, layers=tuple(map(cut_layer, layer.layers)))

    y = head(scenario.y, axis) if axis == 0 or scenario.y.ndim == 3 else scenario.y
    optimizer = scenario.optimizer
    if axis == 0 and optimizer is not None and optimizer.batch_size >= count:
        optimizer = dataclasses.replace(optimizer, batch_size=0, epochs=None)
    return dataclasses.replace(scenario, x=head(scenario.x, axis), y=y, optimizer=optimizer,
                               layers=tuple(map(cut_layer, scenario.layers)))


def _narrower(layer: Layer, scenario: Scenario):
    """The layer with fewer output units: linear's rows, conv2d's out_channels (a multiple of the groups),
    a recurrent layer's hidden_size, an embedding's width or vocabulary (above the largest id), a
    positional embedding's positions (at least the sequence's)."""
    kind = layer.type
    if kind == "linear" and not layer.tied:
        for out in _fewer(layer.weight.shape[0]):
            yield dataclasses.replace(layer, weight=_wrapped(layer.weight, (out, layer.weight.shape[1])),
                                      bias=None if layer.bias is None else _wrapped(layer.bias, (out,)))
    elif kind == "conv2d":
        groups = layer.params["groups"]
        for out in _fewer(layer.weight.shape[0]):
            if out % groups == 0:
                yield dataclasses.replace(
                    layer, params={**layer.params, "out_channels": out},
                    weight=_wrapped(layer.weight, (out, *layer.weight.shape[1:])),
                    bias=None if layer.bias is None else _wrapped(layer.bias, (out,)))
    elif kind in LAYERS and "hidden_size" in layer.params:
        for hidden in _fewer(layer.params["hidden_size"]):
            yield dataclasses.replace(layer, params={**layer.params, "hidden_size": hidden})
    elif kind == "embedding":
        vocabulary, width = layer.weight.shape
        for narrower in _fewer(width):
            yield dataclasses.replace(layer, params={**layer.params, "embedding_dim": narrower},
                                      weight=_wrapped(layer.weight, (vocabulary, narrower)))
        needed = int(scenario.x.max()) + 1 if scenario.x.size else 1
        for fewer in _fewer(vocabulary):
            if fewer >= needed:
                yield dataclasses.replace(layer, params={**layer.params, "num_embeddings": fewer},
                                          weight=_wrapped(layer.weight, (fewer, width)))
    elif kind == "positional_embedding":
        positions, width = layer.weight.shape
        for fewer in _fewer(positions):
            if fewer >= scenario.x.shape[1]:
                yield dataclasses.replace(layer, params={**layer.params, "num_embeddings": fewer},
                                          weight=_wrapped(layer.weight, (fewer, width)))


def _wrapped(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` brought to ``shape``: its own entries where the shapes overlap, repeated cyclically along an
    axis that grows (a refitted layer keeps the numbers it had, and never gets an all-zero block)."""
    array = np.asarray(array)
    if array.shape == tuple(shape):
        return array
    if array.ndim != len(shape):
        raise _Unfit(f"an array of shape {array.shape} cannot become {shape}")
    for axis, size_ in enumerate(shape):
        array = np.take(array, np.arange(size_) % array.shape[axis], axis=axis)
    return array


class _Unfit(ValueError):
    """A candidate whose layers cannot be refitted to their inputs."""


def _without(layers: tuple[Layer, ...], path: str) -> tuple[Layer, ...] | None:
    """``layers`` without the layer at ``path``, tied addresses after it moved up one (a tie to the dropped
    layer, or to a layer inside it, is undone: the tied layer keeps the array as its own); None when that
    would leave no layer (or an empty block)."""
    parts = path.split(".")
    container, index = ".".join(parts[:-1]), int(parts[-1])  # "layers.1.layers", 2

    def renamed(address: str) -> str | None:
        if address == path or address.startswith(path + "."):
            return None
        if address.startswith(container + "."):
            rest = address[len(container) + 1:].split(".", 1)
            position = int(rest[0])
            if position > index:
                return f"{container}.{position - 1}" + (f".{rest[1]}" if len(rest) > 1 else "")
        return address

    def drop(current: tuple[Layer, ...], prefix: str) -> tuple[Layer, ...]:
        out = []
        for i, layer in enumerate(current):
            here = f"{prefix}.{i}"
            if here == path:
                continue
            inner = drop(layer.layers, f"{here}.layers") if layer.layers else ()
            out.append(dataclasses.replace(layer, layers=inner))
        return tuple(out)

    def retie(current: tuple[Layer, ...]) -> tuple[Layer, ...]:
        out = []
        for layer in current:
            tied = {name: renamed(owner) for name, owner in layer.tied.items()}
            out.append(dataclasses.replace(layer, tied={name: owner for name, owner in tied.items() if owner},
                                           layers=retie(layer.layers)))
        return tuple(out)

    kept = retie(drop(layers, "layers"))
    if not kept or any(layer.type == "residual" and not layer.layers for _p, layer in walk_layers(kept)):
        return None
    return kept


def _replaced(layers: tuple[Layer, ...], path: str, new: Layer) -> tuple[Layer, ...]:
    """``layers`` with the layer at ``path`` replaced by ``new``."""
    def replace(current: tuple[Layer, ...], prefix: str) -> tuple[Layer, ...]:
        out = []
        for i, layer in enumerate(current):
            here = f"{prefix}.{i}"
            if here == path:
                out.append(new)
            elif path.startswith(here + "."):
                out.append(dataclasses.replace(layer, layers=replace(layer.layers, f"{here}.layers")))
            else:
                out.append(layer)
        return tuple(out)

    return replace(layers, "layers")


def _refit(scenario: Scenario, layers: tuple[Layer, ...] | None) -> Scenario | None:
    """``scenario`` with ``layers``, every layer refitted to the input it now gets (``_fit``) and the targets
    to the network's output; None where that cannot be done."""
    if layers is None:
        return None
    try:
        learned: dict[str, np.ndarray] = {}
        fitted, shape = _fit_all(layers, tuple(scenario.x.shape), "layers", learned)
        y = scenario.y
        if y.ndim != len(shape):
            return None
        y = _wrapped(y, (y.shape[0], *shape[1:]))
    except (ValueError, KeyError, IndexError):  # _Unfit, ShapeError: the layers no longer fit together
        return None
    return dataclasses.replace(scenario, layers=fitted, y=y)


def _fit_all(layers, shape: tuple[int, ...], prefix: str, learned: dict) -> tuple[tuple[Layer, ...], tuple]:
    out = []
    for i, layer in enumerate(layers):
        path = f"{prefix}.{i}"
        layer = _fit(layer, shape, path, learned)
        learned.update({f"{path}.{name}": value for name, value in layer.parameters.items()})
        shape = output_shape(layer, shape)
        out.append(layer)
    return tuple(out), shape


def _fit(layer: Layer, shape: tuple[int, ...], path: str, learned: dict) -> Layer:
    """``layer`` for an input of ``shape``: its arrays wrapped to the shapes its spec gives, the options that
    must equal the input's width set to it, a tied weight taken again from its (refitted) owner."""
    kind = layer.type
    if kind in ACTIVATIONS or kind == "embedding":
        return layer
    if kind == "residual":
        inner, _shape = _fit_all(layer.layers, shape, f"{path}.layers", learned)
        return dataclasses.replace(layer, layers=inner)
    weight = layer.weight
    if "weight" in layer.tied:
        weight = _tied_weight(layer, shape, learned[layer.tied["weight"]])
    if kind == "linear":
        weight = weight if "weight" in layer.tied else _wrapped(weight, (weight.shape[0], shape[-1]))
        bias = None if layer.bias is None else _wrapped(layer.bias, (weight.shape[0],))
        return dataclasses.replace(layer, weight=weight, bias=bias)
    params = dict(layer.params)
    for option in ("embed_dim", "embedding_dim"):  # attention's and the positional embedding's E: the input's
        if option in params and len(shape) == 3:
            params[option] = shape[-1]
    info = LAYERS[kind]
    wanted = info.tensor_shapes(params, shape) if info.tensor_shapes is not None else {}
    arrays = {"weight": weight, "bias": layer.bias, **layer.tensors, **layer.buffers, **layer.states,
              **layer.masks}
    fitted = {name: _wrapped(value, wanted[name]) for name, value in arrays.items()
              if value is not None and name in wanted}
    if "weight" in layer.tied:
        fitted["weight"] = weight
    missing = [name for name, value in arrays.items() if value is not None and name not in wanted]
    if missing:
        raise _Unfit(f"{kind}: {missing} have no shape for an input of {shape}")
    return dataclasses.replace(
        layer, params=params, weight=fitted.get("weight"), bias=fitted.get("bias"),
        tensors={name: fitted[name] for name in layer.tensors}, buffers={name: fitted[name] for name in layer.buffers},
        states={name: fitted[name] for name in layer.states}, masks={name: fitted[name] for name in layer.masks})


def _tied_weight(layer: Layer, shape: tuple[int, ...], owner: np.ndarray) -> np.ndarray:
    """The owner's array as the tied layer takes it (the loader's rule): itself, or its transpose where only
    the transpose's columns match a linear layer's input."""
    if layer.type == "linear":
        used = tied_as_used(owner, lambda s: None if len(s) == 2 and s[1] == shape[-1] else "does not fit")
        if used is None:
            raise _Unfit(f"tied weight of shape {owner.shape} does not take {shape[-1]} features")
        return used
    return np.array(owner)
