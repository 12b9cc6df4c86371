"""The embedding layers: a table lookup, and a learned row per position; backward beside forward.

Weight E (num_embeddings, embedding_dim), PyTorch's layout; the input is
integer token ids (N, T), and the output row for id k is E[k]:

    a[n, t] = E[ids[n, t]]                                  (N, T, D)

The lookup is the product of a one-hot row with E, a = onehot(ids) E, so
with δ = ∂L/∂a

    ∂L/∂E[k] = Σ_{(n, t) : ids[n, t] = k} δ[n, t]           (a repeated id adds its rows' δ)

and rows never looked up get 0. The ids are integers: no input gradient.

The positional embedding adds a learned row W[t] (W of shape (T_max, E)) to
every sample's step t of a sequence x (N, T, E), T ≤ T_max:

    a[n, t] = x[n, t] + W[t]
    ∂L/∂W[t] = Σ_n δ[n, t]  for t < T (rows beyond T get 0),   ∂L/∂x = δ
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, copied, register_layer

__all__ = ["Embedding", "PositionalEmbedding"]


@register_layer("embedding")
class Embedding(Learned):
    """a = E[ids]: ids (N, T) integers in [0, num_embeddings) → (N, T, D).  Parameter ``weight`` E (V, D)."""

    @classmethod
    def from_spec(cls, spec, dtype) -> "Embedding":
        """The layer for a scenario's ``embedding`` entry, its arrays copied into ``dtype``."""
        return cls(copied(spec.weight, dtype))

    def __init__(self, weight: np.ndarray):
        if weight.ndim != 2:
            raise ValueError(f"embedding weight must be (num_embeddings, embedding_dim), got shape {weight.shape}")
        self.weight = weight
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight_grad: np.ndarray | None = None

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """ids (N, T) → E[ids] (N, T, D); caches the ids."""
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"embedding: token ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids[(ids < 0) | (ids >= self.num_embeddings)].flat[0]
            raise ValueError(f"embedding: token id {bad} is outside [0, {self.num_embeddings})")
        self.ids = ids
        return self.weight[ids]

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> None:
        """δ (N, T, D) → None; stores ∂L/∂E[k] = Σ of δ over the positions holding id k."""
        weight_grad = np.zeros_like(self.weight)
        np.add.at(weight_grad, self.ids.ravel(), delta.reshape(-1, self.embedding_dim))
        self.weight_grad = weight_grad
        return None

    def __repr__(self) -> str:
        return f"Embedding(num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim})"


@register_layer("positional_embedding")
class PositionalEmbedding(Learned):
    """a[n, t] = x[n, t] + W[t]: x (N, T, E), T ≤ T_max.  Parameter ``weight`` W (T_max, E)."""

    LEARNED = ("weight",)

    @classmethod
    def from_spec(cls, spec, dtype) -> "PositionalEmbedding":
        """The layer for a scenario's ``positional_embedding`` entry, its weight copied into ``dtype``."""
        return cls(copied(spec.weight, dtype))

    def __init__(self, weight: np.ndarray):
        if weight.ndim != 2:
            raise ValueError(f"positional_embedding weight must be (T_max, E), got shape {weight.shape}")
        self.weight = weight
        self.weight_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, T, E) → x + W[:T]; caches T."""
        self.steps = x.shape[1]
        return x + self.weight[:self.steps]

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ (N, T, E) → δ; stores ∂L/∂W[t] = Σ_n δ[n, t] for t < T, 0 beyond."""
        weight_grad = np.zeros_like(self.weight)
        weight_grad[:self.steps] = delta.sum(axis=0)
        self.weight_grad = weight_grad
        return delta if input_grad else None

    def __repr__(self) -> str:
        return f"PositionalEmbedding(num_embeddings={self.weight.shape[0]}, embedding_dim={self.weight.shape[1]})"
