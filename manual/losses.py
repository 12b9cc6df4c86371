"""Losses L(a, t), each with its hand-derived ∂L/∂a right beside its forward.

Notation: a is the network's output (batch n, width m; for the fused losses it
is the logits z of the last linear layer), t the target of the same shape.
``forward(a, t)`` returns the loss as a 0-d array of a's dtype and caches what
``backward()`` needs; ``backward()`` returns ∂L/∂a with a's shape and dtype,
the start of backpropagation (for the fused losses it is already δ = ∂L/∂z).

Reductions (catalogue ``REDUCTIONS``), with N = n·m elements and n samples:

==================  ==========================================  ===========
reduction           L                                           scale s
==================  ==========================================  ===========
sum                 Σ ℓ                                          1
half_sum            ½ Σ ℓ                                        1/2
mean                Σ ℓ / N   (cross-entropies: Σ ℓ / n)         1/N (1/n)
half_mean           Σ ℓ / (2N)                                   1/(2N)
batch_mean          Σ ℓ / n                                      1/n
half_batch_mean     Σ ℓ / (2n)                                   1/(2n)
==================  ==========================================  ===========

and ∂L/∂a = s · ∂(Σ ℓ)/∂a. The scale is applied as a Python float so float32
stays float32 (and the loss is divided, not multiplied by a reciprocal, as
PyTorch's mean does).

Registry: ``LOSSES`` maps each catalogue name to its class.
"""
from __future__ import annotations

import math

import numpy as np

from backprop_verify.manual.registry import registrar

from backprop_verify.manual.activations import sigmoid

LOSSES: dict[str, type["Loss"]] = {}


register = registrar(LOSSES, "loss")


class Loss:
    """Base class. Subclasses set ``reductions`` and implement ``forward``/``backward``."""

    name: str = ""
    reductions: tuple[str, ...] = ()

    def __init__(self, reduction: str):
        if reduction not in self.reductions:
            raise ValueError(
                f"loss {self.name!r} does not accept reduction {reduction!r}; expected one of {self.reductions}"
            )
        self.reduction = reduction

    def divisor(self, shape: tuple[int, ...]) -> int:
        """The integer the summed loss is divided by for this reduction and shape."""
        n = shape[0]
        elements = math.prod(shape)
        return {
            "sum": 1,
            "half_sum": 2,
            "mean": elements,
            "half_mean": 2 * elements,
            "batch_mean": n,
            "half_batch_mean": 2 * n,
        }[self.reduction]

    def reduce(self, total, a: np.ndarray) -> np.ndarray:
        """Σ ℓ → L as a 0-d array of a's dtype."""
        self.count = self.divisor(a.shape)
        self.dtype = a.dtype
        if self.count != 1:
            total = total / self.count
        return np.asarray(total, dtype=a.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


@register("mse")
class MSE(Loss):
    """ℓ = (a − t)² elementwise;  ∂(Σ ℓ)/∂a = 2(a − t);  ∂L/∂a = 2 s (a − t)."""

    reductions = ("sum", "half_sum", "mean", "half_mean", "batch_mean", "half_batch_mean")

    def forward(self, a, t):
        self.error = a - t
        return self.reduce(np.vdot(self.error, self.error), a)

    def backward(self):
        return self.error * (2.0 / self.count)


class _PerSampleLoss(Loss):
    """Cross-entropies: 'mean' averages over the n samples, as PyTorch does."""

    reductions = ("sum", "mean")

    def divisor(self, shape):
        return shape[0] if self.reduction == "mean" else 1


@register("cross_entropy")
class CrossEntropy(_PerSampleLoss):
    """On probabilities a (e.g. a softmax output): ℓ_row = −Σ_j t_j ln a_j;
    ∂L/∂a_j = −s t_j / a_j.
    """

    def forward(self, a, t):
        self.activation, self.target = a, t
        log_a = np.log(a)
        return self.reduce(-np.vdot(t, log_a), a)

    def backward(self):
        grad = self.target / self.activation
        grad *= -1.0 / self.count
        return grad


@register("softmax_cross_entropy")
class SoftmaxCrossEntropy(_PerSampleLoss):
    """Fused on logits z: ℓ_row = −Σ_j t_j ln softmax(z)_j
    = Σ_j t_j (logsumexp(z) − z_j), logsumexp taken with the row max subtracted.

    ∂ℓ_row/∂z_i = softmax(z)_i Σ_j t_j − t_i, which is softmax(z) − t when the
    target row sums to 1 (one-hot or soft labels); ∂L/∂z = s · that.
    """

    def forward(self, z, t):
        self.target = t
        shifted = z - z.max(axis=-1, keepdims=True)
        exp_shifted = np.exp(shifted)
        row_sum = exp_shifted.sum(axis=-1, keepdims=True)
        self.softmax = exp_shifted / row_sum
        log_softmax = shifted
        log_softmax -= np.log(row_sum)  # ln softmax(z) = z − max − ln Σ e^{z − max}
        return self.reduce(-np.vdot(t, log_softmax), z)

    def backward(self):
        t = self.target
        grad = self.softmax * t.sum(axis=-1, keepdims=True)
        grad -= t
        if self.count != 1:
            grad /= self.count
        return grad


@register("bce")
class BCE(Loss):
    """On probabilities a: ℓ = −[t ln a + (1 − t) ln(1 − a)], each log clamped at
    ≥ −100 as PyTorch's binary_cross_entropy;
    ∂ℓ/∂a = (a − t) / (a(1 − a)), the denominator clamped at ≥ 1e-12 as PyTorch.
    'mean' is over all N elements.
    """

    reductions = ("sum", "mean")
    # PyTorch's CPU kernel holds ε as a float32 constant even for float64
    # tensors: float32(1e-12) = 9.99999996e-13. Using 1e-12 exactly differs from
    # torch by 4e-9 relative wherever the clamp is active.
    EPSILON = float(np.float32(1e-12))
    LOG_FLOOR = -100.0

    def forward(self, a, t):
        self.activation, self.target = a, t
        with np.errstate(divide="ignore"):  # ln 0 = −inf, then clamped to −100
            log_a = np.maximum(np.log(a), self.LOG_FLOOR)
            log_one_minus_a = np.maximum(np.log1p(-a), self.LOG_FLOOR)
        elementwise = t * log_a
        elementwise += (1.0 - t) * log_one_minus_a
        return self.reduce(-elementwise.sum(), a)

    def backward(self):
        a, t = self.activation, self.target
        denominator = 1.0 - a
        denominator *= a
        np.maximum(denominator, self.EPSILON, out=denominator)  # max(a(1 − a), ε)
        grad = a - t
        grad /= denominator
        if self.count != 1:
            grad /= self.count
        return grad


@register("bce_with_logits")
class BCEWithLogits(Loss):
    """Fused on logits z: ℓ = −[t ln σ(z) + (1 − t) ln(1 − σ(z))]
    = max(z, 0) − z t + log1p(e^{−|z|})  (stable for any z);
    ∂ℓ/∂z = σ(z) − t.  'mean' is over all N elements.
    """

    reductions = ("sum", "mean")

    def forward(self, z, t):
        self.pre_activation, self.target = z, t
        tail = np.abs(z)
        np.negative(tail, out=tail)
        np.exp(tail, out=tail)
        np.log1p(tail, out=tail)  # log1p(e^{−|z|})
        tail += np.maximum(z, 0.0)
        tail -= z * t
        return self.reduce(tail.sum(), z)

    def backward(self):
        grad = sigmoid(self.pre_activation)
        grad -= self.target
        if self.count != 1:
            grad /= self.count
        return grad


__all__ = ["LOSSES", "Loss", "register"] + [cls.__name__ for cls in LOSSES.values()]
