"""The PyTorch mirror: a scenario's network run through autograd, its updates through torch.optim.

Every quantity comes from PyTorch itself — ``torch.nn.functional`` for the
activations and losses, autograd for every gradient, ``torch.optim`` for the
updates — so it is an implementation independent of ``manual/``'s hand-written
derivatives. The network is ``reference.network.build_network(scenario)``:
built from the Scenario alone (never from ``manual/``'s objects), in the
scenario's dtype.

Three registries, keyed by the catalogue's names (``scenarios.catalog``); the
activations and losses live in ``reference.network``:

``ACTIVATIONS[name](params) -> callable(z) -> a``
``LOSSES[name](a, t, reduction) -> scalar tensor``
``OPTIMIZERS[name](parameters, learning_rate, **options) -> torch.optim.Optimizer`` (None: no torch reference),
``options`` complete: the catalogue fills in the defaults (``scenarios.catalog.optimizer_options``)

Adding a component means adding one entry to the matching registry.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Callable

import numpy as np
import torch

from backprop_verify.reference.network import (ACTIVATIONS, LOSSES, TORCH_DTYPES, build_network, loss_function, make_activation,
                               to_tensor)
from backprop_verify.scenarios.catalog import optimizer_options
from backprop_verify.scenarios.model import Scenario
from backprop_verify.scenarios.schedule import batch_schedule, is_full_batch_in_order
from backprop_verify.scenarios.trace import Trace

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "TORCH_DTYPES",
    "has_torch_reference",
    "make_activation",
    "loss_function",
    "run",
    "to_tensor",
]


# --------------------------------------------------------------------------- optimizers
#
# ``OPTIMIZERS[name](parameters, lr, **options)`` builds the torch.optim optimizer
# for a catalogue entry; options keep the catalogue's names and arrive complete
# (``run`` fills them from the catalogue), so the factories hold no defaults. Two textbook forms
# map onto torch.optim through an exact identity rather than new code:
#
# * SGD, momentum_form = "textbook" (v⁰ = η∇L, vᵗ = βvᵗ⁻¹ + η∇L, θ ← θ − vᵗ):
#   torch.optim.SGD's v = βv + g, θ ← θ − ηv is the same rule at a constant
#   learning rate (v_textbook = η v_torch), so the reference is torch's form —
#   a manual-torch comparison of this option is the equivalence check.
# * AdaGrad, eps_placement = "inside" (θ ← θ − η g / √(n + ε)): torch's
#   accumulator starts at initial_accumulator_value, so starting it at n₀ + ε
#   with torch's ε = 0 gives √(n₀ + ε + Σg²) = √(n + ε) exactly.
#
# ``None`` marks an optimizer torch.optim does not have (Ftrl): ``run`` then
# records no ``step{t}`` addresses and reports say "no torch reference".


def _sgd(params, lr, *, momentum, dampening, nesterov, weight_decay, momentum_form):
    if momentum_form == "textbook" and dampening != 0.0:
        raise ValueError("reference: the textbook momentum form has no dampening")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                           weight_decay=weight_decay)


def _adagrad(params, lr, *, lr_decay, weight_decay, initial_accumulator_value, eps, eps_placement):
    if eps_placement == "inside":
        initial_accumulator_value, eps = initial_accumulator_value + eps, 0.0
    return torch.optim.Adagrad(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                               initial_accumulator_value=initial_accumulator_value, eps=eps)


def _adam_family(cls, **fixed):
    def make(params, lr, *, beta1, beta2, **options):
        return cls(params, lr=lr, betas=(beta1, beta2), **options, **fixed)

    return make


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer] | None] = {
    "sgd": _sgd,
    "adagrad": _adagrad,
    "rmsprop": lambda params, lr, **options: torch.optim.RMSprop(params, lr=lr, **options),
    "adadelta": lambda params, lr, **options: torch.optim.Adadelta(params, lr=lr, **options),
    "adam": _adam_family(torch.optim.Adam),
    "adamw": _adam_family(torch.optim.AdamW),
    "adamax": _adam_family(torch.optim.Adamax),
    "nadam": _adam_family(torch.optim.NAdam),
    "ftrl": None,  # no torch.optim counterpart
}


def has_torch_reference(optimizer_type: str) -> bool:
    """Whether ``reference.run`` traces this optimizer's steps (False: "no torch reference")."""
    return OPTIMIZERS.get(optimizer_type) is not None


class _ScalarDtype:
    """torch.optim keeps some state scalars (NAdam's μ-product, step counts) in
    torch's default dtype; for a float64 run they must be float64 too."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


def _clip_gradients(parameters: list[torch.Tensor], spec) -> None:
    if spec.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, spec.clip_grad_norm)
    if spec.clip_grad_value is not None:
        torch.nn.utils.clip_grad_value_(parameters, spec.clip_grad_value)


# --------------------------------------------------------------------------- the run


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view of ``tensor``'s values (``Trace.put`` copies it)."""
    return tensor.numpy(force=True)


def run(scenario: Scenario) -> Trace:
    """Forward and backward by autograd, then the optimizer's updates by torch.optim.

    Records ``loss``, ``layers.{i}.output`` / ``.output.grad``, every layer's
    initial ``weight`` / ``bias`` and their ``.grad``, batch_norm's
    ``running_mean`` / ``running_var`` after the pass, dropout's ``mask``, and
    ``input.grad``; and, when the scenario has an optimizer, for t = 1..steps
    on the mini-batches of ``scenarios.schedule.batch_schedule``:
    ``step{t}.loss``, the gradient the update used (after ``clip_grad_norm_`` /
    ``clip_grad_value_``), the running statistics after update t's forward
    pass, and ``step{t}.layers.{i}.weight`` / ``.bias`` after
    ``optimizer.step()`` and the weight clamp. When update 1 takes the whole
    batch in order, the first pass is its pass (as in the manual engine): the
    running statistics move once. An optimizer without a torch counterpart
    (``OPTIMIZERS[name] is None``) gets no ``step{t}`` addresses.

    The steps, as the docs describe them: build the network from the scenario;
    one forward pass and one reverse pass on the full batch, recorded
    (``_first_pass``); then the updates (``_trajectory``).
    """
    network = build_network(scenario, requires_grad=True)
    trace = Trace("torch")
    x = network.inputs(scenario.x)
    if not network.token_ids:
        x.requires_grad_()
    targets = network.tensor(scenario.y)
    loss, first_grads = _first_pass(trace, network, x, targets)
    if scenario.optimizer is not None:
        _trajectory(trace, network, scenario, x.detach(), targets, loss, first_grads)
    return trace


def _first_pass(trace: Trace, network, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Forward, loss, and one reverse pass (``autograd.grad``) for every recorded tensor at once; puts the
    loss, outputs, parameters, their gradients, the layers' records (cell states, attention probabilities)
    and buffers in ``trace``. Returns the loss and the gradients by address (update 1 reuses them)."""
    inner_outputs: dict[str, torch.Tensor] = {}

    def observe(path: str, _signal, output: torch.Tensor) -> None:
        inner_outputs[f"{path}.output"] = output

    outputs, records = network.recorded_forward(x, observe=observe)
    loss = network.loss_of(outputs[-1], targets)
    recorded = _recorded_tensors(network, inner_outputs, x)
    wanted = list(recorded.values()) + [t for value in records.values() for t in _steps(value)]
    grads = torch.autograd.grad(loss, wanted, materialize_grads=True)

    trace.put("loss", _numpy(loss))
    for (address, value), grad in zip(recorded.items(), grads):
        if address != "input" and not address.endswith((".h0", ".c0")):
            trace.put(address, _numpy(value))
        trace.put(f"{address}.grad", _numpy(grad))
    record_grads = iter(grads[len(recorded):])
    for address, value in records.items():
        steps = _steps(value)
        gradients = [next(record_grads) for _ in steps]
        if isinstance(value, list):  # an LSTM's cell states, one tensor per step: (N, T, H)
            trace.put(address, _numpy(torch.stack(steps, dim=1)))
            trace.put(f"{address}.grad", _numpy(torch.stack(gradients, dim=1)))
        else:
            if not address.endswith(".branch"):  # a block's branch starts from its input: only its gradient is new
                trace.put(address, _numpy(value))
            trace.put(f"{address}.grad", _numpy(gradients[0]))
    _put_state(trace, network, "")
    owned = {address for address in recorded if address not in network.tied_uses}
    network.tied_uses.clear()
    return loss, {address: grad for address, grad in zip(recorded, grads) if address in owned}


def _steps(value) -> list[torch.Tensor]:
    """A record's tensors: the list of an LSTM's cell states, or the one tensor."""
    return value if isinstance(value, list) else [value]


def _recorded_tensors(network, outputs: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor whose gradient is recorded, by address, in the trace's order: each layer's output
    and parameters (a block's inner layers right after the block's output; a tied parameter as its use
    sees it, whose gradient is then that use's share), the given initial states, the input. An identity
    first layer returns x itself, whose gradient is then dL/dx."""
    recorded: dict[str, torch.Tensor] = {}
    for path in network.parameters_of:
        recorded[f"{path}.output"] = outputs[f"{path}.output"]
        for name, tensor in network.parameters_of[path].items():
            recorded[f"{path}.{name}"] = tensor
        for name in network.ties.get(path, {}):
            recorded[f"{path}.{name}"] = network.tied_uses[f"{path}.{name}"]
    for path, states in network.states_of.items():
        for name, tensor in states.items():
            recorded[f"{path}.{name}"] = tensor
    if not network.token_ids:
        recorded["input"] = x
    return recorded


@contextlib.contextmanager
def without_compiler():
    """torch.optim's optimizers, while the block runs, without importing ``torch._dynamo`` (about 2.5 s, the
    largest part of a ``check``'s start-up): ``add_param_group``, ``zero_grad`` and the state-dict methods are
    wrapped to switch TorchDynamo off, and the wrapper imports it on its first call to find the switch. The
    reference never compiles, so for the block each wrapper is told that its switched-off form is the
    function itself; afterwards the wrappers are as torch left them (a program that compiles its own
    optimizers in the same process is unaffected). Where a torch version wraps differently, nothing is
    changed and the import merely costs time."""
    told = []
    for klass in torch.optim.Optimizer.__mro__:
        for attribute in vars(klass).values():
            function = getattr(attribute, "__wrapped__", None)
            code = getattr(attribute, "__code__", None)
            if (function is not None and code is not None and "__dynamo_disable" in code.co_consts + code.co_names
                    and not hasattr(function, "__dynamo_disable")):
                function.__dynamo_disable = function
                told.append(function)
    try:
        yield
    finally:
        for function in told:
            del function.__dynamo_disable


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` as its decorator runs it — gradients off — without the decorator's
    ``torch._dynamo.graph_break()`` calls, which only mark a graph boundary for ``torch.compile`` and
    import TorchDynamo to do so (``without_compiler``). A step hook or profiler record is not used here."""
    step = inspect.unwrap(type(optimizer).step)
    if step is type(optimizer).step or optimizer.defaults.get("differentiable"):
        optimizer.step()
        return
    with torch.no_grad():
        step(optimizer)


def _make_optimizer(network, spec) -> torch.optim.Optimizer | None:
    """torch.optim's optimizer for the scenario's spec, options completed from the catalogue (None:
    nothing to learn)."""
    options = optimizer_options(spec.type, spec.options)
    with _ScalarDtype(network.torch_dtype):
        return OPTIMIZERS[spec.type](network.parameters, spec.learning_rate, **options) if network.parameters else None


def _trajectory(trace: Trace, network, scenario: Scenario, inputs: torch.Tensor, targets: torch.Tensor,
                first_loss: torch.Tensor, first_grads: dict) -> None:
    """The updates t = 1..steps: each on its mini-batch, recorded as ``step{t}.…`` (nothing for an
    optimizer without a torch counterpart)."""
    spec = scenario.optimizer
    if spec.type not in OPTIMIZERS:
        raise ValueError(f"reference: unknown optimizer {spec.type!r}; expected one of {sorted(OPTIMIZERS)}")
    if OPTIMIZERS[spec.type] is None:
        return  # no torch reference: no step{t} addresses
    with without_compiler():
        _updates(trace, network, scenario, inputs, targets, first_loss, first_grads)


def _updates(trace: Trace, network, scenario: Scenario, inputs: torch.Tensor, targets: torch.Tensor,
             first_loss: torch.Tensor, first_grads: dict) -> None:
    """``_trajectory``'s loop: the optimizer built, then every update on its mini-batch."""
    spec = scenario.optimizer
    optimizer = _make_optimizer(network, spec)
    named = [(f"{path}.{name}", tensor) for path, tensors in network.parameters_of.items()
             for name, tensor in tensors.items()]
    samples = inputs.shape[0]
    for t, indices in enumerate(batch_schedule(scenario), start=1):
        network.update = t
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        full = is_full_batch_in_order(indices, samples)
        if t == 1 and full:
            # The first pass was update 1's: its loss and gradients, not a second pass.
            loss = first_loss
            for address, tensor in named:
                tensor.grad = first_grads[address].clone()
        else:
            loss = _mini_batch_backward(network, inputs, targets, None if full else indices)
        _update(trace, network, spec, optimizer, named, t, loss)


def _mini_batch_backward(network, inputs: torch.Tensor, targets: torch.Tensor, indices) -> torch.Tensor:
    """The loss on the rows ``indices`` (None: every row, in order), its gradients put in ``.grad``."""
    if indices is not None:
        rows = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        inputs, targets = inputs[rows], targets[rows]
    loss = network.loss(inputs, targets)
    if loss.requires_grad:
        loss.backward()
    return loss


def _update(trace: Trace, network, spec, optimizer, named: list, t: int, loss: torch.Tensor) -> None:
    """Update t: clip the gradients, record them with the loss and the running statistics, step, clamp
    the weights, record the parameters."""
    parameters = network.parameters
    if parameters:
        _clip_gradients(parameters, spec)
    trace.put(f"step{t}.loss", _numpy(loss))
    for address, tensor in named:
        trace.put(f"step{t}.{address}.grad", _numpy(tensor.grad))
    _put_state(trace, network, f"step{t}.", masks=False)
    if optimizer is not None:
        with _ScalarDtype(network.torch_dtype):
            optimizer_step(optimizer)
    if spec.clip_weights is not None:
        low, high = spec.clip_weights
        with torch.no_grad():
            for parameter in parameters:
                parameter.clamp_(low, high)
    for address, tensor in named:
        trace.put(f"step{t}.{address}", _numpy(tensor))


def _put_state(trace: Trace, network, prefix: str, masks: bool = True) -> None:
    """batch_norm's running statistics (and, for the first pass, dropout's masks) as they are now."""
    for path, buffers in network.buffers_of.items():
        for name, tensor in buffers.items():
            trace.put(f"{prefix}{path}.{name}", _numpy(tensor))
    if masks:
        for (index, update, _shape), mask in network.masks_used():
            if update == 1:
                trace.put(f"layers.{index}.mask", _numpy(mask))
