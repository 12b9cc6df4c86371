"""Inverted dropout with a given mask, its backward beside its forward.

The mask is plain data: the engine sets ``layer.mask`` (0/1, the input's
shape) before each forward, and the same mask is given to PyTorch — its
dropout RNG cannot be reproduced in NumPy, so both engines multiply by the
scenario's mask instead of drawing their own.

    a = x ⊙ mask / (1 − p)          (inverted dropout: E[a] = x when mask ~ Bernoulli(1 − p))
    ∂L/∂x = δ ⊙ mask / (1 − p)      (δ = ∂L/∂a; the map is linear and diagonal)

p = 1 drops everything: the scale is 0 (PyTorch's ``dropout`` returns zeros
there too), never 1/0.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, register_layer


@register_layer("dropout")
class Dropout(Learned):
    """a = x ⊙ mask · scale with scale = 1/(1 − p) (0 when p = 1).  No parameters; ``mask`` is set by the engine."""

    @classmethod
    def from_spec(cls, spec, dtype) -> "Dropout":
        """The layer for a scenario's ``dropout`` entry, its arrays copied into ``dtype``."""
        return cls(spec.params["p"])

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = float(p)
        self.scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        self.mask: np.ndarray | None = None

    def _scaled_mask(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        if self.mask is None:
            raise ValueError("dropout: set layer.mask (0/1, the input's shape) before forward")
        if self.mask.shape != shape:
            raise ValueError(f"dropout: mask has shape {self.mask.shape}, the input {shape}")
        return self.mask.astype(dtype, copy=False) * self.scale

    def recorded(self) -> dict[str, np.ndarray]:
        """The mask m of the first pass (``scenarios.masks``)."""
        return {"mask": self.mask}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x → a = x ⊙ mask / (1 − p), same shape and dtype."""
        self.kept = self._scaled_mask(x.shape, x.dtype)   # mask / (1 − p): ∂a/∂x, diagonal
        return x * self.kept

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ = ∂L/∂a → ∂L/∂x = δ ⊙ mask / (1 − p)."""
        return delta * self.kept if input_grad else None

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


__all__ = ["Dropout"]
