"""Verdicts that hold at every seed, without hiding a bug.

* Finite differences know where they are blind: an element whose step crosses
  a kink (a relu sign change, a max-pool tie) is left out of the fd
  comparison with a note naming the kink; the rest of the address is judged,
  and a wrong derivative still fails there (``reference.fd_oracle``).
* Sums that cancel get a floor from the size of their terms
  (``reports.verification.cancellation``); every injected bug still fails.

The scenarios are the random architectures on which these false failures
were first seen (``backprop-verify report --seed S --only '^random'``).
"""
import numpy as np
import pytest

from backprop_verify import manual
import backprop_verify.manual.activations
from backprop_verify import reference
from backprop_verify.manual.conv import Conv2d
from backprop_verify.manual.normalization import BatchNorm
from backprop_verify.reference.fd_oracle import KINK_CODES, fd_oracle
from backprop_verify.reports.verification.cancellation import term_floors
from backprop_verify.reports.verification.compare import compare
from backprop_verify.reports.verification.runner import verify
from backprop_verify.reports.verification.tolerance import UNIT_ROUNDOFF
from backprop_verify.scenarios.catalog import ACTIVATIONS, LAYERS
from backprop_verify.scenarios.generator import random_conv_scenario, random_scenario
from backprop_verify.scenarios.model import Layer, Loss, Scenario
from backprop_verify.scenarios.trace import Trace
from tests.helpers import inject_activation_backward

# (make, seed): manual and torch agree; finite differences straddle a max-pool tie of dropout's
# zeros (4013), relu pre-activations exactly at 0 (4266: a sample whose relu outputs are all 0,
# in front of a linear layer without bias).
KINKED = {"max_pool2d tie": (random_conv_scenario, 4013), "relu kink": (random_scenario, 4266)}


def _failures(rows, pair=None):
    return [r for r in rows if r["status"] == "fail" and (pair is None or r["pair"] == pair)]


@pytest.mark.parametrize("kink", list(KINKED))
def test_fd_steps_across_a_kink_are_blind_spots_not_failures(kink):
    make, seed = KINKED[kink]
    scenario = make(seed)
    fd = fd_oracle(scenario)
    assert fd.blind, "the oracle noticed no kink"
    assert all(kink in spot.first for spot in fd.blind.values()), [s.first for s in fd.blind.values()]
    manual_trace, torch_trace = manual.run(scenario), reference.run(scenario)
    # Without its blind spots the oracle disagrees with both engines: these would be the false failures.
    seeing = Trace("fd", fd)
    assert [r for r in compare(torch_trace, seeing, "float64", "torch-fd") if not r.passed]
    rows = compare(torch_trace, fd, "float64", "torch-fd")
    assert all(r.passed for r in rows)
    for address, spot in fd.blind.items():
        row = next(r for r in rows if r.address == address)
        assert row.note.startswith(f"{spot.count} of {spot.mask.size} elements not judged: fd step at [")
        assert spot.count < spot.mask.size  # the rest of the address is judged
    assert not _failures(verify(scenario).rows)


def test_a_relu_exactly_at_zero_is_blind_only_where_a_step_moves_it():
    """linear (no bias) → relu → linear: the zero input row puts every pre-activation of sample 1
    exactly on relu's kink; perturbing that row's inputs crosses it, nothing else does."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4))
    x[1] = 0.0
    scenario = Scenario("relu-at-zero", (Layer("linear", weight=rng.normal(size=(5, 4))), Layer("relu"),
                                         Layer("linear", weight=rng.normal(size=(2, 5)), bias=rng.normal(size=2))),
                        Loss("mse", "sum"), x=x, y=rng.normal(size=(3, 2)))
    fd = fd_oracle(scenario)
    expected = np.zeros((3, 4), bool)
    expected[1] = True
    np.testing.assert_array_equal(fd.blind["input.grad"].mask, expected)
    # The weight in front of the kink: a step in any W[j, k] moves z[1, j] by ±h·x[1, k] = 0: no crossing.
    assert "layers.0.weight.grad" not in fd.blind
    assert "relu kink (z = 0) at layers.1[1," in fd.blind["input.grad"].first
    rows = compare(manual.run(scenario), fd, "float64", "manual-fd")
    assert all(r.passed for r in rows)


def test_a_wrong_derivative_still_fails_beside_the_blind_spots(monkeypatch):
    """tanh′ = 1 − a² replaced by 1 − a in the max-pool-tie network: the fd rows that carry blind spots fail."""
    scenario = random_conv_scenario(KINKED["max_pool2d tie"][1])
    inject_activation_backward(monkeypatch, "tanh", lambda grad, a: grad * (1.0 - a))
    failed = {r["address"] for r in _failures(verify(scenario).rows, "manual-fd")}
    assert {"layers.0.weight.grad", "input.grad"} <= failed


def test_every_kinked_component_has_a_kink_code():
    kinked = [name for name, info in {**ACTIVATIONS, **LAYERS}.items() if info.kinked]
    assert kinked and not [name for name in kinked if name not in KINK_CODES]


# --------------------------------------------------------------------------- sums that cancel

# A conv bias in front of a training-mode batch_norm: ∂L/∂b = 0 exactly; float32 leaves ~1e-6 of
# terms whose magnitudes add up to ~65 (channel 3).
STRUCTURAL_ZERO = 5072


def _structural_zero_scenario():
    scenario = random_conv_scenario(STRUCTURAL_ZERO)
    assert scenario.dtype == "float32"
    assert [layer.type for layer in scenario.layers[2:5]] == ["conv2d", "identity", "batch_norm"]
    assert scenario.layers[4].params["training"]
    return scenario


def test_a_bias_before_batch_norm_is_judged_by_the_size_of_its_terms():
    scenario = _structural_zero_scenario()
    rows = {r["address"]: r for r in verify(scenario, with_fd=False).rows}
    row = rows["layers.2.bias.grad"]
    assert row["status"] == "floor" and row["note"].startswith("within the summation floor"), row
    assert row["max_rel"] > 1e3 * row["tolerance"]  # relative to itself, the value is pure rounding
    assert not _failures(list(rows.values()))
    # The floor there: Σ|δa − δb| + 2·n·u·Σ|δb| over n = N·H·W = 120 terms (computed here independently).
    manual_trace, torch_trace = manual.run(scenario), reference.run(scenario)
    delta_a, delta_b = (trace["layers.2.output.grad"].astype(np.float64) for trace in (manual_trace, torch_trace))
    found = term_floors(scenario, manual_trace, torch_trace)["layers.2.bias.grad"]
    floor, count = found.measured + found.rounding, found.count
    assert count == delta_b.shape[0] * delta_b.shape[2] * delta_b.shape[3] == 120
    sizes = np.abs(delta_b).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(floor, np.abs(delta_a - delta_b).sum(axis=(0, 2, 3))
                               + 2 * 120 * UNIT_ROUNDOFF["float32"] * sizes, rtol=1e-6)
    assert floor[3] > 7.2e-7  # the residue manual left in the first report that failed
    assert np.all(floor < 1e-3 * sizes)  # and far below any error a wrong sum makes (a fraction of Σ|δ|)


def _conv_bias_over_first_sample(self, delta, input_grad=True):
    result = _conv_backward(self, delta, input_grad)
    if self.bias is not None:
        self.bias_grad = delta[0].sum(axis=(1, 2))  # the batch sum forgotten
    return result


def _conv_bias_doubled(self, delta, input_grad=True):
    result = _conv_backward(self, delta, input_grad)
    if self.bias is not None:
        self.bias_grad = 2.0 * self.bias_grad
    return result


def _conv_kernel_halved(self, delta, input_grad=True):
    result = _conv_backward(self, delta, input_grad)
    self.weight_grad = 0.5 * self.weight_grad
    return result


def _batch_norm_without_mean_term(self, delta, input_grad=True):
    """∂L/∂x = γ/(M σ)·(M δ − x̂ Σ δ x̂): the −Σδ term dropped (the bias in front then gets Σδ·γ/σ ≠ 0)."""
    input_gradient = _batch_norm_backward(self, delta, input_grad)
    if input_gradient is None:
        return None
    scale = self.weight.reshape(self.per_channel) * self.inverse_std
    return input_gradient + scale * self.bias_grad.reshape(self.per_channel) / self.count


_conv_backward = Conv2d.backward
_batch_norm_backward = BatchNorm.backward

# A conv bias two layers before batch_norm, with softplus between: its gradient is not zero but
# cancels to 4e-5 of its terms; in float32 the summation floor is what passes it (0.4 of the floor).
CANCELLING = 5159

MUTANTS = {
    # (class, replacement backward, seed, addresses that must fail)
    "conv bias without the batch sum": (Conv2d, _conv_bias_over_first_sample, STRUCTURAL_ZERO,
                                        {"layers.2.bias.grad"}),
    # On the structural zero itself 2·0 = 0: no engine could tell; where the sum only cancels, it fails.
    "conv bias doubled": (Conv2d, _conv_bias_doubled, CANCELLING, {"layers.3.bias.grad", "layers.0.bias.grad"}),
    # The terms are wrong here, so they fail where they are compared: δ behind the batch_norm and everything
    # before it (the bias sum itself then differs by what its terms differ by: the floor says so).
    "conv kernel gradient halved": (Conv2d, _conv_kernel_halved, CANCELLING, {"layers.0.weight.grad",
                                                                            "layers.3.weight.grad"}),
    "batch_norm without the mean term": (BatchNorm, _batch_norm_without_mean_term, STRUCTURAL_ZERO,
                                         {"layers.3.output.grad", "layers.2.output.grad", "input.grad"}),
}


def test_the_cancelling_sum_passes_only_on_the_summation_floor():
    rows = {r["address"]: r for r in verify(random_conv_scenario(CANCELLING), with_fd=False).rows}
    row = rows["layers.3.bias.grad"]
    assert row["status"] == "floor" and row["note"].startswith("within the summation floor"), row
    assert not _failures(list(rows.values()))


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_every_injected_bug_still_fails_beside_the_summation_floor(monkeypatch, mutant):
    cls, backward, seed, expected = MUTANTS[mutant]
    scenario = random_conv_scenario(seed)
    monkeypatch.setattr(cls, "backward", backward)
    failed = {r["address"] for r in _failures(verify(scenario, with_fd=False).rows)}
    assert expected <= failed, failed


# layer_norm over a last dimension of size 1: x̂ = 0 exactly, so ∂L/∂γ = Σ δ·x̂ = 0; manual gives 0,
# torch leaves 4.6e-14 of its x̂ — within the rounding bound of x̂ that the summation floor adds.
ZERO_NORMALISED = 161807


def test_gamma_of_a_layer_norm_over_one_value_is_judged_by_the_rounding_of_x_hat():
    scenario = random_conv_scenario(ZERO_NORMALISED)
    assert scenario.layers[2].type == "layer_norm" and scenario.x.shape[0] == 1
    rows = {r["address"]: r for r in verify(scenario, with_fd=False).rows}
    assert rows["layers.2.weight.grad"]["status"] == "floor"
    assert rows["layers.2.weight.grad"]["note"].startswith("within the summation floor")
    assert not _failures(list(rows.values()))


def test_a_wrong_gamma_gradient_still_fails_there(monkeypatch):
    """∂L/∂γ = Σ δ (β's rule) instead of Σ δ·x̂."""
    from backprop_verify.manual.normalization import LayerNorm

    backward = LayerNorm.backward

    def gamma_as_beta(self, delta, input_grad=True):
        result = backward(self, delta, input_grad)
        self.weight_grad = self.bias_grad.copy()
        return result

    monkeypatch.setattr(LayerNorm, "backward", gamma_as_beta)
    failed = {r["address"] for r in _failures(verify(random_conv_scenario(ZERO_NORMALISED), with_fd=False).rows)}
    assert "layers.2.weight.grad" in failed


# Two layer_norms over (C, H, W) and (H, W) around a conv2d: the second conv's kernel gradient is
# exactly 0 (its input is constant over each normalised group), and torch leaves 4e-15 of it.
ZERO_KERNEL = 7607928057567938765


def test_a_conv_kernel_whose_gradient_cancels_is_judged_by_the_size_of_its_terms():
    scenario = random_conv_scenario(ZERO_KERNEL)
    rows = {r["address"]: r for r in verify(scenario, with_fd=False).rows}
    assert rows["layers.3.weight.grad"]["status"] == "floor" and not _failures(list(rows.values()))
    # The summation floor covers the kernel: its terms (δ, 1e-15 of residue themselves) passed, and the
    # kernel differs by no more than they do.
    assert rows["layers.3.output.grad"]["status"] != "fail"
    manual_trace, torch_trace = manual.run(scenario), reference.run(scenario)
    found = term_floors(scenario, manual_trace, torch_trace)["layers.3.weight.grad"]
    apart = np.abs(manual_trace["layers.3.weight.grad"] - torch_trace["layers.3.weight.grad"])
    assert apart.max() > 1e-10 * np.abs(torch_trace["layers.3.weight.grad"]).max()  # fails the ordinary criterion
    assert np.all(apart <= found.measured + found.rounding)


# --------------------------------------------------------------------------- curvature and gain

# A layer_norm over values of small variance: the central difference's h² error reaches 3.8e-6 of
# the gradient (tolerance 1e-6); Richardson extrapolation (h, h/2) brings it to 3e-10.
CURVED = 3205528127566922990


def test_finite_differences_refine_where_curvature_dominates():
    scenario = random_conv_scenario(CURVED)
    coarse = compare(reference.run(scenario), fd_oracle(scenario), "float64", "torch-fd")
    assert [r for r in coarse if not r.passed]  # the plain central difference is off by its h² term
    rows = verify(scenario).rows
    refined = [r for r in rows if r["note"].startswith("fd refined by Richardson")]
    assert refined and all(r["status"] == "pass" and r["max_rel"] < 1e-8 for r in refined)
    assert not _failures(rows)


def test_a_wrong_derivative_still_fails_the_refined_oracle(monkeypatch):
    """softplus′ = σ(βz) replaced by σ(z)·(1 − σ(z)): manual-fd fails even after refinement."""
    softplus = manual.activations.ACTIVATIONS["softplus"]
    forward = softplus.forward

    def recording_forward(self, z):
        self._injected_z = z
        return forward(self, z)

    def wrong_backward(self, grad):
        sigmoid = 1.0 / (1.0 + np.exp(-self._injected_z))
        return grad * sigmoid * (1.0 - sigmoid)

    monkeypatch.setattr(softplus, "forward", recording_forward)
    monkeypatch.setattr(softplus, "backward", wrong_backward)
    failed = _failures(verify(random_conv_scenario(CURVED)).rows, "manual-fd")
    assert {"input.grad", "layers.0.weight.grad"} <= {r["address"] for r in failed}
    assert {r["triage"] for r in failed} == {"manual alone"}, [(r["address"], r["triage"]) for r in failed]


# A layer_norm over a last dimension of size 1: the gradient behind it is exactly 0, and torch's
# backward leaves 3.6e-15 of rounding multiplied by the gain |γ|/√ε = 333 of that normalisation.
GAIN = 8204648868547699443


def test_rounding_behind_a_normalisation_is_judged_with_its_gain():
    scenario = random_conv_scenario(GAIN)
    assert scenario.layers[5].type == "layer_norm" and scenario.layers[5].params["dims"] == 1
    rows = {r["address"]: r for r in verify(scenario, with_fd=False).rows}
    row = rows["layers.4.output.grad"]
    assert row["status"] == "floor" and "normalisation's gain 333" in row["note"], row
    assert not _failures(list(rows.values()))


def test_a_wrong_normalisation_backward_still_fails_behind_the_gain(monkeypatch):
    """layer_norm's ∂L/∂x without −Σδx̂/m: with x̂ = 0 it returns δx̂/√ε instead of 0."""
    from backprop_verify.manual.normalization import LayerNorm

    backward = LayerNorm.backward

    def without_mean_term(self, delta, input_grad=True):
        result = backward(self, delta, input_grad)
        if result is None:
            return None
        delta_normalised = delta if self.weight is None else delta * self.weight
        return result + self.inverse_std * delta_normalised.mean(axis=self.axes, keepdims=True)

    monkeypatch.setattr(LayerNorm, "backward", without_mean_term)
    failed = {r["address"] for r in _failures(verify(random_conv_scenario(GAIN), with_fd=False).rows)}
    assert {"layers.4.output.grad", "input.grad"} <= failed


# --------------------------------------------------------------------------- what finite differences can resolve
# Seen in the sweep at seed 324935941: a transformer whose softmax cross-entropy is ~2e-6 (large logits, a near
# perfect prediction), so the oracle's round-off (ε·|logits|/h) is ~1e-11 against gradients of ~1e-6; and a
# dense network whose sigmoid output is 5e-12 from 1, where the probability-scaled step fell below an ulp.

RESOLUTION_SEED = 2486030623917545539
SATURATED_SEED = 6265734159407353406


def test_a_gradient_the_oracle_cannot_resolve_is_not_judged_by_it():
    from backprop_verify.scenarios.generator import random_transformer_scenario

    verified = verify(random_transformer_scenario(RESOLUTION_SEED))
    fd_rows = [r for r in verified.rows if r["pair"] in ("manual-fd", "torch-fd")]
    assert not [r for r in verified.rows if r["status"] == "fail"]
    unresolved = [r for r in fd_rows if r["status"] == "not_judged"]
    assert unresolved and all("below the oracle's resolution" in r["note"] for r in unresolved)
    # The engines are still judged against each other at their own tolerance, every address.
    assert all(r["status"] in ("pass", "floor") for r in verified.rows if r["pair"] == "manual-torch")


def test_a_wrong_attention_backward_still_fails_where_the_oracle_cannot_resolve(monkeypatch):
    """The same network with ∂L/∂V off by 1e-3: manual-torch fails, whatever finite differences resolve."""
    from backprop_verify.manual import attention
    from backprop_verify.scenarios.generator import random_transformer_scenario

    original = attention.MultiheadAttention.backward

    def skewed(self, delta, input_grad=True):
        result = original(self, delta, input_grad)
        self.in_proj_weight_grad = self.in_proj_weight_grad * (1 + 1e-3)
        return result

    monkeypatch.setattr(attention.MultiheadAttention, "backward", skewed)
    verified = verify(random_transformer_scenario(RESOLUTION_SEED))
    failing = {r["address"] for r in verified.rows if r["pair"] == "manual-torch" and r["status"] == "fail"}
    assert any(address.endswith("in_proj_weight.grad") for address in failing), failing


def test_a_probability_a_few_ulps_from_one_gets_a_step_it_can_take():
    """a = 1 − 5e-12 scaled its step to 3e-17, under an ulp of 1: θ ± h rounded to θ and fd gave 0/0."""
    verified = verify(random_scenario(SATURATED_SEED))
    rows = [r for r in verified.rows if r["address"] == "layers.9.output.grad"]
    assert {r["pair"]: r["status"] for r in rows} == {"manual-torch": "pass", "manual-fd": "pass", "torch-fd": "pass"}
    assert not [r for r in verified.rows if r["status"] == "fail"]
