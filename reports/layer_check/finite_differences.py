"""The finite-difference side: differences of the layer's own forward, in float64.

Central differences (``reference.fd_oracle.fd_gradient``) judge the gradients
on the draws away from kinks. One-sided differences judge, at a kink, whether
the layer's value there is the left or the right derivative (``conventions``).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.reference.fd_oracle import fd_gradient
from backprop_verify.reports.layer_check.contract import Signature, Subject, call_forward, upstream_value
from backprop_verify.scenarios.trace import Trace

# A one-sided difference [L(θ + h) − L(θ)] / h errs by h·|L″|/2 (truncation) + ε·|L|/h (round-off):
# they balance at h ≈ √ε ≈ 1.5e-8 (for L and L″ of order one), a total of ≈ 2√ε ≈ 3e-8 relative — far
# inside the finite-difference tolerance (1e-6). The step scales with the entry like the central one.
ONE_SIDED_STEP: float = float(np.sqrt(np.finfo(np.float64).eps))


def layer_loss(subject: Subject, signature: Signature, upstreams):
    """L(arrays, values) = Σ_k Σ forward(x)_k · g_k: the layer's own forward, a fresh call each time, float64."""
    where = "finite differences (float64)"

    def loss(arrays, values) -> float:
        layer = subject.ready(values, "float64")
        outputs = call_forward(layer, subject.name, arrays, "float64", where, signature)
        return float(sum(np.sum(output * g) for output, g in zip(outputs, upstreams)))
    return loss


def fd_trace(subject: Subject, signature: Signature, arrays, values, outputs, upstreams) -> Trace:
    """Central differences of L with respect to every differentiable input and differentiated parameter.

    The trace also holds the float64 outputs and g at their addresses, for ``compare``'s absolute
    floors (max|output|, max|g|): the differences are judged against the same scales as torch."""
    loss = layer_loss(subject, signature, upstreams)
    trace = Trace("fd")
    for address, output in zip(signature.output_addresses(), outputs):
        trace.put(address, output)
    trace.put(signature.upstream_address(), upstream_value(upstreams))
    for key in signature.differentiable:
        k = signature.inputs.index(key)
        trace.put(f"{key}.grad", fd_gradient(lambda theta, k=k: loss([*arrays[:k], theta, *arrays[k + 1:]], values),
                                             arrays[k]))
    for key in signature.parameters:
        trace.put(f"{key}.grad", fd_gradient(lambda theta, key=key: loss(arrays, {**values, key: theta}),
                                             values[key]))
    return trace


def one_sided(subject: Subject, signature: Signature, arrays, values, upstreams, target: str,
              elements: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right derivative, the point θ) of L with respect to ``target`` (an input or a parameter)
    at each flat element of ``elements``: [L(θ) − L(θ − h)] / h and [L(θ + h) − L(θ)] / h, divided by
    the step actually taken."""
    loss = layer_loss(subject, signature, upstreams)
    if target in signature.inputs:
        k = signature.inputs.index(target)
        point = arrays[k]

        def at(theta):
            return loss([*arrays[:k], theta, *arrays[k + 1:]], values)
    else:
        point = values[target]

        def at(theta):
            return loss(arrays, {**values, target: theta})
    base = at(point.copy())
    left, right, theta = (np.empty(len(elements)) for _ in range(3))
    for n, flat in enumerate(elements):
        moved = point.copy().reshape(-1)
        theta[n] = moved[flat]
        step = ONE_SIDED_STEP * max(1.0, abs(theta[n]))
        plus, minus = theta[n] + step, theta[n] - step
        moved[flat] = plus
        right[n] = (at(moved.reshape(point.shape)) - base) / (plus - theta[n])
        moved[flat] = minus
        left[n] = (base - at(moved.reshape(point.shape))) / (theta[n] - minus)
    return left, right, theta
