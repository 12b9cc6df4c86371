"""The conditioning floor (reports/verification/conditioning.py): rows that rounding
alone cannot determine are floor passes, judged from torch alone; a wrong derivative
in the same scenario still fails."""
import numpy as np

from backprop_verify import manual
from backprop_verify import reference
from backprop_verify.reports.verification import conditioning
from backprop_verify.reports.verification.compare import compare
from backprop_verify.manual.normalization import LayerNorm
from backprop_verify.reports.verification.runner import verify
from backprop_verify.scenarios.generator import random_conv_scenario

# Seed 151: a conv bias in front of a LayerNorm over its own channel — Σδ cancels, and in
# float32 torch's own value is 4e-3 away (relatively) from the float64 one.
ILL_CONDITIONED = 151


def _manual_torch(rows):
    return [r for r in rows if r["pair"] == "manual-torch"]


def test_an_ill_conditioned_address_is_a_floor_pass_not_a_failure():
    scenario = random_conv_scenario(ILL_CONDITIONED)
    assert scenario.dtype == "float32" and any(layer.type == "layer_norm" for layer in scenario.layers)
    torch_trace = reference.run(scenario)
    # The conditioning floor alone (verify() tries the summation floor first, which also covers this bias).
    rows = conditioning.rejudge(scenario, compare(manual.run(scenario), torch_trace, "float32"), torch_trace)
    excused = [r for r in rows if r.note.startswith("within the conditioning floor")]
    assert excused and all(r.status == "floor" for r in excused)
    assert max(r.max_rel / r.tolerance for r in excused) > 1  # these would fail without the floor
    assert not [r for r in rows if r.status == "fail"]
    assert not [r for r in _manual_torch(verify(scenario, with_fd=False).rows) if r["status"] == "fail"]


def test_a_wrong_derivative_still_fails_where_the_floor_applies(monkeypatch):
    """LayerNorm's backward without the variance term (−x̂ Σ δx̂ x̂): every address behind it fails."""
    def backward_without_variance_term(self, delta, input_grad=True):
        batch_axes = tuple(range(delta.ndim - self.dims))
        if self.weight is not None:
            self.weight_grad = (delta * self.normalised).sum(axis=batch_axes)
            self.bias_grad = delta.sum(axis=batch_axes)
        if not input_grad:
            return None
        delta_normalised = delta if self.weight is None else delta * self.weight
        return self.inverse_std * (delta_normalised - delta_normalised.mean(axis=self.axes, keepdims=True))

    monkeypatch.setattr(LayerNorm, "backward", backward_without_variance_term)
    rows = _manual_torch(verify(random_conv_scenario(ILL_CONDITIONED), with_fd=False).rows)
    failed = [r for r in rows if r["status"] == "fail"]
    assert failed and all(np.isfinite(r["max_rel"]) for r in failed)
    assert {r["address"] for r in failed} >= {"layers.0.weight.grad", "input.grad"}
