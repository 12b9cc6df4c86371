"""Optimizers: update rules θ ← θ − (something of g), applied in place.

Notation: θ a parameter array (a W or b of a linear layer), g = ∂L/∂θ its
gradient at the current θ, η the learning rate, t the update count (1, 2, ...).

Registry: ``OPTIMIZERS`` maps each catalogue optimizer name to its class.
Adding an optimizer means one ``@register`` class here, one catalogue entry
(its extra options with defaults) and one torch mirror in ``reference/``.
A class's ``__init__(params, learning_rate, **options)`` takes exactly the
catalogue options; per-parameter state (velocities, moments) lives in lists
parallel to ``params``. ``step(grads)`` updates every ``params[i]`` in place, so
the layers holding those arrays see the new values.

dtype: learning rates and options are Python floats, which keeps float32
parameters float32 under NumPy 2's promotion rules.
"""
from __future__ import annotations

import numpy as np

OPTIMIZERS: dict[str, type["Optimizer"]] = {}


def register(name: str):
    """Class decorator: add an optimizer to ``OPTIMIZERS`` under ``name``."""

    def add(cls):
        if name in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} registered twice")
        OPTIMIZERS[name] = cls
        cls.name = name
        return cls

    return add


class Optimizer:
    """Base class: holds the parameter arrays, the learning rate and the update count."""

    name: str = ""
    options: tuple[str, ...] = ()  # the extra options the class accepts

    def __init__(self, params: list[np.ndarray], learning_rate: float, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"optimizer {self.name!r} got unknown options {unknown}; it accepts {list(self.options)}")
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


@register("sgd")
class SGD(Optimizer):
    """Plain gradient descent: θ ← θ − η g."""

    def update(self, index, param, grad):
        param -= self.learning_rate * grad


__all__ = ["OPTIMIZERS", "Optimizer", "SGD", "register"]
