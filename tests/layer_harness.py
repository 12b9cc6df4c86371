"""One harness for every hand-written layer against torch: check_layer's core, fed from the layer grids.

tinygrad's ``helper_test_op``: a layer's test is one line,

    check_manual("conv2d", input_shape, options, dtype)

which runs ``reports.layer_check.check`` — the comparison a user's
``check_layer`` makes: the forward against the torch function, the input and
parameter gradients against autograd (and, in float64, both against central
differences of the layer's own forward), on seeded random draws and at kinks,
judged by the one tolerance policy, failing with the per-element table — plus
the quantities a layer reports beyond those (``observed``): batch_norm's running
statistics after the pass, an LSTM's cells c_t and their total gradients ∂L/∂c_t.

The variants come from the layer grids through ``grid_variants(kind)``: (label,
input shape, options), options in PyTorch's names as the catalogue writes them,
plus the grid's switches (``bias``: False, ``h0`` / ``c0``: given initial states).
Each layer type here is a ``Spec``: its parameters' draw, its inputs, the
hand-written layer built from the parameters, and the torch function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from backprop_verify.manual.conv import Conv2d
from backprop_verify.manual.dropout import Dropout
from backprop_verify.manual.layers import Flatten, Linear
from backprop_verify.manual.normalization import BatchNorm, LayerNorm
from backprop_verify.manual.pooling import AvgPool2d, MaxPool2d
from backprop_verify.manual.recurrent import GRU, LSTM, RNN, LastStep
from backprop_verify.reports.layer_check import LayerCheck, check
from backprop_verify.scenarios import catalog

SEED = 0
DTYPES = ("float64", "float32")


# --- the variants ------------------------------------------------------------------------------------------------

def grid_variants(kind: str) -> list[tuple[str, tuple[int, ...], dict]]:
    """[(label, input shape, options)] of layer ``kind``'s grid: the catalogue spec's own grid where it
    has one, else ``scenarios.layer_grids.LAYER_GRIDS`` (entries as tuples or as objects with
    ``label``, ``input_shape`` / ``shape`` and ``options``)."""
    info = catalog.LAYERS[kind]
    grid = next((getattr(info, name) for name in ("grid", "variants", "grid_variants")
                 if getattr(info, name, None)), None)
    if grid is None:
        from backprop_verify.scenarios.layer_grids import LAYER_GRIDS

        grid = LAYER_GRIDS[kind]
    variants = []
    for variant in grid:
        if isinstance(variant, tuple):
            label, shape, options = variant[:3]
        else:
            label, options = variant.label, variant.options
            shape = getattr(variant, "input_shape", None) or variant.shape
        variants.append((label, tuple(shape), dict(options)))
    return variants


def variant_ids(variants) -> list[str]:
    """Test ids: the variant's label and the seed."""
    return [f"{variant[0]}-s{SEED}" for variant in variants]


# --- a hand-written layer in check_layer's contract ---------------------------------------------------------------

class ManualLayer:
    """``forward(*arrays)`` / ``backward(grad_out)`` / ``params`` / ``grads`` around a hand-written layer.

    The layer is built afresh from ``params`` (check_layer's copies, in the dtype it runs) on every
    forward, so its state — running statistics, a mask — starts from the same values each time and
    finite differences see a function of the inputs and parameters alone.
    """

    def __init__(self, spec: "Spec", options: dict, switches: dict, params: dict, input_names: list[str],
                 layer_class=None):
        self.spec, self.options, self.switches, self.layer_class = spec, options, switches, layer_class
        self.params, self.input_names, self.grads = params, input_names, {}

    def forward(self, *arrays):
        dtype = arrays[0].dtype
        self.layer = self.spec.build(self.layer_class, self.params, self.options, self.switches, dtype)
        return self.layer.forward(*arrays)

    def backward(self, grad_out):
        input_grad = self.layer.backward(grad_out)
        self.grads = dict(zip(self.layer.parameter_names, self.layer.gradients))
        states = [getattr(self.layer, f"{name}_grad") for name in self.input_names[1:]]  # h0, c0
        return (input_grad, *states) if states else input_grad

    def observed(self) -> dict[str, np.ndarray]:
        return self.spec.observed(self.layer) if self.spec.observed else {}


class TorchFunction:
    """``torch_fn(*inputs, **params)`` with ``observed(output, grad_out)``: what the spec's torch side reports."""

    def __init__(self, function, observed=None):
        self.function, self.report, self.seen = function, observed, {}

    def __call__(self, *inputs, **params):
        self.seen = {}
        return self.function(self.seen, *inputs, **params)

    def observed(self, output, grad_out) -> dict:
        return self.report(self.seen, output, grad_out) if self.report else {}


@dataclass(frozen=True)
class Spec:
    """One layer type: ``parameters(shape, options, switches, rng)`` (float64, name → array, PyTorch's
    names), ``build(layer_class, params, options, switches, dtype)`` the hand-written layer,
    ``torch(options, switches, shape)`` → ``function(seen, *inputs, **params)``; optional ``states``
    (the extra inputs: h0, c0), ``observed`` (layer → name → array) and ``torch_observed``
    (seen, output, grad_out → name → tensor), ``sample`` (rng, shape → an input draw), ``fd``
    (shape, options → whether central differences resolve the gradients at all)."""

    parameters: Callable = lambda shape, options, switches, rng: {}
    build: Callable = None
    torch: Callable = None
    states: Callable = lambda shape, options, switches: {}
    observed: Callable | None = None
    torch_observed: Callable | None = None
    sample: Callable | None = None
    fd: Callable = lambda shape, options: True


def _normal(rng, shape, mean=0.0, scale=1.0):
    return mean + scale * rng.standard_normal(shape)


def _conv_parameters(shape, options, switches, rng):
    kernel = options["kernel_size"]
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    weight_shape = (options["out_channels"], shape[1] // options["groups"], *kernel)
    params = {"weight": rng.standard_normal(weight_shape)}
    if switches.get("bias", True):
        params["bias"] = rng.standard_normal(weight_shape[0])
    return params


def _conv_torch(options, switches, shape):
    def function(seen, x, weight, bias=None):
        return F.conv2d(x, weight, bias, options["stride"], options["padding"], options["dilation"], options["groups"])
    return function


def _batch_norm_parameters(shape, options, switches, rng):
    if not options["affine"]:
        return {}
    return {"weight": _normal(rng, shape[1], 1.0, 0.5), "bias": rng.standard_normal(shape[1])}


def _running(shape):
    """The running statistics before the pass (float64; a mean and variance far from x's own)."""
    rng = np.random.default_rng([SEED, 1])
    return {"running_mean": rng.standard_normal(shape[1]), "running_var": rng.uniform(0.5, 2.0, shape[1])}


def _batch_norm_build(layer_class, params, options, switches, dtype):
    running = {name: value.astype(dtype) for name, value in switches["running"].items()}
    return (layer_class or BatchNorm)(params.get("weight"), params.get("bias"), eps=options["eps"],
                                      momentum=options["momentum"], training=options["training"], **running)


def _batch_norm_torch(options, switches, shape):
    def function(seen, x, weight=None, bias=None):
        for name, value in switches["running"].items():
            seen[name] = torch.tensor(value, dtype=x.dtype)
        return F.batch_norm(x, seen["running_mean"], seen["running_var"], weight, bias,
                            training=options["training"], momentum=options["momentum"], eps=options["eps"])
    return function


def _batch_norm_fd(shape, options) -> bool:
    """Two values per channel in training: x̂ = ±1 whatever x is, so ∂L/∂x is an ε-sized cancellation
    (~1e-6) below what central differences resolve (~1e-10 absolute); layer and torch are still judged."""
    return not (options["training"] and np.prod(shape) // shape[1] == 2)


def _layer_norm_parameters(shape, options, switches, rng):
    if not options["elementwise_affine"]:
        return {}
    normalized = shape[-options["dims"]:]
    return {"weight": _normal(rng, normalized, 1.0, 0.5), "bias": rng.standard_normal(normalized)}


def _dropout_mask(shape, p):
    return (np.random.default_rng([SEED, 2]).uniform(size=shape) >= p).astype(np.float64)


def _dropout_build(layer_class, params, options, switches, dtype):
    layer = (layer_class or Dropout)(options["p"])
    layer.mask = switches["mask"].astype(dtype)
    return layer


def _dropout_torch(options, switches, shape):
    p = options["p"]

    def function(seen, x):  # PyTorch's inverted dropout with this mask: zeros when p = 1
        mask = torch.tensor(switches["mask"], dtype=x.dtype)
        return x * mask * 0.0 if p == 1.0 else x * mask / (1 - p)
    return function


GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}


def _recurrent_parameters(kind):
    def parameters(shape, options, switches, rng):
        """PyTorch's U(−1/√H, 1/√H), widened ×2 to reach the nonlinearities' curved parts."""
        hidden = options["hidden_size"]
        width, bound = GATES[kind] * hidden, 2.0 / np.sqrt(hidden)
        params = {"weight_ih": rng.uniform(-bound, bound, (width, shape[2])),
                  "weight_hh": rng.uniform(-bound, bound, (width, hidden))}
        if options["bias"]:
            params.update(bias_ih=rng.uniform(-bound, bound, width), bias_hh=rng.uniform(-bound, bound, width))
        return params
    return parameters


def _recurrent_states(shape, options, switches):
    return {name: (shape[0], options["hidden_size"]) for name in ("h0", "c0") if switches.get(name)}


def _recurrent_build(kind):
    def build(layer_class, params, options, switches, dtype):
        extra = {"nonlinearity": options["nonlinearity"]} if kind == "rnn" else {}
        return (layer_class or {"rnn": RNN, "lstm": LSTM, "gru": GRU}[kind])(
            params["weight_ih"], params["weight_hh"], params.get("bias_ih"), params.get("bias_hh"),
            bptt_chunk=options["bptt_chunk"], **extra)
    return build


def _recurrent_torch(kind):
    def make(options, switches, shape):
        state_names = list(_recurrent_states(shape, options, switches))
        chunk = options["bptt_chunk"]

        def function(seen, x, *states, **params):
            """torch's cell step by step; truncated BPTT as its definition says: the state detached
            every ``bptt_chunk`` steps."""
            given = dict(zip(state_names, states))
            extra = {"nonlinearity": options["nonlinearity"]} if kind == "rnn" else {}
            cell = CELLS[kind](x.shape[2], options["hidden_size"], bias="bias_ih" in params, dtype=x.dtype, **extra)
            zeros = torch.zeros(x.shape[0], options["hidden_size"], dtype=x.dtype)
            h, c = given.get("h0", zeros), given.get("c0", zeros)
            outputs, seen["cells"] = [], []
            for t in range(x.shape[1]):
                if chunk and t and t % chunk == 0:
                    h, c = h.detach(), c.detach()
                if kind == "lstm":
                    h, c = torch.func.functional_call(cell, params, (x[:, t], (h, c)))
                    seen["cells"].append(c)
                else:
                    h = torch.func.functional_call(cell, params, (x[:, t], h))
                outputs.append(h)
            return torch.stack(outputs, dim=1)
        return function
    return make


def _untruncated(shape, options) -> bool:
    """Truncated BPTT (0 < bptt_chunk < T) is by definition not the derivative of the forward: central
    differences measure the full one, so they judge only untruncated runs; layer and torch still meet."""
    return not 0 < options["bptt_chunk"] < shape[1]


def _lstm_cells(layer):
    return {"cell": layer.cells, "cell.grad": layer.cells_grad}


def _lstm_torch_cells(seen, output, grad_out):
    """Every c_t and the total ∂L/∂c_t (the graph kept for the gradients that follow)."""
    cells = seen["cells"]
    grads = torch.autograd.grad(output, cells, grad_out, retain_graph=True)
    return {"cell": torch.stack(cells, dim=1), "cell.grad": torch.stack(grads, dim=1)}


def _plain(make):
    """A layer without parameters: ``make(layer_class, options, switches)``."""
    return lambda layer_class, params, options, switches, dtype: make(layer_class, options, switches)


SPECS: dict[str, Spec] = {
    "linear": Spec(
        parameters=lambda shape, options, switches, rng: {"weight": rng.standard_normal((switches["out"], shape[1])),
                                                          "bias": rng.standard_normal(switches["out"])},
        build=lambda cls, params, options, switches, dtype: (cls or Linear)(params["weight"], params["bias"]),
        torch=lambda options, switches, shape: lambda seen, x, weight, bias: F.linear(x, weight, bias)),
    "conv2d": Spec(
        parameters=_conv_parameters, torch=_conv_torch,
        build=lambda cls, params, options, switches, dtype: (cls or Conv2d)(
            params["weight"], params.get("bias"), stride=options["stride"], padding=options["padding"],
            dilation=options["dilation"], groups=options["groups"])),
    "max_pool2d": Spec(
        build=_plain(lambda cls, options, switches: (cls or MaxPool2d)(
            options["kernel_size"], options["stride"], padding=options["padding"], dilation=options["dilation"],
            ceil_mode=options["ceil_mode"])),
        torch=lambda options, switches, shape: lambda seen, x: F.max_pool2d(
            x, options["kernel_size"], options["stride"], options["padding"], options["dilation"],
            ceil_mode=options["ceil_mode"])),
    "avg_pool2d": Spec(
        build=_plain(lambda cls, options, switches: (cls or AvgPool2d)(
            options["kernel_size"], options["stride"], padding=options["padding"], ceil_mode=options["ceil_mode"],
            count_include_pad=options["count_include_pad"])),
        torch=lambda options, switches, shape: lambda seen, x: F.avg_pool2d(
            x, options["kernel_size"], options["stride"], options["padding"], ceil_mode=options["ceil_mode"],
            count_include_pad=options["count_include_pad"])),
    "flatten": Spec(build=_plain(lambda cls, options, switches: (cls or Flatten)()),
                    torch=lambda options, switches, shape: lambda seen, x: torch.flatten(x, 1)),
    "batch_norm": Spec(
        parameters=_batch_norm_parameters, build=_batch_norm_build, torch=_batch_norm_torch,
        observed=lambda layer: {"running_mean": layer.running_mean, "running_var": layer.running_var},
        torch_observed=lambda seen, output, grad_out: {name: seen[name] for name in ("running_mean", "running_var")},
        sample=lambda rng, shape: _normal(rng, shape, 2.0, 3.0),  # a mean and variance far from the running 0, 1
        fd=_batch_norm_fd),
    "layer_norm": Spec(
        parameters=_layer_norm_parameters,
        build=lambda cls, params, options, switches, dtype: (cls or LayerNorm)(
            options["dims"], params.get("weight"), params.get("bias"), eps=options["eps"]),
        torch=lambda options, switches, shape: lambda seen, x, weight=None, bias=None: F.layer_norm(
            x, x.shape[-options["dims"]:], weight, bias, eps=options["eps"]),
        sample=lambda rng, shape: _normal(rng, shape, 1.0, 2.0)),
    "dropout": Spec(build=_dropout_build, torch=_dropout_torch),
    "last_step": Spec(build=_plain(lambda cls, options, switches: (cls or LastStep)()),
                      torch=lambda options, switches, shape: lambda seen, x: x[:, -1]),
    **{kind: Spec(parameters=_recurrent_parameters(kind),
                  build=_recurrent_build(kind), torch=_recurrent_torch(kind), states=_recurrent_states,
                  observed=_lstm_cells if kind == "lstm" else None,
                  torch_observed=_lstm_torch_cells if kind == "lstm" else None, fd=_untruncated)
       for kind in ("rnn", "lstm", "gru")},
}


# --- the one helper ----------------------------------------------------------------------------------------------

def check_manual(kind: str, shape, given: dict, dtype: str = "float64", layer_class=None, **check_options) -> LayerCheck:
    """The hand-written layer ``kind`` (or ``layer_class``, a planted bug) with options ``given`` on inputs
    of ``shape``, against its torch function: ``reports.layer_check.check`` in ``dtype`` (finite
    differences in float64), raising the table on a failure (``raises=False``: the rows)."""
    __tracebackhide__ = True
    spec = SPECS[kind]
    known = catalog.LAYERS[kind].params
    options = catalog.layer_options(kind, {key: value for key, value in given.items() if key in known})
    switches = {key: value for key, value in given.items() if key not in known}
    shape = tuple(shape)
    if kind == "batch_norm":
        switches["running"] = _running(shape)
    if kind == "dropout":
        switches["mask"] = _dropout_mask(shape, options["p"])
    params = spec.parameters(shape, options, switches, np.random.default_rng(SEED))
    inputs = {"input": shape, **spec.states(shape, options, switches)}
    layer = ManualLayer(spec, options, switches, params, list(inputs), layer_class)
    torch_fn = TorchFunction(spec.torch(options, switches, shape), spec.torch_observed)
    check_options.setdefault("inputs", inputs)
    check_options.setdefault("sample", spec.sample)
    check_options.setdefault("fd", spec.fd(shape, options))
    return check(layer, torch_fn, dtype=(dtype,), seed=SEED, observed=True, require_read=False,
                 **check_options)
