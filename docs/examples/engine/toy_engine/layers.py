"""The toy engine's layers: a linear layer, three activations and the mean squared error.

Each class follows backprop-verify's engine protocol (docs/engine.md): a layer
builds itself from a scenario entry (``from_spec``), ``forward`` caches what
``backward`` needs, ``backward`` takes δ = ∂L/∂(output) and returns ∂L/∂(input)
and leaves each parameter's gradient beside it (``weight_grad``).

The planted bug: ``Linear.backward`` averages δ over the batch for the bias
gradient instead of summing it. With one sample the two agree, so a test on a
single sample never sees it.
"""
import numpy as np


class Linear:
    """z = x Wᵀ + b: x (N, in), W (out, in), b (out,)."""

    parameter_names = ("weight", "bias")

    @classmethod
    def from_spec(cls, spec, dtype):
        bias = None if spec.bias is None else np.array(spec.bias, dtype=dtype)
        layer = cls(np.array(spec.weight, dtype=dtype), bias)
        if bias is None:
            layer.parameter_names = ("weight",)
        return layer

    def __init__(self, weight, bias=None):
        self.weight, self.bias = weight, bias

    def forward(self, x):
        self.x = x
        z = x @ self.weight.T
        return z if self.bias is None else z + self.bias

    def backward(self, delta, input_grad=True):
        """∂L/∂W = δᵀx, ∂L/∂b = Σ_rows δ, ∂L/∂x = δW."""
        self.weight_grad = delta.T @ self.x
        if self.bias is not None:
            self.bias_grad = delta.mean(axis=0)  # the planted bug: Σ_rows δ is meant
        return delta @ self.weight if input_grad else None


class Identity:
    """a = z."""

    def forward(self, z):
        return z

    def backward(self, grad_a):
        return grad_a


class Sigmoid:
    """a = 1 / (1 + e^(−z)); ∂L/∂z = ∂L/∂a · a(1 − a)."""

    def forward(self, z):
        e = np.exp(-np.abs(z))  # e^(−|z|) ≤ 1: no overflow for any z
        self.a = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype)
        return self.a

    def backward(self, grad_a):
        return grad_a * self.a * (1.0 - self.a)


class ReLU:
    """a = max(z, 0); ∂L/∂z = ∂L/∂a · 1[z > 0] (0 at z = 0, as PyTorch)."""

    def forward(self, z):
        self.positive = z > 0
        return np.where(self.positive, z, 0.0).astype(z.dtype)

    def backward(self, grad_a):
        return np.where(self.positive, grad_a, 0.0).astype(grad_a.dtype)


class MSE:
    """L = s · Σ (a − t)², s by the reduction: 1, ½, 1/(N·m), 1/(2N·m), 1/N, 1/(2N) for sum, half_sum,
    mean, half_mean, batch_mean, half_batch_mean (N samples, m outputs)."""

    SCALES = {"sum": (1.0, False, False), "half_sum": (0.5, False, False), "mean": (1.0, True, True),
              "half_mean": (0.5, True, True), "batch_mean": (1.0, True, False),
              "half_batch_mean": (0.5, True, False)}

    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, a, t):
        half, by_rows, by_outputs = self.SCALES[self.reduction]
        divisor = (a.shape[0] if by_rows else 1) * (a.shape[1] if by_outputs else 1)
        self.scale, self.difference = half / divisor, a - t
        return np.asarray(self.scale * np.sum(self.difference ** 2), dtype=a.dtype)

    def backward(self):
        return (2.0 * self.scale) * self.difference
