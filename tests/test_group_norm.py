"""GroupNorm, added as one catalogue spec, one manual class and one torch function: the grid, the
loader (no code of its own), the random convolutional networks, and injected bugs that the grid catches."""
import dataclasses

import numpy as np
import pytest

from backprop_verify import manual, reference
from backprop_verify.manual.normalization import GroupNorm
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.catalog import LAYERS
from backprop_verify.scenarios.generator import CONV_EXTRAS
from backprop_verify.scenarios.layer_grids import all_layer_scenarios
from backprop_verify.scenarios.loader import ScenarioError, scenario_from_dict

GRID = [s for s in all_layer_scenarios() if s.layers[0].type == "group_norm"]


def _failures(scenario) -> set[str]:
    rows = compare(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")
    return {row.address for row in rows if not row.passed}


def _caught() -> dict[str, set[str]]:
    return {s.name: failed for s in GRID if (failed := _failures(s))}


def test_the_grid_covers_every_variant_in_both_dtypes():
    labels = [case.label for case in LAYERS["group_norm"].grid]
    assert [s.name for s in GRID] == [f"layer-group_norm-{label}-{dtype}" for dtype in ("f64", "f32")
                                      for label in labels]


@pytest.mark.parametrize("scenario", GRID, ids=lambda s: s.name)
def test_manual_group_norm_matches_torch(scenario):
    assert _failures(scenario) == set()


def _backward_without(term: str):
    """GroupNorm's backward with one term of δx = (1/σ)(δx̂ − mean(δx̂) − x̂·mean(δx̂·x̂)) left out."""

    def backward(self, delta, input_grad=True):
        normalised = self.normalised.reshape(delta.shape)
        if self.weight is not None:
            self.weight_grad = (delta * normalised).reshape(delta.shape[0], delta.shape[1], -1).sum(axis=(0, 2))
            self.bias_grad = delta.reshape(delta.shape[0], delta.shape[1], -1).sum(axis=(0, 2))
        delta_normalised = delta if self.weight is None else delta * self.weight.reshape(self.per_channel)
        grouped = delta_normalised.reshape(self.normalised.shape)
        gradient = grouped.copy()
        if term != "mean":
            gradient -= grouped.mean(axis=2, keepdims=True)
        if term != "variance":
            gradient -= self.normalised * (grouped * self.normalised).mean(axis=2, keepdims=True)
        return (self.inverse_std * gradient).reshape(delta.shape)

    return backward


@pytest.mark.parametrize("term", ["variance", "mean"])
def test_a_backward_without_one_term_fails_on_every_variant(monkeypatch, term):
    monkeypatch.setattr(GroupNorm, "backward", _backward_without(term))
    caught = _caught()
    assert set(caught) == {s.name for s in GRID}
    assert all("input.grad" in failed for failed in caught.values())


def test_gamma_read_per_group_instead_of_per_channel_is_caught(monkeypatch):
    """γ broadcast over the wrong axis: ∂L/∂x̂ = γ_g δ with γ indexed by group. Only variants with γ
    and more than one channel per group show it."""
    backward = GroupNorm.backward

    def wrong(self, delta, input_grad=True):
        if self.weight is None:
            return backward(self, delta, input_grad)
        weight = self.weight
        self.weight = np.repeat(weight[::weight.size // self.num_groups], weight.size // self.num_groups)
        try:
            return backward(self, delta, input_grad)
        finally:
            self.weight = weight

    monkeypatch.setattr(GroupNorm, "backward", wrong)
    caught = {name.removesuffix("-f64").removesuffix("-f32") for name in _caught()}
    assert caught == {"layer-group_norm-images-g2", "layer-group_norm-one-group", "layer-group_norm-features-g2",
                      "layer-group_norm-batch1-rect-g3", "layer-group_norm-eps0.1"}


def _file(**layer) -> dict:
    return {"name": "gn", "data": {"x": {"generate": "normal", "shape": [2, 4, 3, 3]},
                                   "y": {"generate": "normal", "rows": 2, "cols": 2}},
            "layers": [{"type": "group_norm", **layer}, {"type": "flatten"},
                       {"type": "linear", "init": "xavier_normal", "out": 2}],
            "loss": {"type": "mse", "reduction": "half_sum"}}


def test_the_loader_reads_group_norm_from_its_spec_alone():
    scenario = scenario_from_dict(_file(num_groups=2))
    layer = scenario.layers[0]
    assert layer.params == {"num_groups": 2, "eps": 1e-5, "affine": True}
    assert np.array_equal(layer.weight, np.ones(4)) and np.array_equal(layer.bias, np.zeros(4))
    given = scenario_from_dict(_file(num_groups=4, weight=[1.0, 2.0, 3.0, 4.0], affine=True))
    assert list(given.layers[0].weight) == [1.0, 2.0, 3.0, 4.0]
    assert _failures(given) == set()


@pytest.mark.parametrize("layer, field, message", [
    ({"num_groups": 3}, "layers[0].num_groups", "expected a divisor of the input channels (4), got 3"),
    ({}, "layers[0].num_groups", "missing"),
    ({"num_groups": 2, "affine": False, "bias": [0.0] * 4}, "layers[0].bias", "only allowed with affine = true"),
    ({"num_groups": 2, "weight": [1.0, 2.0]}, "layers[0].weight", "expected shape (4,), got (2,)"),
])
def test_the_loader_names_the_field(layer, field, message):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(_file(**layer))
    assert err.value.field == field and message in err.value.problem


def test_group_norm_stays_out_of_random_networks_and_says_why():
    """Its spec can draw it (``draw``), but joining the pool redraws every random conv architecture."""
    info = LAYERS["group_norm"]
    assert "group_norm" not in CONV_EXTRAS and not info.random and "redraws" in info.random_excluded
    rng = np.random.default_rng(0)
    drawn = [info.draw(rng, (2, 6, 4, 4))["params"]["num_groups"] for _ in range(30)]
    assert set(drawn) == {1, 2, 3, 6}


def test_the_floors_know_group_norms_groups():
    """The summation floor (its γ: Σ δ·x̂ per channel) and the normalisation's gain read the spec's
    ``statistics``: a group of equal values has gain |γ|/√ε."""
    from backprop_verify.reports.verification.cancellation import term_floors
    from backprop_verify.reports.verification.conditioning import normalisation_gains

    scenario = next(s for s in GRID if "images-g2" in s.name and s.dtype == "float64")
    manual_trace, torch_trace = manual.run(scenario), reference.run(scenario)
    floors = term_floors(scenario, manual_trace, torch_trace)
    assert {"layers.0.weight.grad", "layers.0.bias.grad"} <= set(floors)
    assert floors["layers.0.weight.grad"].rounding.shape == scenario.layers[0].weight.shape
    equal = scenario.x.copy()
    equal[0, :2] = 3.0  # sample 0's first group (channels 0 and 1): equal values, σ² = 0
    gains = normalisation_gains(dataclasses.replace(scenario, x=equal), torch_trace)  # layer 0 reads x itself
    largest = np.abs(scenario.layers[0].weight[:2]).max() / np.sqrt(scenario.layers[0].params["eps"])
    assert gains[0] == pytest.approx(largest, rel=1e-9)
