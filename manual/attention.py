"""Multi-head self-attention (PyTorch's ``torch.nn.MultiheadAttention``, batch first), backward beside forward.

Shapes: x (N, T, E), H heads of width d = E / H. The parameters carry
PyTorch's names and layouts: ``in_proj_weight`` W_in (3E, E) holds W_q, W_k,
W_v stacked by rows (in that order), ``in_proj_bias`` b_in (3E,),
``out_proj.weight`` W_o (E, E), ``out_proj.bias`` b_o (E,).

Forward, for every sample and head (queries, keys and values all come from x):

    [Q K V] = x W_inᵀ + b_in                (N, T, 3E), each split into heads (N, H, T, d)
    S = Q Kᵀ / √d                           (N, H, T, T): query t against key s
    S[t, s] = −∞ where key s is masked      causal: s > t; key_padding_mask[n, s] True
    P = softmax(S) over the keys s          the attention probabilities, ``layers.{i}.attention``
    O = P V                                 (N, H, T, d), the heads concatenated back to (N, T, E)
    a = O W_oᵀ + b_o

The mask goes in *before* the softmax: the probabilities of the keys a query
may see renormalise to 1, and a masked key gets P = 0 exactly.

Backward, δ = ∂L/∂a (N, T, E) and dX = ∂L/∂X (the seeds' notation):

    dW_o = Σ_(n,t) δᵀ O,   db_o = Σ_(n,t) δ,   dO = δ W_o
    dP = dO Vᵀ                              ``layers.{i}.attention.grad``
    dV = Pᵀ dO
    dS = P ⊙ (dP − rowsum(dP ⊙ P))          softmax's Jacobian, one row (query) at a time:
                                            ∂P_s/∂S_u = P_s (1[s = u] − P_u), so
                                            dS_u = Σ_s dP_s P_s (1[s = u] − P_u) = P_u (dP_u − Σ_s dP_s P_s)
    dQ = dS K / √d,   dK = dSᵀ Q / √d       S = Q Kᵀ/√d, read both ways
    d[Q K V] (N, T, 3E):  dW_in = Σ_(n,t) d[Q K V]ᵀ x,   db_in = Σ_(n,t) d[Q K V],   dx = d[Q K V] W_in

A masked score has P = 0, so dS = 0 there: the mask needs no backward of its
own. The pieces a hand derivation gets wrong each sit in one method
(``probabilities``, ``softmax_backward``, ``query_key_gradients``), so that
``tests/test_transformer_bugs.py`` can put each classic slip in and see it caught.
"""
from __future__ import annotations

import math

import numpy as np

from backprop_verify.manual.activations import softmax_rows, softmax_rows_backward
from backprop_verify.manual.layers import Learned, copied, register_layer

__all__ = ["MultiheadAttention"]


@register_layer("multihead_attention")
class MultiheadAttention(Learned):
    """Self-attention over (N, T, E) sequences; H heads of width d = E / H.  Parameters ``in_proj_weight``
    (3E, E), ``in_proj_bias`` (3E,) or None, ``out_proj.weight`` (E, E), ``out_proj.bias`` (E,) or None."""

    LEARNED = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")

    @classmethod
    def from_spec(cls, spec, dtype) -> "MultiheadAttention":
        """The layer for a scenario's ``multihead_attention`` entry, its arrays copied into ``dtype``."""
        tensors = spec.tensors
        return cls(copied(tensors["in_proj_weight"], dtype), copied(tensors.get("in_proj_bias"), dtype),
                   copied(tensors["out_proj.weight"], dtype), copied(tensors.get("out_proj.bias"), dtype),
                   num_heads=spec.params["num_heads"], causal=spec.params["causal"],
                   key_padding_mask=spec.masks.get("key_padding_mask"))

    def __init__(self, in_proj_weight: np.ndarray, in_proj_bias: np.ndarray | None, out_proj_weight: np.ndarray,
                 out_proj_bias: np.ndarray | None, *, num_heads: int, causal: bool,
                 key_padding_mask: np.ndarray | None):
        width = out_proj_weight.shape[0]
        if in_proj_weight.shape != (3 * width, width) or out_proj_weight.shape != (width, width):
            raise ValueError(f"multihead_attention: in_proj_weight must be (3E, E) and out_proj.weight (E, E), got "
                             f"{in_proj_weight.shape} and {out_proj_weight.shape}")
        if width % num_heads:
            raise ValueError(f"multihead_attention: num_heads = {num_heads} must divide embed_dim = {width}")
        self.in_proj_weight, self.in_proj_bias = in_proj_weight, in_proj_bias
        self.out_proj_weight, self.out_proj_bias = out_proj_weight, out_proj_bias
        self.num_heads, self.head_width, self.causal = num_heads, width // num_heads, causal
        self.key_padding_mask = None if key_padding_mask is None else np.asarray(key_padding_mask, dtype=bool)

    # ----- heads

    def split_heads(self, rows: np.ndarray) -> np.ndarray:
        """(N, T, E) → (N, H, T, d): head h holds features h·d … (h + 1)·d − 1, PyTorch's split."""
        batch, steps, _ = rows.shape
        return rows.reshape(batch, steps, self.num_heads, self.head_width).transpose(0, 2, 1, 3)

    @staticmethod
    def merge_heads(heads: np.ndarray) -> np.ndarray:
        """(N, H, T, d) → (N, T, E), the heads side by side."""
        batch, count, steps, width = heads.shape
        return heads.transpose(0, 2, 1, 3).reshape(batch, steps, count * width)

    def masked(self, steps: int) -> np.ndarray | None:
        """True where query t may not see key s, broadcast to (N or 1, 1, T, T); None when nothing is masked."""
        mask = np.triu(np.ones((steps, steps), dtype=bool), k=1)[None, None] if self.causal else None
        if self.key_padding_mask is not None:
            padding = self.key_padding_mask[:, None, None, :]
            mask = padding if mask is None else mask | padding
        return mask

    # ----- the three places a derivation goes wrong

    @staticmethod
    def probabilities(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """P = softmax(S) over the keys, S = −∞ where masked (before the softmax). The row's maximum is
        subtracted first (exp never overflows); every row keeps at least one key (the loader's rule)."""
        if mask is not None:
            scores = np.where(mask, -np.inf, scores)
        return softmax_rows(scores)

    @staticmethod
    def softmax_backward(probabilities: np.ndarray, grad_probabilities: np.ndarray) -> np.ndarray:
        """dS = P ⊙ (dP − rowsum(dP ⊙ P)): the full Jacobian of each row's softmax, not its diagonal alone."""
        return softmax_rows_backward(probabilities, grad_probabilities)

    def query_key_gradients(self, grad_scores: np.ndarray, queries: np.ndarray,
                            keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """S = Q Kᵀ / √d, so dQ = dS K / √d and dK = dSᵀ Q / √d."""
        scale = 1.0 / math.sqrt(self.head_width)
        return (grad_scores @ keys) * scale, (grad_scores.swapaxes(-1, -2) @ queries) * scale

    # ----- forward and backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, T, E) → a (N, T, E); caches x, Q, K, V, P and the heads' concatenated output O."""
        self.input = x
        projected = x @ self.in_proj_weight.T
        if self.in_proj_bias is not None:
            projected += self.in_proj_bias
        queries, keys, values = (self.split_heads(part) for part in np.split(projected, 3, axis=-1))
        scores = (queries @ keys.swapaxes(-1, -2)) * (1.0 / math.sqrt(self.head_width))
        self.attention = self.probabilities(scores, self.masked(x.shape[1]))
        self.queries, self.keys, self.values = queries, keys, values
        self.heads_output = self.merge_heads(self.attention @ values)
        output = self.heads_output @ self.out_proj_weight.T
        if self.out_proj_bias is not None:
            output += self.out_proj_bias
        return output

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ (N, T, E) → ∂L/∂x (N, T, E); stores the four parameter gradients and dP (``attention_grad``)."""
        width = self.out_proj_weight.shape[0]
        rows = delta.reshape(-1, width)
        self.out_proj_weight_grad = rows.T @ self.heads_output.reshape(-1, width)
        if self.out_proj_bias is not None:
            self.out_proj_bias_grad = rows.sum(axis=0)
        grad_heads_output = self.split_heads(delta @ self.out_proj_weight)                 # dO
        self.attention_grad = grad_heads_output @ self.values.swapaxes(-1, -2)             # dP = dO Vᵀ
        grad_values = self.attention.swapaxes(-1, -2) @ grad_heads_output                  # dV = Pᵀ dO
        grad_scores = self.softmax_backward(self.attention, self.attention_grad)           # dS
        grad_queries, grad_keys = self.query_key_gradients(grad_scores, self.queries, self.keys)
        grad_projected = np.concatenate([self.merge_heads(grad_queries), self.merge_heads(grad_keys),
                                         self.merge_heads(grad_values)], axis=-1)           # d[Q K V]
        flat = grad_projected.reshape(-1, 3 * width)
        self.in_proj_weight_grad = flat.T @ self.input.reshape(-1, width)
        if self.in_proj_bias is not None:
            self.in_proj_bias_grad = flat.sum(axis=0)
        return grad_projected @ self.in_proj_weight if input_grad else None

    def recorded(self) -> dict[str, np.ndarray]:
        """The attention probabilities P (N, H, T, T) and ∂L/∂P."""
        return {"attention": self.attention, "attention.grad": self.attention_grad}

    def __repr__(self) -> str:
        return (f"MultiheadAttention(embed_dim={self.out_proj_weight.shape[0]}, num_heads={self.num_heads}, "
                f"causal={self.causal})")
