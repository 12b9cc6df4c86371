"""The linear layer z = Wx + b, with its hand-derived backward beside its forward.

Batch-first rows: x is (n, in), W is (out, in) — W[j, k] connects input k to
unit j, PyTorch's layout — b is (out,), and the layer computes, per row,
z = W x + b, i.e. for the whole batch Z = X Wᵀ + b.

Backward receives δ = ∂L/∂z (n, out) and, by the chain rule on
z_j = Σ_k W_jk x_k + b_j:

    ∂L/∂W_jk = Σ_rows δ_j x_k      →  weight_grad = δᵀ X      (out, in)
    ∂L/∂b_j  = Σ_rows δ_j          →  bias_grad   = Σ_rows δ  (out,)
    ∂L/∂x_k  = Σ_j δ_j W_jk        →  returned      δ W       (n, in)

The layer keeps references to its parameter arrays (it never copies them), so an
optimizer that updates ``weight`` and ``bias`` in place updates the layer.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.activations import ACTIVATIONS
from backprop_verify.manual.protocol import building
from backprop_verify.manual.registry import registrar

# Layer type -> the hand-written class, keyed by ``scenarios.catalog.LAYERS``: every class
# registers itself with ``@register_layer(name)`` and builds itself from the scenario's
# entry (``from_spec``), as the activations do (``manual.activations``).
LAYERS: dict[str, type["Learned"]] = {}

register_layer = registrar(LAYERS, "layer")


def copied(array: np.ndarray | None, dtype) -> np.ndarray | None:
    """A private copy of a scenario's array in ``dtype`` (None stays None): the scenario is never mutated."""
    return None if array is None else np.array(array, dtype=dtype, copy=True)


class Learned:
    """What an optimizer needs from a layer, derived from ``parameter_names``: the
    arrays themselves (``parameters``, updated in place) and, after ``backward``,
    their gradients (``gradients``, each stored as ``{name}_grad``).

    ``parameter_names`` are those of ``LEARNED`` (by default ``weight`` and
    ``bias``) that the layer holds and are not None: a layer without bias, a
    BatchNorm without γ and β, a pooling layer with nothing to learn."""

    LEARNED: tuple[str, ...] = ("weight", "bias")
    # Given arrays ``forward`` takes beside x (a recurrent layer's h0 / c0), set by ``from_spec``.
    initial_states: dict[str, np.ndarray] = {}

    @classmethod
    def from_spec(cls, spec, dtype) -> "Learned":
        """The layer for one ``scenario.layers`` entry (a ``scenarios.model.Layer``), arrays copied into ``dtype``."""
        raise NotImplementedError(f"{cls.__name__} does not say how a scenario builds it")

    def recorded(self) -> dict[str, np.ndarray]:
        """The Trace addresses (``layers.{i}.{name}``) the layer adds after a pass beyond its output, its
        parameters and gradients, and its buffers — the catalogue's ``LayerInfo.records``."""
        return {}

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.LEARNED if getattr(self, attribute(name), None) is not None)

    @property
    def parameters(self) -> list[np.ndarray]:
        return [getattr(self, attribute(name)) for name in self.parameter_names]

    @property
    def gradients(self) -> list[np.ndarray]:
        return [getattr(self, f"{attribute(name)}_grad") for name in self.parameter_names]


def attribute(name: str) -> str:
    """The attribute that holds parameter ``name``: PyTorch's ``out_proj.weight`` is ``out_proj_weight``."""
    return name.replace(".", "_")


def build_layer(spec, dtype, where: str = ""):
    """The hand-written layer (or activation) for one ``scenario.layers`` entry (a block's inner layers
    too): the registered class's ``from_spec`` (``LAYERS``: every layer class registers itself under its
    catalogue name), or the activation with the entry's options.

    While an engine builds a network (``manual.protocol.Engine.build_layer``), the entry is that engine's
    to build: a ``Residual`` in an engine that replaces some of manual's classes holds the engine's
    inner layers, not manual's."""
    engine = building.get()
    if engine is not None:
        return engine.build_layer(spec, dtype, where)
    # A block's from_spec called directly: manual's own classes (``MANUAL`` lives in engine.py, which imports
    # this module, so its ``build_layer`` cannot be called from here).
    if spec.type in LAYERS:
        return LAYERS[spec.type].from_spec(spec, dtype)
    if spec.type in ACTIVATIONS:
        return ACTIVATIONS[spec.type](**spec.params)
    raise ValueError(f"{where}unknown type {spec.type!r}; expected one of {sorted(LAYERS) + sorted(ACTIVATIONS)}")


@register_layer("linear")
class Linear(Learned):
    """z = x Wᵀ + b.  Parameters ``weight`` (out, in) and ``bias`` (out,) or None."""

    @classmethod
    def from_spec(cls, spec, dtype) -> "Linear":
        """The layer for a scenario's ``linear`` entry, its arrays copied into ``dtype``."""
        return cls(copied(spec.weight, dtype), copied(spec.bias, dtype))

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None):
        if weight.ndim != 2:
            raise ValueError(f"linear weight must be (out, in), got shape {weight.shape}")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear bias must have shape ({weight.shape[0]},), got {bias.shape}")
        self.weight = weight
        self.bias = bias
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (n, in) → z = x Wᵀ + b (n, out); caches x for ∂L/∂W."""
        self.input = x
        z = x @ self.weight.T
        if self.bias is not None:
            z += self.bias
        return z

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂z (n, out) → ∂L/∂x = δ W (n, in); stores weight_grad = δᵀ x, bias_grad = Σ_rows δ.

        A sequence (N, T, in) is N·T rows: the layer applies to every time step
        with the same W, so the sums run over samples and steps alike.
        ``input_grad=False`` skips ∂L/∂x (the first layer during training) and returns None.
        """
        rows, inputs = delta, self.input
        if delta.ndim > 2:
            rows, inputs = delta.reshape(-1, delta.shape[-1]), inputs.reshape(-1, inputs.shape[-1])
        self.weight_grad = rows.T @ inputs
        if self.bias is not None:
            self.bias_grad = rows.sum(axis=0)
        return delta @ self.weight if input_grad else None

    def __repr__(self) -> str:
        out_features, in_features = self.weight.shape
        return f"Linear(in={in_features}, out={out_features}, bias={self.bias is not None})"


__all__ = ["LAYERS", "Flatten", "Learned", "Linear", "attribute", "build_layer", "copied", "register_layer"]


@register_layer("flatten")
class Flatten(Learned):
    """a = x reshaped (N, d₁, …, d_k) → (N, d₁·…·d_k), row-major as torch.flatten(x, 1).  No parameters.

    Backward: the reshape moves numbers without changing them, so ∂L/∂x is
    δ = ∂L/∂a reshaped back to x's shape.
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "Flatten":
        """The layer for a scenario's ``flatten`` entry, its arrays copied into ``dtype``."""
        return cls()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, …) → (N, features); caches x's shape."""
        self.input_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ (N, features) → δ reshaped to x's shape."""
        return delta.reshape(self.input_shape) if input_grad else None

    def __repr__(self) -> str:
        return "Flatten()"

