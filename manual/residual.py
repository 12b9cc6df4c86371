"""The residual block a = x + f(x), f its own list of layers, with its backward beside its forward.

Forward: the block's layers run in order on x (the branch, f), and the skip
path adds x back:

    a = x + f(x)                      f(x) of x's shape (the loader checks it)

Backward, δ = ∂L/∂a: the gradient reaches x along both paths and adds up,

    δ_x = δ  +  (∂f/∂x)ᵀ δ            the skip path carries δ unchanged;
                                      the branch is backpropagated through f's layers in reverse

The inner layers' outputs and gradients are kept (``outputs``, ``grads``): the
engine records them as ``layers.{i}.layers.{j}.output`` and ``.output.grad``,
and their parameters as ``layers.{i}.layers.{j}.weight`` and so on; the
branch's share of δ_x, (∂f/∂x)ᵀ δ, as ``layers.{i}.branch.grad`` (the skip
path's share is δ itself, ``layers.{i}.output.grad``). Blocks nest.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, build_layer, register_layer

__all__ = ["Residual"]


@register_layer("residual")
class Residual(Learned):
    """a = x + f(x).  ``layers``: the hand-written layers of f, in order; the block learns nothing of its own."""

    LEARNED = ()

    @classmethod
    def from_spec(cls, spec, dtype) -> "Residual":
        """The block for a scenario's ``residual`` entry, each inner layer built from its own entry."""
        return cls([build_layer(inner, dtype, "residual block: ") for inner in spec.layers])

    def __init__(self, layers: list):
        self.layers = layers
        self.outputs: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x → x + f(x); caches every inner layer's output."""
        branch, self.outputs = x, []
        for layer in self.layers:
            branch = layer.forward(branch, **getattr(layer, "initial_states", {}))
            self.outputs.append(branch)
        return x + branch

    def branch_backward(self, delta: np.ndarray) -> np.ndarray:
        """(∂f/∂x)ᵀ δ: δ through f's layers in reverse; caches ∂L/∂(each inner output) and the result."""
        self.grads = [None] * len(self.layers)
        grad = delta
        for index in range(len(self.layers) - 1, -1, -1):
            self.grads[index] = grad
            grad = self.layers[index].backward(grad)
        self.branch_grad = grad
        return grad

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ → δ_x = δ + (∂f/∂x)ᵀ δ: the skip path and the branch."""
        through_branch = self.branch_backward(delta)
        return delta + through_branch if input_grad else None

    def recorded(self) -> dict[str, np.ndarray]:
        """The branch's share of ∂L/∂x, (∂f/∂x)ᵀ δ."""
        return {"branch.grad": self.branch_grad}

    def __repr__(self) -> str:
        return f"Residual({', '.join(map(repr, self.layers))})"
