"""The Trace: every quantity an engine computed, under a stable address.

Addresses (the same on every side — manual, torch, finite differences):

=============================  =================================================
``loss``                       the loss at the initial parameters
``layers.{i}.output``          output of layer i (z for linear, a for activation),
                               in PyTorch's layout: (N, F) or (N, C, H, W)
``layers.{i}.output.grad``     dL/d(output of layer i)  (δ for a linear layer)
``layers.{i}.weight``          initial weight of layer i: (out, in) for linear,
                               (out_channels, in_channels / groups, kh, kw) for
                               conv2d, γ for batch_norm and layer_norm
``layers.{i}.bias``            initial bias of layer i (β for the norms)
``layers.{i}.weight.grad``     dL/dW at the initial parameters
``layers.{i}.bias.grad``       dL/db at the initial parameters
``layers.{i}.running_mean``    batch_norm's running mean after the first forward
                               pass (likewise ``.running_var``)
``layers.{i}.mask``            dropout's 0/1 mask in the first forward pass
``layers.{i}.weight_ih``       a recurrent layer's parameters (likewise ``weight_hh``,
                               ``bias_ih``, ``bias_hh``, their ``.grad`` and ``step{t}.`` forms)
``layers.{i}.cell``            an LSTM's cell states c_t, (N, T, H); ``.cell.grad`` ∂L/∂c_t
``layers.{i}.h0.grad``         ∂L/∂h0 of a recurrent layer whose h0 is given (likewise ``c0``)
``layers.{i}.in_proj_weight``  multihead_attention's parameters (likewise ``in_proj_bias``,
                               ``out_proj.weight``, ``out_proj.bias``, their ``.grad`` and ``step{t}.`` forms)
``layers.{i}.attention``       multihead_attention's probabilities P (N, heads, T, T);
                               ``.attention.grad`` ∂L/∂P
``layers.{i}.branch.grad``     a residual block's branch's share of ∂L/∂x, (∂f/∂x)ᵀ δ (the skip path's
                               share is δ, ``layers.{i}.output.grad``)
``layers.{i}.layers.{j}.…``    every address above of layer j inside block i (``residual``), nestable
``input.grad``                 dL/dx
``step{t}.loss``               the loss computed in update t (before it is applied)
``step{t}.layers.{i}.weight``  the weight after t updates (likewise ``.bias``)
``step{t}.layers.{i}.weight.grad``  the gradient used by update t (likewise ``.bias.grad``)
``step{t}.layers.{i}.running_mean``  after update t's forward pass (likewise ``.running_var``)
=============================  =================================================

An element is written ``address[i,j,…]`` with one index per dimension
(``layers.3.output[0,1]``, ``layers.0.weight.grad[3,0,1,1]``); a scalar
address takes no index.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

import numpy as np

_ELEMENT = re.compile(r"^(?P<address>[A-Za-z0-9_.]+?)(?:\[(?P<index>[^\]]*)\])?$", re.ASCII)
_INDEX = re.compile(r"^ *[0-9]+ *$", re.ASCII)
_PARAMETER = (r"(?:weight|bias|weight_ih|weight_hh|bias_ih|bias_hh|in_proj_weight|in_proj_bias|out_proj\.weight"
              r"|out_proj\.bias)")
# A layer, or a layer inside a block (``layers.2.layers.0``, nestable).
_LAYER_PATH = r"layers\.[0-9]+(?:\.layers\.[0-9]+)*"
_ADDRESS = re.compile(
    rf"^(?:loss|input\.grad|{_LAYER_PATH}\.(?:output|output\.grad|{_PARAMETER}|{_PARAMETER}\.grad"
    r"|running_mean|running_var|mask|cell|cell\.grad|h0\.grad|c0\.grad|attention|attention\.grad|branch\.grad))$"
    rf"|^step(?P<step>[0-9]+)\.(?:loss|{_LAYER_PATH}\.(?:{_PARAMETER}|{_PARAMETER}\.grad|running_mean"
    r"|running_var))$",
    re.ASCII,
)


class BlindSpot(NamedTuple):
    """Elements of one address that an engine cannot determine (the finite-difference
    oracle's step crossing a kink): ``mask`` is True there; ``first`` says where
    and why for the first of them (``fd step at [0,0,4,2] crosses a max_pool2d
    tie at layers.3.output[0,0,2,1]``)."""

    mask: np.ndarray
    first: str

    @property
    def count(self) -> int:
        return int(self.mask.sum())


class Trace(dict):
    """An ordered mapping address -> np.ndarray, with the engine's name.

    ``blind`` maps an address to the elements this engine could not determine
    (``BlindSpot``); comparisons leave those elements out and say so.
    """

    def __init__(self, engine: str, values: dict | None = None, blind: dict | None = None):
        super().__init__(values or {})
        self.engine = engine
        self.blind: dict[str, BlindSpot] = dict(blind or {})

    def put(self, address: str, value) -> None:
        self[address] = np.array(value, copy=True)

    def element(self, spec: str) -> float:
        """The value at ``address`` or ``address[r,c]``."""
        address, index = parse_element(spec)
        if address not in self:
            raise KeyError(f"{self.engine} trace has no address {address!r}")
        value = self[address]
        if index is None:
            if value.size != 1:
                raise KeyError(f"{address!r} has shape {value.shape}; give an element index like {address}[0,0]")
            return float(value.reshape(()))
        if len(index) != value.ndim:
            raise KeyError(f"{spec!r}: {address!r} has {value.ndim} dimensions, the index gives {len(index)}")
        if any(i >= n for i, n in zip(index, value.shape)):
            raise KeyError(f"{spec!r}: index out of range for shape {value.shape}")
        return float(value[index])


@functools.lru_cache(maxsize=8192)
def index_text(flat: int, shape: tuple[int, ...]) -> str:
    """The element ``flat`` (C order) of an array of ``shape`` in the address syntax: ``[3,0,1,1]``; "" for a scalar."""
    if not shape:
        return ""
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return "[" + ",".join(map(str, reversed(index))) + "]"


def parse_element(spec: str) -> tuple[str, tuple[int, ...] | None]:
    """Split ``"layers.1.output[0,1]"`` into ``("layers.1.output", (0, 1))``.

    Every index is a non-negative decimal integer in ASCII digits; an empty
    one (``[0,,1]``, ``[]``) is an error, not skipped.
    """
    m = _ELEMENT.match(spec.strip())
    if not m:
        raise ValueError(f"not an address: {spec!r}")
    index = m.group("index")
    if index is None:
        return m.group("address"), None
    parts = index.split(",")
    if not all(_INDEX.match(part) for part in parts):
        raise ValueError(f"{spec!r}: expected one integer index per dimension, separated by commas")
    return m.group("address"), tuple(int(part) for part in parts)


def split_address(address: str) -> tuple[str, str]:
    """A layer's address and what follows: ``"layers.2.layers.0.weight"`` → ``("layers.2.layers.0", "weight")``;
    PyTorch's dotted parameter names stay whole: ``"layers.1.out_proj.weight"`` → ``("layers.1", "out_proj.weight")``."""
    parts = address.split(".")
    cut = max(k for k in range(0, len(parts) - 1, 2) if parts[k] == "layers") + 2
    return ".".join(parts[:cut]), ".".join(parts[cut:])


def is_trace_address(address: str) -> bool:
    """Whether ``address`` (without element index) has the documented form."""
    return bool(_ADDRESS.match(address))
