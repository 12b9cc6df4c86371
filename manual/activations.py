"""Activations a = σ(z), each with its hand-derived backward right beside its forward.

Notation (the seeds'): a linear layer computes z = Wx + b, an activation
a = σ(z), and backpropagation carries δ = ∂L/∂z. An activation's ``backward``
receives ∂L/∂a and returns ∂L/∂z = ∂L/∂a ⊙ σ'(z) (elementwise activations) or
∂L/∂a · ∂a/∂z (softmax, whose Jacobian couples a row).

Shapes: z, a, ∂L/∂a and ∂L/∂z are all (batch, width), batch-first rows.

Every derivative follows PyTorch's conventions at the kinks (relu'(0) = 0,
leaky_relu'(0) = slope, elu'(0) = alpha) and PyTorch's numerical forms where
they matter (softplus threshold, bce clamps in ``losses``), so that the two
engines can be compared element by element.

Registry: ``ACTIVATIONS`` maps each catalogue name to its class, like
PyTorch's OpInfo database. Adding an activation means one ``@register`` class
here (and one catalogue entry, and one torch mirror in ``reference/``). A
class declares no parameters of its own: ``Activation.__init__`` sets them from
the catalogue entry.

dtype: every function keeps the dtype of z. Constants are Python floats, which
NumPy 2 treats as "weak" scalars, so a float32 z stays float32 throughout.
Backward never mutates its argument or the arrays returned by forward; in-place
operations are used only on temporaries it allocated itself.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from backprop_verify.manual.registry import registrar
from backprop_verify.scenarios.catalog import ACTIVATIONS as ACTIVATION_CATALOG, activation_params


ACTIVATIONS: dict[str, type["Activation"]] = {}


register = registrar(ACTIVATIONS, "activation")


# ---------------------------------------------------------------------------
# Shared numerically stable helpers (plain functions, no state)
# ---------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^{-z}), overflow-free for any z.

    With e = e^{-|z|} ∈ (0, 1]:  σ(z) = 1/(1+e) for z ≥ 0 and e/(1+e) for z < 0.
    """
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = e^{-|z|}, never overflows
    denominator = e + 1.0
    positive = np.reciprocal(denominator, out=denominator)  # 1/(1+e)
    np.multiply(e, positive, out=e)  # e/(1+e)
    return np.where(z >= 0, positive, e)


def softplus_stable(u: np.ndarray) -> np.ndarray:
    """log(1 + e^u) = max(u, 0) + log1p(e^{-|u|}), overflow-free for any u."""
    tail = np.abs(u)
    np.negative(tail, out=tail)
    np.exp(tail, out=tail)
    np.log1p(tail, out=tail)
    return np.maximum(u, 0.0) + tail


@functools.cache
def _erf():
    """SciPy's error function, imported on the first exact GELU (the import costs a start-up ~0.2 s).
    The error function only: SciPy differentiates nothing here."""
    from scipy.special import erf

    return erf


# ---------------------------------------------------------------------------
# The activations
# ---------------------------------------------------------------------------


class Activation:
    """Base class: ``forward(z) -> a`` caches what ``backward(∂L/∂a) -> ∂L/∂z`` needs.

    Parameters come from the catalogue entry of the class's name
    (``scenarios.catalog.ACTIVATIONS``), which alone holds their defaults: each
    parameter, as given or else its default, becomes an attribute of the same
    name converted to its kind (``slope`` → ``self.slope``, a float). An
    unknown parameter is a TypeError, a value outside its choices a ValueError.
    """

    name: str = ""

    def __init__(self, **params):
        specs = ACTIVATION_CATALOG[self.name].params
        for key, value in activation_params(self.name, params).items():
            setattr(self, key, specs[key].kind(value))

    def forward(self, z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_a: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={getattr(self, key)!r}" for key in ACTIVATION_CATALOG[self.name].params)
        return f"{type(self).__name__}({params})"


@register("identity")
class Identity(Activation):
    """a = z;  ∂L/∂z = ∂L/∂a."""

    def forward(self, z):
        return z

    def backward(self, grad_a):
        return grad_a


@register("sigmoid")
class Sigmoid(Activation):
    """a = σ(z) = 1 / (1 + e^{-z});  σ'(z) = a (1 − a);  ∂L/∂z = ∂L/∂a ⊙ a(1 − a)."""

    def forward(self, z):
        self.activation = sigmoid(z)
        return self.activation

    def backward(self, grad_a):
        a = self.activation
        local = 1.0 - a
        local *= a  # a(1 − a)
        local *= grad_a
        return local


@register("tanh")
class Tanh(Activation):
    """a = tanh(z);  a' = 1 − a²;  ∂L/∂z = ∂L/∂a ⊙ (1 − a²)."""

    def forward(self, z):
        self.activation = np.tanh(z)
        return self.activation

    def backward(self, grad_a):
        a = self.activation
        local = a * a
        np.subtract(1.0, local, out=local)  # 1 − a²
        local *= grad_a
        return local


@register("relu")
class ReLU(Activation):
    """a = max(z, 0);  a' = 1 if z > 0 else 0 (a'(0) = 0, as PyTorch)."""

    def forward(self, z):
        self.positive = z > 0
        return np.maximum(z, 0.0)

    def backward(self, grad_a):
        # ∂L/∂z = ∂L/∂a ⊙ 1[z > 0]: a product with the 0/1 mask, several times
        # faster than np.where's branchy select on large layers (an exact zero
        # may come out as −0.0, which equals 0). Where ∂L/∂a is ±inf or nan the
        # product would give nan for 0·∂L/∂a; PyTorch gives 0, so select there.
        if np.isfinite(grad_a).all():
            local = grad_a * self.positive
        else:
            local = np.where(self.positive, grad_a, 0.0)
        return local


@register("leaky_relu")
class LeakyReLU(Activation):
    """a = z if z > 0 else slope·z;  a' = 1 if z > 0 else slope (a'(0) = slope, as PyTorch)."""

    def forward(self, z):
        self.positive = z > 0
        return np.where(self.positive, z, z * self.slope)

    def backward(self, grad_a):
        return np.where(self.positive, grad_a, grad_a * self.slope)


@register("elu")
class ELU(Activation):
    """a = z if z > 0 else α(e^z − 1);  a' = 1 if z > 0 else α e^z.

    a'(0) = α, as PyTorch's elu_backward computes from the input (is_result=False).
    """

    def forward(self, z):
        self.positive = z > 0
        negative_part = np.minimum(z, 0.0)  # keeps e^z finite on the unused branch
        saturating = np.expm1(negative_part)  # e^z − 1, accurate near z = 0
        saturating *= self.alpha  # α(e^z − 1)
        self.alpha_exp = np.exp(negative_part, out=negative_part)
        self.alpha_exp *= self.alpha  # α e^z, the derivative for z ≤ 0
        return np.where(self.positive, z, saturating)

    def backward(self, grad_a):
        return np.where(self.positive, grad_a, grad_a * self.alpha_exp)


@register("softplus")
class Softplus(Activation):
    """a = log(1 + e^{βz}) / β, and a = z where βz > threshold (PyTorch);
    a' = σ(βz), and a' = 1 where βz > threshold.

    log(1 + e^{u}) is evaluated as max(u, 0) + log1p(e^{−|u|}): finite for any z.
    """

    def forward(self, z):
        scaled = z * self.beta  # u = βz
        self.linear = scaled > self.threshold
        self.scaled = scaled
        smooth = softplus_stable(scaled)
        smooth /= self.beta
        return np.where(self.linear, z, smooth)

    def backward(self, grad_a):
        local = sigmoid(self.scaled)  # σ(βz)
        local *= grad_a
        return np.where(self.linear, grad_a, local)


@register("silu")
class SiLU(Activation):
    """a = z σ(z);  a' = σ(z) (1 + z (1 − σ(z)))."""

    def forward(self, z):
        self.pre_activation = z
        self.sigma = sigmoid(z)
        return z * self.sigma

    def backward(self, grad_a):
        s, z = self.sigma, self.pre_activation
        local = 1.0 - s
        local *= z
        local += 1.0
        local *= s  # σ(1 + z(1 − σ))
        local *= grad_a
        return local


@register("swish")
class Swish(SiLU):
    """Swish with β = 1 is SiLU: a = z σ(z);  a' = σ(z) (1 + z (1 − σ(z)))."""


@register("mish")
class Mish(Activation):
    """a = z tanh(sp(z)), sp(z) = log(1 + e^z);
    a' = tanh(sp(z)) + z σ(z) (1 − tanh²(sp(z)))   (since sp'(z) = σ(z)).

    PyTorch's softplus threshold (20) changes nothing here: for z > 20,
    tanh(sp(z)) = tanh(z) = 1 to double precision either way.
    """

    def forward(self, z):
        self.pre_activation = z
        self.tanh_softplus = np.tanh(softplus_stable(z))
        return z * self.tanh_softplus

    def backward(self, grad_a):
        z, t = self.pre_activation, self.tanh_softplus
        local = t * t
        np.subtract(1.0, local, out=local)  # 1 − tanh²(sp)
        local *= sigmoid(z)
        local *= z
        local += t
        local *= grad_a
        return local


_SQRT_HALF = math.sqrt(0.5)  # 1/√2
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # φ(0)
_GELU_K = math.sqrt(2.0 / math.pi)  # k = √(2/π)
_GELU_C = 0.044715


@register("gelu")
class GELU(Activation):
    """approximate="none" (erf form):
        a = z Φ(z),  Φ(z) = ½(1 + erf(z/√2));   a' = Φ(z) + z φ(z),  φ(z) = e^{−z²/2}/√(2π).
    approximate="tanh":
        u = k(z + c z³), k = √(2/π), c = 0.044715;  a = ½ z (1 + tanh u);
        a' = ½(1 + tanh u) + ½ z (1 − tanh² u) k (1 + 3c z²).
    """

    def forward(self, z):
        self.pre_activation = z
        if self.approximate == "none":
            cdf = _erf()(z * _SQRT_HALF)
            cdf += 1.0
            cdf *= 0.5  # Φ(z)
            self.cdf = cdf
            return z * cdf
        inner = z * z
        inner *= _GELU_C
        inner += 1.0
        inner *= z
        inner *= _GELU_K  # u = k(z + c z³)
        self.tanh_inner = np.tanh(inner, out=inner)
        half_right = self.tanh_inner + 1.0
        half_right *= 0.5  # ½(1 + tanh u)
        self.half_right = half_right
        return z * half_right

    def backward(self, grad_a):
        z = self.pre_activation
        if self.approximate == "none":
            pdf = z * z
            pdf *= -0.5
            np.exp(pdf, out=pdf)
            pdf *= _INV_SQRT_2PI  # φ(z)
            pdf *= z
            pdf += self.cdf  # Φ(z) + z φ(z)
            pdf *= grad_a
            return pdf
        t = self.tanh_inner
        inner_derivative = z * z
        inner_derivative *= 3.0 * _GELU_C
        inner_derivative += 1.0
        inner_derivative *= _GELU_K  # u' = k(1 + 3c z²)
        local = t * t
        np.subtract(1.0, local, out=local)  # 1 − tanh² u
        local *= inner_derivative
        local *= z
        local *= 0.5
        local += self.half_right
        local *= grad_a
        return local


def softmax_rows(z: np.ndarray) -> np.ndarray:
    """a = e^{z − max z} / Σ e^{z − max z} over the last axis (exp never overflows; a row of −∞ but one
    entry gives that entry 1). Also attention's probabilities over the keys (``manual.attention``)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def softmax_rows_backward(a: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
    """∂L/∂z = a ⊙ (∂L/∂a − Σ_j ∂L/∂a_j a_j) per row: the full Jacobian of each row's softmax."""
    weighted = grad_a * a
    row_dot = weighted.sum(axis=-1, keepdims=True)  # Σ_j ∂L/∂a_j a_j
    np.subtract(grad_a, row_dot, out=weighted)
    weighted *= a
    return weighted


@register("softmax")
class Softmax(Activation):
    """a_j = e^{z_j} / Σ_k e^{z_k} over each row (computed with z − max_k z_k).

    Jacobian ∂a_j/∂z_i = a_j (1[i=j] − a_i), so per row
    ∂L/∂z_i = a_i (∂L/∂a_i − Σ_j ∂L/∂a_j a_j).
    """

    def forward(self, z):
        self.activation = softmax_rows(z)
        return self.activation

    def backward(self, grad_a):
        return softmax_rows_backward(self.activation, grad_a)


__all__ = ["ACTIVATIONS", "Activation", "register", "sigmoid", "softplus_stable"] + [
    cls.__name__ for cls in ACTIVATIONS.values()
]
