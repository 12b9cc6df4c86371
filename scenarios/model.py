"""The plain-data Scenario: layers, a loss, a batch, an optional optimizer.

A Scenario holds concrete NumPy arrays (initialisers are resolved when it is
built), so both engines start from exactly the same numbers. It carries no
behaviour: ``manual.run`` and ``reference.run`` each interpret it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backprop_verify.scenarios.catalog import LAYERS, OPTIMIZERS


@dataclass(frozen=True)
class Layer:
    """One layer. ``type`` is a layer of the catalogue (``LAYERS``) or an activation.

    ``weight`` and ``bias`` are the learned arrays, None where the layer has
    none: for a linear layer (out, in) — weight[j][k] connects input k to unit
    j — and (out,); for conv2d (out_channels, in_channels / groups, kh, kw) and
    (out_channels,); for batch_norm γ and β (C,); for layer_norm γ and β of the
    normalised shape. ``tensors`` holds the learned arrays of other names —
    a recurrent layer's ``weight_ih`` (G·H, F), ``weight_hh`` (G·H, H),
    ``bias_ih``, ``bias_hh`` (G·H,), G gates in PyTorch's order. ``buffers``
    holds batch_norm's running statistics as they are before the first pass;
    ``states`` a recurrent layer's given initial states ``h0`` / ``c0`` (N, H),
    inputs that get gradients. ``params`` holds the options, defaults filled
    in (pairs as tuples).
    """

    type: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    states: dict[str, np.ndarray] = field(default_factory=dict)
    # A block's own layers (``residual``: output x + f(x), f these layers in order), addressed
    # ``layers.{i}.layers.{j}…``; empty for every other layer.
    layers: tuple["Layer", ...] = ()
    # Boolean arrays the layer is given, never learned nor differentiated: multihead_attention's
    # ``key_padding_mask`` (N, T), True where a key is ignored (PyTorch's convention).
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    # Weight tying: own parameter name -> the address of the parameter it is (``"layers.0.weight"``).
    # The array under that name is the owner's, transposed where the shapes differ (a square one is
    # never transposed); it is not a parameter of its own (``parameters`` leaves it out), and its
    # gradient is added to the owner's.
    tied: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        # A block's layers may be given as plain data, {"type": …, **fields} (a catalogue spec's ``build``).
        inner = tuple(each if isinstance(each, Layer) else Layer(**each) for each in self.layers)
        object.__setattr__(self, "layers", inner)

    @property
    def is_linear(self) -> bool:
        return self.type == "linear"

    @property
    def has_parameters(self) -> bool:
        return bool(self.parameters)

    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """The learned arrays by name (``weight`` before ``bias``, then ``tensors``), those the layer has and
        owns (a tied one is its owner's; a block's inner layers hold their own)."""
        named = {name: value for name, value in (("weight", self.weight), ("bias", self.bias)) if value is not None}
        return {name: value for name, value in {**named, **self.tensors}.items() if name not in self.tied}

    def is_transposed(self, name: str, owner: np.ndarray) -> bool:
        """Whether tied parameter ``name`` is its owner's array transposed (the shapes differ)."""
        own = self.weight if name == "weight" else self.bias if name == "bias" else self.tensors[name]
        return tuple(np.shape(own)) != tuple(np.shape(owner))

    def with_parameters(self, change) -> "Layer":
        """The layer with ``change(array)`` applied to every learned array, a block's inner layers' too."""
        cast = lambda a: None if a is None else change(a)  # noqa: E731
        return dataclasses.replace(self, weight=cast(self.weight), bias=cast(self.bias),
                                   tensors={name: change(value) for name, value in self.tensors.items()},
                                   layers=tuple(inner.with_parameters(change) for inner in self.layers))


def walk_layers(layers, prefix: str = "layers"):
    """(address prefix, layer) of every layer, a block's inner layers right after the block:
    ``("layers.0", …)``, ``("layers.1", residual)``, ``("layers.1.layers.0", …)``, …"""
    for index, layer in enumerate(layers):
        path = f"{prefix}.{index}"
        yield path, layer
        if layer.layers:
            yield from walk_layers(layer.layers, f"{path}.layers")


def learned_arrays(layers) -> dict[str, np.ndarray]:
    """Every learned array by address (``layers.1.layers.0.weight``), a block's inner layers' included,
    each tied array once (under its owner's address)."""
    return {f"{path}.{name}": value for path, layer in walk_layers(layers) for name, value in layer.parameters.items()}


@dataclass(frozen=True)
class Loss:
    type: str
    reduction: str


@dataclass(frozen=True)
class Optimizer:
    """``type`` names a catalogue optimizer; ``options`` holds its extra options
    with defaults filled in. ``steps`` is the total number of parameter updates.

    Mini-batches: ``batch_size`` 0 means the full batch (gradient descent);
    otherwise each epoch takes ceil(n / batch_size) updates, or floor with
    ``drop_last``; ``shuffle`` reorders the samples each epoch with a generator
    seeded by the scenario seed and the epoch number (``scenarios.schedule``).
    ``epochs``, when given in a file, sets ``steps = epochs * updates_per_epoch``.

    Clipping, in the order PyTorch users apply it within one update::

        loss.backward()
        clip_grad_norm_(params, clip_grad_norm)     # g ← g · min(1, c / (‖g‖₂ + 1e-6)), ‖g‖₂ over all parameters
        clip_grad_value_(params, clip_grad_value)   # g ← clamp(g, −c, c)
        optimizer.step()
        p.clamp_(*clip_weights)                     # every weight and bias into [lo, hi]

    None switches a clip off. The gradient a Trace records for update t
    (``step{t}.layers.{i}.weight.grad``) is the one the update used: after clipping.
    """

    type: str
    learning_rate: float
    steps: int
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0
    drop_last: bool = False
    shuffle: bool = False
    epochs: int | None = None
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    clip_weights: tuple[float, float] | None = None

    def updates_per_epoch(self, samples: int) -> int:
        if self.batch_size == 0 or self.batch_size >= samples:
            return 1 if (self.batch_size == 0 or not self.drop_last or self.batch_size == samples) else 0
        full, rest = divmod(samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def label(self) -> str:
        """A short id: the type and every option or setting that differs from its default."""
        parts = [self.type]
        for key, spec in OPTIMIZERS.get(self.type, {}).items():
            value = self.options.get(key, spec.default)
            if value != spec.default:
                parts.append(key if value is True else f"{key}{value}")
        if self.batch_size:
            parts.append(f"batch{self.batch_size}")
        parts += [flag for flag in ("shuffle", "drop_last") if getattr(self, flag)]
        for key in ("clip_grad_norm", "clip_grad_value"):
            if getattr(self, key) is not None:
                parts.append(f"{key}{getattr(self, key):g}")
        if self.clip_weights is not None:
            parts.append("clip_weights{:g}_{:g}".format(*self.clip_weights))
        return "-".join(parts)


@dataclass(frozen=True)
class Expectation:
    """A number a document printed, to be checked at a Trace address."""

    at: str
    printed: str
    note: str = ""


@dataclass(frozen=True)
class Claim:
    """A formula a document derives, to be checked against autograd (``[[claim]]``).

    ``formula`` is an expression over the scenario's quantities
    (``scenarios.formula``), ``at`` the Trace address it claims to equal, at the
    initial parameters; ``draws`` the number of seeded random data sets, of the
    file's shapes, it is also checked on (0: only the file's data).
    """

    statement: str
    at: str
    formula: str
    draws: int = 12
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    layers: tuple[Layer, ...]
    loss: Loss
    x: np.ndarray  # (batch, …): rows (N, F) or images (N, C, H, W), batch first
    y: np.ndarray  # (batch, out)
    dtype: str = "float64"
    seed: int = 0
    optimizer: Optimizer | None = None
    source: dict[str, Any] = field(default_factory=dict)
    expects: tuple[Expectation, ...] = ()
    claims: tuple[Claim, ...] = ()
    path: str | None = None  # the file it was loaded from, if any
    # Free-form labels. "kink": inputs sit exactly on a non-differentiable point
    # (PyTorch's subgradient is the reference, finite differences are not);
    # "no-fd": finite differences are not meaningful (clamped logs, saturation).
    tags: tuple[str, ...] = ()

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def updates_per_epoch(self) -> int:
        """Parameter updates in one pass over the data (1 without an optimizer or mini-batches)."""
        return 1 if self.optimizer is None else self.optimizer.updates_per_epoch(self.x.shape[0])

    @property
    def parameter_count(self) -> int:
        """The learned numbers: every weight and bias, a block's inner layers' included, a tied one once."""
        return sum(value.size for value in learned_arrays(self.layers).values())

    def component_names(self) -> list[str]:
        """Every layer, activation, loss and optimizer this scenario exercises (a block's inner layers too)."""
        names = [f"layer:{l.type}" if l.type in LAYERS else f"activation:{l.type}"
                 for _path, l in walk_layers(self.layers)]
        names.append(f"loss:{self.loss.type}")
        if self.optimizer is not None:
            names.append(f"optimizer:{self.optimizer.type}")
        return sorted(set(names))

    def astype(self, dtype: str) -> "Scenario":
        """The same scenario with every array cast to ``dtype``."""
        cast = lambda a: None if a is None else np.asarray(a, dtype=dtype)  # noqa: E731

        def cast_layer(l: Layer) -> Layer:
            return dataclasses.replace(l, weight=cast(l.weight), bias=cast(l.bias),
                                       tensors={name: cast(value) for name, value in l.tensors.items()},
                                       buffers={name: cast(value) for name, value in l.buffers.items()},
                                       states={name: cast(value) for name, value in l.states.items()},
                                       layers=tuple(cast_layer(inner) for inner in l.layers))

        layers = tuple(cast_layer(l) for l in self.layers)
        return dataclasses.replace(self, layers=layers, x=cast(self.x), y=cast(self.y), dtype=dtype)
