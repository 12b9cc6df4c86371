"""The reference side: ``torch_fn(*inputs, **params)`` under autograd, with the layer's upstream gradients."""
from __future__ import annotations

import numpy as np
import torch

from backprop_verify.reports.layer_check.contract import Signature, is_float, shapes_text, upstream_value
from backprop_verify.scenarios.trace import Trace

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _tensor(array: np.ndarray, dtype, requires_grad: bool) -> torch.Tensor:
    """A float array in the run's dtype; an integer or boolean one (indices, masks) as it is."""
    if not is_float(array):
        return torch.tensor(array)
    return torch.tensor(array, dtype=dtype, requires_grad=requires_grad)


def torch_trace(torch_fn, signature: Signature, arrays, values, output_shapes, upstreams, dtype, where,
                observed: bool = False) -> Trace:
    """torch_fn(*inputs, **params) under autograd, with the same upstream gradients (one per output).

    Differentiable inputs and differentiated parameters require grad; integer inputs, frozen
    parameters and buffers do not. A buffer is read back after the call: torch updates running
    statistics in place (``F.batch_norm(..., training=True)``)."""
    tensor_dtype = TORCH_DTYPES[dtype]
    with torch.enable_grad():
        inputs = [_tensor(a, tensor_dtype, key in signature.differentiable) for key, a in zip(signature.inputs, arrays)]
        params = {key: _tensor(v, tensor_dtype, key in signature.parameters) for key, v in values.items()}
        call = (f"torch_fn({', '.join(signature.inputs + [f'{key}=' for key in params])}) with tensors of shapes "
                f"{shapes_text(list(arrays) + list(values.values()))} — the convention is torch_fn(*inputs, **params)")
        try:
            returned = torch_fn(*inputs, **params)
        except Exception as error:
            error.add_note(f"check_layer: raised by {call}, on {where}")
            raise
        outputs = _outputs(returned, signature, call, output_shapes, where)
        leaves = [tensor for key, tensor in zip(signature.inputs, inputs) if key in signature.differentiable]
        leaves += [params[key] for key in signature.parameters]
        connected = [k for k, output in enumerate(outputs) if output.requires_grad]
        if leaves and not connected:
            raise TypeError("check_layer: torch_fn's output does not depend on its inputs through autograd (did it "
                            "leave torch, with .numpy(), .item() or torch.no_grad()?)")
        grad_outputs = [torch.as_tensor(g, dtype=tensor_dtype) for g in upstreams]
        extra = {}
        if observed:  # further quantities torch_fn reports (core.check); a gradient among them keeps the graph
            extra = torch_fn.observed(returned, grad_outputs[0] if signature.outputs is None else grad_outputs)
        gradients = []
        if leaves:
            try:
                gradients = torch.autograd.grad([outputs[k] for k in connected], leaves,
                                                [grad_outputs[k] for k in connected],
                                                allow_unused=True, materialize_grads=True)
            except Exception as error:
                error.add_note(f"check_layer: raised by autograd's backward through {call}, on {where}")
                raise
    trace = Trace("torch")
    for address, output in zip(signature.output_addresses(), outputs):
        trace.put(address, output.detach().numpy())
    trace.put(signature.upstream_address(), upstream_value(upstreams))
    for address, gradient in zip(signature.gradient_addresses(), gradients):
        trace.put(address, gradient.numpy())
    for key in signature.buffers:
        trace.put(key, params[key].detach().numpy())
    for address, value in extra.items():
        trace.put(address, value.detach().numpy() if isinstance(value, torch.Tensor) else value)
    return trace


def _outputs(returned, signature: Signature, call, output_shapes, where) -> list[torch.Tensor]:
    """torch_fn's outputs as a list, of the layer's structure and shapes."""
    if signature.outputs is None:
        if isinstance(returned, (tuple, list)):
            raise AssertionError(f"check_layer: the layer's forward returns one array, torch_fn a "
                                 f"{type(returned).__name__} of {len(returned)} on {where}")
        outputs = [returned]
    else:
        if not isinstance(returned, (tuple, list)) or len(returned) != signature.outputs:
            found = (f"a {type(returned).__name__} of {len(returned)}" if isinstance(returned, (tuple, list))
                     else "one tensor")
            raise AssertionError(f"check_layer: the layer's forward returns a tuple of {signature.outputs} arrays, "
                                 f"torch_fn {found} on {where}; it must return one tensor per output, in order")
        outputs = list(returned)
    names = signature.output_names()
    for name, output, shape in zip(names, outputs, output_shapes):
        if not isinstance(output, torch.Tensor):
            what = "" if signature.outputs is None else f" as {name}"
            raise TypeError(f"check_layer: torch_fn returned {type(output).__name__}{what}, not a torch.Tensor "
                            f"({call})")
        if tuple(output.shape) != tuple(shape):
            what = "" if signature.outputs is None else f" {name}"
            raise AssertionError(f"check_layer: the layer's forward gives{what} shape {tuple(shape)}, torch_fn gives "
                                 f"{tuple(output.shape)} on {where}")
    return outputs
