"""The component grids straddle every switch-over point, and that is what lets them catch a wrong branch.

A softplus whose derivative ignores PyTorch's threshold (σ(βz) where torch's
derivative is exactly 1 above βz = threshold) used to pass everything: the
grids put βz above the threshold only at βz ≥ 30, where 1 − σ(βz) < 1e-13.
``scenarios.components.switch_grid`` adds the band threshold < βz ≤ threshold + 3
(and variants with thresholds 2 and 1, visible in float32).
"""
import numpy as np
import pytest

from backprop_verify import manual
import backprop_verify.manual.activations
import backprop_verify.manual.losses
from backprop_verify import reference
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.catalog import ACTIVATIONS
from backprop_verify.scenarios.components import activation_scenarios, loss_scenarios, switch_grid


def _failures(scenario):
    rows = compare(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")
    return {r.address for r in rows if not r.passed}


def _softplus_without_threshold_in_backward(monkeypatch):
    """The slip: a' = σ(βz) everywhere, the threshold kept in the forward pass only."""
    cls = manual.activations.ACTIVATIONS["softplus"]
    monkeypatch.setattr(cls, "backward", lambda self, grad: grad * manual.activations.sigmoid(self.scaled))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softplus_derivative_ignoring_the_threshold_is_caught(monkeypatch, dtype):
    grids = [s for s in activation_scenarios(dtype) if s.name.startswith("activation-softplus")]
    switch = [s for s in grids if "-switch-" in s.name]
    assert all(not _failures(s) for s in switch)  # the correct engine passes the new points
    _softplus_without_threshold_in_backward(monkeypatch)
    caught = {s.name for s in grids if "input.grad" in _failures(s)}
    # Of the two variants the grids had before (thresholds 20 and 10), only the new switch grids see it:
    # float64 with the default threshold 20; float32 only through the variants with a small threshold.
    old_variants = [s for s in grids if "threshold2.0" not in s.name and "threshold1.0" not in s.name]
    assert caught & {s.name for s in old_variants} <= {s.name for s in switch}
    default = f"activation-softplus-switch-{'f64' if dtype == 'float64' else 'f32'}"
    small = f"activation-softplus-beta1.0-threshold2.0-switch-{'f64' if dtype == 'float64' else 'f32'}"
    assert small in caught
    assert (default in caught) == (dtype == "float64")


def test_every_softplus_variant_has_points_in_the_band_above_its_threshold():
    for params in ACTIVATIONS["softplus"].grid_variants:
        beta, threshold = params["beta"], params["threshold"]
        u = beta * switch_grid("softplus", params)[0]
        assert ((u > threshold) & (u <= threshold + 3)).sum() >= 3, params
        assert (u == threshold).any() and (u < threshold).any(), params
        assert (u < 0).any() and (u > 0).any(), params  # σ's two branches too
    assert any(p["threshold"] <= 2 for p in ACTIVATIONS["softplus"].grid_variants)  # float32 sees that switch


@pytest.mark.parametrize("name", ["sigmoid", "silu", "swish", "mish", "softplus", "gelu", "elu"])
def test_grids_straddle_zero_for_activations_with_a_sign_branch(name):
    for params in ACTIVATIONS[name].grid_variants or ({},):
        z = switch_grid(name, {**{k: s.default for k, s in ACTIVATIONS[name].params.items()}, **params})[0]
        assert (z < 0).any() and (z > 0).any() and (z == 0).any()
        assert np.signbit(z[z == 0]).any() and not np.signbit(z[z == 0]).all()  # −0.0 and +0.0


def test_bce_clamp_grid_straddles_the_clamp_near_0_and_1():
    epsilon = manual.losses.BCE.EPSILON
    scenario = next(s for s in loss_scenarios("float64") if s.name == "loss-bce-sum-clamp-f64")
    product = scenario.x * (1.0 - scenario.x)
    assert (product > epsilon).any() and (product < epsilon).any()
    near_one = scenario.x > 0.5
    assert (product[near_one] > epsilon).any() and (product[near_one] < epsilon).any()


def test_bce_derivative_ignoring_the_clamp_is_caught(monkeypatch):
    scenario = next(s for s in loss_scenarios("float64") if s.name == "loss-bce-sum-clamp-f64")
    assert not _failures(scenario)
    monkeypatch.setattr(manual.losses.BCE, "EPSILON", 0.0)
    assert _failures(scenario)
