"""The suite must be able to fail: inject a wrong derivative and watch it fail.

Each test first checks that the correct engine passes on the scenarios it
uses, then injects one bug (``monkeypatch``) and names the scenarios and the
addresses that catch it. Bugs that live only where the component grids look
on purpose: a per-axis slip of the windowed layers (only a rectangular kernel
with different stride, padding or dilation per axis shows it), a ReLU
derivative wrong just above its kink, max pooling's choice among tied maxima.
"""
import numpy as np
import pytest

from backprop_verify import manual
import backprop_verify.manual.activations
import backprop_verify.manual.conv
import backprop_verify.manual.pooling
from backprop_verify import reference
from backprop_verify.reference.fd_oracle import fd_applicable, fd_oracle
from backprop_verify.reports.verification.compare import compare
from backprop_verify.scenarios.builtin import worked_examples
from backprop_verify.scenarios.components import activation_scenarios
from backprop_verify.scenarios.layer_grids import all_layer_scenarios
from tests.helpers import inject_activation_backward

_LAYER_SCENARIOS = all_layer_scenarios()

# The component-grid variants of the windowed layers before the per-axis ones were added:
# square kernels with one stride, padding and dilation for both axes, and conv2d's "rect".
SQUARE_ERA_VARIANTS = {
    "conv2d": ("k3", "stride2-pad1", "stride3-k2", "pad-k-minus-1", "dilation2", "depthwise", "groups2", "no-bias",
               "rect"),
    "max_pool2d": ("k2", "k3-s2-pad1", "ceil", "dilation2", "overlap", "ties", "ties-overlap"),
    "avg_pool2d": ("k2", "k3-s2-pad1", "k3-s2-pad1-exclude-pad", "ceil", "ceil-pad1"),
}


def _inject_wrong_sigmoid_derivative(monkeypatch):
    """Replace σ'(z) = σ(1−σ) by σ — the classic slip."""
    inject_activation_backward(monkeypatch, "sigmoid", lambda grad, a: grad * a)


def _failures(scenario):
    rows = compare(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")
    return {r.address for r in rows if not r.passed}


def _caught(scenarios) -> dict[str, set[str]]:
    """{scenario name: its failing addresses} for the scenarios whose manual-torch comparison fails."""
    return {s.name: failed for s in scenarios if (failed := _failures(s))}


def _grid(kind: str) -> list:
    """The component-grid scenarios of layer ``kind``, both dtypes."""
    return [s for s in _LAYER_SCENARIOS if s.layers[0].type == kind]


def _label(scenario) -> str:
    """The grid variant's label: "layer-conv2d-k2x3-pad1x0-dilation1x2-f64" → "k2x3-pad1x0-dilation1x2"."""
    return scenario.name.removeprefix(f"layer-{scenario.layers[0].type}-").rpartition("-")[0]


def _per_axis(scenario, option: str) -> bool:
    """Whether the grid variant sets ``option`` differently for the height and the width."""
    value = scenario.layers[0].params.get(option, (1, 1))
    return value[0] != value[1]


def _height_for_both_axes(pair: tuple[int, int]) -> tuple[int, int]:
    """(h, w) → (h, h): the per-axis slip — the height's option read for the width too."""
    return pair[0], pair[0]


def test_wrong_sigmoid_derivative_is_caught(monkeypatch):
    example = next(s for s in worked_examples() if s.name.startswith("seed004"))
    component = next(s for s in activation_scenarios() if s.name.startswith("activation-sigmoid-smooth"))
    assert not _failures(example) and not _failures(component)  # correct engine: all pass

    _inject_wrong_sigmoid_derivative(monkeypatch)
    failed = _failures(example)
    # The forward pass is untouched; every gradient upstream of the sigmoid is wrong.
    assert "loss" not in failed and "layers.1.output" not in failed
    assert {"layers.0.weight.grad", "layers.0.bias.grad", "input.grad", "step1.layers.0.weight"} <= failed
    assert "layers.2.weight.grad" not in failed  # downstream of the bug: still right
    assert "input.grad" in _failures(component)


# ---------------------------------------------------------------------------
# Per-axis slips in the windowed layers: caught by the rectangular, per-axis grid variants
# ---------------------------------------------------------------------------


def test_the_per_axis_variants_are_small_enough_for_finite_differences_unless_tied():
    """The grid variants added beyond the square era are judged by the oracle too (float64, at most
    ``FD_MAX_ENTRIES`` perturbed entries), except the max-pool ties, which it cannot judge."""
    added = [s for kind, labels in SQUARE_ERA_VARIANTS.items() for s in _grid(kind)
             if s.dtype == "float64" and _label(s) not in labels]
    assert added
    assert {s.name: fd_applicable(s) for s in added} == {s.name: "kink" not in s.tags for s in added}


def _scattered_input_gradient(delta, weight, input_shape, stride, padding, dilation, groups):
    """∂L/∂x of conv2d, ``manual.conv.full_convolution``'s sum read term by term: for every kernel
    offset (u, v), Σ_o δ[n, o, i, j] · W[o, c, u, v] added at x̃[n, c, i·s + u·d, j·s + v·d]; then
    x̃'s padding cropped away.

    x̃ gets a zero margin wide enough for any stride, padding and dilation, so that a slipped
    geometry puts its terms in the wrong places (wrong numbers), never outside the array.
    """
    n, channels, height, width = input_shape
    out_channels, in_per_group, kh, kw = weight.shape
    _, _, out_h, out_w = delta.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    rows = max(height + 2 * ph, sh * (out_h - 1) + dh * (kh - 1) + 1)
    columns = max(width + 2 * pw, sw * (out_w - 1) + dw * (kw - 1) + 1)
    input_gradient_padded = np.zeros((n, channels, rows, columns), dtype=delta.dtype)
    delta_by_group = delta.reshape(n, groups, out_channels // groups, out_h, out_w)
    weight_by_group = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw)
    for u in range(kh):
        for v in range(kw):
            weighted_delta = np.einsum("ngoij,goc->ngcij", delta_by_group, weight_by_group[..., u, v])
            input_gradient_padded[:, :, u * dh:u * dh + sh * (out_h - 1) + 1:sh,
                                  v * dw:v * dw + sw * (out_w - 1) + 1:sw] += weighted_delta.reshape(
                                      n, channels, out_h, out_w)
    return input_gradient_padded[:, :, ph:ph + height, pw:pw + width].copy()


# The two evaluation orders of conv2d's input gradient (``manual.conv.full_convolution`` picks one)
# and the options each receives.
CONV_INPUT_GRADIENT_PATHS = {
    "correlate_with_turned_kernel": ("padding", "dilation"),            # stride 1
    "spread_weighted_delta": ("stride", "padding", "dilation"),
}


def _inject_conv_input_gradient(monkeypatch, path: str, slipped_option: str | None) -> list[str]:
    """Replace ``manual.conv.<path>`` by ``_scattered_input_gradient`` reading the height's
    ``slipped_option`` for the width too (None: no slip). Returns a list that gets one entry each
    time the replacement runs (which scenarios take that path)."""
    calls = []

    def replacement(delta, weight, input_shape, *options_and_groups):
        *values, groups = options_and_groups
        options = {"stride": (1, 1), **dict(zip(CONV_INPUT_GRADIENT_PATHS[path], values))}
        if slipped_option:
            options[slipped_option] = _height_for_both_axes(options[slipped_option])
        calls.append(path)
        return _scattered_input_gradient(delta, weight, input_shape, options["stride"], options["padding"],
                                         options["dilation"], groups)

    monkeypatch.setattr(manual.conv, path, replacement)
    return calls


def _caught_on_path(scenarios, calls) -> tuple[dict[str, set[str]], set[str]]:
    """(the scenarios caught, with their failing addresses; the scenarios that ran the replaced path)."""
    caught, on_path = {}, set()
    for scenario in scenarios:
        calls.clear()
        failed = _failures(scenario)
        if calls:
            on_path.add(scenario.name)
        if failed:
            caught[scenario.name] = failed
    return caught, on_path


@pytest.mark.parametrize("path", CONV_INPUT_GRADIENT_PATHS)
def test_the_scattered_input_gradient_agrees_with_torch_on_every_conv2d_variant(monkeypatch, path):
    """The control for the slips below: without a slip the replacement is right wherever it runs,
    so a failure with a slip comes from the slip."""
    calls = _inject_conv_input_gradient(monkeypatch, path, None)
    caught, on_path = _caught_on_path(_grid("conv2d"), calls)
    assert not caught
    assert on_path  # the grid reaches this path


# (path, slipped option, caught by a square-era variant): only "rect" (stride (1, 2), padding (1, 0),
# dilation (1, 1), spread path) had per-axis options before; nothing reached the stride-1 correlation
# with a rectangular kernel or per-axis padding or dilation.
CONV_SLIPS = [
    ("correlate_with_turned_kernel", "padding", False),
    ("correlate_with_turned_kernel", "dilation", False),
    ("spread_weighted_delta", "stride", True),
    ("spread_weighted_delta", "padding", True),
    ("spread_weighted_delta", "dilation", False),
]


@pytest.mark.parametrize("path, option, square_era_caught_it", CONV_SLIPS,
                         ids=[f"{path.split('_')[0]}-{option}" for path, option, _ in CONV_SLIPS])
def test_conv2d_input_gradient_reading_the_height_option_for_the_width_is_caught(monkeypatch, path, option,
                                                                                 square_era_caught_it):
    scenarios = _grid("conv2d")
    assert not _caught(scenarios)  # correct engine: all pass

    calls = _inject_conv_input_gradient(monkeypatch, path, option)
    caught, on_path = _caught_on_path(scenarios, calls)
    # Caught exactly by the variants that take this path with ``option`` different per axis, and
    # only at input.grad (the parameter gradients do not use this code).
    assert set(caught) == {s.name for s in scenarios if s.name in on_path and _per_axis(s, option)}
    assert all(failed == {"input.grad"} for failed in caught.values()), caught
    caught_labels = {_label(s) for s in scenarios if s.name in caught}
    square_era = set(SQUARE_ERA_VARIANTS["conv2d"])
    assert bool(caught_labels & square_era) == square_era_caught_it, caught_labels
    assert caught_labels - square_era  # the per-axis variants catch it,
    assert {s.dtype for s in scenarios if s.name in caught} == {"float64", "float32"}  # in both dtypes


def _inject_crop_with_the_height_padding(monkeypatch, layer_class):
    """The pooling backward crops x̃'s padding with the height's padding on both axes:
    ∂L/∂x = ∂L/∂x̃[:, :, p_h:p_h + H, p_h:p_h + W] instead of [.., p_w:p_w + W]."""
    backward = layer_class.backward

    def slipped_backward(self, grad_output, input_grad=True):
        padding = self.padding
        self.padding = _height_for_both_axes(padding)  # the backward reads the padding for the crop only
        try:
            return backward(self, grad_output, input_grad)
        finally:
            self.padding = padding

    monkeypatch.setattr(layer_class, "backward", slipped_backward)


@pytest.mark.parametrize("kind, layer_class", [("max_pool2d", manual.pooling.MaxPool2d),
                                               ("avg_pool2d", manual.pooling.AvgPool2d)],
                         ids=("max_pool2d", "avg_pool2d"))
def test_pooling_crop_reading_the_height_padding_for_the_width_is_caught(monkeypatch, kind, layer_class):
    scenarios = _grid(kind)
    assert not _caught(scenarios)  # correct engine: all pass

    _inject_crop_with_the_height_padding(monkeypatch, layer_class)
    caught = _caught(scenarios)
    # Caught exactly by the variants padded differently per axis — none of the square-era ones.
    assert set(caught) == {s.name for s in scenarios if _per_axis(s, "padding")}
    assert caught
    assert all(failed == {"input.grad"} for failed in caught.values()), caught
    assert not {_label(s) for s in scenarios if s.name in caught} & set(SQUARE_ERA_VARIANTS[kind])


# ---------------------------------------------------------------------------
# Bugs that live only next to a kink
# ---------------------------------------------------------------------------

DEAD_BAND = (0.0, 0.01)  # the mutant's wrong ReLU derivative: 0 for 0 < z < 0.01, where it is 1


def _inject_relu_derivative_dead_just_above_the_kink(monkeypatch):
    """relu'(z) = 0 for 0 < z < 0.01 instead of 1 (a threshold written z ≥ 0.01 instead of z > 0):
    wrong only for pre-activations right above the kink."""
    cls = manual.activations.ACTIVATIONS["relu"]
    forward, backward = cls.forward, cls.backward

    def recording_forward(self, z):
        self._injected_pre_activation = z
        return forward(self, z)

    def backward_dead_above_the_kink(self, grad_a):
        pre_activation = self._injected_pre_activation
        in_band = (DEAD_BAND[0] < pre_activation) & (pre_activation < DEAD_BAND[1])
        return np.where(in_band, 0.0, backward(self, grad_a))

    monkeypatch.setattr(cls, "forward", recording_forward)
    monkeypatch.setattr(cls, "backward", backward_dead_above_the_kink)


def test_relu_derivative_wrong_just_above_the_kink_is_caught_by_the_kink_grid(monkeypatch):
    """Caught by the kink grid's z = 1e-300 (float64) and z = 1e-30 (both dtypes; 1e-300 flushes to 0
    in float32), at input.grad. Not by the smooth grid (its nearest positive z is 0.02). Random nets
    catch it only when a pre-activation happens to land in (0, 0.01)."""
    relu = [s for dtype in ("float64", "float32") for s in activation_scenarios(dtype) if s.layers[0].type == "relu"]
    assert not _caught(relu)  # correct engine: all pass

    _inject_relu_derivative_dead_just_above_the_kink(monkeypatch)
    caught = _caught(relu)
    # Caught exactly where a grid holds a pre-activation in the band, in the scenario's own dtype.
    assert set(caught) == {s.name for s in relu if ((DEAD_BAND[0] < s.x) & (s.x < DEAD_BAND[1])).any()}
    assert caught.get("activation-relu-kink-f64") == caught.get("activation-relu-kink-f32") == {"input.grad"}
    assert all("kink" in s.tags for s in relu if s.name in caught)


def _inject_max_pool_routing_to_the_last_tie(monkeypatch):
    """δ[i, j] to the LAST of the tied maxima of window (i, j) in row-major (u, then v) order.
    PyTorch routes it to the first: its CPU kernel scans the window row-major and replaces its
    candidate only on ``val > maxval`` (ATen's MaxPoolKernel.cpp); with torch 2.13, window
    [[2, 3], [3, 1]] returns the index of the first 3 (see ``manual.pooling.MaxPool2d``)."""
    cls = manual.pooling.MaxPool2d
    forward = cls.forward

    def forward_choosing_the_last_tie(self, x):
        maximum = forward(self, x)
        _, _, height, width = x.shape
        kh, kw = self.kernel_size
        x_padded = self.padded(x, self.out_size, -np.inf)
        taken = np.zeros(maximum.shape, dtype=bool)
        for offset in reversed(range(kh * kw)):  # row-major offsets, last first
            u, v = divmod(offset, kw)
            last = (self.offset_view(x_padded, self.out_size, u, v) == maximum) & ~taken
            last &= self.in_bounds(self.out_size, u, v, height, width)
            taken |= last
            self.chosen[offset] = last
        return maximum

    monkeypatch.setattr(cls, "forward", forward_choosing_the_last_tie)


def test_max_pool_routing_to_the_last_tie_is_caught_by_the_ties_variants(monkeypatch):
    """Caught by every "ties" variant (small-integer inputs, tagged kink), both dtypes, at
    input.grad; the other variants draw normal inputs, whose windows hold no ties. Finite
    differences cannot judge a tie (a step up or down moves the maximum to a different element),
    so the oracle leaves the tied elements unjudged and passes both engines: the comparison with
    PyTorch's convention is what catches it."""
    scenarios = _grid("max_pool2d")
    ties = {s.name for s in scenarios if "kink" in s.tags}
    assert not _caught(scenarios)  # correct engine: all pass

    _inject_max_pool_routing_to_the_last_tie(monkeypatch)
    caught = _caught(scenarios)
    assert set(caught) == ties
    assert all(failed == {"input.grad"} for failed in caught.values()), caught
    for scenario in scenarios:
        if scenario.name in ties and scenario.dtype == "float64":
            rows = compare(manual.run(scenario), fd_oracle(scenario), "float64", "manual-fd")
            input_gradient = next(r for r in rows if r.address == "input.grad")
            assert input_gradient.passed and "not judged" in input_gradient.note, input_gradient
