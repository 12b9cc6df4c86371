"""The reference side: ``torch_fn(*inputs, **params)`` under autograd, with the layer's upstream gradient."""
from __future__ import annotations

import torch

from backprop_verify.reports.layer_check.contract import OUTPUT, UPSTREAM, gradient_addresses, shapes_text
from backprop_verify.scenarios.trace import Trace

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def torch_trace(torch_fn, names, arrays, values, output_shape, upstream, dtype, where,
                observed: bool = False) -> Trace:
    """torch_fn(*inputs, **params) under autograd, with the same upstream gradient."""
    tensor_dtype = TORCH_DTYPES[dtype]
    with torch.enable_grad():
        inputs = [torch.tensor(a, dtype=tensor_dtype, requires_grad=True) for a in arrays]
        params = {key: torch.tensor(v, dtype=tensor_dtype, requires_grad=True) for key, v in values.items()}
        call = (f"torch_fn({', '.join(names + [f'{key}=' for key in params])}) with tensors of shapes "
                f"{shapes_text(arrays + list(values.values()))} — the convention is torch_fn(*inputs, **params)")
        try:
            output = torch_fn(*inputs, **params)
        except Exception as error:
            error.add_note(f"check_layer: raised by {call}, on {where}")
            raise
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"check_layer: torch_fn returned {type(output).__name__}, not a torch.Tensor ({call})")
        if tuple(output.shape) != tuple(output_shape):
            raise AssertionError(f"check_layer: the layer's forward gives shape {tuple(output_shape)}, torch_fn gives "
                                 f"{tuple(output.shape)} on {where}")
        if not output.requires_grad:
            raise TypeError("check_layer: torch_fn's output does not depend on its inputs through autograd (did it "
                            "leave torch, with .numpy(), .item() or torch.no_grad()?)")
        extra = {}
        if observed:  # further quantities torch_fn reports (core.check); a gradient among them keeps the graph
            extra = torch_fn.observed(output, torch.as_tensor(upstream, dtype=tensor_dtype))
        leaves = [*inputs, *params.values()]
        try:
            gradients = torch.autograd.grad(output, leaves, torch.as_tensor(upstream, dtype=tensor_dtype),
                                            allow_unused=True, materialize_grads=True)
        except Exception as error:
            error.add_note(f"check_layer: raised by autograd's backward through {call}, on {where}")
            raise
    trace = Trace("torch")
    trace.put(OUTPUT, output.detach().numpy())
    trace.put(UPSTREAM, upstream)
    for address, gradient in zip(gradient_addresses(names, list(values)), gradients):
        trace.put(address, gradient.numpy())
    for address, value in extra.items():
        trace.put(address, value.detach().numpy() if isinstance(value, torch.Tensor) else value)
    return trace
