"""check_layer on layers with several outputs, and the dtype a layer answers in.

An LSTM cell returns (h, c): each output gets its own upstream gradient and is
compared, and the gradients are checked once more per output with that
output's upstream gradient alone (``through``), so a wrong cell-state path is
named. A float32 layer that answers in float64 is flagged.
"""
import numpy as np
import pytest
import torch

from backprop_verify.reports.layer_check import check_layer


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class LSTMStep:
    """One LSTM step from h0 = c0 = 0, returning (h, c):

    i = σ(x W_iᵀ), f = σ(x W_fᵀ), g = tanh(x W_gᵀ), o = σ(x W_oᵀ);  c = f·c0 + i·g;  h = o·tanh(c).
    Backward takes (δh, δc): δc_total = δh·o·(1 − tanh²c) + δc, then each gate's pre-activation.
    With c0 = 0 the forget gate has no effect: ∂L/∂W_f = 0.
    """

    def __init__(self, n_in=3, hidden=2, seed=0, c_path_factor=1.0, c_output_factor=1.0):
        rng = np.random.default_rng(seed)
        self.params = {key: rng.normal(size=(hidden, n_in)) for key in ("Wi", "Wf", "Wg", "Wo")}
        self.grads = {}
        self.c_path_factor, self.c_output_factor = c_path_factor, c_output_factor

    def forward(self, x):
        p = self.params
        self.x = x
        self.i, self.f = sigmoid(x @ p["Wi"].T), sigmoid(x @ p["Wf"].T)
        self.g, self.o = np.tanh(x @ p["Wg"].T), sigmoid(x @ p["Wo"].T)
        c0 = np.zeros_like(self.i)
        self.c = self.f * c0 + self.i * self.g
        self.tanh_c = np.tanh(self.c)
        return self.o * self.tanh_c, self.c_output_factor * self.c

    def backward(self, delta_h, delta_c):
        p = self.params
        delta_c_total = delta_h * self.o * (1 - self.tanh_c ** 2) + self.c_path_factor * delta_c
        delta_o = delta_h * self.tanh_c * self.o * (1 - self.o)
        delta_i = delta_c_total * self.g * self.i * (1 - self.i)
        delta_g = delta_c_total * self.i * (1 - self.g ** 2)
        delta_f = delta_c_total * np.zeros_like(self.f) * self.f * (1 - self.f)  # ∂c/∂f = c0 = 0
        self.grads = {"Wi": delta_i.T @ self.x, "Wf": delta_f.T @ self.x, "Wg": delta_g.T @ self.x,
                      "Wo": delta_o.T @ self.x}
        return delta_i @ p["Wi"] + delta_f @ p["Wf"] + delta_g @ p["Wg"] + delta_o @ p["Wo"]


def torch_lstm_step(x, Wi, Wf, Wg, Wo):
    i, f = torch.sigmoid(x @ Wi.T), torch.sigmoid(x @ Wf.T)
    g, o = torch.tanh(x @ Wg.T), torch.sigmoid(x @ Wo.T)
    c = f * torch.zeros_like(i) + i * g
    return o * torch.tanh(c), c


def test_each_output_is_compared_and_each_path_checked_alone():
    result = check_layer(LSTMStep(), torch_lstm_step, inputs=[(4, 3)], dtype="float32", kinks=0)
    assert result.passed
    quantities = {row.quantity for row in result}
    assert {"output.0", "output.1", "input.grad", "Wi.grad", "Wf.grad", "Wg.grad", "Wo.grad"} == quantities
    throughs = {row.through for row in result}
    assert throughs == {"", "output.0", "output.1"}
    assert {row.pair for row in result if row.through} == {"layer-torch"}
    # o (and W_o) does not reach c: through output.1 alone its gradient is exactly zero on both sides.
    assert all(row.max_abs == 0.0 and row.value == 0.0 for row in result
               if row.quantity == "Wo.grad" and row.through == "output.1")


def test_a_parameter_without_effect_gets_a_zero_gradient_verdict_not_a_contract_error():
    """W_f changes nothing (c0 = 0): the layer, torch and finite differences all give ∂L/∂W_f = 0."""
    result = check_layer(LSTMStep(), torch_lstm_step, inputs=[(4, 3)], kinks=0)
    forget = [row for row in result if row.quantity == "Wf.grad"]
    assert {row.pair for row in forget} == {"layer-torch", "layer-fd", "torch-fd"}
    assert all(row.status == "pass" and row.value == 0.0 and row.reference_value == 0.0 for row in forget)
    assert any(note.startswith("Wf: changing it leaves forward's output unchanged") for note in result.notes)


def test_a_wrong_gradient_through_the_second_output_is_named():
    """The planted bug: δc enters the cell's gradient halved; only the path through output 1 is wrong."""
    result = check_layer(LSTMStep(c_path_factor=0.5), torch_lstm_step, inputs=[(4, 3)], kinks=0, raises=False)
    failures = result.failures
    assert {row.through for row in failures} == {"", "output.1"}
    assert {row.quantity for row in failures} == {"input.grad", "Wi.grad", "Wg.grad"}
    alone = [row for row in failures if row.through == "output.1"]
    assert all(row.value == pytest.approx(0.5 * row.reference_value) for row in alone)
    message = result.message()
    assert ("input.grad: finite differences side with torch: the layer's backward is wrong there (draws random-0, "
            "random-1, random-2); with the upstream gradient of output.1 alone (the others zero) it fails, with that "
            "of output.0 alone it passes: the gradient through output.1 is wrong.") in message
    assert "through" in message.splitlines()[2]  # the table's header has the column


def test_a_wrong_second_output_is_named():
    """The planted bug: forward returns 1.01·c as its second output (backward is that of c)."""
    result = check_layer(LSTMStep(c_output_factor=1.01), torch_lstm_step, inputs=[(4, 3)], kinks=0, raises=False)
    assert {row.quantity for row in result.failures if row.pair == "layer-torch"} == {"output.1"}
    # Finite differences of the layer's own forward see the 1.01 too: its backward does not match its forward.
    assert {row.pair for row in result.failures if row.quantity != "output.1"} == {"layer-fd", "torch-fd"}
    assert "input.grad: the layer's backward agrees with torch, finite differences of the layer's forward with " \
           "neither" in result.message()
    assert "output.1: the layer's forward differs from torch_fn (draws random-0, random-1, random-2)." in (
        result.message())


def test_torch_fn_must_return_one_tensor_per_output():
    with pytest.raises(AssertionError, match=r"forward returns a tuple of 2 arrays, torch_fn one tensor"):
        check_layer(LSTMStep(), lambda x, **params: torch_lstm_step(x, **params)[0], inputs=[(4, 3)])


def test_the_same_seed_gives_the_same_table():
    first = check_layer(LSTMStep(), torch_lstm_step, inputs=[(2, 3)], draws=1, kinks=1, seed=5)
    again = check_layer(LSTMStep(), torch_lstm_step, inputs=[(2, 3)], draws=1, kinks=1, seed=5)
    assert first.table() == again.table() and list(first) == list(again)


# --- dtype --------------------------------------------------------------------------------------------------------

class Tanh:
    """a = tanh(z);  ∂L/∂z = δ ⊙ (1 − a²). ``upcast``: forward answers in float64 whatever z's dtype."""

    def __init__(self, upcast=False):
        self.upcast = upcast

    def forward(self, z):
        self.a = np.tanh(z)
        return self.a.astype(np.float64) if self.upcast else self.a

    def backward(self, delta):
        return delta * (1.0 - self.a ** 2)


def test_a_float32_layer_that_answers_in_float64_is_flagged():
    assert check_layer(Tanh(), torch.tanh, inputs=[(3, 4)], dtype="float32", kinks=0).passed
    assert check_layer(Tanh(upcast=True), torch.tanh, inputs=[(3, 4)], kinks=0).passed  # float64 only: nothing to flag
    result = check_layer(Tanh(upcast=True), torch.tanh, inputs=[(3, 4)], dtype="float32", kinks=0, raises=False)
    failures = result.failures
    assert {(row.quantity, row.dtype, row.layer_dtype) for row in failures} == {("output", "float32", "float64")}
    assert all(row.max_rel < row.tolerance and "the layer gives float64 in the float32 run" in row.note
               for row in failures)  # the values agree: only the dtype is wrong
    assert "output: the layer gives float64 in the float32 run (draws random-0, random-1, random-2)" in (
        result.message())
