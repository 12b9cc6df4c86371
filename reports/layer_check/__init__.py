"""check_layer: a NumPy layer of your own against PyTorch autograd and finite differences.

For the student who wrote ``conv_backward_naive`` and wants to know whether it
is right — and, if not, which element is wrong and by how much::

    from backprop_verify import check_layer

    def test_my_conv():
        check_layer(Conv1dNaive(3, 4, 3), torch.nn.functional.conv1d, inputs=[(2, 3, 8)])

The layer
---------
``layer.forward(*arrays)`` returns one array, or a tuple of arrays (an LSTM
cell's (h, c)); ``layer.backward(*grad_outs)`` — one upstream gradient per
output — returns the gradient of each input that gets one (one array for one
input, a tuple in the order of forward's arguments for several). A layer with
parameters has a mapping ``layer.params`` (name → array) that forward and
backward read at call time (``self.params["weight"]``), and after backward a
mapping ``layer.grads`` (name → ∂L/∂param). check_layer puts its own copies of
the parameters into ``layer.params`` (in each dtype it checks, and perturbed
for finite differences) before every call and puts the originals back when it
returns. ``buffers=`` and ``frozen=`` name entries that are not differentiated
(running statistics, constants); integer and boolean inputs (indices, targets,
masks) are passed as they are and get no gradient.

Every call must start from the same state (finite differences call forward
hundreds of times): a factory (a class, or a function of no arguments) gives
a fresh layer per call, ``reset=`` clears one before each, ``mode=`` switches
it to train or eval; two identical calls that differ stop the check.

The reference
-------------
``torch_fn(*inputs, **params)``: the same forward in torch, called with the
inputs as tensors (in forward's order) and every parameter as a keyword
tensor of the same name — ``torch.nn.functional.conv1d(x, weight=…, bias=…)``
is one when the parameters are called ``weight`` and ``bias``. The tensors of
the differentiated inputs and parameters require grad; autograd gives the
reference gradients. With several outputs, torch_fn returns a tuple of tensors.

What runs
---------
For each draw — the given arrays (if ``inputs`` holds arrays), ``draws``
seeded random draws (standard normal, or ``sample(rng, shape)``) and
``kinks`` seeded draws at non-differentiable points (integer-valued inputs in
−2…2: exact zeros and ties; then inputs with a third exact zeros and a third
repeated values) — with a seeded random upstream gradient g (the loss is
L = Σ forward(x)·g):

``layer-torch``  forward output, every input gradient and every parameter
                 gradient against torch_fn under autograd, in float64 and in
                 each other dtype asked for;
``layer-fd``     the gradients against central finite differences of the
                 layer's own forward (float64, ``reference.fd_oracle.fd_gradient``);
``torch-fd``     torch's gradients against the same finite differences.

Finite differences settle disputes: where the layer and torch disagree on a
gradient, the row says which side they take — ``torch`` (the backward is
wrong), ``layer`` (the backward matches the layer's forward: the forward, or
torch_fn, is what differs). At kinks the derivative does not exist and finite
differences mean nothing there: kink draws are judged against torch
(PyTorch's conventions at every edge: relu'(0) = 0, ties of max go to the
first element, …), and where they differ, one-sided differences tell a
convention (the layer's value is the other one-sided derivative: the status
``convention``, which passes) from a wrong derivative or a point that is no
kink at all. A layer with several outputs has its gradients checked once
more per output, with that output's upstream gradient alone (``through``).

Every comparison is ``reports.verification.compare.compare`` on two
``scenarios.trace.Trace`` objects — the judgement, tolerance policy
(``reports.verification.tolerance``: normwise, keyed by dtype and pair, with
the absolute floor scaled by max|g| for gradients and max|output| for the
output) and worst element of the rest of the suite.

The answer
----------
A ``LayerCheck`` (a list of ``LayerRow``) when every row passes; otherwise an
``AssertionError`` whose message is the table of failing rows — per draw,
dtype, pair and quantity: max_abs, max_rel (normwise), the tolerance, the
worst element's index (``[i,j]``) and both values there. A layer that breaks
its contract (a gradient of the wrong shape, a missing ``grads`` entry, an
output of another shape than torch_fn's, state kept between calls) also fails
with an ``AssertionError`` saying so; a float32 run answered in float64 is a
failing row; a call that cannot start (no ``backward``, bad
``inputs``) raises ``TypeError`` / ``ValueError``; an exception raised inside
forward, backward or torch_fn propagates with a note saying where and on what.

The package
-----------
``check``               check_layer and its core (``check``, with ``observed`` quantities)
``contract``            the call's arguments and the layer's contract; the layer run forward and backward;
                        the checks before the draws (independent calls, parameters read at call time)
``draws``               the given arrays, the random draws, the draws at kinks
``torch_side``          torch_fn under autograd
``finite_differences``  central and one-sided differences of the layer's own forward
``conventions``         at kinks: a convention, a wrong derivative, or no kink
``table``               LayerRow, LayerCheck, the failure message and its table
"""
from __future__ import annotations

from backprop_verify.reports.layer_check.check import DEFAULT_DRAWS, DEFAULT_KINKS, check, check_layer
from backprop_verify.reports.layer_check.table import LayerCheck, LayerRow

__all__ = ["check_layer", "check", "LayerCheck", "LayerRow", "DEFAULT_DRAWS", "DEFAULT_KINKS"]
