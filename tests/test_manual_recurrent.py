"""RNN, LSTM, GRU, Embedding and LastStep by hand against torch, one line per option set.

One harness, ``tests.layer_harness.check_manual`` — check_layer's core
(``reports.layer_check.check``) — runs a manual recurrent layer against torch's
own cell (``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``, the parameters
passed in as tensors) stepped through time, on seeded draws in float64 or
float32, with a random upstream gradient δ on every hidden state, and compares
through the one tolerance policy: the outputs, ∂L/∂x, every parameter gradient,
∂L/∂h0 and ∂L/∂c0 where they are given (float64: also against finite
differences), and for the LSTM every c_t and the total ∂L/∂c_t. Truncated BPTT
is emulated on the torch side as its definition says: the state ``detach()``-ed
every k steps. ``test_recurrent_grid`` runs the layer grids' variants,
``test_recurrent`` the option sets below. The injected-bug tests at the end must
see a failure.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backprop_verify.manual.embedding import Embedding
from backprop_verify.manual.recurrent import GRU, LSTM, RNN, activate_gates, gate_scale
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.trace import Trace
from tests.layer_harness import DTYPES, SEED, check_manual, grid_variants

BATCH, FEATURES, HIDDEN = 3, 4, 5
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MANUAL = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
PARAMETER_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def draw(cell: str, steps: int, bias: bool, initial_state: bool, seed: int = SEED) -> dict:
    """x (N, T, F), the parameters (PyTorch's U(−1/√H, 1/√H), widened ×2), h0/c0 when given, δ_out (N, T, H)."""
    rng = np.random.default_rng(seed)
    width, bound = GATES[cell] * HIDDEN, 2.0 / np.sqrt(HIDDEN)
    parameters = {"weight_ih": rng.uniform(-bound, bound, (width, FEATURES)),
                  "weight_hh": rng.uniform(-bound, bound, (width, HIDDEN))}
    if bias:
        parameters["bias_ih"] = rng.uniform(-bound, bound, width)
        parameters["bias_hh"] = rng.uniform(-bound, bound, width)
    states = {}
    if initial_state:
        states["h0"] = rng.standard_normal((BATCH, HIDDEN))
        if cell == "lstm":
            states["c0"] = rng.standard_normal((BATCH, HIDDEN))
    return dict(x=rng.standard_normal((BATCH, steps, FEATURES)), parameters=parameters, states=states,
                delta=rng.standard_normal((BATCH, steps, HIDDEN)))


def run(layer, data: dict) -> dict:
    """Forward and backward of a manual layer: its output, ∂L/∂W_hh and ∂L/∂h0."""
    output = layer.forward(data["x"], data["states"].get("h0"), data["states"].get("c0"))
    layer.backward(data["delta"])
    return {"output": output, "weight_hh.grad": layer.weight_hh_grad, "h0.grad": layer.h0_grad}


def variant(cell: str, steps: int = 12, bias: bool = True, initial_state: bool = False, bptt_chunk: int = 0,
            nonlinearity: str = "tanh") -> tuple[tuple[int, int, int], dict]:
    """(input shape, options) of one option set: N = 3, F = 4, H = 5; ``initial_state`` gives h0 (and c0)."""
    options = {"hidden_size": HIDDEN, "bias": bias, "bptt_chunk": bptt_chunk, "h0": initial_state}
    if cell == "lstm":
        options["c0"] = initial_state
    if cell == "rnn":
        options["nonlinearity"] = nonlinearity
    return (BATCH, steps, FEATURES), options


def failing(cell: str, dtype: str, layer_class=None, **options) -> set[str]:
    """The quantities (``output``, ``input.grad``, ``weight_hh.grad``, ``cell.grad``, …) that fail on some draw."""
    result = check_manual(cell, *variant(cell, **options), dtype, layer_class=layer_class, raises=False)
    return {row.quantity for row in result.failures}


# ---------------------------------------------------------------------------
# The cells
# ---------------------------------------------------------------------------

GRID = [(kind, *v) for kind in ("rnn", "lstm", "gru", "last_step") for v in grid_variants(kind)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, label, shape, options", GRID, ids=[f"{c[0]}-{c[1]}-s{SEED}" for c in GRID])
def test_recurrent_grid(kind, label, shape, options, dtype):
    check_manual(kind, shape, options, dtype)


CELLS = [  # (id, cell, nonlinearity)
    ("rnn-tanh", "rnn", "tanh"),
    ("rnn-relu", "rnn", "relu"),
    ("lstm", "lstm", "tanh"),
    ("gru", "gru", "tanh"),
]

OPTIONS = [  # (id, steps, bias, given h0/c0, bptt_chunk)
    ("t12-full", 12, True, False, 0),
    ("t12-no-bias", 12, False, False, 0),
    ("t12-given-h0", 12, True, True, 0),
    ("t1", 1, True, False, 0),
    ("t1-given-h0-no-bias-chunk1", 1, False, True, 1),
    ("t12-chunk1", 12, True, False, 1),
    ("t12-chunk3", 12, True, False, 3),
    ("t12-chunk5-not-dividing", 12, True, False, 5),
    ("t12-chunk3-given-h0", 12, True, True, 3),
    ("t12-chunk5-given-h0-no-bias", 12, False, True, 5),
    ("t12-chunk12-one-chunk", 12, True, True, 12),
    ("t12-chunk20-longer-than-t", 12, True, False, 20),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, steps, bias, initial_state, bptt_chunk", OPTIONS,
                         ids=[f"{case[0]}-s{SEED}" for case in OPTIONS])
@pytest.mark.parametrize("cell_id, cell, nonlinearity", CELLS, ids=[case[0] for case in CELLS])
def test_recurrent(cell_id, cell, nonlinearity, name, steps, bias, initial_state, bptt_chunk, dtype):
    check_manual(cell, *variant(cell, steps, bias, initial_state, bptt_chunk, nonlinearity), dtype)


@pytest.mark.parametrize("cell", ("rnn", "lstm", "gru"))
def test_truncation_changes_gradients_not_values(cell):
    """bptt_chunk cuts gradient paths only: the same outputs, a different ∂L/∂W_hh, ∂L/∂h0 from chunk 0 only."""
    data = draw(cell, 12, True, True)
    full, truncated = (run(MANUAL[cell](**data["parameters"], bptt_chunk=k), data) for k in (0, 3))
    assert np.array_equal(full["output"], truncated["output"])
    assert not np.allclose(full["weight_hh.grad"], truncated["weight_hh.grad"])
    # ∂L/∂h0 with truncation at k = ∂L/∂h0 of the first k steps alone
    first_chunk = {**data, "x": data["x"][:, :3], "delta": data["delta"][:, :3]}
    alone = run(MANUAL[cell](**data["parameters"]), first_chunk)
    assert np.array_equal(alone["h0.grad"], truncated["h0.grad"])


def test_parameters_are_the_callers_arrays_and_names_follow_the_bias():
    data = draw("lstm", 3, True, False)
    layer = LSTM(**data["parameters"])
    assert layer.parameter_names == PARAMETER_NAMES
    assert all(a is data["parameters"][n] for a, n in zip(layer.parameters, layer.parameter_names))
    no_bias = GRU(**draw("gru", 3, False, False)["parameters"])
    assert no_bias.parameter_names == ("weight_ih", "weight_hh") and len(no_bias.parameters) == 2
    no_bias.forward(data["x"])
    assert no_bias.backward(data["delta"], input_grad=False) is None and len(no_bias.gradients) == 2
    with pytest.raises(ValueError, match="both bias_ih and bias_hh"):
        RNN(np.ones((5, 4)), np.ones((5, 5)), np.ones(5))
    with pytest.raises(ValueError, match=r"weight_hh must be \(4·H, H\)"):
        LSTM(np.ones((5, 4)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="bptt_chunk"):
        RNN(np.ones((5, 4)), np.ones((5, 5)), bptt_chunk=-1)


def sigmoid(z):
    """σ(z) = 1/(1 + e^{−z}), PyTorch's formula (for the injected GRU below)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gates_in_tanh_form_match_torch_far_out(dtype):
    """σ(z) = ½ + ½·tanh(z/2) on the sigmoid blocks, tanh on the others: finite and within a few ulp
    (absolute) of torch.sigmoid / torch.tanh, saturation included."""
    z = np.array([[-800.0, -30.0, -1.0, 0.0, 2.5, 30.0, 800.0]] * 2).T.astype(dtype)   # (7, 2): blocks of H = 1
    scale = gate_scale((True, False), 1, dtype)
    gates = activate_gates(z * scale, scale, 1.0 - scale)
    expected = np.stack([torch.sigmoid(torch.tensor(z[:, 0])).numpy(), torch.tanh(torch.tensor(z[:, 1])).numpy()], 1)
    assert gates.dtype == np.dtype(dtype) and np.isfinite(gates).all()
    np.testing.assert_allclose(gates, expected, rtol=0, atol=4 * np.finfo(dtype).eps)


# ---------------------------------------------------------------------------
# Embedding (integer ids: no input gradient, outside check_layer's contract) and last step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids", ([[0, 3, 3, 1], [3, 0, 3, 3]], [[2]], [[4, 4], [4, 4], [4, 4]]),
                         ids=("repeated", "single", "one-id-everywhere"))
def test_embedding(ids, dtype):
    rng = np.random.default_rng(SEED)
    ids = np.array(ids)
    weight = rng.standard_normal((6, 3)).astype(dtype)
    delta = rng.standard_normal(ids.shape + (3,)).astype(dtype)
    layer = Embedding(weight)
    output = layer.forward(ids)
    assert layer.backward(delta) is None
    ours = Trace("manual", {"layers.0.output": output, "layers.0.output.grad": delta,
                            "layers.0.weight.grad": layer.weight_grad})
    weight_t = torch.tensor(weight, requires_grad=True)
    output_t = F.embedding(torch.tensor(ids), weight_t)
    output_t.backward(torch.tensor(delta))
    theirs = Trace("torch", {"layers.0.output": output_t.detach().numpy(), "layers.0.output.grad": delta,
                             "layers.0.weight.grad": weight_t.grad.numpy()})
    assert all(row.passed for row in compare(ours, theirs, dtype)), compare(ours, theirs, dtype)
    assert layer.parameter_names == ("weight",) and layer.parameters[0] is weight
    assert layer.weight_grad.dtype == np.dtype(dtype)


def test_embedding_refuses_ids_out_of_range_and_floats():
    layer = Embedding(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="token id 4 is outside"):
        layer.forward(np.array([[0, 4]]))
    with pytest.raises(ValueError, match="token id -1 is outside"):
        layer.forward(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="integers"):
        layer.forward(np.array([[0.0, 1.0]]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_last_step(dtype):
    check_manual("last_step", (3, 4, 5), {}, dtype)


# ---------------------------------------------------------------------------
# Injected bugs: each must make the comparison with torch fail
# ---------------------------------------------------------------------------


def without_recurrent_term(cell_class):
    """``cell_class`` whose backward drops the W_hhᵀ δ_{t+1} term of BPTT (W_hh taken as 0 going back;
    the forward, and the LSTM's cell path and the GRU's direct z ⊙ h path, are untouched)."""

    class WithoutRecurrentTerm(cell_class):
        def backward(self, delta, input_grad=True):
            weight_hh = self.weight_hh
            self.weight_hh = np.zeros_like(weight_hh)
            try:
                return super().backward(delta, input_grad)
            finally:
                self.weight_hh = weight_hh

    return WithoutRecurrentTerm


class LSTMForgetGateWithoutCell(LSTM):
    """δ_f = ∂L/∂c_t ⊙ f(1 − f): the c_{t−1} of ∂c_t/∂z_f forgotten."""

    def local_derivatives(self):
        output_path, factors = super().local_derivatives()
        forget = self.gate_values[..., self.hidden_size:2 * self.hidden_size]
        factors[:, :, 1] = forget * (1.0 - forget)
        return output_path, factors


class GRUResetOnHidden(GRU):
    """n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn): the reset gate on h (Cho et al. 2014), not on W_hn h + b_hn.

    A consistent implementation of that other cell (forward and its own backward), plainly per step.
    """

    def forward(self, x, h0=None, c0=None):
        H = self.hidden_size
        gates, h0, _ = self._start(x, h0, c0, uses_cell=False)
        if self.bias_ih is not None:
            gates += self.bias_ih
        bias_hh = self.bias_hh if self.bias_hh is not None else np.zeros(3 * H, dtype=x.dtype)
        w_rz, w_n = self.weight_hh[:2 * H], self.weight_hh[2 * H:]
        states = [h0]
        self.cache = []
        for t in range(gates.shape[0]):
            h = states[-1]
            rz = sigmoid(gates[t, :, :2 * H] + h @ w_rz.T + bias_hh[:2 * H])
            r, z = rz[:, :H], rz[:, H:]
            n = np.tanh(gates[t, :, 2 * H:] + (r * h) @ w_n.T + bias_hh[2 * H:])
            states.append((1.0 - z) * n + z * h)
            self.cache.append((h, r, z, n))
        self.states = np.stack(states)
        return np.ascontiguousarray(self.outputs)

    def backward(self, delta, input_grad=True):
        H = self.hidden_size
        w_rz, w_n = self.weight_hh[:2 * H], self.weight_hh[2 * H:]
        steps = len(self.cache)
        input_deltas = np.empty((steps, delta.shape[0], 3 * H), dtype=delta.dtype)
        self.weight_hh_grad = np.zeros_like(self.weight_hh)
        through_next = np.zeros_like(self.states[0])
        for t in reversed(range(steps)):
            h, r, z, n = self.cache[t]
            hidden_grad = delta[:, t] + through_next
            delta_n = hidden_grad * (1.0 - z) * (1.0 - n * n)
            delta_z = hidden_grad * (h - n) * z * (1.0 - z)
            reset_hidden_grad = delta_n @ w_n                                  # ∂L/∂(r ⊙ h)
            delta_r = reset_hidden_grad * h * r * (1.0 - r)
            input_deltas[t] = np.concatenate([delta_r, delta_z, delta_n], axis=1)
            self.weight_hh_grad[:2 * H] += np.concatenate([delta_r, delta_z], axis=1).T @ h
            self.weight_hh_grad[2 * H:] += delta_n.T @ (r * h)
            through_next = hidden_grad * z + reset_hidden_grad * r + np.concatenate([delta_r, delta_z], 1) @ w_rz
            if self.detached_before(t):
                through_next = np.zeros_like(through_next)
        self.h0_grad = through_next
        rows = input_deltas.reshape(-1, 3 * H)
        self.weight_ih_grad = rows.T @ self.inputs.reshape(rows.shape[0], -1)
        if self.bias_ih is not None:
            self.bias_ih_grad = self.bias_hh_grad = rows.sum(axis=0)
        return np.ascontiguousarray((rows @ self.weight_ih).reshape(steps, delta.shape[0], -1).transpose(1, 0, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ("rnn", "lstm", "gru"))
def test_bptt_without_the_recurrent_term_is_caught(cell, dtype):
    """The W_hhᵀ δ_{t+1} term dropped: only ∂L/∂W_hh's "last step" contributions survive — wrong for T > 1."""
    assert not failing(cell, dtype)
    wrong = failing(cell, dtype, layer_class=without_recurrent_term(MANUAL[cell]))
    assert "output" not in wrong
    assert {"input.grad", "weight_hh.grad", "weight_ih.grad"} <= wrong


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_forget_gate_without_the_cell_state_is_caught(dtype):
    assert not failing("lstm", dtype, initial_state=True)
    wrong = failing("lstm", dtype, initial_state=True, layer_class=LSTMForgetGateWithoutCell)
    assert "output" not in wrong and "cell" not in wrong
    assert {"input.grad", "weight_ih.grad", "weight_hh.grad", "cell.grad"} <= wrong


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_reset_gate_on_the_hidden_state_is_caught(dtype):
    assert not failing("gru", dtype, initial_state=True)
    wrong = failing("gru", dtype, initial_state=True, layer_class=GRUResetOnHidden)
    assert {"output", "input.grad", "weight_hh.grad"} <= wrong
