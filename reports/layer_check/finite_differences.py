"""The finite-difference side: central differences of the layer's own forward, in float64."""
from __future__ import annotations

import numpy as np

from backprop_verify.reference.fd_oracle import fd_gradient
from backprop_verify.reports.layer_check.contract import UPSTREAM, call_forward, install
from backprop_verify.scenarios.trace import Trace


def fd_trace(layer, names, arrays, values, upstream) -> Trace:
    """Central differences of L = Σ forward(x)·g, the layer's own forward in float64."""
    name = type(layer).__name__
    where = "finite differences (float64)"
    install(layer, values, "float64")

    def loss(current) -> float:
        return float(np.sum(call_forward(layer, name, current, "float64", where) * upstream))

    trace = Trace("fd")
    trace.put(UPSTREAM, upstream)
    for k, key in enumerate(names):
        trace.put(f"{key}.grad", fd_gradient(lambda theta, k=k: loss([*arrays[:k], theta, *arrays[k + 1:]]),
                                             arrays[k]))
    for key, value in values.items():
        def with_parameter(theta, key=key) -> float:
            layer.params[key] = theta
            return loss(arrays)

        trace.put(f"{key}.grad", fd_gradient(with_parameter, value))
        layer.params[key] = value.copy()
    return trace
