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
import stat
import sys
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from backprop_verify.scenarios import budget
from backprop_verify.scenarios.catalog import (ACTIVATIONS, DTYPES, INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, LayerInfo,
                                               ParamSpec)
from backprop_verify.scenarios.init import default_bias, fans, initialise_shape, layer_rng, shifted
from backprop_verify.scenarios.formula import FormulaError, parse_formula
from backprop_verify.scenarios.model import (Claim, Expectation, Layer, Loss, Optimizer, Scenario, learned_arrays,
                                             walk_layers)
from backprop_verify.scenarios.shapes import ShapeError, output_shape
from backprop_verify.scenarios.trace import _LAYER_PATH, is_trace_address, parse_element

TOP_LEVEL_KEYS = {"name", "dtype", "seed", "source", "layers", "loss", "data", "optimizer", "expect", "tags", "claim"}


@dataclass(frozen=True)
class Limits:
    """Bounds checked while a file is read, before anything is allocated: a
    file that asks for more is refused with the limit in the message (exit 2),
    not run until memory or patience runs out. ``backprop-verify check
    --limit NAME=N`` raises one.

    ``file_bytes``      size of the scenario file
    ``elements``        entries of one tensor: data, a weight, a layer's output
    ``parameters``      entries of all weights and biases together
    ``steps``           optimizer updates (``steps``, or ``epochs`` × updates per epoch)
    ``trace_elements``  values a trajectory records: steps × (2 · parameters + running statistics)
    ``rank``            dimensions of a tensor written as nested lists
    ``printed_digits``  digits of a printed number
    ``memory``          bytes the whole run holds at its peak, estimated from the shapes (``scenarios.budget``)
    ``work``            operations the whole run performs, estimated likewise (forward and backward passes of
                        both engines, every step, every claim draw; each array operation at least 10,000)
    """

    file_bytes: int = 16 * 2**20
    elements: int = 2**24
    parameters: int = 2**24
    steps: int = 100_000
    trace_elements: int = 2**26
    rank: int = 6
    printed_digits: int = 30
    memory: int = 2 * 2**30
    work: int = 10**11


DEFAULT_LIMITS = Limits()
MAX_NAME_LENGTH = 200
# Expectation targets that are not Trace addresses but properties of the scenario.
SCENARIO_QUANTITIES = ("updates_per_epoch", "parameter_count")


class ScenarioError(ValueError):
    """A scenario file (or dict) is invalid. ``str(err)`` is ``"file: field: problem"``."""

    def __init__(self, file: str, field: str, problem: str):
        self.file, self.field, self.problem = file, field, problem
        super().__init__(f"{file}: {field}: {problem}" if field else f"{file}: {problem}")


class _Reader:
    """Validation helpers bound to one file name and its limits."""

    def __init__(self, file: str, limits: Limits = DEFAULT_LIMITS):
        self.file = file
        self.limits = limits

    def within(self, field: str, what: str, count: int, limit_name: str) -> None:
        """Refuse ``count`` of ``what`` above the limit ``limit_name``."""
        limit = getattr(self.limits, limit_name)
        if count > limit:
            self.fail(field, f"{what} is {count:,}; expected at most {limit:,} (limit {limit_name}; "
                             f"raise it with --limit {limit_name}=N)")

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
        if isinstance(value, int) and abs(value) > MAX_FLOAT_INTEGER:
            self.fail(field, f"an integer of {_digits(value)} digits is beyond the range of a float (±1.8e308); "
                             "expected a number a float64 can hold")
        if not math.isfinite(value):
            self.fail(field, f"expected a finite number, got {value}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            self.fail(field, f"expected a number {'>' if exclusive else '>='} {minimum:g}, got {value}")
        return float(value)

    def integer(self, value: Any, field: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"expected an integer, got {_kind(value)}")
        if abs(value) > MAX_INTEGER:
            self.fail(field, f"an integer of {_digits(value)} digits; expected an integer below 2**63")
        if minimum is not None and value < minimum:
            self.fail(field, f"expected an integer >= {minimum}, got {value}")
        return int(value)

    def matrix(self, value: Any, field: str) -> np.ndarray:
        """A rectangular 2-D list of finite numbers."""
        if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
            self.fail(field, f"expected a non-empty list of rows (a 2-D array), got {_kind(value)}")
        return self.tensor(value, field, rank=2)

    def tensor(self, value: Any, field: str, rank: int | None = None) -> np.ndarray:
        """A rectangular nested list of finite numbers (of ``rank`` dimensions when given).

        The shape is read from the first entry at each depth and every entry
        checked against it, iteratively (no recursion on the file's nesting),
        and the element count against the limit before any array is built.
        """
        if not isinstance(value, list) or not value:
            expected = "a non-empty list of numbers" if rank == 1 else "a non-empty (nested) list of numbers"
            self.fail(field, f"expected {expected}, got {_kind(value)}")
        shape, probe = [], value
        while isinstance(probe, list):
            if len(shape) >= self.limits.rank:
                self.fail(field, f"nested deeper than {self.limits.rank} dimensions (limit rank; "
                                 "raise it with --limit rank=N)")
            if not probe:
                self.fail(field, f"an empty list at depth {len(shape)}; expected numbers")
            shape.append(len(probe))
            probe = probe[0]
        if rank is not None and len(shape) != rank:
            self.fail(field, f"expected a {rank}-D array, got {len(shape)} dimensions")
        self.within(field, "the number of entries", math.prod(shape), "elements")
        level = [(value, "")]
        for depth, size in enumerate(shape):
            last = depth == len(shape) - 1
            following = []
            for entries, where in level:
                if not isinstance(entries, list) or len(entries) != size:
                    got = f"{len(entries)} entries" if isinstance(entries, list) else _kind(entries)
                    if len(shape) == 2 and depth == 1:
                        row = where.strip("[]")
                        self.fail(field, f"row {row} has {got}, row 0 has {size}; expected a rectangular 2-D array")
                    self.fail(f"{field}{where}", f"has {got}; expected {size} (a rectangular array of shape "
                                                f"{tuple(shape)})")
                if last:
                    for k, entry in enumerate(entries):
                        self.number(entry, f"{field}{where}[{k}]")
                else:
                    following += [(entry, f"{where}[{k}]") for k, entry in enumerate(entries)]
            level = following
        return np.array(value, dtype=np.float64)

    def vector(self, value: Any, field: str) -> np.ndarray:
        return self.tensor(value, field, rank=1)

    def params(self, data: dict, specs: dict[str, ParamSpec], field: str) -> dict[str, Any]:
        out = {}
        for name, spec in specs.items():
            if name not in data and spec.default_from in data:
                data = {**data, name: data[spec.default_from]}  # pooling's stride: the kernel_size given
            if name not in data:
                if spec.default is None:
                    self.fail(f"{field}.{name}", f"missing; expected {spec.doc or 'a value'}")
                out[name] = spec.default
                continue
            where = f"{field}.{name}"
            value = data[name]
            if spec.kind is tuple:
                out[name] = self.pair(value, where, int(spec.minimum or 0))
            elif spec.maximum is not None:
                out[name] = self.number(value, where, spec.minimum)
                if out[name] > spec.maximum:
                    self.fail(where, f"expected a number in [{spec.minimum:g}, {spec.maximum:g}], got {value}")
            elif spec.kind is str:
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


    def pair(self, value: Any, field: str, minimum: int) -> tuple[int, int]:
        """An int, or a pair [h, w] of ints, each >= ``minimum``: returned as (h, w)."""
        entries = value if isinstance(value, list) else [value]
        if len(entries) not in (1, 2) or (isinstance(value, list) and len(entries) != 2):
            self.fail(field, f"expected an integer or a pair [h, w], got {_kind(value)}"
                      + (f" of {len(entries)} entries" if isinstance(value, list) else ""))
        numbers = [self.integer(entry, field, minimum) for entry in entries]
        self.within(field, "a size", max(numbers), "elements")
        return (numbers[0], numbers[-1])


# The largest integer a float64 holds finitely (the first one above rounds to inf), and the largest
# integer field any option, seed or count can use (NumPy's int64).
MAX_FLOAT_INTEGER = int(np.finfo(np.float64).max)
MAX_INTEGER = 2**63 - 1


def _digits(value: int) -> str:
    """How many decimal digits an integer has, without converting a huge one to text."""
    digits = int(abs(value).bit_length() * math.log10(2)) + 1
    return f"about {digits:,}" if digits > 4300 else f"{len(str(abs(value))):,}"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        return f"a number ({_digits(value)} digits)"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def load_scenario(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> Scenario:
    """Read and validate one scenario file: a regular file of at most
    ``limits.file_bytes`` bytes of UTF-8 TOML."""
    path = os.fspath(path)
    file = os.path.basename(path) or path
    text = _read_text(path, file, limits)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(file, "", f"not valid TOML: {err}") from None
    except RecursionError:
        field, line = _toml_position(text, _too_deep(text))
        raise ScenarioError(file, field, f"arrays or inline tables nested more than {MAX_TOML_NESTING} deep on line "
                                         f"{line}; expected a scenario (tensors of a few dimensions)") from None
    except ValueError:  # tomllib's int() of a number with more digits than Python converts (4,300)
        field, line = _toml_position(text, _huge_integer(text))
        raise ScenarioError(file, field, f"an integer of more than {sys.get_int_max_str_digits():,} digits on "
                                         f"line {line}; expected a number a float64 can hold") from None
    default_name = os.path.splitext(file)[0]
    try:
        return scenario_from_dict(data, file=file, default_name=default_name, path=path, limits=limits)
    except RecursionError:
        raise ScenarioError(file, "", "nested too deeply; expected a scenario (tensors of a few dimensions)") from None


# Deeper than any scenario nests (a tensor of the largest rank a --limit allows, in a table), shallower
# than the recursion that reading it would take: where the TOML reader gives up, this names the place.
MAX_TOML_NESTING = 100
_TOML_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]')
_TOML_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*([^\]\n]*?)[ \t]*\]", re.MULTILINE)
_TOML_KEY = re.compile(r"^[ \t]*([A-Za-z0-9_.\"' -]+?)[ \t]*=", re.MULTILINE)


def _too_deep(text: str) -> int:
    """The offset where arrays and inline tables first nest deeper than ``MAX_TOML_NESTING``."""
    depth = 0
    for token in _TOML_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_TOML_NESTING:
                return token.start()
        elif bracket in "]}":
            depth = max(depth - 1, 0)
    return len(text)


def _huge_integer(text: str) -> int:
    """The offset of the first integer with more digits than Python converts from text."""
    match = re.search(r"[0-9_]{%d,}" % (sys.get_int_max_str_digits() + 1), text)
    return match.start() if match else len(text)


def _toml_position(text: str, offset: int) -> tuple[str, int]:
    """(the field being assigned at ``offset`` — table header and key —, its line number), read from the text
    itself: for errors the TOML reader raises without saying where."""
    before = text[:offset]
    line = before.count("\n") + 1
    headers = list(_TOML_HEADER.finditer(before))
    keys = list(_TOML_KEY.finditer(before))
    key = keys[-1].group(1).strip() if keys else ""
    table = headers[-1].group(1).strip() if headers else ""
    if headers and headers[-1].group().lstrip().startswith("[["):  # the k-th [[layers]]: layers[k]
        same = [h for h in headers if h.group().lstrip().startswith("[[") and h.group(1).strip() == table]
        table = f"{table}[{len(same) - 1}]"
    if keys and headers and keys[-1].start() < headers[-1].start():
        key = ""
    return ".".join(part for part in (table, key) if part), line


def _read_text(path: str, file: str, limits: Limits) -> str:
    """The file's text, refused unless it is a regular file of bounded size in UTF-8."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ScenarioError(file, "", f"no such file: {path}") from None
    except OSError as err:
        raise ScenarioError(file, "", f"cannot be read ({err.strerror or err}); expected a scenario file") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ScenarioError(file, "", f"is {kind}; expected a scenario file (TOML)")
    if info.st_size > limits.file_bytes:
        raise ScenarioError(file, "", f"is {info.st_size:,} bytes; expected at most {limits.file_bytes:,} "
                                      "(limit file_bytes; raise it with --limit file_bytes=N)")
    try:
        with open(path, "rb") as handle:  # in pieces: read(n) sets n bytes aside before it reads any
            pieces, remaining = [], limits.file_bytes + 1
            while remaining and (piece := handle.read(min(remaining, max(info.st_size + 1, 2**16)))):
                pieces.append(piece)
                remaining -= len(piece)
            raw = b"".join(pieces)
    except OSError as err:
        raise ScenarioError(file, "", f"cannot be read ({err.strerror or err}); expected a scenario file") from None
    if len(raw) > limits.file_bytes:
        raise ScenarioError(file, "", f"is more than {limits.file_bytes:,} bytes (limit file_bytes)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ScenarioError(file, "", "starts with a byte-order mark (BOM); expected plain UTF-8 "
                                      "(save the file as UTF-8 without BOM)")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ScenarioError(file, "", "is UTF-16 text; expected UTF-8 (TOML files are UTF-8)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ScenarioError(file, "", f"is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
                                      "expected a UTF-8 TOML file") from None


def scenario_from_dict(data: dict, file: str = "<scenario>", default_name: str = "scenario",
                       path: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Scenario:
    """Validate a parsed scenario (the TOML structure as a dict)."""
    r = _Reader(file, limits)
    r.unknown_keys(data, TOP_LEVEL_KEYS, "")
    name = r.string(data, "name", "name", default=default_name)
    if len(name) > MAX_NAME_LENGTH:
        r.fail("name", f"{len(name):,} characters; expected at most {MAX_NAME_LENGTH} (a name is an identifier: "
                       "it heads every row, test id and --only match)")
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
    x = _data_tensor(r, data_table["x"], "data.x", seed, stream=0)
    y = _data_tensor(r, data_table["y"], "data.y", seed, stream=1)
    if x.shape[0] != y.shape[0]:
        r.fail("data.y", f"has {y.shape[0]} rows but data.x has {x.shape[0]}; expected one target row per input row")

    layers, shapes = _layers(r, data, x.shape, seed)
    out_shape = shapes[-1]
    if len(out_shape) not in (2, 3):
        r.fail("layers", f"the network's output has shape {out_shape}; losses take (N, features) or sequences "
                         "(N, T, C): end the network with a flatten (and linear) layer")
    if len(out_shape) == 3 and y.shape != out_shape:
        r.fail("data.y", f"has shape {y.shape} but the network outputs {out_shape}; expected one target per "
                         "sample and time step")
    if len(out_shape) == 2 and (y.ndim != 2 or y.shape[1] != out_shape[1]):
        got = f"rows have {y.shape[1]} entries" if y.ndim == 2 else f"has shape {y.shape}"
        r.fail("data.y", f"{got} but the network outputs {out_shape[1]}; expected {out_shape[1]}")

    optimizer = _optimizer(r, data, x.shape[0], layers) if "optimizer" in data else None
    expects = _expects(r, data, layers, shapes, x, optimizer)
    claims = _claims(r, data, layers, shapes, x)
    # The whole run within the limits memory and work, from the shapes alone: before generated data exist.
    cost = budget.estimate(layers, shapes, x.shape, optimizer,
                           max((claim.draws for claim in claims), default=None))
    refusal = budget.over_budget(cost, limits.memory, limits.work)
    if refusal is not None:
        r.fail(*refusal)
    x, y = (tensor.generate() if isinstance(tensor, _Generated) else tensor for tensor in (x, y))
    if layers[0].type == "embedding":
        _check_token_ids(r, x, layers[0])
    loss = _loss(r, data, y, layers)

    return Scenario(
        name=name, layers=tuple(layers), loss=loss, x=x.astype(dtype), y=y.astype(dtype),
        dtype=dtype, seed=seed, optimizer=optimizer, source=dict(source), expects=expects,
        claims=claims, path=path, tags=tuple(tags),
    )


def _layers(r: _Reader, data: dict, input_shape: tuple[int, ...], seed: int) -> tuple[list[Layer], list[tuple]]:
    """The layers, and the output shape of each (checked by ``scenarios.shapes``)."""
    raw = data.get("layers")
    if raw is None:
        r.fail("layers", "missing; expected at least one [[layers]] table")
    if not isinstance(raw, list) or not raw or not all(isinstance(l, dict) for l in raw):
        r.fail("layers", "expected a non-empty array of [[layers]] tables")
    layers, shapes = _layer_list(r, raw, "layers", tuple(input_shape), seed, (), {})
    r.within("layers", "the number of parameters", sum(value.size for value in learned_arrays(layers).values()),
             "parameters")  # a block's inner layers included
    return layers, shapes


def _layer_list(r: _Reader, raw: list, where: str, shape: tuple[int, ...], seed: int, block: tuple[int, ...],
                learned: dict[str, np.ndarray]) -> tuple[list[Layer], list[tuple]]:
    """The layers of ``raw`` (the file's ``[[layers]]``, or a block's ``[[layers.layers]]`` at ``where``) and
    the output shape of each. ``block``: the indices of the enclosing blocks (() at the top); a layer's
    generator is ``layer_rng(seed, i)`` at the top and ``layer_rng(seed, (i, j, …))`` inside a block.
    ``learned``: every parameter read so far by address (what ``tied_to`` may name), extended here."""
    layer_types = tuple(LAYERS) + tuple(ACTIVATIONS)
    layers, shapes = [], []
    address = "layers" if not block else "layers." + ".layers.".join(map(str, block)) + ".layers"
    for i, spec in enumerate(raw):
        field = f"{where}[{i}]"
        index = (*block, i) if block else i
        kind = r.string(spec, "type", f"{field}.type", choices=layer_types)
        if "tied_to" in spec and kind not in _TIEABLE:
            r.fail(f"{field}.tied_to", f"{kind} has no weight to tie; expected tied_to on a layer of type "
                                       f"{' or '.join(_TIEABLE)}")
        if kind == "linear":
            if len(shape) not in (2, 3):
                r.fail(f"{field}.type", f"linear takes (N, features) or sequences (N, T, features), but its input "
                                        f"has shape {shape}; add a flatten layer before it")
            layer = _linear(r, spec, field, shape[-1], seed, index, learned)
        elif kind in ACTIVATIONS:
            info = ACTIVATIONS[kind]
            r.unknown_keys(spec, {"type", *info.params}, field)
            layer = Layer(type=kind, params=r.params(spec, info.params, field))
        elif kind == "residual":
            layer = _residual(r, spec, field, shape, seed, index, learned)
        elif block and kind == "dropout":
            r.fail(f"{field}.type", "dropout inside a residual block: its masks are drawn per top-level layer "
                                    "(scenarios.masks); expected dropout outside the block")
        else:
            reader = _LAYER_READERS.get(kind, _from_spec)
            extra = {"learned": learned} if reader is _from_spec else {}
            layer = reader(r, spec, field, shape, seed, index, LAYERS[kind], **extra)
        try:
            shape = output_shape(layer, shape)
        except ShapeError as err:
            r.fail(field, f"{err} (input of shape {shape})")
        r.within(field, f"the output of shape {shape}: its number of entries", math.prod(shape), "elements")
        learned.update({f"{address}.{i}.{name}": value for name, value in layer.parameters.items()})
        layers.append(layer)
        shapes.append(shape)
    return layers, shapes


# Residual blocks inside residual blocks, at most this deep (each level is a pass of recursion in both engines).
MAX_BLOCK_DEPTH = 16
# The layers ``tied_to`` may stand on: each has a ``weight`` that can be another layer's.
_TIEABLE = ("linear", "positional_embedding", "layer_norm", "batch_norm", "group_norm")


def _residual(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int, index: int | tuple,
              learned: dict[str, np.ndarray]) -> Layer:
    """``residual``: a = x + f(x), f the block's own ``[[layers.layers]]`` (nestable), read like the file's."""
    r.unknown_keys(spec, {"type", "layers"}, field)
    raw = spec.get("layers")
    if not isinstance(raw, list) or not raw or not all(isinstance(l, dict) for l in raw):
        r.fail(f"{field}.layers", "missing or empty; expected the block's layers as [[layers.layers]] tables "
                                  "(an array of tables inside this one)")
    block = index if isinstance(index, tuple) else (index,)
    if len(block) > MAX_BLOCK_DEPTH:
        r.fail(f"{field}.layers", f"residual blocks nested {len(block)} deep; expected at most {MAX_BLOCK_DEPTH}")
    inner, _shapes = _layer_list(r, raw, f"{field}.layers", shape, seed, block, learned)
    return Layer(type="residual", layers=tuple(inner))


def _tied(r: _Reader, spec: dict, field: str, learned: dict[str, np.ndarray], fits) -> tuple[str, np.ndarray]:
    """``tied_to``: the address of an earlier layer's parameter, and that parameter as this layer uses it —
    itself, or transposed where only the transpose has a shape ``fits`` (a square one is never transposed)."""
    address = spec["tied_to"]
    if not isinstance(address, str) or address not in learned:
        named = ", ".join(list(learned)[:8]) + (", …" if len(learned) > 8 else "")
        r.fail(f"{field}.tied_to", f"{address!r} is not a parameter of an earlier layer; expected the address of "
                                   f"one ({named or 'no earlier layer has parameters'})")
    owner = learned[address]
    used = tied_as_used(owner, fits)
    if used is None:
        r.fail(f"{field}.tied_to", f"{address} has shape {owner.shape}; {fits(owner.shape)} (or the transpose)")
    return address, used


def tied_as_used(owner: np.ndarray, fits) -> np.ndarray | None:
    """A copy of the tied parameter as its use takes it: ``owner`` itself where ``fits(shape)`` is None (no
    problem), else its transpose where that fits (a square one is never transposed); None where neither."""
    for candidate in (owner, owner.T):
        if fits(candidate.shape) is None:
            return np.array(candidate)
    return None


def _weight_and_bias(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int, index: int,
                     what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A linear or conv2d layer's weight (given, or drawn by ``init``; default
    ``pytorch_default``) and bias (a list, ``true``: PyTorch's default draw,
    ``false``: none, ``"zeros"``)."""
    if "weight" in spec and "init" in spec:
        r.fail(f"{field}.init", "give either weight or init, not both")
    if "weight" in spec:
        weight = r.tensor(spec["weight"], f"{field}.weight", rank=len(shape))
        if weight.shape != shape:
            r.fail(f"{field}.weight", f"expected shape {shape} {what}, got {weight.shape}")
        for key in ("scale",):
            if key in spec:
                r.fail(f"{field}.{key}", "only allowed with init")
    else:
        init = r.string(spec, "init", f"{field}.init", choices=INITIALIZERS, default="pytorch_default")
        scale = r.number(spec["scale"], f"{field}.scale", 0.0, exclusive=True) if "scale" in spec else None
        r.within(f"{field}.weight", f"the number of entries of shape {shape}", math.prod(shape), "elements")
        weight = initialise_shape(init, shape, layer_rng(seed, index), scale)
    return weight, _bias(r, spec, field, shape, seed, index)


def _bias(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int,
          index: int | tuple) -> np.ndarray | None:
    """The bias of a weight of ``shape`` (out, in, …): a list, ``true`` (PyTorch's default draw, from
    the layer's second generator), ``false`` (none) or ``"zeros"``."""
    value = spec.get("bias", False)
    if value is False:
        return None
    if value is True:
        return default_bias((shape[0],), fans(shape)[0], layer_rng(seed, shifted(index, 1000)))
    if value == "zeros":
        return np.zeros(shape[0])
    bias = r.vector(value, f"{field}.bias")
    if bias.shape[0] != shape[0]:
        r.fail(f"{field}.bias", f"expected {shape[0]} entries (one per output unit), got {bias.shape[0]}")
    return bias


def _linear(r: _Reader, spec: dict, field: str, width: int, seed: int, index: int | tuple,
            learned: dict[str, np.ndarray]) -> Layer:
    r.unknown_keys(spec, {"type", "weight", "bias", "init", "in", "out", "scale", "tied_to"}, field)
    if "tied_to" in spec:
        return _tied_linear(r, spec, field, width, seed, index, learned)
    if "weight" in spec:
        for key in ("in", "out", "scale"):
            if key in spec:
                r.fail(f"{field}.{key}", "only allowed with init")
        if "init" in spec:
            r.fail(f"{field}.init", "give either weight or init, not both")
        weight = r.matrix(spec["weight"], f"{field}.weight")
        if weight.shape[1] != width:
            r.fail(f"{field}.weight", f"expected shape (out, {width}) (out, in): the layer's input has {width} "
                   f"features, got shape {weight.shape}")
        n_out = weight.shape[0]
    elif "init" in spec:
        r.string(spec, "init", f"{field}.init", choices=INITIALIZERS)
        n_in = r.integer(spec.get("in", width), f"{field}.in", minimum=1)
        if n_in != width:
            r.fail(f"{field}.in", f"expected {width} (the width of the previous layer), got {n_in}")
        if "out" not in spec:
            r.fail(f"{field}.out", "missing; expected the number of output units (an integer >= 1)")
        n_out = r.integer(spec["out"], f"{field}.out", minimum=1)
    else:
        r.fail(f"{field}.weight", "missing; expected weight = [[...], ...] of shape (out, in), or init = "
               f"one of: {', '.join(INITIALIZERS)}")
    weight, bias = _weight_and_bias(r, spec, field, (n_out, width), seed, index, "(out, in)")
    return Layer(type="linear", weight=weight, bias=bias)


def _tied_linear(r: _Reader, spec: dict, field: str, width: int, seed: int, index: int | tuple,
                 learned: dict[str, np.ndarray]) -> Layer:
    """A linear layer whose weight is another layer's (``tied_to``): (out, in) = the owner's shape, or its
    transpose's (``out``, when given, must agree); the bias is its own."""
    for key in ("weight", "init", "scale"):
        if key in spec:
            r.fail(f"{field}.{key}", "not allowed with tied_to (the weight is the tied parameter)")
    if "in" in spec and r.integer(spec["in"], f"{field}.in", minimum=1) != width:
        r.fail(f"{field}.in", f"expected {width} (the width of the previous layer), got {spec['in']}")
    out = r.integer(spec["out"], f"{field}.out", minimum=1) if "out" in spec else None

    def fits(shape: tuple[int, ...]) -> str | None:
        if len(shape) == 2 and shape[1] == width and out in (None, shape[0]):
            return None
        rows = "out" if out is None else out
        return f"expected a matrix ({rows}, {width}) (out, in) for an input of {width} features"

    address, weight = _tied(r, spec, field, learned, fits)
    return Layer(type="linear", weight=weight, bias=_bias(r, spec, field, weight.shape, seed, index),
                 tied={"weight": address})


def _tensor_shapes(r: _Reader, info: LayerInfo, params: dict, shape: tuple[int, ...], field: str) -> dict:
    """The spec's shapes of the layer's arrays for this input, its ``ShapeError`` reported at the option it names."""
    try:
        return info.tensor_shapes(params, shape)
    except ShapeError as err:
        r.fail(f"{field}.{err.field}" if err.field else field, str(err))


def _from_spec(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int, index: int | tuple,
               info: LayerInfo, learned: dict[str, np.ndarray] | None = None) -> Layer:
    """Any layer whose arrays a file gives as lists or leaves out: its options (``info.params``), then
    each parameter and buffer of the shape the spec gives (``info.tensor_shapes``), checked, or the
    spec's fill — a constant (γ = 1, β = 0, running statistics 0 and 1) or an initialiser drawn from
    the layer's generator (multihead_attention's weights, as PyTorch draws them; every such array is
    drawn in order whether given or not, so a given one leaves the others as they were). A parameter the
    options switch off (``info.switch``) is refused; ``tied_to`` makes ``weight`` an earlier layer's.
    PyTorch's dotted names may be written as TOML's dotted keys (``out_proj.weight = [[…]]``, read as a
    table ``out_proj``). Pooling, flatten, dropout, last_step, the normalisation layers, attention and
    the positional embedding are read here."""
    spec = _dotted_names(r, spec, info, field)
    tieable = {"tied_to"} if "weight" in info.parameters and learned is not None else set()
    r.unknown_keys(spec, {"type", *info.parameters, *info.buffers, *info.params, *tieable}, field)
    params = r.params(spec, info.params, field)
    shapes = _tensor_shapes(r, info, params, shape, field)
    tied = {}
    if "tied_to" in spec:
        if "weight" in spec:
            r.fail(f"{field}.weight", "not allowed with tied_to (the weight is the tied parameter)")
        if "weight" not in shapes:
            r.fail(f"{field}.tied_to", f"only allowed with {info.switch} = true (the layer has no weight otherwise)")
        wanted_weight = shapes["weight"]
        address, tied_weight = _tied(r, spec, field, learned, lambda got: None if got == wanted_weight else
                                     f"expected a weight of shape {wanted_weight}")
        tied = {"weight": address}
    rng = layer_rng(seed, index)
    arrays = {}
    for name in info.parameters + info.buffers:
        if name not in shapes:
            if name in spec:
                r.fail(f"{field}.{name}", f"only allowed with {info.switch} = true")
            continue
        wanted = shapes[name]
        fill = info.fills.get(name)
        drawn = initialise_shape(fill, wanted, rng) if isinstance(fill, str) else None
        if name in tied:
            arrays[name] = tied_weight
            continue
        if name not in spec:
            arrays[name] = drawn if drawn is not None else np.full(wanted, fill)
            continue
        value = r.tensor(spec[name], f"{field}.{name}", rank=len(wanted))
        if value.shape != wanted:
            r.fail(f"{field}.{name}", f"expected shape {wanted}, got {value.shape}")
        if name in info.nonnegative and (value < 0).any():
            r.fail(f"{field}.{name}", "expected variances >= 0" if "var" in name else "expected entries >= 0")
        arrays[name] = value
    return Layer(type=info.name, weight=arrays.get("weight"), bias=arrays.get("bias"), params=params,
                 buffers={name: arrays[name] for name in info.buffers if name in arrays},
                 tensors={name: arrays[name] for name in info.parameters
                          if name in arrays and name not in ("weight", "bias")}, tied=tied)


def _dotted_names(r: _Reader, spec: dict, info: LayerInfo, field: str) -> dict:
    """``spec`` with PyTorch's dotted parameter names whole: TOML reads ``out_proj.weight = …`` as a table
    ``out_proj = {weight = …}``; its keys are checked against the spec's names."""
    prefixes = {name.split(".")[0] for name in info.parameters if "." in name}
    flat = {}
    for key, value in spec.items():
        if key in prefixes and isinstance(value, dict):
            allowed = {name.split(".", 1)[1] for name in info.parameters if name.startswith(f"{key}.")}
            r.unknown_keys(value, allowed, f"{field}.{key}")
            flat.update({f"{key}.{name}": entry for name, entry in value.items()})
        else:
            flat[key] = value
    return flat


def _multihead_attention(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int,
                         index: int | tuple, info: LayerInfo) -> Layer:
    """Options and parameters as every spec's (``_from_spec``: PyTorch's draw for what the file leaves
    out), and the optional ``key_padding_mask``: (N, T) of true / false, true where a key is ignored; every
    query must keep a key (with ``causal``, the first key of every sample)."""
    layer = _from_spec(r, {key: value for key, value in spec.items() if key != "key_padding_mask"}, field, shape,
                       seed, index, info)
    if "key_padding_mask" not in spec:
        return layer
    where = f"{field}.key_padding_mask"
    raw = spec["key_padding_mask"]
    batch, steps = shape[0], shape[1]
    if not isinstance(raw, list) or len(raw) != batch or not all(isinstance(row, list) for row in raw):
        r.fail(where, f"expected {batch} rows (one per sample of data.x) of {steps} true / false values, "
                      f"got {_kind(raw) if not isinstance(raw, list) else f'{len(raw)} entries'}")
    for n, row in enumerate(raw):
        if len(row) != steps:
            r.fail(f"{where}[{n}]", f"has {len(row)} entries; expected {steps} (one per time step)")
        for t, entry in enumerate(row):
            if not isinstance(entry, bool):
                r.fail(f"{where}[{n}][{t}]", f"expected true (the key is ignored) or false, got {_kind(entry)}")
    mask = np.array(raw, dtype=bool)
    for n in range(batch):
        if layer.params["causal"] and mask[n, 0]:
            r.fail(f"{where}[{n}][0]", "true, but with causal = true the first query sees the first key alone; "
                                       "expected false")
        if mask[n].all():
            r.fail(f"{where}[{n}]", "masks every key of this sample; expected at least one false (a query needs "
                                    "a key to attend to)")
    return dataclasses.replace(layer, masks={"key_padding_mask": mask})


# The layers whose file form is their own: a weight a file may leave to an initialiser (``init``,
# ``scale``), linear's ``in`` / ``out``, an embedding's place in front. Every other layer is read
# by ``_from_spec`` from its catalogue spec alone.


def _conv2d(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int, index: int,
            info: LayerInfo) -> Layer:
    r.unknown_keys(spec, {"type", "weight", "bias", "init", "scale", *info.params}, field)
    params = r.params(spec, info.params, field)
    weight_shape = _tensor_shapes(r, info, params, shape, field)["weight"]
    weight, bias = _weight_and_bias(r, {"bias": True, **spec}, field, weight_shape, seed, index,
                                    "(out_channels, in_channels / groups, kh, kw)")
    return Layer(type="conv2d", weight=weight, bias=bias, params=params)


def _recurrent(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int, index: int,
               info: LayerInfo) -> Layer:
    """rnn, lstm, gru: ``weight_ih`` (G·H, F), ``weight_hh`` (G·H, H), ``bias_ih`` / ``bias_hh``
    (G·H,) given, or drawn as PyTorch draws them, U(−1/√H, 1/√H), from the layer's
    generator; ``h0`` (and ``c0``) optional initial states (N, H). G is the spec's ``gates``."""
    kind = info.name
    r.unknown_keys(spec, {"type", "init", *info.parameters, *info.data, *info.params}, field)
    params = r.params(spec, info.params, field)
    every = _tensor_shapes(r, info, params, shape, field)
    hidden = params["hidden_size"]
    shapes = {name: wanted for name, wanted in every.items() if name in info.parameters}
    if not params["bias"]:
        for name in ("bias_ih", "bias_hh"):
            if name in spec:
                r.fail(f"{field}.{name}", "only allowed with bias = true")
    init = r.string(spec, "init", f"{field}.init", choices=("pytorch_default",), default="pytorch_default")
    r.within(f"{field}.weight_ih", f"the number of entries of shape {shapes['weight_ih']}",
             math.prod(shapes["weight_ih"]), "elements")
    r.within(f"{field}.weight_hh", f"the number of entries of shape {shapes['weight_hh']}",
             math.prod(shapes["weight_hh"]), "elements")
    rng = layer_rng(seed, index)
    bound = 1.0 / math.sqrt(hidden)
    tensors = {}
    for name, wanted in shapes.items():  # drawn in this order whether given or not: the rest stay put
        drawn = rng.uniform(-bound, bound, wanted) if init == "pytorch_default" else None
        if name in spec:
            value = r.tensor(spec[name], f"{field}.{name}", rank=len(wanted))
            if value.shape != wanted:
                r.fail(f"{field}.{name}", f"expected shape {wanted}, got {value.shape} "
                                          f"({info.gates} gate(s) × hidden_size {hidden})")
            drawn = value
        tensors[name] = drawn
    states = {}
    for name in info.data:
        if name in spec:
            value = r.tensor(spec[name], f"{field}.{name}", rank=2)
            if value.shape != every[name]:
                r.fail(f"{field}.{name}", f"expected shape {every[name]} (N, hidden_size), got {value.shape}")
            states[name] = value
    return Layer(type=kind, params=params, tensors=tensors, states=states)


def _embedding(r: _Reader, spec: dict, field: str, shape: tuple[int, ...], seed: int, index: int,
               info: LayerInfo) -> Layer:
    r.unknown_keys(spec, {"type", "weight", "init", *info.params}, field)
    params = r.params(spec, info.params, field)
    if index != 0:
        r.fail(f"{field}.type", "embedding takes the token ids of data.x: expected it as the first layer")
    wanted = _tensor_shapes(r, info, params, shape, field)["weight"]
    if "weight" in spec:
        weight = r.tensor(spec["weight"], f"{field}.weight", rank=2)
        if weight.shape != wanted:
            r.fail(f"{field}.weight", f"expected shape {wanted} (num_embeddings, embedding_dim), got {weight.shape}")
    else:
        r.string(spec, "init", f"{field}.init", choices=("pytorch_default",), default="pytorch_default")
        r.within(f"{field}.weight", f"the number of entries of shape {wanted}", math.prod(wanted), "elements")
        weight = layer_rng(seed, index).standard_normal(wanted)  # torch.nn.Embedding's N(0, 1)
    return Layer(type="embedding", weight=weight, params=params)


def _check_token_ids(r: _Reader, x: np.ndarray, layer: Layer) -> None:
    """data.x holds integer ids in [0, num_embeddings); the first that is not is named."""
    count = layer.params["num_embeddings"]
    if x.ndim != 2:
        r.fail("data.x", f"has shape {x.shape}; embedding expected token ids (N, T)")
    bad = np.argwhere((x != np.floor(x)) | (x < 0) | (x >= count))
    if bad.size:
        n, t = (int(k) for k in bad[0])
        r.fail(f"data.x[{n}][{t}]", f"{x[n, t]:g} is not a token id; expected an integer in [0, {count})")


_LAYER_READERS = {"conv2d": _conv2d, "rnn": _recurrent, "lstm": _recurrent, "gru": _recurrent,
                  "embedding": _embedding, "multihead_attention": _multihead_attention}


def _loss(r: _Reader, data: dict, y: np.ndarray, layers: list[Layer]) -> Loss:
    table = r.table(data, "loss", "loss")
    r.unknown_keys(table, {"type", "reduction"}, "loss")
    kind = r.string(table, "type", "loss.type", choices=tuple(LOSSES))
    info = LOSSES[kind]
    reduction = r.string(table, "reduction", "loss.reduction", choices=info.reductions)
    if info.input_domain == "probability":
        last = next((l for l in reversed(layers) if l.type not in ("identity", "dropout")), layers[-1])
        if ACTIVATIONS.get(last.type) is None or ACTIVATIONS[last.type].output_range != "probability":
            outputs = [a.name for a in ACTIVATIONS.values() if a.output_range == "probability"]
            r.fail("loss.type", f"{kind} takes probabilities in (0, 1), but the network ends with {last.type!r}; "
                                f"expected a last layer {' or '.join(outputs)} (or the fused loss on logits: "
                                f"{'softmax_cross_entropy' if kind == 'cross_entropy' else 'bce_with_logits'})")
    if info.target_domain in ("distribution", "unit") and (y.min() < 0 or (info.target_domain == "unit" and y.max() > 1)):
        expected = "non-negative class probabilities" if info.target_domain == "distribution" else "targets in [0, 1]"
        r.fail("data.y", f"loss {kind} expects {expected}; got values in [{y.min():g}, {y.max():g}]")
    return Loss(kind, reduction)


OPTIMIZER_COMMON = ("type", "learning_rate", "steps", "epochs", "batch_size", "drop_last", "shuffle",
                    "clip_grad_norm", "clip_grad_value", "clip_weights")


def _optimizer(r: _Reader, data: dict, samples: int, layers: list[Layer]) -> Optimizer:
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
    if 0 < batch_size < samples and any(layer.states for layer in layers):
        r.fail("optimizer.batch_size", "the layers' given h0 / c0 belong to the samples of data.x; expected "
                                       "batch_size = 0 (the whole batch) with initial states")
    if 0 < batch_size < samples and any(layer.masks for _path, layer in walk_layers(layers)):
        r.fail("optimizer.batch_size", "a key_padding_mask belongs to the samples of data.x; expected "
                                       "batch_size = 0 (the whole batch) with a key_padding_mask")
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
        _check_steps(r, "optimizer.epochs", steps, layers)
        return dataclasses.replace(optimizer, steps=steps, epochs=epochs)
    steps = r.integer(table.get("steps", 1), "optimizer.steps", minimum=1)
    _check_steps(r, "optimizer.steps", steps, layers)
    return dataclasses.replace(optimizer, steps=steps)


def _check_steps(r: _Reader, field: str, steps: int, layers: list[Layer]) -> None:
    """The number of updates, and the values their trajectory records, within the limits."""
    r.within(field, "the number of updates", steps, "steps")
    recorded = sum(2 * value.size for value in learned_arrays(layers).values())
    recorded += sum(value.size for _path, layer in walk_layers(layers) for value in layer.buffers.values())
    r.within(field, f"the number of values {steps:,} updates record", steps * max(1, recorded), "trace_elements")


# --------------------------------------------------------------------------- generated data
#
# ``data.x`` / ``data.y`` are nested lists of any rank (rows (N, F), images
# (N, C, H, W)), or a table for examples whose point is their size:
#
#     x = {generate = "uniform", rows = 1000, cols = 784}
#     x = {generate = "normal", shape = [8, 3, 32, 32]}
#
# ``normal`` draws N(0, 1), ``uniform`` U[0, 1), ``one_hot`` a one-hot vector
# along the last axis of a uniformly drawn class. The generator is
# ``default_rng([seed, 0xDA7A, k])`` with the scenario seed and k = 0 for x,
# 1 for y: the same file always gives the same numbers, and a layer
# initialiser (``default_rng([seed, i])``) never shares a stream with the data.

DATA_GENERATORS = ("normal", "uniform", "one_hot")
_DATA_STREAM = 0xDA7A


def _data_tensor(r: _Reader, value: Any, field: str, seed: int, stream: int) -> "np.ndarray | _Generated":
    if not isinstance(value, dict):
        if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
            r.fail(field, f"expected a non-empty list of rows (batch first: (N, F) or (N, C, H, W)), "
                          f"got {_kind(value)}")
        return r.tensor(value, field)
    r.unknown_keys(value, {"generate", "rows", "cols", "shape"}, field)
    kind = r.string(value, "generate", f"{field}.generate", choices=DATA_GENERATORS)
    if "shape" in value:
        for key in ("rows", "cols"):
            if key in value:
                r.fail(f"{field}.{key}", "give either shape or rows and cols, not both")
        dims = value["shape"]
        if not isinstance(dims, list) or not 2 <= len(dims) <= r.limits.rank:
            r.fail(f"{field}.shape", f"expected a list of 2 to {r.limits.rank} sizes, batch first "
                                     f"(e.g. [8, 3, 32, 32]), got {_kind(dims)}")
        shape = tuple(r.integer(size, f"{field}.shape[{k}]", minimum=1) for k, size in enumerate(dims))
    else:
        for key in ("rows", "cols"):
            if key not in value:
                r.fail(f"{field}.{key}", "missing; expected an integer >= 1 (or give shape = [N, ...])")
        shape = (r.integer(value["rows"], f"{field}.rows", minimum=1),
                 r.integer(value["cols"], f"{field}.cols", minimum=1))
    r.within(field, f"the number of entries of shape {shape}", math.prod(shape), "elements")
    if kind == "one_hot" and shape[-1] < 2:
        where = f"{field}.cols" if "cols" in value else f"{field}.shape"
        r.fail(where, f"one_hot needs at least 2 classes, got {shape[-1]}")
    return _Generated(kind, shape, (seed, _DATA_STREAM, stream))


@dataclass(frozen=True)
class _Generated:
    """Data a file asks to be generated, by shape: drawn (``generate``) only once the whole run's cost is
    known to be within the limits, so that a refused file allocates nothing of its size."""

    kind: str
    shape: tuple[int, ...]
    key: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def generate(self) -> np.ndarray:
        rng = np.random.default_rng(list(self.key))
        if self.kind == "normal":
            return rng.standard_normal(self.shape)
        if self.kind == "uniform":
            return rng.random(self.shape)
        classes = rng.integers(0, self.shape[-1], size=self.shape[:-1])
        return (np.arange(self.shape[-1]) == classes[..., None]).astype(np.float64)


# --------------------------------------------------------------------------- printed numbers

_PRINTED = re.compile(
    r"^(?P<approx>[≈~]\s*)?(?P<sign>[+\-−])?(?P<int>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.(?P<frac>[0-9]+))?$"
)


def printed_number(printed: str) -> tuple[Decimal, int, bool] | None:
    """``(value, decimals, approximate)`` of a number as a document printed it, or None.

    Accepted: an optional ``≈`` (or ``~``), a sign (``-``, ``+`` or the minus
    sign ``−``), digits with optional thousands separators (``13,001``) and an
    optional decimal fraction, in ASCII digits. ``decimals`` is the number of
    digits after the point (0 for ``25``); the value is exact (a Decimal).
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


def _expects(r: _Reader, data: dict, layers: list[Layer], shapes: list[tuple], x: np.ndarray,
             optimizer: Optimizer | None) -> tuple[Expectation, ...]:
    """The ``[[expect]]`` tables: each address must exist in this scenario's Trace."""
    raw = data.get("expect", [])
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        r.fail("expect", "expected an array of [[expect]] tables")
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
        shape = _address_shape(address, layers, shapes, x, optimizer)
        if shape is None:
            r.fail(f"{field}.at", f"{address!r} does not exist in this scenario; {_why_missing(address, layers, optimizer)}")
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
                   f"\"13,001\"), got {printed[:40]!r}")
        digits = sum(character.isdigit() for character in printed)
        if digits > r.limits.printed_digits:
            r.fail(f"{field}.printed", f"has {digits} digits; expected at most {r.limits.printed_digits} (a float64 "
                                       "carries 17 significant digits; limit printed_digits)")
        note = r.string(spec, "note", f"{field}.note", default="") if "note" in spec else ""
        out.append(Expectation(at=at, printed=printed, note=note))
    return tuple(out)


# A claim's draws each run both engines once: bounded so that a file cannot ask for hours.
MAX_CLAIM_DRAWS = 100
DEFAULT_CLAIM_DRAWS = 12


def _claims(r: _Reader, data: dict, layers: list[Layer], shapes: list[tuple], x: np.ndarray) -> tuple[Claim, ...]:
    """The ``[[claim]]`` tables: ``at`` must be an address of this scenario at the initial parameters, and
    ``formula`` parse in the claim language (``scenarios.formula``) over this scenario's layers. Nothing is
    evaluated here (``reports.textbook.claims`` evaluates, with the guards that need values)."""
    raw = data.get("claim", [])
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        r.fail("claim", "expected an array of [[claim]] tables")

    def has(family: str, i: int) -> str | None:
        layer = layers[i]
        if family == "W" and layer.weight is None:
            return f"layer {i} is {layer.type!r}, which has no weight"
        if family == "b" and layer.bias is None:
            return f"layer {i} ({layer.type!r}) has no bias"
        return None

    out = []
    for k, spec in enumerate(raw):
        field = f"claim[{k}]"
        r.unknown_keys(spec, {"statement", "at", "formula", "draws", "note"}, field)
        statement = r.string(spec, "statement", f"{field}.statement")
        at = r.string(spec, "at", f"{field}.at")
        try:
            address, index = parse_element(at)
        except ValueError:
            address, index = None, None
        if address is None or not is_trace_address(address) or address.startswith("step"):
            r.fail(f"{field}.at", f"{at!r} is not a Trace address at the initial parameters; expected e.g. "
                   "layers.2.weight.grad, layers.3.output.grad, input.grad, loss or layers.0.bias.grad[1]")
        shape = _address_shape(address, layers, shapes, x, None)
        if shape is None:
            r.fail(f"{field}.at", f"{address!r} does not exist in this scenario; {_why_missing(address, layers, None)}")
        if index is not None and (len(index) != len(shape) or any(i >= n for i, n in zip(index, shape))):
            r.fail(f"{field}.at", f"index {list(index)} is out of range; {address!r} has shape {shape} "
                   f"(indices count from 0)")
        formula = r.string(spec, "formula", f"{field}.formula")
        try:
            parse_formula(formula, len(layers), has)
        except FormulaError as err:
            r.fail(f"{field}.formula", str(err))
        draws = r.integer(spec.get("draws", DEFAULT_CLAIM_DRAWS), f"{field}.draws", minimum=0)
        if draws > MAX_CLAIM_DRAWS:
            r.fail(f"{field}.draws", f"expected at most {MAX_CLAIM_DRAWS} (each draw runs both engines), got {draws}")
        note = r.string(spec, "note", f"{field}.note", default="") if "note" in spec else ""
        out.append(Claim(statement=statement, at=at, formula=formula, draws=draws, note=note))
    return tuple(out)


_LAYER_ADDRESS = re.compile(rf"^(?:step(?P<step>[0-9]+)\.)?(?:(?P<path>{_LAYER_PATH})\.(?P<what>[a-z_.]+)|loss)$")
_LAYER_PREFIX = re.compile(rf"^(?:step(?P<step>[0-9]+)\.)?(?:(?P<path>{_LAYER_PATH})\.(?P<what>[a-z_.]+))?")


def _locate(path: str, layers: list[Layer], shapes: list[tuple],
            input_shape: tuple[int, ...]) -> tuple[Layer, tuple, tuple] | None:
    """(the layer at ``path``, its output shape, its input shape), following ``layers.{i}.layers.{j}…`` into
    blocks; None where there is no such layer."""
    indices = [int(k) for k in path.split(".")[1::2]]
    for depth, index in enumerate(indices):
        if index >= len(layers):
            return None
        layer, layer_input = layers[index], input_shape if index == 0 else shapes[index - 1]
        if depth == len(indices) - 1:
            return layer, shapes[index], layer_input
        if not layer.layers:
            return None
        layers, shapes, input_shape = list(layer.layers), _inner_shapes(layer.layers, layer_input), layer_input
    return None


def _inner_shapes(layers, shape: tuple[int, ...]) -> list[tuple]:
    """The output shape of each of a block's layers, the block's input of ``shape``."""
    shapes = []
    for layer in layers:
        shape = output_shape(layer, shape)
        shapes.append(shape)
    return shapes


def _address_shape(address: str, layers: list[Layer], shapes: list[tuple], x: np.ndarray,
                   optimizer: Optimizer | None) -> tuple[int, ...] | None:
    """The shape of ``address`` in this scenario's Trace, or None if the Trace does not record it.

    Worked out from the address itself, so a scenario of many updates costs no
    more to check than one of a single update.
    """
    if address in ("updates_per_epoch", "parameter_count"):
        return ()
    if address == "input.grad":
        return None if layers[0].type == "embedding" else x.shape  # token ids have no gradient
    m = _LAYER_ADDRESS.match(address)
    if m is None:
        return None
    step = m.group("step")
    if step is not None and (optimizer is None or not 1 <= int(step) <= optimizer.steps):
        return None
    if m.group("path") is None:
        return ()  # loss, step{t}.loss
    found = _locate(m.group("path"), layers, shapes, x.shape)
    if found is None:
        return None
    layer, layer_output, layer_input = found
    what = m.group("what")
    if what in ("output", "output.grad"):
        return None if step is not None else layer_output
    name = what.removesuffix(".grad")
    if name in layer.parameters:
        return layer.parameters[name].shape
    if name in layer.tied and step is None:  # a tied use: its value and its own share of the gradient
        return layer.weight.shape
    if name in layer.buffers and not what.endswith(".grad"):
        return layer.buffers[name].shape
    if what == "mask" and layer.type == "dropout" and step is None:
        return layer_output
    if what in ("cell", "cell.grad") and layer.type == "lstm" and step is None:
        return layer_output
    if what == "branch.grad" and layer.type == "residual" and step is None:
        return layer_input
    if what in ("attention", "attention.grad") and layer.type == "multihead_attention" and step is None:
        batch, steps = layer_input[0], layer_input[1]
        return (batch, layer.params["num_heads"], steps, steps)
    if what.endswith(".grad") and name in layer.states and step is None:
        return layer.states[name].shape
    return None


def _why_missing(address: str, layers: list[Layer], optimizer: Optimizer | None) -> str:
    m = _LAYER_PREFIX.match(address)
    step, path, what = m.group("step"), m.group("path"), m.group("what")
    if step is not None:
        if optimizer is None:
            return "this scenario has no [optimizer], so it records no step{t} addresses"
        steps = optimizer.steps
        if not 1 <= int(step) <= steps:
            return f"expected a step from 1 to {steps} (the [optimizer] makes {steps} updates)"
    if path is not None:
        *outer, last = (int(k) for k in path.split(".")[1::2])
        within, where = layers, "layers"
        for index in outer:
            if index >= len(within) or not within[index].layers:
                return f"{where}.{index} is not a residual block with layers of its own"
            within, where = within[index].layers, f"{where}.{index}.layers"
        if last >= len(within):
            return f"expected a layer index from 0 to {len(within) - 1}" + (f" in {where}" if outer else "")
        layer = within[last]
        i = f"{where}.{last}".removeprefix("layers.") if not outer else f"{where}.{last}"
        name = (what or "").removesuffix(".grad")
        if name in layer.tied and step is not None:
            return (f"{path}.{name} is tied to {layer.tied[name]}: its updates are recorded there "
                    f"(step{{t}}.{layer.tied[name]})")
        if what and what.startswith(("weight", "bias")) and not layer.has_parameters and not layer.tied:
            return f"layer {i} is {layer.type!r}, which has no parameters"
        if what and what.startswith("bias") and not layer.tied:
            return f"layer {i} has no bias"
    return "expected an address this scenario's Trace records"
