"""The recurrent cells written out (``reference.network._CELL_FORMULAS``), which the finite-difference oracle
runs under ``torch.func.vmap``, against torch's own modules (``torch.nn.RNN``/``LSTMCell``/``GRU``) on the
same tensors: the same h' and c' within the float64 tolerance. And the oracle's gradients of a recurrent scenario
against autograd through torch's modules. A gate order or a formula changed is caught (mutants)."""
from __future__ import annotations

import pytest
import torch

from backprop_verify import reference
from backprop_verify.reference import network as network_module
from backprop_verify.reference.fd_oracle import fd_oracle
from backprop_verify.reports.verification.compare import compare
from backprop_verify.reports.verification.tolerance import tolerance
from backprop_verify.scenarios.builtin import builtin_scenarios

FEATURES, HIDDEN, BATCH = 3, 4, 2
# The policy's float64 tolerance, normwise (a few dozen operations' round-off on values of order one is
# far below it; a formula error far above it).
TOLERANCE = tolerance("float64")
CASES = [("rnn", {"nonlinearity": "tanh", "bias": True}), ("rnn", {"nonlinearity": "relu", "bias": False}),
         ("lstm", {"bias": True}), ("lstm", {"bias": False}), ("gru", {"bias": True}), ("gru", {"bias": False})]


def _one_step_of_torch(kind: str, options: dict, x, h, c, tensors):
    """h', c' of torch's own module on the tensors."""
    if kind == "lstm":
        module = torch.nn.LSTMCell(FEATURES, HIDDEN, bias=options["bias"], dtype=torch.float64)
        return torch.func.functional_call(module, tensors, (x, (h, c)))
    extra = {"nonlinearity": options["nonlinearity"]} if kind == "rnn" else {}
    module = (torch.nn.RNN if kind == "rnn" else torch.nn.GRU)(FEATURES, HIDDEN, bias=options["bias"],
                                                               batch_first=True, dtype=torch.float64, **extra)
    _, last = torch.func.functional_call(module, {f"{k}_l0": v for k, v in tensors.items()},
                                         (x[:, None], h[None]))
    return last[0], c


def _tensors(kind: str, bias: bool, generator: torch.Generator) -> dict:
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind] * HIDDEN
    shapes = {"weight_ih": (gates, FEATURES), "weight_hh": (gates, HIDDEN)}
    if bias:
        shapes |= {"bias_ih": (gates,), "bias_hh": (gates,)}
    return {name: torch.randn(shape, dtype=torch.float64, generator=generator) for name, shape in shapes.items()}


def _largest_difference(kind: str, options: dict, seed: int = 0) -> float:
    """max over h' (and c') of max|mine − torch's| / max|torch's|."""
    generator = torch.Generator().manual_seed(seed)
    tensors = _tensors(kind, options["bias"], generator)
    x, h, c = (torch.randn(BATCH, n, dtype=torch.float64, generator=generator) for n in (FEATURES, HIDDEN, HIDDEN))
    mine = network_module._CELL_FORMULAS[kind](x, h, c, tensors, options)
    theirs = _one_step_of_torch(kind, options, x, h, c, tensors)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(mine, theirs)
               if kind == "lstm" or a is not c)


@pytest.mark.parametrize("kind, options", CASES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in CASES])
def test_the_written_out_cell_is_torch_s(kind, options):
    assert _largest_difference(kind, options) <= TOLERANCE


def _swapped_lstm(x, h, c, tensors, options):
    i, f, g, o = (network_module._affine(x, tensors, "ih") + network_module._affine(h, tensors, "hh")).chunk(4, 1)
    c = torch.sigmoid(i) * c + torch.sigmoid(f) * torch.tanh(g)  # i and f swapped
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_reset_outside(x, h, c, tensors, options):
    x_r, x_z, x_n = network_module._affine(x, tensors, "ih").chunk(3, 1)
    h_r, h_z, h_n = network_module._affine(h, tensors, "hh").chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(r * (x_n + h_n))  # the reset gate applied to the input's share too
    return (1 - z) * n + z * h, c


def _gru_z_flipped(x, h, c, tensors, options):
    x_r, x_z, x_n = network_module._affine(x, tensors, "ih").chunk(3, 1)
    h_r, h_z, h_n = network_module._affine(h, tensors, "hh").chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    return z * torch.tanh(x_n + r * h_n) + (1 - z) * h, c


def _rnn_without_recurrent_bias(x, h, c, tensors, options):
    return torch.tanh(network_module._affine(x, tensors, "ih") + h @ tensors["weight_hh"].T), c


MUTANTS = {"lstm-i-f-swapped": ("lstm", _swapped_lstm, {"bias": True}),
           "gru-reset-outside": ("gru", _gru_reset_outside, {"bias": True}),
           "gru-z-flipped": ("gru", _gru_z_flipped, {"bias": False}),
           "rnn-no-b_hh": ("rnn", _rnn_without_recurrent_bias, {"nonlinearity": "tanh", "bias": True})}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_injected_bug_in_a_written_out_cell_is_caught(monkeypatch, mutant):
    kind, cell, options = MUTANTS[mutant]
    monkeypatch.setitem(network_module._CELL_FORMULAS, kind, cell)
    assert _largest_difference(kind, options) > TOLERANCE


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_the_oracle_on_the_written_out_cells_agrees_with_autograd_through_torch_s(kind):
    """Every gradient the oracle takes of a built-in recurrent scenario, against torch's autograd
    (whose network runs torch's modules), within the torch-fd tolerance."""
    scenario = next(s for s in builtin_scenarios() if s.name.startswith(f"layer-{kind}-") and s.dtype == "float64"
                    and not s.optimizer and not any(layer.params.get("bptt_chunk") for layer in s.layers))
    rows = compare(reference.run(scenario), fd_oracle(scenario), "float64", "torch-fd")
    assert rows and all(row.passed for row in rows), [row for row in rows if not row.passed][:3]
    assert any(row.address.endswith("weight_hh.grad") for row in rows)
