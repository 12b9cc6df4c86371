"""Gradient clipping and weight clipping, by hand (NumPy).

Applied by the training loop (``manual.engine``) in the order PyTorch users
write them within one update::

    backward → clip_grad_norm → clip_grad_value → optimizer step → clip_weights

``clip_grad_norm(grads, c)``   the global L2 norm over every parameter's gradient,
                               ‖g‖ = √(Σ_p Σ_k g_pk²), and every gradient scaled by
                               min(1, c / (‖g‖ + 1e-6)) — the 1e-6 is torch's
                               ``clip_grad_norm_`` guard against ‖g‖ = 0.
``clip_grad_value(grads, c)``  every entry clamped into [−c, c].
``clip_weights(params, lo, hi)`` every weight and bias clamped into [lo, hi], in place.
"""
from __future__ import annotations

import math

import numpy as np

NORM_GUARD = 1e-6  # torch.nn.utils.clip_grad_norm_: c / (‖g‖ + 1e-6)


def global_norm(grads: list[np.ndarray]) -> float:
    """‖g‖₂ over all parameters: the square root of the sum of every squared entry."""
    return math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> list[np.ndarray]:
    """New gradients scaled by min(1, max_norm / (‖g‖₂ + 1e-6)) — one factor for all."""
    factor = min(1.0, max_norm / (global_norm(grads) + NORM_GUARD))
    return [g * g.dtype.type(factor) for g in grads]


def clip_grad_value(grads: list[np.ndarray], limit: float) -> list[np.ndarray]:
    """New gradients with every entry clamped into [−limit, limit]."""
    return [np.clip(g, -limit, limit).astype(g.dtype, copy=False) for g in grads]


def clip_weights(params: list[np.ndarray], low: float, high: float) -> None:
    """Clamp every parameter into [low, high], in place (after the optimizer's update)."""
    for p in params:
        np.clip(p, low, high, out=p)


__all__ = ["clip_grad_norm", "clip_grad_value", "clip_weights", "global_norm", "NORM_GUARD"]
