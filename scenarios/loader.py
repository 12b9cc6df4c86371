"""Load and validate scenario files (TOML).

Every mistake is reported as a :class:`ScenarioError` whose message names the
file, the field (``layers[2].weight``) and what was expected, e.g.::

    my_example.toml: layers[0].weight: expected shape (2, 3) (out, in), got (3, 2)

The format is documented in docs/scenario-format.md.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from decimal import Decimal
from typing import Any

import numpy as np

from scenarios.catalog import ACTIVATIONS, DTYPES, INITIALIZERS, LOSSES, OPTIMIZERS, ParamSpec
from scenarios.init import initialise, layer_rng
from scenarios.model import Expectation, Layer, Loss, Optimizer, Scenario
from scenarios.trace import is_trace_address, parse_element

TOP_LEVEL_KEYS = {"name", "dtype", "seed", "source", "layers", "loss", "data", "optimizer", "expect", "tags"}
# Expectation targets that are not Trace addresses but properties of the scenario.
SCENARIO_QUANTITIES = ("updates_per_epoch", "parameter_count")


class ScenarioError(ValueError):
    """A scenario file (or dict) is invalid. ``str(err)`` is ``"file: field: problem"``."""

    def __init__(self, file: str, field: str, problem: str):
        self.file, self.field, self.problem = file, field, problem
        super().__init__(f"{file}: {field}: {problem}" if field else f"{file}: {problem}")


class _Reader:
    """Validation helpers bound to one file name."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, field: str, problem: str):
        raise ScenarioError(self.file, field, problem)

    def table(self, data: dict, key: str, field: str, required: bool = True) -> dict | None:
        if key not in data:
            if required:
                self.fail(field, "missing; expected a table")
            return None
        value = data[key]
        if not isinstance(value, dict):
            self.fail(field, f"expected a table, got {_kind(value)}")
        return value

    def unknown_keys(self, data: dict, allowed: set[str] | dict, field: str) -> None:
        extra = sorted(set(data) - set(allowed))
        if extra:
            where = f"{field}.{extra[0]}" if field else extra[0]
            self.fail(where, f"unknown field; expected one of: {', '.join(sorted(allowed))}")

    def string(self, data: dict, key: str, field: str, choices=None, default=None) -> str:
        if key not in data:
            if default is not None:
                return default
            self.fail(field, "missing" + (f"; expected one of: {', '.join(choices)}" if choices else "; expected a string"))
        value = data[key]
        if not isinstance(value, str):
            self.fail(field, f"expected a string, got {_kind(value)}")
        if choices is not None and value not in choices:
            self.fail(field, f"unknown value {value!r}; expected one of: {', '.join(choices)}")
        return value

    def number(self, value: Any, field: str, minimum: float | None = None, exclusive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            self.fail(field, f"expected a finite number, got {value}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            self.fail(field, f"expected a number {'>' if exclusive else '>='} {minimum:g}, got {value}")
        return float(value)

    def integer(self, value: Any, field: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            self.fail(field, f"expected an integer >= {minimum}, got {value}")
        return int(value)

    def matrix(self, value: Any, field: str) -> np.ndarray:
        """A rectangular 2-D list of finite numbers."""
        if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
            self.fail(field, f"expected a non-empty list of rows (a 2-D array), got {_kind(value)}")
        width = len(value[0])
        for r, row in enumerate(value):
            if len(row) != width or width == 0:
                self.fail(field, f"row {r} has {len(row)} entries, row 0 has {width}; expected a rectangular 2-D array")
            for c, entry in enumerate(row):
                self.number(entry, f"{field}[{r}][{c}]")
        return np.array(value, dtype=np.float64)

    def vector(self, value: Any, field: str) -> np.ndarray:
        if not isinstance(value, list) or not value:
            self.fail(field, f"expected a non-empty list of numbers, got {_kind(value)}")
        for i, entry in enumerate(value):
            self.number(entry, f"{field}[{i}]")
        return np.array(value, dtype=np.float64)

    def params(self, data: dict, specs: dict[str, ParamSpec], field: str) -> dict[str, Any]:
        out = {}
        for name, spec in specs.items():
            if name not in data:
                out[name] = spec.default
                continue
            where = f"{field}.{name}"
            value = data[name]
            if spec.kind is str:
                out[name] = self.string(data, name, where, choices=spec.choices or None)
            elif spec.kind is bool:
                if not isinstance(value, bool):
                    self.fail(where, f"expected true or false, got {_kind(value)}")
                out[name] = value
            elif spec.kind is int:
                out[name] = self.integer(value, where, None if spec.minimum is None else int(spec.minimum))
            else:
                out[name] = self.number(value, where, spec.minimum, exclusive=spec.minimum == 0.0)
        return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def load_scenario(path: str | os.PathLike) -> Scenario:
    """Read and validate one scenario file."""
    path = os.fspath(path)
    file = os.path.basename(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ScenarioError(file, "", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(file, "", f"not valid TOML: {err}") from None
    default_name = os.path.splitext(file)[0]
    return scenario_from_dict(data, file=file, default_name=default_name, path=path)


def scenario_from_dict(data: dict, file: str = "<scenario>", default_name: str = "scenario",
                       path: str | None = None) -> Scenario:
    """Validate a parsed scenario (the TOML structure as a dict)."""
    r = _Reader(file)
    r.unknown_keys(data, TOP_LEVEL_KEYS, "")
    name = r.string(data, "name", "name", default=default_name)
    dtype = r.string(data, "dtype", "dtype", choices=DTYPES, default="float64")
    seed = r.integer(data.get("seed", 0), "seed", minimum=0)
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        r.fail("tags", "expected a list of strings")

    source = r.table(data, "source", "source", required=False) or {}
    for key, value in source.items():
        if not isinstance(value, (str, int)):
            r.fail(f"source.{key}", f"expected a string, got {_kind(value)}")

    data_table = r.table(data, "data", "data")
    r.unknown_keys(data_table, {"x", "y"}, "data")
    if "x" not in data_table:
        r.fail("data.x", "missing; expected a list of input rows (batch-first)")
    if "y" not in data_table:
        r.fail("data.y", "missing; expected a list of target rows (batch-first)")
    x = _data_matrix(r, data_table["x"], "data.x", seed, stream=0)
    y = _data_matrix(r, data_table["y"], "data.y", seed, stream=1)
    if x.shape[0] != y.shape[0]:
        r.fail("data.y", f"has {y.shape[0]} rows but data.x has {x.shape[0]}; expected one target row per input row")

    layers = _layers(r, data, width=x.shape[1], seed=seed)
    out_width = _output_width(layers, x.shape[1])
    if y.shape[1] != out_width:
        r.fail("data.y", f"rows have {y.shape[1]} entries but the network outputs {out_width}; expected {out_width}")

    loss = _loss(r, data, y)
    optimizer = _optimizer(r, data, x.shape[0]) if "optimizer" in data else None
    expects = _expects(r, data, layers, x, optimizer)

    return Scenario(
        name=name, layers=tuple(layers), loss=loss, x=x.astype(dtype), y=y.astype(dtype),
        dtype=dtype, seed=seed, optimizer=optimizer, source=dict(source), expects=expects,
        path=path, tags=tuple(tags),
    )


def _layers(r: _Reader, data: dict, width: int, seed: int) -> list[Layer]:
    raw = data.get("layers")
    if raw is None:
        r.fail("layers", "missing; expected at least one [[layers]] table")
    if not isinstance(raw, list) or not raw or not all(isinstance(l, dict) for l in raw):
        r.fail("layers", "expected a non-empty array of [[layers]] tables")
    layer_types = ("linear",) + tuple(ACTIVATIONS)
    layers = []
    for i, spec in enumerate(raw):
        field = f"layers[{i}]"
        kind = r.string(spec, "type", f"{field}.type", choices=layer_types)
        if kind == "linear":
            layer = _linear(r, spec, field, width, seed, i)
            width = layer.weight.shape[0]
        else:
            info = ACTIVATIONS[kind]
            r.unknown_keys(spec, {"type", *info.params}, field)
            layer = Layer(type=kind, params=r.params(spec, info.params, field))
        layers.append(layer)
    return layers


def _linear(r: _Reader, spec: dict, field: str, width: int, seed: int, index: int) -> Layer:
    r.unknown_keys(spec, {"type", "weight", "bias", "init", "in", "out", "scale"}, field)
    if "weight" in spec and "init" in spec:
        r.fail(f"{field}.init", "give either weight or init, not both")
    if "weight" in spec:
        weight = r.matrix(spec["weight"], f"{field}.weight")
        if weight.shape[1] != width:
            r.fail(f"{field}.weight", f"expected shape (out, {width}) (out, in): the layer's input has {width} "
                   f"features, got shape {weight.shape}")
        for key in ("in", "out", "scale"):
            if key in spec:
                r.fail(f"{field}.{key}", "only allowed with init")
    elif "init" in spec:
        init = r.string(spec, "init", f"{field}.init", choices=INITIALIZERS)
        n_in = r.integer(spec.get("in", width), f"{field}.in", minimum=1)
        if n_in != width:
            r.fail(f"{field}.in", f"expected {width} (the width of the previous layer), got {n_in}")
        if "out" not in spec:
            r.fail(f"{field}.out", "missing; expected the number of output units (an integer >= 1)")
        n_out = r.integer(spec["out"], f"{field}.out", minimum=1)
        scale = r.number(spec["scale"], f"{field}.scale", 0.0, exclusive=True) if "scale" in spec else None
        weight = initialise(init, n_out, n_in, layer_rng(seed, index), scale)
    else:
        r.fail(f"{field}.weight", "missing; expected weight = [[...], ...] of shape (out, in), or init = "
               f"one of: {', '.join(INITIALIZERS)}")
    bias = None
    if "bias" in spec:
        value = spec["bias"]
        if value == "zeros":
            bias = np.zeros(weight.shape[0])
        else:
            bias = r.vector(value, f"{field}.bias")
            if bias.shape[0] != weight.shape[0]:
                r.fail(f"{field}.bias", f"expected {weight.shape[0]} entries (one per output unit), got {bias.shape[0]}")
    return Layer(type="linear", weight=weight, bias=bias)


def _output_width(layers: list[Layer], width: int) -> int:
    for layer in layers:
        if layer.is_linear:
            width = layer.weight.shape[0]
    return width


def _loss(r: _Reader, data: dict, y: np.ndarray) -> Loss:
    table = r.table(data, "loss", "loss")
    r.unknown_keys(table, {"type", "reduction"}, "loss")
    kind = r.string(table, "type", "loss.type", choices=tuple(LOSSES))
    info = LOSSES[kind]
    reduction = r.string(table, "reduction", "loss.reduction", choices=info.reductions)
    if info.target_domain in ("distribution", "unit") and (y.min() < 0 or (info.target_domain == "unit" and y.max() > 1)):
        expected = "non-negative class probabilities" if info.target_domain == "distribution" else "targets in [0, 1]"
        r.fail("data.y", f"loss {kind} expects {expected}; got values in [{y.min():g}, {y.max():g}]")
    return Loss(kind, reduction)


OPTIMIZER_COMMON = ("type", "learning_rate", "steps", "epochs", "batch_size", "drop_last", "shuffle",
                    "clip_grad_norm", "clip_grad_value", "clip_weights")


def _optimizer(r: _Reader, data: dict, samples: int) -> Optimizer:
    """The ``[optimizer]`` table: common settings, the optimizer's own options
    (catalogue ParamSpecs with their bounds), clipping, and cross-field rules."""
    table = r.table(data, "optimizer", "optimizer")
    kind = r.string(table, "type", "optimizer.type", choices=tuple(OPTIMIZERS))
    specs = OPTIMIZERS[kind]
    r.unknown_keys(table, set(OPTIMIZER_COMMON) | set(specs), "optimizer")
    if "learning_rate" not in table:
        r.fail("optimizer.learning_rate", "missing; expected a positive number")
    learning_rate = r.number(table["learning_rate"], "optimizer.learning_rate", 0.0, exclusive=True)
    batch_size = r.integer(table.get("batch_size", 0), "optimizer.batch_size", minimum=0)
    if batch_size > samples:
        r.fail("optimizer.batch_size", f"expected at most {samples} (the number of samples in data.x), got {batch_size}")
    flags = {}
    for key in ("drop_last", "shuffle"):
        flags[key] = table.get(key, False)
        if not isinstance(flags[key], bool):
            r.fail(f"optimizer.{key}", f"expected true or false, got {_kind(flags[key])}")
    options = {name: _option(r, table, name, spec) for name, spec in specs.items()}
    _check_option_rules(r, kind, options)
    clipping = {
        key: (r.number(table[key], f"optimizer.{key}", 0.0, exclusive=True) if key in table else None)
        for key in ("clip_grad_norm", "clip_grad_value")
    }
    clipping["clip_weights"] = _clip_range(r, table)
    optimizer = Optimizer(kind, learning_rate, 1, options, batch_size=batch_size, **flags, **clipping)
    if "epochs" in table:
        if "steps" in table:
            r.fail("optimizer.epochs", "give either steps or epochs, not both")
        epochs = r.integer(table["epochs"], "optimizer.epochs", minimum=1)
        steps = epochs * optimizer.updates_per_epoch(samples)
        return dataclasses.replace(optimizer, steps=steps, epochs=epochs)
    steps = r.integer(table.get("steps", 1), "optimizer.steps", minimum=1)
    return dataclasses.replace(optimizer, steps=steps)


# --------------------------------------------------------------------------- generated data
#
# ``data.x`` / ``data.y`` may be a table instead of a list of rows, for examples
# whose point is their size (a 784-pixel input, a 1,000-sample data set):
#
#     x = {generate = "uniform", rows = 1000, cols = 784}
#
# ``normal`` draws N(0, 1), ``uniform`` U[0, 1), ``one_hot`` a one-hot row of a
# uniformly drawn class. The generator is ``default_rng([seed, 0xDA7A, k])``
# with the scenario seed and k = 0 for x, 1 for y: the same file always gives
# the same numbers, and a layer initialiser (``default_rng([seed, i])``) never
# shares a stream with the data.

DATA_GENERATORS = ("normal", "uniform", "one_hot")
_DATA_STREAM = 0xDA7A


def _data_matrix(r: _Reader, value: Any, field: str, seed: int, stream: int) -> np.ndarray:
    if not isinstance(value, dict):
        return r.matrix(value, field)
    r.unknown_keys(value, {"generate", "rows", "cols"}, field)
    kind = r.string(value, "generate", f"{field}.generate", choices=DATA_GENERATORS)
    for key in ("rows", "cols"):
        if key not in value:
            r.fail(f"{field}.{key}", "missing; expected an integer >= 1")
    rows = r.integer(value["rows"], f"{field}.rows", minimum=1)
    cols = r.integer(value["cols"], f"{field}.cols", minimum=1)
    if kind == "one_hot" and cols < 2:
        r.fail(f"{field}.cols", f"one_hot needs at least 2 classes, got {cols}")
    rng = np.random.default_rng([seed, _DATA_STREAM, stream])
    if kind == "normal":
        return rng.standard_normal((rows, cols))
    if kind == "uniform":
        return rng.random((rows, cols))
    out = np.zeros((rows, cols))
    out[np.arange(rows), rng.integers(0, cols, size=rows)] = 1.0
    return out


# --------------------------------------------------------------------------- printed numbers

_PRINTED = re.compile(
    r"^(?P<approx>[≈~]\s*)?(?P<sign>[+\-−])?(?P<int>\d{1,3}(?:,\d{3})+|\d*)(?:\.(?P<frac>\d+))?$"
)


def printed_number(printed: str) -> tuple[Decimal, int, bool] | None:
    """``(value, decimals, approximate)`` of a number as a document printed it, or None.

    Accepted: an optional ``≈`` (or ``~``), a sign (``-``, ``+`` or the minus
    sign ``−``), digits with optional thousands separators (``13,001``) and an
    optional decimal fraction. ``decimals`` is the number of digits after the
    point (0 for ``25``); the value is exact (a Decimal).
    """
    m = _PRINTED.match(printed.strip())
    if not m or not (m.group("int") or m.group("frac")):
        return None
    frac = m.group("frac") or ""
    digits = (m.group("int") or "0").replace(",", "") + ("." + frac if frac else "")
    sign = "-" if m.group("sign") in ("-", "−") else ""
    return Decimal(sign + digits), len(frac), m.group("approx") is not None


def _option(r: _Reader, table: dict, name: str, spec: ParamSpec) -> Any:
    """One optimizer option: its default, or the file's value checked against the spec."""
    if name not in table:
        return spec.default
    where, value = f"optimizer.{name}", table[name]
    if spec.kind is str:
        return r.string(table, name, where, choices=spec.choices or None)
    if spec.kind is bool:
        if not isinstance(value, bool):
            r.fail(where, f"expected true or false, got {_kind(value)}")
        return value
    number = r.number(value, where)
    low, high = spec.minimum, spec.maximum
    low_ok = low is None or (number >= low if spec.bounds[0] == "[" else number > low)
    high_ok = high is None or (number <= high if spec.bounds[1] == "]" else number < high)
    if not (low_ok and high_ok):
        interval = (f"{spec.bounds[0]}{'-inf' if low is None else f'{low:g}'}, "
                    f"{'inf' if high is None else f'{high:g}'}{spec.bounds[1] if high is not None else ')'}")
        r.fail(where, f"expected a number in {interval}, got {value}")
    return number


def _check_option_rules(r: _Reader, kind: str, options: dict) -> None:
    """Rules that involve two options at once."""
    if kind == "sgd":
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            r.fail("optimizer.nesterov", "Nesterov momentum needs momentum > 0 and dampening = 0, "
                   f"got momentum = {options['momentum']:g}, dampening = {options['dampening']:g}")
        if options["momentum_form"] == "textbook" and options["dampening"] != 0:
            r.fail("optimizer.dampening", "the textbook momentum form v = βv + ηg has no dampening; "
                   f"expected 0 with momentum_form = \"textbook\", got {options['dampening']:g}")
    if kind == "ftrl" and options["beta"] == 0 and options["l2"] == 0 and options["initial_accumulator_value"] == 0:
        r.fail("optimizer.beta", "with beta = 0, l2 = 0 and initial_accumulator_value = 0 the FTRL denominator "
               "(β + √n)/α + λ₂ is 0 for a coordinate whose gradients are all 0; expected beta > 0 (the paper uses 1)")


def _clip_range(r: _Reader, table: dict) -> tuple[float, float] | None:
    if "clip_weights" not in table:
        return None
    value = table["clip_weights"]
    if not isinstance(value, list) or len(value) != 2:
        r.fail("optimizer.clip_weights", f"expected [lo, hi], two numbers, got {_kind(value)}"
               + (f" of {len(value)} entries" if isinstance(value, list) else ""))
    low = r.number(value[0], "optimizer.clip_weights[0]")
    high = r.number(value[1], "optimizer.clip_weights[1]")
    if not low < high:
        r.fail("optimizer.clip_weights", f"expected lo < hi, got [{low:g}, {high:g}]")
    return (low, high)


def _expects(r: _Reader, data: dict, layers: list[Layer], x: np.ndarray,
             optimizer: Optimizer | None) -> tuple[Expectation, ...]:
    """The ``[[expect]]`` tables: each address must exist in this scenario's Trace."""
    raw = data.get("expect", [])
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        r.fail("expect", "expected an array of [[expect]] tables")
    shapes = _address_shapes(layers, x, optimizer)
    out = []
    for i, spec in enumerate(raw):
        field = f"expect[{i}]"
        r.unknown_keys(spec, {"at", "printed", "note"}, field)
        at = r.string(spec, "at", f"{field}.at")
        try:
            address, index = parse_element(at)
        except ValueError:
            address, index = None, None
        if address is None or not (is_trace_address(address) or address in SCENARIO_QUANTITIES):
            r.fail(f"{field}.at", f"{at!r} is not a Trace address; expected e.g. loss, layers.1.output[0,0], "
                   f"step1.layers.0.weight[0,1], or one of: {', '.join(SCENARIO_QUANTITIES)}")
        if address not in shapes:
            r.fail(f"{field}.at", f"{address!r} does not exist in this scenario; {_why_missing(address, layers, optimizer)}")
        shape = shapes[address]
        if index is None and math.prod(shape) != 1:
            r.fail(f"{field}.at", f"{address!r} has shape {shape}; expected an element index like {address}[0,0]")
        if index is not None and (len(index) != len(shape) or any(k >= n for k, n in zip(index, shape))):
            r.fail(f"{field}.at", f"index {list(index)} is out of range; {address!r} has shape {shape} "
                   f"(indices count from 0)")
        if "printed" not in spec:
            r.fail(f"{field}.printed", "missing; expected the number as printed, as a string (e.g. \"0.567\")")
        printed = spec["printed"]
        if not isinstance(printed, str):
            r.fail(f"{field}.printed", f"expected a string exactly as printed (e.g. \"0.567\"), got {_kind(printed)}")
        if printed_number(printed) is None:
            r.fail(f"{field}.printed", f"expected a decimal number as printed (e.g. \"0.567\", \"-10\", \"≈ 0.88\", "
                   f"\"13,001\"), got {printed!r}")
        note = r.string(spec, "note", f"{field}.note", default="") if "note" in spec else ""
        out.append(Expectation(at=at, printed=printed, note=note))
    return tuple(out)


def _address_shapes(layers: list[Layer], x: np.ndarray, optimizer: Optimizer | None) -> dict[str, tuple[int, ...]]:
    """Every address this scenario's Trace holds, with its shape."""
    batch, width = x.shape
    shapes: dict[str, tuple[int, ...]] = {"loss": (), "input.grad": x.shape,
                                          "updates_per_epoch": (), "parameter_count": ()}
    params: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(layers):
        if layer.is_linear:
            width = layer.weight.shape[0]
            params[f"layers.{i}.weight"] = layer.weight.shape
            if layer.bias is not None:
                params[f"layers.{i}.bias"] = layer.bias.shape
        shapes[f"layers.{i}.output"] = shapes[f"layers.{i}.output.grad"] = (batch, width)
    for name, shape in params.items():
        shapes[name] = shapes[f"{name}.grad"] = shape
    for t in range(1, (optimizer.steps if optimizer else 0) + 1):
        shapes[f"step{t}.loss"] = ()
        for name, shape in params.items():
            shapes[f"step{t}.{name}"] = shapes[f"step{t}.{name}.grad"] = shape
    return shapes


def _why_missing(address: str, layers: list[Layer], optimizer: Optimizer | None) -> str:
    m = re.match(r"^(?:step(?P<step>[0-9]+)\.)?(?:layers\.(?P<layer>[0-9]+)\.(?P<what>[a-z.]+))?", address)
    step, layer, what = m.group("step"), m.group("layer"), m.group("what")
    if step is not None:
        if optimizer is None:
            return "this scenario has no [optimizer], so it records no step{t} addresses"
        steps = optimizer.steps
        if not 1 <= int(step) <= steps:
            return f"expected a step from 1 to {steps} (the [optimizer] makes {steps} updates)"
    if layer is not None:
        i = int(layer)
        if i >= len(layers):
            return f"expected a layer index from 0 to {len(layers) - 1}"
        if what and what.startswith(("weight", "bias")) and not layers[i].is_linear:
            return f"layer {i} is {layers[i].type!r}, which has no parameters"
        if what and what.startswith("bias"):
            return f"layer {i} has no bias"
    return "expected an address this scenario's Trace records"
