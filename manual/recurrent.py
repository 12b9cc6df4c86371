"""Recurrent layers — RNN, LSTM, GRU — and LastStep, with backpropagation through time beside each forward.

Layouts are PyTorch's: sequences are batch-first, x (N, T, F); every layer
returns every hidden state, (N, T, H). Parameters carry PyTorch's names,
shapes and gate order, G gates stacked along the first axis:

    weight_ih (G·H, F),  weight_hh (G·H, H),  bias_ih (G·H,),  bias_hh (G·H,)   (both biases, or neither)
    RNN G = 1;   LSTM G = 4, gates (i, f, g, o);   GRU G = 3, gates (r, z, n)

Rows are samples, so a step computes z_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh
(the seeds' z = Wx + b, one row per sample). h_{−1} = h0 and c_{−1} = c0 are
given or zero.

Backpropagation through time
----------------------------
``backward`` receives δ_out = ∂L/∂outputs (N, T, H): the loss gradient that
reaches each h_t *directly* (from the layer above). h_t also reaches the loss
through step t+1, so the total gradient of h_t is

    ∂L/∂h_t = δ_out_t + (∂z_{t+1}/∂h_t)ᵀ δ_{t+1}          (for the simple cell: δ_out_t + δ_{t+1} W_hh)

and the loop runs from t = T−1 back to 0 carrying that second term. Each
step's pre-activation gradients δ_t are stacked, (T, N, G·H), and the
parameter gradients are one matrix product each at the end:

    ∂L/∂W_ih = Σ_t δ_tᵀ x_t,   ∂L/∂W_hh = Σ_t δ_tᵀ h_{t−1},   ∂L/∂b_ih = ∂L/∂b_hh = Σ_t Σ_rows δ_t,
    ∂L/∂x_t  = δ_t W_ih,       ∂L/∂h0 = (∂z_0/∂h0)ᵀ δ_0

(the GRU's hidden-side δ differs from its input-side δ in the n block, see GRU).

Truncation, ``bptt_chunk = k > 0``: the state is cut from the gradient every
k steps exactly as PyTorch's ``detach()`` between chunks of k steps: the
state h_{t−1} (and c_{t−1}) entering a step t = k, 2k, … is a constant for
the gradient. Its value — and so every forward value, and the h_{t−1} in
∂L/∂W_hh — is unchanged; only the term carried back from step t to t−1 is
dropped: ∂L/∂h_{t−1} = δ_out_{t−1} (and ∂L/∂c_{t−1} keeps only its path
through h_{t−1}). Full BPTT inside each chunk; ∂L/∂h0 gets the first
chunk's contribution only. ``bptt_chunk = 0`` is full BPTT.

Internally every per-step array is time-major, (T, N, ·), so that each
step's slice is one contiguous block for the matrix products.

dtype: every array keeps the input's dtype (constants are Python floats).
"""
from __future__ import annotations

import numpy as np

from backprop_verify.manual.layers import Learned, copied, register_layer

__all__ = ["GRU", "LSTM", "LastStep", "RNN"]


def gate_scale(sigmoid_blocks: tuple[bool, ...], hidden_size: int, dtype) -> np.ndarray:
    """(G·H,) column factors: ½ on the blocks of sigmoid gates, 1 on the tanh ones.

    The sigmoid gates are computed as σ(z) = ½ + ½·tanh(z/2), so that one tanh call covers all the
    gates of a step. z/2 is exact (a power of two), so halving the rows of W_hh (and the input part
    x W_ihᵀ + b) gives exactly z/2. On the bench's LSTM (batch 64, 32 steps, hidden 128, one thread)
    the forward takes 5.5 ms in float32 (13.0 ms in float64) against 7.8 ms (15.6 ms) with
    σ(z) = 1/(1 + e^{−z}) on the i, f and o blocks separately. Both forms are within a few ulp
    (absolute) of torch.sigmoid, saturation included.
    """
    return np.repeat(np.where(sigmoid_blocks, 0.5, 1.0), hidden_size).astype(dtype)


def activate_gates(z_scaled: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """In place: z·scale → σ(z) on the sigmoid blocks, tanh(z) on the others, with shift = 1 − scale:

        tanh(z/2)·½ + ½ = σ(z),    tanh(z)·1 + 0 = tanh(z).
    """
    np.tanh(z_scaled, out=z_scaled)
    z_scaled *= scale
    z_scaled += shift
    return z_scaled


class _Recurrent(Learned):
    """Parameters, their gradients and the time-major plumbing shared by RNN, LSTM and GRU."""

    name = "recurrent"
    gates = 1  # G
    LEARNED = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # the biases only when given
    OPTIONS: tuple[str, ...] = ()  # catalogue options the constructor takes beside bptt_chunk

    @classmethod
    def from_spec(cls, spec, dtype) -> "_Recurrent":
        """The layer with its parameters copied; its given initial states (h0, c0), also copied,
        ride along as ``initial_states`` for ``forward``."""
        tensors = {name: copied(value, dtype) for name, value in spec.tensors.items()}
        layer = cls(tensors["weight_ih"], tensors["weight_hh"], tensors.get("bias_ih"), tensors.get("bias_hh"),
                    bptt_chunk=spec.params["bptt_chunk"], **{key: spec.params[key] for key in cls.OPTIONS})
        layer.initial_states = {name: copied(value, dtype) for name, value in spec.states.items()}
        return layer

    def recorded(self) -> dict[str, np.ndarray]:
        """∂L/∂h0 (and ∂L/∂c0) for the initial states the scenario gave."""
        return {f"{name}.grad": getattr(self, f"{name}_grad") for name in self.initial_states}

    def __init__(self, weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray | None = None,
                 bias_hh: np.ndarray | None = None, bptt_chunk: int = 0):
        name, gates = self.name, self.gates
        if weight_hh.ndim != 2 or weight_hh.shape[0] != gates * weight_hh.shape[1]:
            raise ValueError(f"{name}: weight_hh must be ({gates}·H, H), got shape {weight_hh.shape}")
        hidden_size = weight_hh.shape[1]
        if weight_ih.ndim != 2 or weight_ih.shape[0] != gates * hidden_size:
            raise ValueError(f"{name}: weight_ih must be ({gates}·H, F) = ({gates * hidden_size}, F), "
                             f"got shape {weight_ih.shape}")
        if (bias_ih is None) != (bias_hh is None):
            raise ValueError(f"{name}: give both bias_ih and bias_hh, or neither (bias = false)")
        for bias_name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
            if bias is not None and bias.shape != (gates * hidden_size,):
                raise ValueError(f"{name}: {bias_name} must have shape ({gates * hidden_size},), got {bias.shape}")
        if int(bptt_chunk) != bptt_chunk or bptt_chunk < 0:
            raise ValueError(f"{name}: bptt_chunk must be an integer ≥ 0 (0 = full BPTT), got {bptt_chunk!r}")
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = weight_ih, weight_hh, bias_ih, bias_hh
        self.hidden_size, self.input_size = hidden_size, weight_ih.shape[1]
        self.bptt_chunk = int(bptt_chunk)
        self.weight_ih_grad = self.weight_hh_grad = self.bias_ih_grad = self.bias_hh_grad = None
        self.h0_grad: np.ndarray | None = None

    def detached_before(self, t: int) -> bool:
        """Whether the state entering step t is cut from the gradient (t = k, 2k, … for bptt_chunk k)."""
        return self.bptt_chunk > 0 and t > 0 and t % self.bptt_chunk == 0

    def _start(self, x: np.ndarray, h0: np.ndarray | None, c0: np.ndarray | None, uses_cell: bool):
        """Check shapes; return (x time-major (T, N, F), x W_ihᵀ + b (T, N, G·H), h0, c0)."""
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{self.name} expects (N, T, {self.input_size}) input, got shape {x.shape}")
        if not uses_cell and c0 is not None:
            raise ValueError(f"{self.name} has no cell state: c0 is for lstm only")
        batch, steps, _ = x.shape
        if steps == 0:
            raise ValueError(f"{self.name}: the sequence is empty (T = 0)")
        state_shape = (batch, self.hidden_size)
        for state_name, state in (("h0", h0), ("c0", c0)):
            if state is not None and state.shape != state_shape:
                raise ValueError(f"{self.name}: {state_name} must be (N, H) = {state_shape}, got {state.shape}")
        h0 = np.zeros(state_shape, dtype=x.dtype) if h0 is None else h0
        if uses_cell:
            c0 = np.zeros(state_shape, dtype=x.dtype) if c0 is None else c0
        self.inputs = np.ascontiguousarray(x.transpose(1, 0, 2))           # (T, N, F)
        input_part = (self.inputs.reshape(steps * batch, -1) @ self.weight_ih.T).reshape(steps, batch, -1)
        return input_part, h0, c0

    def _finish(self, pre_activation_delta: np.ndarray, hidden_delta: np.ndarray, input_grad: bool):
        """Parameter gradients from the stacked δ (T, N, G·H), one product each; return ∂L/∂x (N, T, F) or None.

        ``pre_activation_delta`` is ∂L/∂(x_t W_ihᵀ + b_ih), ``hidden_delta`` ∂L/∂(h_{t−1} W_hhᵀ + b_hh)
        (the same array for RNN and LSTM).
        """
        steps, batch, width = pre_activation_delta.shape
        input_rows = pre_activation_delta.reshape(steps * batch, width)
        hidden_rows = hidden_delta.reshape(steps * batch, width)
        self.weight_ih_grad = input_rows.T @ self.inputs.reshape(steps * batch, -1)
        self.weight_hh_grad = hidden_rows.T @ self.states[:-1].reshape(steps * batch, -1)   # Σ_t δ_tᵀ h_{t−1}
        if self.bias_ih is not None:
            self.bias_ih_grad = input_rows.sum(axis=0)
            self.bias_hh_grad = self.bias_ih_grad.copy() if hidden_delta is pre_activation_delta \
                else hidden_rows.sum(axis=0)
        if not input_grad:
            return None
        return np.ascontiguousarray((input_rows @ self.weight_ih).reshape(steps, batch, -1).transpose(1, 0, 2))

    @property
    def outputs(self) -> np.ndarray:
        """Every hidden state h_0 … h_{T−1}, (N, T, H) (a view of the time-major states)."""
        return self.states[1:].transpose(1, 0, 2)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"bias={self.bias_ih is not None}, bptt_chunk={self.bptt_chunk})")


@register_layer("rnn")
class RNN(_Recurrent):
    """The simple (Elman) cell: z_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh,  h_t = f(z_t),  f = tanh or relu.

    Backward, δ_t = ∂L/∂z_t, from t = T−1 down to 0:

        δ_t = (∂L/∂h_t + δ_{t+1} W_hh) ⊙ f'(z_t)       (δ_T = 0; the row form of W_hhᵀ δ_{t+1})
        f'(z) = 1 − h_t² for tanh,  1[h_t > 0] for relu (relu'(0) = 0, PyTorch's)

    and the δ_{t+1} W_hh term is dropped where the state was cut (module docstring).
    """

    gates = 1

    OPTIONS = ("nonlinearity",)

    def __init__(self, weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray | None = None,
                 bias_hh: np.ndarray | None = None, nonlinearity: str = "tanh", bptt_chunk: int = 0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(weight_ih, weight_hh, bias_ih, bias_hh, bptt_chunk)
        self.nonlinearity = nonlinearity

    def forward(self, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None) -> np.ndarray:
        """x (N, T, F) → every h_t, (N, T, H); caches the states h_{−1} = h0, h_0 … h_{T−1} (time-major)."""
        pre_activation, h0, _ = self._start(x, h0, c0, uses_cell=False)
        if self.bias_ih is not None:
            pre_activation += self.bias_ih + self.bias_hh
        steps, batch, hidden_size = pre_activation.shape
        states = np.empty((steps + 1, batch, hidden_size), dtype=pre_activation.dtype)
        states[0] = h0
        recurrent = np.empty((batch, hidden_size), dtype=pre_activation.dtype)
        activation = np.tanh if self.nonlinearity == "tanh" else lambda z, out: np.maximum(z, 0.0, out=out)
        for t in range(steps):
            z = pre_activation[t]
            z += np.matmul(states[t], self.weight_hh.T, out=recurrent)        # z_t
            activation(z, out=states[t + 1])                                   # h_t = f(z_t)
        self.states = states
        return np.ascontiguousarray(self.outputs)

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ_out = ∂L/∂outputs (N, T, H) → ∂L/∂x (N, T, F); stores the parameter gradients and h0_grad."""
        states, weight_hh = self.states, self.weight_hh
        steps = states.shape[0] - 1
        # f'(z_t) for every t at once, from h_t
        if self.nonlinearity == "tanh":
            derivative = states[1:] * states[1:]
            np.subtract(1.0, derivative, out=derivative)                       # 1 − h_t²
        else:
            derivative = (states[1:] > 0).astype(states.dtype)                 # 1[z_t > 0]
        deltas = np.empty_like(derivative)                                     # δ_t, (T, N, H)
        through_next = np.zeros_like(states[0])                                # δ_{t+1} W_hh
        for t in reversed(range(steps)):
            hidden_grad = np.add(delta[:, t], through_next, out=deltas[t])     # ∂L/∂h_t
            hidden_grad *= derivative[t]                                       # δ_t = ∂L/∂h_t ⊙ f'(z_t)
            if t == 0 or not self.detached_before(t):
                np.matmul(deltas[t], weight_hh, out=through_next)              # ∂L/∂h_{t−1} through z_t
            else:
                through_next[...] = 0.0                                        # h_{t−1} was detached
        self.h0_grad = through_next
        return self._finish(deltas, deltas, input_grad)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", nonlinearity={self.nonlinearity!r})"


@register_layer("lstm")
class LSTM(_Recurrent):
    """Long short-term memory, PyTorch's gate order (i, f, g, o), each a block of H columns of z_t:

        z_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh                (N, 4H)
        i = σ(z_i),  f = σ(z_f),  g = tanh(z_g),  o = σ(z_o)
        c_t = f ⊙ c_{t−1} + i ⊙ g
        h_t = o ⊙ tanh(c_t)

    Backward: c_t reaches the loss through h_t and through c_{t+1} = f_{t+1} ⊙ c_t + …, so with
    ∂L/∂h_t = δ_out_t + δ_{t+1} W_hh:

        ∂L/∂c_t = ∂L/∂h_t ⊙ o_t ⊙ tanh'(c_t) + ∂L/∂c_{t+1} ⊙ f_{t+1}      (tanh'(c) = 1 − tanh²(c))

    and the gate pre-activations (``local_derivatives`` writes each factor beside its gate):

        δ_i = ∂L/∂c_t ⊙ g ⊙ i(1 − i)           δ_f = ∂L/∂c_t ⊙ c_{t−1} ⊙ f(1 − f)
        δ_g = ∂L/∂c_t ⊙ i ⊙ (1 − g²)           δ_o = ∂L/∂h_t ⊙ tanh(c_t) ⊙ o(1 − o)

    Where the state entering step t+1 was cut, both carried terms (δ_{t+1} W_hh and ∂L/∂c_{t+1} ⊙ f_{t+1})
    are dropped. ``cells`` (N, T, H) holds every c_t; ``cells_grad`` every total ∂L/∂c_t, what autograd
    reports for the tensor c_t; ``c0_grad`` is ∂L/∂c0 = ∂L/∂c_0 ⊙ f_0.
    """

    gates = 4

    def __init__(self, weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray | None = None,
                 bias_hh: np.ndarray | None = None, bptt_chunk: int = 0):
        super().__init__(weight_ih, weight_hh, bias_ih, bias_hh, bptt_chunk)
        self.c0_grad: np.ndarray | None = None

    def recorded(self) -> dict[str, np.ndarray]:
        """Every cell state c_t and ∂L/∂c_t (N, T, H), then ∂L/∂h0, ∂L/∂c0 for the given states."""
        return {"cell": self.cells, "cell.grad": self.cells_grad, **super().recorded()}

    def forward(self, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None) -> np.ndarray:
        """x (N, T, F) → every h_t, (N, T, H); caches the gates (i, f, g, o), every c_t and tanh(c_t)."""
        gates, h0, c0 = self._start(x, h0, c0, uses_cell=True)               # x_t W_ihᵀ, then + … = z_t
        if self.bias_ih is not None:
            gates += self.bias_ih + self.bias_hh
        steps, batch, width = gates.shape
        H = self.hidden_size
        scale = gate_scale((True, True, False, True), H, gates.dtype)          # σ on i, f, o; tanh on g
        shift = 1.0 - scale
        gates *= scale                                                         # z_t/2 on the sigmoid blocks
        weight_hh_scaled = self.weight_hh * scale[:, None]
        states = np.empty((steps + 1, batch, H), dtype=gates.dtype)          # h0, h_0 … h_{T−1}
        cells = np.empty((steps + 1, batch, H), dtype=gates.dtype)           # c0, c_0 … c_{T−1}
        tanh_cells = np.empty((steps, batch, H), dtype=gates.dtype)
        states[0], cells[0] = h0, c0
        recurrent = np.empty((batch, width), dtype=gates.dtype)
        input_gate_value = np.empty((batch, H), dtype=gates.dtype)
        for t in range(steps):
            z = gates[t]
            z += np.matmul(states[t], weight_hh_scaled.T, out=recurrent)
            activate_gates(z, scale, shift)                                    # i, f, o = σ(·);  g = tanh(·)
            i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
            cell = np.multiply(f, cells[t], out=cells[t + 1])
            cell += np.multiply(i, g, out=input_gate_value)                    # c_t = f ⊙ c_{t−1} + i ⊙ g
            np.tanh(cell, out=tanh_cells[t])
            np.multiply(o, tanh_cells[t], out=states[t + 1])                   # h_t = o ⊙ tanh(c_t)
        self.gate_values, self.states, self.cell_states, self.tanh_cells = gates, states, cells, tanh_cells
        return np.ascontiguousarray(self.outputs)

    @property
    def cells(self) -> np.ndarray:
        """Every cell state c_0 … c_{T−1}, (N, T, H) (a view of the time-major cache)."""
        return self.cell_states[1:].transpose(1, 0, 2)

    @property
    def cells_grad(self) -> np.ndarray:
        """Every total ∂L/∂c_t, (N, T, H), after ``backward`` (a view)."""
        return self.cell_grads.transpose(1, 0, 2)

    def local_derivatives(self):
        """For every t at once: (∂h_t/∂c_t through tanh, (T, N, H); the gates' local factors, (T, N, 4, H)).

        The second array's blocks, multiplied by ∂L/∂c_t (i, f, g) or ∂L/∂h_t (o), are the δ of the gates.
        """
        H = self.hidden_size
        values = self.gate_values
        steps, batch, _ = values.shape
        i, f, g, o = values[..., :H], values[..., H:2 * H], values[..., 2 * H:3 * H], values[..., 3 * H:]
        tanh_cells, previous_cells = self.tanh_cells, self.cell_states[:-1]
        output_path = o * (1.0 - tanh_cells * tanh_cells)                      # o ⊙ tanh'(c_t)
        factors = np.empty((steps, batch, 4, H), dtype=values.dtype)
        factors[:, :, 0] = g * i * (1.0 - i)                                    # ∂c_t/∂z_i = g ⊙ σ'(z_i)
        factors[:, :, 1] = previous_cells * f * (1.0 - f)                       # ∂c_t/∂z_f = c_{t−1} ⊙ σ'(z_f)
        factors[:, :, 2] = i * (1.0 - g * g)                                    # ∂c_t/∂z_g = i ⊙ tanh'(z_g)
        factors[:, :, 3] = tanh_cells * o * (1.0 - o)                           # ∂h_t/∂z_o = tanh(c_t) ⊙ σ'(z_o)
        return output_path, factors

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ_out = ∂L/∂outputs (N, T, H) → ∂L/∂x (N, T, F); stores parameter gradients, h0_grad, c0_grad, cells_grad."""
        H, weight_hh = self.hidden_size, self.weight_hh
        output_path, factors = self.local_derivatives()
        steps, batch = factors.shape[:2]
        forget = self.gate_values[..., H:2 * H]
        deltas = np.empty_like(factors)                                        # δ_t of (i, f, g, o), (T, N, 4, H)
        cell_grads = np.empty_like(output_path)                                # ∂L/∂c_t
        hidden_through_next = np.zeros((batch, H), dtype=factors.dtype)        # δ_{t+1} W_hh
        cell_through_next = np.zeros((batch, H), dtype=factors.dtype)          # ∂L/∂c_{t+1} ⊙ f_{t+1}
        hidden_grad = np.empty((batch, H), dtype=factors.dtype)
        for t in reversed(range(steps)):
            np.add(delta[:, t], hidden_through_next, out=hidden_grad)          # ∂L/∂h_t
            cell_grad = np.multiply(hidden_grad, output_path[t], out=cell_grads[t])
            cell_grad += cell_through_next                                     # ∂L/∂c_t
            np.multiply(cell_grad[:, None, :], factors[t, :, :3], out=deltas[t, :, :3])   # δ_i, δ_f, δ_g
            np.multiply(hidden_grad, factors[t, :, 3], out=deltas[t, :, 3])               # δ_o
            if t == 0 or not self.detached_before(t):
                np.matmul(deltas[t].reshape(batch, 4 * H), weight_hh, out=hidden_through_next)
                np.multiply(cell_grad, forget[t], out=cell_through_next)
            else:                                                              # h_{t−1}, c_{t−1} were detached
                hidden_through_next[...] = 0.0
                cell_through_next[...] = 0.0
        self.h0_grad, self.c0_grad, self.cell_grads = hidden_through_next, cell_through_next, cell_grads
        deltas = deltas.reshape(steps, batch, 4 * H)
        return self._finish(deltas, deltas, input_grad)


@register_layer("gru")
class GRU(_Recurrent):
    """Gated recurrent unit, PyTorch's gate order (r, z, n) and PyTorch's placement of the reset gate:

        r = σ(x W_irᵀ + b_ir + h_{t−1} W_hrᵀ + b_hr)
        z = σ(x W_izᵀ + b_iz + h_{t−1} W_hzᵀ + b_hz)
        n = tanh(x W_inᵀ + b_in + r ⊙ (h_{t−1} W_hnᵀ + b_hn))     (r multiplies W_hn h + b_hn, not h)
        h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

    Backward, with ∂L/∂h_t = δ_out_t + (what step t+1 sends back):

        δ_n = ∂L/∂h_t ⊙ (1 − z) ⊙ (1 − n²)
        δ_z = ∂L/∂h_t ⊙ (h_{t−1} − n) ⊙ z(1 − z)
        δ_r = δ_n ⊙ (h_{t−1} W_hnᵀ + b_hn) ⊙ r(1 − r)

    The input side sees δ = (δ_r, δ_z, δ_n); the hidden side (h W_hhᵀ + b_hh) sees (δ_r, δ_z, δ_n ⊙ r),
    so W_ih, b_ih and W_hh, b_hh get different sums. h_{t−1} reaches h_t also directly:

        ∂L/∂h_{t−1} (from step t) = ∂L/∂h_t ⊙ z + (δ_r, δ_z, δ_n ⊙ r) W_hh

    which is dropped whole where the state was cut.
    """

    gates = 3

    def __init__(self, weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray | None = None,
                 bias_hh: np.ndarray | None = None, bptt_chunk: int = 0):
        super().__init__(weight_ih, weight_hh, bias_ih, bias_hh, bptt_chunk)

    def forward(self, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None) -> np.ndarray:
        """x (N, T, F) → every h_t, (N, T, H); caches the gates (r, z, n) and h_{t−1} W_hnᵀ + b_hn."""
        gates, h0, _ = self._start(x, h0, c0, uses_cell=False)               # x_t W_ihᵀ, then + … (r, z, n)
        if self.bias_ih is not None:
            gates += self.bias_ih
        steps, batch, width = gates.shape
        H = self.hidden_size
        scale = gate_scale((True, True), H, gates.dtype)                      # σ on r, z
        shift = 1.0 - scale
        gates[..., :2 * H] *= scale                                            # halved: σ(z) = ½ + ½·tanh(z/2)
        scale_hh = np.concatenate([scale, np.ones(H, dtype=gates.dtype)])
        weight_hh_scaled = self.weight_hh * scale_hh[:, None]
        bias_hh_scaled = None if self.bias_hh is None else self.bias_hh * scale_hh
        states = np.empty((steps + 1, batch, H), dtype=gates.dtype)
        states[0] = h0
        hidden_candidate = np.empty((steps, batch, H), dtype=gates.dtype)    # h_{t−1} W_hnᵀ + b_hn
        recurrent = np.empty((batch, width), dtype=gates.dtype)
        for t in range(steps):
            np.matmul(states[t], weight_hh_scaled.T, out=recurrent)
            if bias_hh_scaled is not None:
                recurrent += bias_hh_scaled
            gate = gates[t]
            reset_update = gate[:, :2 * H]
            reset_update += recurrent[:, :2 * H]
            activate_gates(reset_update, scale, shift)                         # r, z
            r, z, n = gate[:, :H], gate[:, H:2 * H], gate[:, 2 * H:]
            candidate = hidden_candidate[t]
            candidate[...] = recurrent[:, 2 * H:]
            n += np.multiply(r, candidate, out=recurrent[:, :H])
            np.tanh(n, out=n)                                                  # n = tanh(… + r ⊙ (W_hn h + b_hn))
            new = np.subtract(states[t], n, out=states[t + 1])
            new *= z
            new += n                                                           # h_t = n + z ⊙ (h_{t−1} − n)
        self.gate_values, self.states, self.hidden_candidate = gates, states, hidden_candidate
        return np.ascontiguousarray(self.outputs)

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ_out = ∂L/∂outputs (N, T, H) → ∂L/∂x (N, T, F); stores the parameter gradients and h0_grad."""
        H, weight_hh = self.hidden_size, self.weight_hh
        values, previous = self.gate_values, self.states[:-1]
        steps, batch, _ = values.shape
        r, z, n = values[..., :H], values[..., H:2 * H], values[..., 2 * H:]
        # the local factors for every t at once, beside their gates
        factors = np.empty((steps, batch, 3, H), dtype=values.dtype)
        factors[:, :, 0] = self.hidden_candidate * r * (1.0 - r)               # ∂z_n/∂z_r ⊙ σ'(z_r)
        factors[:, :, 1] = (previous - n) * z * (1.0 - z)                      # ∂h_t/∂z_z = (h_{t−1} − n) ⊙ σ'
        factors[:, :, 2] = (1.0 - z) * (1.0 - n * n)                           # ∂h_t/∂z_n = (1 − z) ⊙ tanh'
        input_deltas = np.empty_like(factors)                                  # (δ_r, δ_z, δ_n)
        hidden_deltas = np.empty_like(factors)                                 # (δ_r, δ_z, δ_n ⊙ r)
        through_next = np.zeros((batch, H), dtype=values.dtype)
        hidden_grad = np.empty((batch, H), dtype=values.dtype)
        for t in reversed(range(steps)):
            np.add(delta[:, t], through_next, out=hidden_grad)                 # ∂L/∂h_t
            step_deltas = input_deltas[t]
            np.multiply(hidden_grad[:, None, :], factors[t, :, 1:], out=step_deltas[:, 1:])   # δ_z, δ_n
            np.multiply(step_deltas[:, 2], factors[t, :, 0], out=step_deltas[:, 0])        # δ_r = δ_n ⊙ …
            hidden_step = hidden_deltas[t]
            hidden_step[:, :2] = step_deltas[:, :2]
            np.multiply(step_deltas[:, 2], r[t], out=hidden_step[:, 2])
            if t == 0 or not self.detached_before(t):
                np.matmul(hidden_step.reshape(batch, 3 * H), weight_hh, out=through_next)
                through_next += hidden_grad * z[t]                              # the direct path z ⊙ h_{t−1}
            else:
                through_next[...] = 0.0
        self.h0_grad = through_next
        return self._finish(input_deltas.reshape(steps, batch, 3 * H), hidden_deltas.reshape(steps, batch, 3 * H),
                            input_grad)


@register_layer("last_step")
class LastStep(Learned):
    """a = x[:, T−1], (N, T, H) → (N, H): the last hidden state of a sequence.  No parameters.

    Backward: ∂L/∂x is δ = ∂L/∂a at t = T−1 and zero at every other step.
    """

    @classmethod
    def from_spec(cls, spec, dtype) -> "LastStep":
        """The layer for a scenario's ``last_step`` entry, its arrays copied into ``dtype``."""
        return cls()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, T, H) → x[:, −1] (N, H); caches x's shape and dtype."""
        if x.ndim != 3:
            raise ValueError(f"last_step expects (N, T, H) input, got shape {x.shape}")
        self.input_shape, self.dtype = x.shape, x.dtype
        return x[:, -1].copy()

    def backward(self, delta: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """δ (N, H) → (N, T, H), δ at t = T−1, zeros elsewhere."""
        if not input_grad:
            return None
        input_gradient = np.zeros(self.input_shape, dtype=self.dtype)
        input_gradient[:, -1] = delta
        return input_gradient

    def __repr__(self) -> str:
        return "LastStep()"
