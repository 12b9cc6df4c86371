"""Optimizers: update rules θ ← θ − (something of g), applied in place.

Notation: θ a parameter array (a W or b of a linear layer), g = ∂L/∂θ its
gradient at the current θ, η the learning rate, t the update count (1, 2, ...).

Registry: ``OPTIMIZERS`` maps each catalogue optimizer name to its class.
Adding an optimizer means one ``@register`` class here, one catalogue entry
(its extra options with defaults) and one torch mirror in ``reference/``
(``None`` there when torch.optim has no such optimizer, as for Ftrl).
A class's ``__init__(params, learning_rate, **options)`` takes exactly the
catalogue options: the base class fills in the catalogue's defaults (written
nowhere else), rejects unknown options and sets each one as an attribute of
the same name. Per-parameter state (velocities, moments) lives in lists
parallel to ``params``. ``step(grads)`` updates every ``params[i]`` in place, so
the layers holding those arrays see the new values.

dtype: learning rates and options are Python floats, which keeps float32
parameters float32 under NumPy 2's promotion rules.
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.registry import registrar
from backprop_verify.scenarios.catalog import OPTIMIZERS as OPTIMIZER_CATALOG, optimizer_options

OPTIMIZERS: dict[str, type["Optimizer"]] = {}


register = registrar(OPTIMIZERS, "optimizer")


class _CatalogueOptions:
    """The names of the options an optimizer class accepts: its catalogue entry's."""

    def __get__(self, instance, owner) -> tuple[str, ...]:
        return tuple(OPTIMIZER_CATALOG.get(owner.name, ()))


class Optimizer:
    """Base class: holds the parameter arrays, the learning rate, the options and the update count.

    Every option of the catalogue entry, as given or else its catalogue
    default, becomes an attribute of the same name converted to its kind
    (``momentum`` → ``self.momentum``, a float). An unknown option is a
    TypeError, a value outside its choices a ValueError.
    """

    name: str = ""
    options = _CatalogueOptions()  # the extra options the class accepts

    def __init__(self, params: list[np.ndarray], learning_rate: float, **options):
        specs = OPTIMIZER_CATALOG[self.name]
        for key, value in optimizer_options(self.name, options).items():
            setattr(self, key, specs[key].kind(value))
        self.params = list(params)
        self.learning_rate = float(learning_rate)
        self.step_count = 0  # t, the number of updates applied so far

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update to every parameter, in place."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        self.step_count += 1
        for index, (param, grad) in enumerate(zip(self.params, grads)):
            self.update(index, param, grad)

    def update(self, index: int, param: np.ndarray, grad: np.ndarray) -> None:  # pragma: no cover
        """Update ``param`` (= ``self.params[index]``) in place from its gradient."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate})"


def _zeros(params: list[np.ndarray], value: float = 0.0) -> list[np.ndarray]:
    """Per-parameter state arrays, one like each parameter (same shape and dtype)."""
    return [np.full_like(p, value) for p in params]


def _with_l2(param: np.ndarray, grad: np.ndarray, weight_decay: float) -> np.ndarray:
    """g + λθ: L2 weight decay folded into the gradient (torch's ``weight_decay``)."""
    return grad + weight_decay * param if weight_decay else grad


@register("sgd")
class SGD(Optimizer):
    """Gradient descent, with optional momentum, Nesterov and L2 weight decay.

    g ← g + λθ (weight_decay). Without momentum: θ ← θ − η g.

    momentum_form = "torch" (torch.optim.SGD)::

        v₁ = g₁,  v_t = β v_{t−1} + (1 − dampening) g_t
        θ ← θ − η v_t                 (nesterov: θ ← θ − η (g_t + β v_t))

    momentum_form = "textbook" (document 003; no dampening)::

        v⁰ = η ∇L,  vᵗ = β vᵗ⁻¹ + η ∇L
        θ ← θ − vᵗ                    (nesterov: θ ← θ − (η ∇L + β vᵗ))

    At a constant learning rate the two are the same rule: by induction
    v_textbook = η · v_torch, so θ moves by the same amount every update.
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.velocity: list[np.ndarray | None] = [None] * len(self.params)

    def update(self, index, param, grad):
        grad = _with_l2(param, grad, self.weight_decay)
        eta, beta = self.learning_rate, self.momentum
        if beta == 0.0:
            param -= eta * grad
            return
        v = self.velocity[index]
        if self.momentum_form == "textbook":
            v = eta * grad if v is None else beta * v + eta * grad
            self.velocity[index] = v
            param -= (eta * grad + beta * v) if self.nesterov else v
            return
        v = grad.copy() if v is None else beta * v + (1.0 - self.dampening) * grad
        self.velocity[index] = v
        param -= eta * ((grad + beta * v) if self.nesterov else v)


@register("adagrad")
class AdaGrad(Optimizer):
    """AdaGrad: a per-coordinate step shrinking with the sum of squared gradients.

    g ← g + λθ;  n ← n + g²  (n starts at initial_accumulator_value);
    η_t = η / (1 + (t − 1)·lr_decay), and::

        eps_placement = "outside" (torch):        θ ← θ − η_t g / (√n + ε)
        eps_placement = "inside"  (document 003):  θ ← θ − η_t g / √(n + ε)

    The two differ where n is comparable to ε (or ε²): the first update of a
    coordinate whose gradient is tiny, or a coordinate whose gradients are
    all 0 (outside: the step is 0/ε = 0 either way). With torch's ε = 1e-10,
    inside adds √ε = 1e-5 to the denominator instead of 1e-10.
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.sum_of_squares = _zeros(self.params, self.initial_accumulator_value)

    def update(self, index, param, grad):
        grad = _with_l2(param, grad, self.weight_decay)
        n = self.sum_of_squares[index]
        n += grad * grad
        eta_t = self.learning_rate / (1.0 + (self.step_count - 1) * self.lr_decay)
        denominator = np.sqrt(n) + self.eps if self.eps_placement == "outside" else np.sqrt(n + self.eps)
        param -= eta_t * (grad / denominator)


@register("rmsprop")
class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop): divide by a running root mean square of g.

    g ← g + λθ;  s ← α s + (1 − α) g²;
    centered: m ← α m + (1 − α) g,  d = √(s − m²) + ε;  otherwise d = √s + ε;
    without momentum θ ← θ − η g / d;  with momentum μ: b ← μ b + g / d, θ ← θ − η b.
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.square_avg = _zeros(self.params)
        self.grad_avg = _zeros(self.params)
        self.buffer = _zeros(self.params)

    def update(self, index, param, grad):
        grad = _with_l2(param, grad, self.weight_decay)
        alpha = self.alpha
        s = self.square_avg[index]
        s *= alpha
        s += (1.0 - alpha) * (grad * grad)
        if self.centered:
            m = self.grad_avg[index]
            m += (1.0 - alpha) * (grad - m)  # m ← α m + (1 − α) g
            denominator = np.sqrt(s - m * m) + self.eps
        else:
            denominator = np.sqrt(s) + self.eps
        if self.momentum > 0.0:
            b = self.buffer[index]
            b *= self.momentum
            b += grad / denominator
            param -= self.learning_rate * b
        else:
            param -= self.learning_rate * (grad / denominator)


@register("adadelta")
class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012; torch.optim.Adadelta, whose η scales the step, default 1).

    g ← g + λθ;  s ← ρ s + (1 − ρ) g²;
    Δ = √(r + ε) / √(s + ε) · g;  r ← ρ r + (1 − ρ) Δ²;  θ ← θ − η Δ.
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.square_avg = _zeros(self.params)
        self.delta_avg = _zeros(self.params)

    def update(self, index, param, grad):
        grad = _with_l2(param, grad, self.weight_decay)
        rho, s, r = self.rho, self.square_avg[index], self.delta_avg[index]
        s *= rho
        s += (1.0 - rho) * (grad * grad)
        delta = np.sqrt(r + self.eps) / np.sqrt(s + self.eps) * grad
        r *= rho
        r += (1.0 - rho) * (delta * delta)
        param -= self.learning_rate * delta


@register("adam")
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), with AMSGrad and L2 or decoupled weight decay.

    weight decay: L2 g ← g + λθ, or decoupled θ ← (1 − ηλ)θ (then it is AdamW);
    m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  (amsgrad: v̂ ← max(v̂, v), use v̂)
    θ ← θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε).
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.first_moment = _zeros(self.params)
        self.second_moment = _zeros(self.params)
        self.max_second_moment = _zeros(self.params)

    def update(self, index, param, grad):
        if self.decoupled_weight_decay:
            param *= 1.0 - self.learning_rate * self.weight_decay
        else:
            grad = _with_l2(param, grad, self.weight_decay)
        t, b1, b2 = self.step_count, self.beta1, self.beta2
        m, v = self.first_moment[index], self.second_moment[index]
        m += (1.0 - b1) * (grad - m)  # m ← β₁ m + (1 − β₁) g
        v *= b2
        v += (1.0 - b2) * (grad * grad)
        if self.amsgrad:
            np.maximum(self.max_second_moment[index], v, out=self.max_second_moment[index])
            v = self.max_second_moment[index]
        step_size = self.learning_rate / (1.0 - b1**t)
        denominator = np.sqrt(v) / np.sqrt(1.0 - b2**t) + self.eps
        param -= step_size * (m / denominator)


@register("adamw")
class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay θ ← (1 − ηλ)θ, always
    (λ's default, nonzero as in torch, is the catalogue's)."""

    decoupled_weight_decay = True  # not an option: decoupling is what makes it AdamW


@register("adamax")
class Adamax(Optimizer):
    """Adamax (Kingma & Ba 2015, §7.1), the infinity-norm variant of Adam (torch's ε placement).

    g ← g + λθ;  m ← β₁ m + (1 − β₁) g;  u ← max(β₂ u, |g| + ε);
    θ ← θ − η/(1 − β₁ᵗ) · m / u.
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.first_moment = _zeros(self.params)
        self.infinity_norm = _zeros(self.params)

    def update(self, index, param, grad):
        grad = _with_l2(param, grad, self.weight_decay)
        m, u = self.first_moment[index], self.infinity_norm[index]
        m += (1.0 - self.beta1) * (grad - m)
        np.maximum(self.beta2 * u, np.abs(grad) + self.eps, out=u)
        param -= self.learning_rate / (1.0 - self.beta1**self.step_count) * (m / u)


@register("nadam")
class NAdam(Optimizer):
    """NAdam (Dozat 2016) with torch's momentum schedule (ψ = momentum_decay).

    μ_t = β₁(1 − ½·0.96^(tψ)),  Π_t = μ₁⋯μ_t;
    weight decay: L2 g ← g + λθ, or decoupled θ ← (1 − ηλ)θ;
    m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  d = √(v / (1 − β₂ᵗ)) + ε;
    θ ← θ − η(1 − μ_t)/(1 − Π_t) · g/d − η μ_{t+1}/(1 − Π_t μ_{t+1}) · m/d.
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.first_moment = _zeros(self.params)
        self.second_moment = _zeros(self.params)
        self.mu_product = 1.0  # Π_t, advanced once per update

    def mu(self, t: int) -> float:
        return self.beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def step(self, grads):
        t = self.step_count + 1
        self.mu_product *= self.mu(t)
        super().step(grads)

    def update(self, index, param, grad):
        eta = self.learning_rate
        if self.decoupled_weight_decay:
            param *= 1.0 - eta * self.weight_decay
        else:
            grad = _with_l2(param, grad, self.weight_decay)
        t, b1, b2 = self.step_count, self.beta1, self.beta2
        mu, mu_next = self.mu(t), self.mu(t + 1)
        m, v = self.first_moment[index], self.second_moment[index]
        m += (1.0 - b1) * (grad - m)
        v *= b2
        v += (1.0 - b2) * (grad * grad)
        denominator = np.sqrt(v / (1.0 - b2**t)) + self.eps
        param -= eta * (1.0 - mu) / (1.0 - self.mu_product) * (grad / denominator)
        param -= eta * mu_next / (1.0 - self.mu_product * mu_next) * (m / denominator)


@register("ftrl")
class Ftrl(Optimizer):
    """Per-coordinate FTRL-Proximal (McMahan et al. 2013, Algorithm 1); α = learning_rate.

    For each coordinate i, with z and n starting at 0 and initial_accumulator_value::

        σ = (√(n + g²) − √n) / α
        z ← z + g − σ θ
        n ← n + g²
        θ = 0                                          if |z| ≤ λ₁
        θ = −(z − sign(z) λ₁) / ((β + √n)/α + λ₂)      otherwise

    θ is the minimiser of g₁:ₜ·θ + ½ Σ_s σ_s (θ − θ_s)² + ½((β + √n₀)/α + λ₂) θ² + λ₁|θ|
    (θ_s the parameter at which g_s was computed). PyTorch has no FTRL: the
    tests check this rule against that objective by finite differences and
    against a scalar re-derivation; reports say "no torch reference".
    """

    def __init__(self, params, learning_rate, **options):
        super().__init__(params, learning_rate, **options)
        self.linear = _zeros(self.params)  # z
        self.sum_of_squares = _zeros(self.params, self.initial_accumulator_value)  # n

    def update(self, index, param, grad):
        alpha = self.learning_rate
        z, n = self.linear[index], self.sum_of_squares[index]
        n_new = n + grad * grad
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / alpha
        z += grad - sigma * param
        n[...] = n_new
        shrunk = z - np.sign(z) * self.l1
        denominator = (self.beta + np.sqrt(n)) / alpha + self.l2
        param[...] = np.where(np.abs(z) <= self.l1, 0.0, -shrunk / denominator)


__all__ = ["OPTIMIZERS", "Optimizer", "register", "SGD", "AdaGrad", "RMSprop", "Adadelta", "Adam", "AdamW",
           "Adamax", "NAdam", "Ftrl"]
