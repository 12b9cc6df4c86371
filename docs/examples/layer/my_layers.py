"""A layer of your own, written the way a course asks for it: naive loops, backward by hand.

``Conv1dNaive`` is correct. ``Conv1dNaiveBuggy`` is its twin with one planted bug,
the kind that survives a glance: the input gradient is written with ``=`` where
it must accumulate with ``+=``, so an input position covered by several windows
keeps only the last window's contribution. ``test_my_layers.py`` checks both with
``backprop_verify.check_layer`` (docs/check_layer.md).
"""
import numpy as np


class Conv1dNaive:
    """z[n, o, t] = b[o] + Σ_c Σ_k W[o, c, k] · x[n, c, t + k]  — PyTorch's conv1d, stride 1, no padding.

    Shapes: x (N, C, L), W (out, C, K), b (out,), z (N, out, L − K + 1).
    Backward, with δ = ∂L/∂z (same shape as z):
        ∂L/∂b[o]            = Σ_{n,t} δ[n, o, t]
        ∂L/∂W[o, c, k]      = Σ_{n,t} δ[n, o, t] · x[n, c, t + k]
        ∂L/∂x[n, c, t + k] += Σ_o δ[n, o, t] · W[o, c, k]     (every window t that covers the position)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(in_channels * kernel_size)
        # forward and backward read self.params at call time (check_layer puts its copies there)
        self.params = {"weight": rng.uniform(-bound, bound, (out_channels, in_channels, kernel_size)),
                       "bias": rng.uniform(-bound, bound, out_channels)}
        self.grads = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight, bias = self.params["weight"], self.params["bias"]
        kernel_size = weight.shape[2]
        steps = x.shape[2] - kernel_size + 1
        z = np.empty((x.shape[0], weight.shape[0], steps), dtype=x.dtype)
        for t in range(steps):
            window = x[:, :, t:t + kernel_size]                              # (N, C, K)
            z[:, :, t] = np.einsum("nck,ock->no", window, weight) + bias
        self.x = x                                                           # what backward needs
        return z

    def backward(self, delta: np.ndarray) -> np.ndarray:
        weight, x = self.params["weight"], self.x
        kernel_size = weight.shape[2]
        grad_weight = np.zeros_like(weight)
        grad_x = np.zeros_like(x)
        for t in range(delta.shape[2]):
            window = x[:, :, t:t + kernel_size]
            grad_weight += np.einsum("no,nck->ock", delta[:, :, t], window)
            grad_x[:, :, t:t + kernel_size] += np.einsum("no,ock->nck", delta[:, :, t], weight)
        self.grads = {"weight": grad_weight, "bias": delta.sum(axis=(0, 2))}
        return grad_x


class Conv1dNaiveBuggy(Conv1dNaive):
    """Conv1dNaive with a planted bug in backward: ``=`` for ``+=`` in the input gradient."""

    def backward(self, delta: np.ndarray) -> np.ndarray:
        weight, x = self.params["weight"], self.x
        kernel_size = weight.shape[2]
        grad_weight = np.zeros_like(weight)
        grad_x = np.zeros_like(x)
        for t in range(delta.shape[2]):
            window = x[:, :, t:t + kernel_size]
            grad_weight += np.einsum("no,nck->ock", delta[:, :, t], window)
            grad_x[:, :, t:t + kernel_size] = np.einsum("no,ock->nck", delta[:, :, t], weight)  # BUG: = for +=
        self.grads = {"weight": grad_weight, "bias": delta.sum(axis=(0, 2))}
        return grad_x
